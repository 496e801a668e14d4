//! Essential threads: threads whose death leaves the process unable to do
//! its work (a shard, the log writer, the event driver, the server's
//! history: without one of them writes wait forever). Such a
//! thread must not die quietly: [`spawn`] runs its body under
//! `catch_unwind`, and a panic that escapes the body stops the whole process
//! with `std::process::abort()`, after one line on stderr naming the thread
//! and the panic message:
//!
//! ```text
//! tally: FATAL: essential thread tally-log died: panicked: <panic message>; stopping the process (a restart recovers from the log)
//! ```
//!
//! (The standard panic hook has already printed where the panic happened.)
//! Nothing is acknowledged after that, and a supervisor restarts the server,
//! which recovers from the log. Any crate may use it for its own essential
//! threads (the server's, for instance).

use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

/// Spawns an essential thread named `name` running `f`: if `f` panics, the
/// process aborts (see the module documentation). Its result is `f`'s when
/// it returns. Fails only when the thread cannot be created.
pub fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run(&thread_name, f))
}

/// Runs `f` as the body of the essential thread `name`: its result, or the
/// end of the process.
pub fn run<T>(name: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => died(name, payload.as_ref()),
    }
}

/// Reports the death of the essential thread `name` and aborts.
pub fn died(name: &str, payload: &(dyn Any + Send)) -> ! {
    say_fatal(&format!(
        "essential thread {name} died: panicked: {}; stopping the process (a restart recovers from the log)",
        panic_message(payload)
    ));
    std::process::abort()
}

/// The last line before an abort: to the log (`tallyd`'s, when it has
/// one) and always straight to stderr too, so that no filter can hide it.
fn say_fatal(text: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!("FATAL: {text}");
    }
    eprintln!("tally: FATAL: {text}");
}

/// Stops the process because the essential thread `name` cannot go on
/// (a fatal error rather than a panic), after one line on stderr.
pub fn fatal(name: &str, why: &str) -> ! {
    say_fatal(&format!(
        "essential thread {name} died: {why}; stopping the process (a restart recovers from the log)"
    ));
    std::process::abort()
}

/// The text a panic carried (`panic!` with a message gives a `&str` or a
/// `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Set in the child process the abort test starts.
    const CHILD: &str = "TALLY_ESSENTIAL_CHILD";
    /// The signal `abort()` raises (6 on Linux and the BSDs).
    const SIGABRT: i32 = 6;

    #[test]
    fn a_returning_essential_thread_gives_its_result() {
        let h = spawn("tally-test-ok", || 41 + 1).unwrap();
        assert_eq!(h.join().unwrap(), 42);
        let payload: Box<dyn Any + Send> = Box::new(format!("code {}", 7));
        assert_eq!(panic_message(payload.as_ref()), "code 7");
        assert_eq!(panic_message(&5u8), "a panic without a message");
    }

    #[test]
    fn a_panicking_essential_thread_aborts_the_process() {
        if std::env::var_os(CHILD).is_some() {
            let h = spawn("tally-test-essential", || -> u8 { panic!("boom {}", 42) }).unwrap();
            // Unreachable when the guard works: the process is gone.
            let joined = h.join();
            println!("survived the thread's death: {}", joined.is_err());
            std::process::exit(0);
        }
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--exact",
                "essential::tests::a_panicking_essential_thread_aborts_the_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "the child must abort: {:?}\nstdout: {}\nstderr: {stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains(
                "tally: FATAL: essential thread tally-test-essential died: panicked: boom 42"
            ),
            "{stderr}"
        );
    }
}
