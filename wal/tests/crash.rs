//! kill -9 at random moments: a child process (this test binary, re-run with
//! an environment variable) runs a durable ledger under concurrent load and
//! prints every acknowledged outcome; the parent kills it, restarts the
//! ledger, and checks that every acknowledged id is there with the same
//! outcome, that chains are all-or-nothing, that money is conserved and no
//! policy is violated. Many rounds on one data directory.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_engine::*;

const ROUNDS: u128 = 12;
const ENV_DIR: &str = "TALLY_CRASH_CHILD_DIR";
const ENV_ROUND: &str = "TALLY_CRASH_CHILD_ROUND";

/// The child: only does something when started by the parent.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let round: u128 = std::env::var(ENV_ROUND).unwrap().parse().unwrap();
    let (d, _) = tally_wal::Durable::open(Path::new(&dir), config(2, 256 << 10)).unwrap();
    let d = Arc::new(d);
    if round == 0 {
        let outcomes = d.runtime().submit(setup()).unwrap().wait();
        assert!(outcomes.iter().all(|o| o.is_ok()));
    }
    println!("READY");
    let workers: Vec<_> = (0..3u128)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                let out = std::io::stdout();
                for n in 0.. {
                    let i = n * 3 + w;
                    let batch: Vec<Command> =
                        (0..4u128).map(|k| command(round, i * 4 + k)).collect();
                    let outcomes = d.runtime().submit(batch.clone()).unwrap().wait();
                    let mut lock = out.lock();
                    for (c, o) in batch.iter().zip(outcomes) {
                        let (_, id) = c.top_id().unwrap();
                        let code = o.code().map_or(0, |c| c as u16);
                        writeln!(lock, "ACK {id} {} {code}", o.seq().unwrap_or(0)).unwrap();
                    }
                    lock.flush().unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<u128, (u64, u16)> = HashMap::new();
    let mut seed = 0x51ed_2701u64;
    for round in 0..ROUNDS {
        let mut child = Process::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, dir.path())
            .env(ENV_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until it is up and acknowledging, then let it run a random
        // while and kill it.
        let started = Instant::now();
        let mut early = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.starts_with("ACK") => {
                    early.push(l);
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!(
                    "child did not start in round {round}: {e} after {:?}",
                    started.elapsed()
                ),
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 200));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let mut this_round = 0;
        for line in early.into_iter().chain(rx.try_iter()) {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ACK") {
                continue;
            }
            let id: u128 = parts.next().unwrap().parse().unwrap();
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let code: u16 = parts.next().unwrap().parse().unwrap();
            acked.insert(id, (seq, code));
            this_round += 1;
        }
        assert!(this_round > 0, "round {round} acknowledged nothing");

        // Restart and check everything acknowledged so far.
        let (d, recovery) = tally_wal::Durable::open(dir.path(), config(2, 256 << 10)).unwrap();
        let rt = d.runtime();
        assert!(
            recovery.last_seq as usize >= acked.len(),
            "{}",
            recovery.describe()
        );
        for (&id, &(seq, code)) in &acked {
            let space = if id & 0xf == 1 {
                IdSpace::Chain
            } else if id & 0xf == 4 {
                IdSpace::Lien
            } else {
                IdSpace::Entry
            };
            let status = rt.status(space, id);
            let want = if code == 0 {
                IdStatus::Committed { seq }
            } else {
                IdStatus::Rejected {
                    seq,
                    code: ErrorCode::from_u16(code).unwrap(),
                }
            };
            assert_eq!(
                status, want,
                "acknowledged id {id:#x} after kill in round {round}"
            );
        }
        // Chains are all-or-nothing: inner ids share the chain's fate.
        for (&id, &(_, code)) in acked.iter().filter(|(id, _)| *id & 0xf == 1) {
            let base = id & !0xf;
            let inner = [
                rt.status(IdSpace::Lien, base | 2),
                rt.status(IdSpace::Entry, base | 3),
            ];
            for s in inner {
                assert_eq!(
                    matches!(s, IdStatus::Committed { .. }),
                    code == 0,
                    "chain {id:#x} half applied: {s:?}"
                );
            }
        }
        assert!(
            rt.balance_sums().iter().all(|(_, s)| *s == 0),
            "conservation after round {round}"
        );
        let (_, problems) = rt.cut(|s| s.check_invariants());
        assert!(problems.iter().all(|p| p.is_empty()), "{problems:?}");
        d.shutdown();
    }
    assert!(
        acked.len() > 200,
        "the rounds should acknowledge plenty ({})",
        acked.len()
    );
    let out = Process::new(env!("CARGO_BIN_EXE_tally-audit"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
