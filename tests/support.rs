#![allow(dead_code)]
//! Helpers for the end-to-end suites (each suite includes this file): start a real `tallyd` on a
//! free loopback port, connect clients, run the `tally` CLI.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_net::client::{Client, ClientConfig};
use tally_net::tls::{self, TlsFiles};

pub fn tallyd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tallyd"))
}

pub fn tally_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tally"))
}

/// A running `tallyd` (killed when dropped).
pub struct Tallyd {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub stderr: Arc<Mutex<String>>,
}

impl Tallyd {
    /// Starts `tallyd` on `dir` with a free port, metrics on a free port.
    pub fn start(dir: &Path, extra: &[&str]) -> Tallyd {
        let mut child = Command::new(tallyd_bin())
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tallyd");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("tallyd listening on ") {
                        break a.trim().parse().expect("listen address");
                    }
                }
                _ => {
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("tallyd exited before listening: {}", stderr.lock().unwrap());
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Tallyd {
            child,
            addr,
            dir: dir.to_path_buf(),
            stderr,
        }
    }

    /// The metrics address tallyd reported.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        for _ in 0..100 {
            let s = self.stderr.lock().unwrap().clone();
            if let Some(rest) = s.split("metrics on http://").nth(1) {
                return rest.split('/').next()?.parse().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether tallyd's stderr says `text` (waiting up to 2 s for it).
    pub fn said(&self, text: &str) -> bool {
        for _ in 0..100 {
            if self.stderr.lock().unwrap().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn writer_files(&self) -> TlsFiles {
        tls::dev_client_files(&self.dir)
    }

    pub fn reader_files(&self) -> TlsFiles {
        tls::dev_reader_files(&self.dir)
    }

    pub async fn client(&self) -> Client {
        self.client_with(self.writer_files()).await
    }

    pub async fn client_with(&self, files: TlsFiles) -> Client {
        Client::connect(ClientConfig::new(self.addr, files))
            .await
            .expect("connecting")
    }

    /// `kill -9`.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (None if it did not exit in 20 s).
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..400 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Tallyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tally` against a server; returns (exit code, stdout, stderr).
pub fn tally(server: &Tallyd, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tally_bin())
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--data-dir")
        .arg(&server.dir)
        .args(args)
        .output()
        .expect("running tally");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
