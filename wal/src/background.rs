//! Background threads: the work that may wait (snapshots, the cold tier's
//! merges, the scrub of the log before a snapshot) runs at a lower CPU
//! priority than the write path (shards, the log's writer and syncer, the
//! history's indexer and sealer, the cold tier's run writer, the network),
//! so that on a machine whose cores are all busy the write path is served
//! first and background work takes what is left.
//!
//! A lowered thread must never hold, or wait for, a lock that the write
//! path waits for: preempted there, it would hold the write path back for
//! as long as the scheduler leaves it waiting (priority inversion). So the
//! merger hands its finished run to the cold writer to put in place, the
//! history's sealer (which installs runs under the index's write lock) is
//! not lowered, and the snapshot thread takes only its own lock and read
//! locks held for an `Arc` clone.
//!
//! Measured on 2 cores at 137,000 transfers/s (docs/PERFORMANCE.md, issue
//! 14): the snapshot's replay and the merges took half a core between them
//! in bursts, and with equal priority a shard waited behind them: batches'
//! execute stage up to 115 ms and a growing open-loop backlog. Each thread
//! still gets a share when it competes (at nice 10 the scheduler gives it
//! about a tenth of what a write-path thread gets), so a busy server's
//! snapshots and merges are slower but never stop.
//!
//! Linux only (the nice value is per thread there); elsewhere nothing
//! changes.

/// How much lower than the thread that spawned it a background thread runs
/// (added to its nice value; 19 at most).
pub const BACKGROUND_NICE: i32 = 10;

/// The lowest priority a nice value can give.
#[cfg(target_os = "linux")]
const NICE_MAX: i32 = 19;

/// Lowers the calling thread by [`BACKGROUND_NICE`]; a failure (a kernel
/// or sandbox that refuses) is logged and the thread runs as it was.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    if let Err(e) = lower(BACKGROUND_NICE) {
        tracing::debug!("a background thread kept its priority: {e}");
    }
}

#[cfg(target_os = "linux")]
fn lower(by: i32) -> std::io::Result<i32> {
    use rustix::process::{getpriority_process, setpriority_process};
    // Linux: PRIO_PROCESS with a thread id names that thread alone.
    let me = Some(rustix::thread::gettid());
    let nice = (getpriority_process(me)? + by).min(NICE_MAX);
    setpriority_process(me, nice)?;
    Ok(nice)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(i32::MIN)
    }

    #[test]
    fn a_lowered_thread_runs_lower_and_its_spawner_does_not() {
        let before = nice();
        let (lowered, inherited) = std::thread::spawn(move || {
            match lower(BACKGROUND_NICE) {
                Ok(_) => {}
                // A sandbox that refuses setpriority: nothing to check.
                Err(e) if e.raw_os_error() == Some(1) || e.raw_os_error() == Some(38) => {
                    return (before, before)
                }
                Err(e) => panic!("setpriority failed: {e}"),
            }
            let lowered = nice();
            // A thread it starts (a snapshot's scanning helper) inherits it.
            let inherited = std::thread::spawn(nice).join().unwrap_or(i32::MIN);
            (lowered, inherited)
        })
        .join()
        .unwrap_or((i32::MIN, i32::MIN));
        if lowered == before && inherited == before {
            return; // refused (above)
        }
        assert_eq!(lowered, (before + BACKGROUND_NICE).min(NICE_MAX));
        assert_eq!(inherited, lowered);
        assert_eq!(nice(), before, "only the calling thread is lowered");
    }
}
