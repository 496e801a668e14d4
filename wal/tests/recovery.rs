//! Restart reproduces the state bit for bit (full-state digests), across
//! segment rotations and with a different shard count; a torn tail is cut
//! and reported; the directory is locked against a second process.

mod common;

use common::*;
use tally_engine::*;
use tally_wal::{Durable, OpenError};

#[test]
fn restart_reproduces_state_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, sums, acked) = {
        let d = open(dir.path(), 2);
        let rt = d.runtime();
        assert!(rt.submit(setup()).unwrap().wait().iter().all(|o| o.is_ok()));
        let mut acked = Vec::new();
        for r in 0..20u128 {
            let batch: Vec<Command> = (0..60u128).map(|i| command(r, i)).collect();
            let outcomes = rt.submit(batch.clone()).unwrap().wait();
            acked.extend(batch.into_iter().zip(outcomes));
        }
        // Retry a few: duplicates are logged too.
        let again: Vec<Command> = (0..10u128).map(|i| command(3, i)).collect();
        rt.submit(again).unwrap().wait();
        let digest = rt.digest();
        let sums = rt.balance_sums();
        d.shutdown();
        (digest, sums, acked)
    };
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".wal")
        })
        .count();
    assert!(
        segments >= 3,
        "the workload should rotate segments ({segments})"
    );
    for shards in [2, 1, 4] {
        let (d, rec) = Durable::open(dir.path(), config(shards, 64 << 10)).unwrap();
        assert!(rec.truncated.is_none());
        assert_eq!(
            rec.records as usize,
            1 + 1 + 2 * WALLETS as usize + 20 * 60 + 10
        );
        let rt = d.runtime();
        assert_eq!(
            rt.digest(),
            digest,
            "state after restart with {shards} shards"
        );
        assert_eq!(rt.balance_sums(), sums);
        for (cmd, outcome) in &acked {
            let (space, id) = cmd.top_id().unwrap();
            let status = rt.status(space, id);
            match outcome.code() {
                None => assert_eq!(
                    status,
                    IdStatus::Committed {
                        seq: outcome.seq().unwrap()
                    }
                ),
                Some(code) => assert_eq!(
                    status,
                    IdStatus::Rejected {
                        seq: outcome.seq().unwrap(),
                        code
                    }
                ),
            }
        }
        d.shutdown();
    }
}

#[test]
fn appends_continue_after_restart_and_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 1);
    d.runtime().submit(setup()).unwrap().wait();
    match Durable::open(dir.path(), config(1, 64 << 10)) {
        Err(OpenError::Io(m)) => assert!(m.contains("in use"), "{m}"),
        Err(e) => panic!("expected the lock to refuse, got {e}"),
        Ok(_) => panic!("expected the lock to refuse"),
    }
    d.shutdown();
    for round in 0..3u128 {
        let d = open(dir.path(), 1);
        let o = d.runtime().execute(command(round + 100, 0));
        assert!(o.is_ok(), "{o:?}");
        d.shutdown();
    }
    let (d, rec) = Durable::open(dir.path(), config(1, 64 << 10)).unwrap();
    assert_eq!(rec.records, setup().len() as u64 + 3);
    drop(d);
}
