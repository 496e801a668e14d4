//! Pipelined group commit: the writer appends the next group while the
//! syncer syncs the last, and an outcome is released only once the log is
//! durable up to it. Concurrent submitters check, at the moment each
//! outcome reaches them, that the durable watermark already covers it; and
//! that syncs cover groups (never more syncs than groups), across rotations.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use tally_engine::*;

/// Four threads, each submitting `rounds` batches of `size(r)` commands of
/// its own and handing each batch's outcomes to `check`.
fn from_four_threads(
    d: &tally_wal::Durable,
    rounds: u128,
    size: impl Fn(u128) -> u128 + Sync,
    check: impl Fn(Vec<Outcome>) + Sync,
) {
    set_up(d);
    std::thread::scope(|s| {
        for t in 0..4u128 {
            let (size, check) = (&size, &check);
            s.spawn(move || {
                for r in 0..rounds {
                    let batch: Vec<Command> =
                        (0..size(r)).map(|i| command(t * 10_000 + r, i)).collect();
                    check(d.runtime().submit(batch).unwrap().wait());
                }
            });
        }
    });
}

#[test]
fn no_outcome_is_released_before_the_log_is_durable_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the groups cross rotations.
    let (d, _) = tally_wal::Durable::open(dir.path(), config(2, 64 << 10)).unwrap();
    from_four_threads(
        &d,
        60,
        |_| 40,
        |outcomes| {
            for o in outcomes {
                let seq = match o {
                    Outcome::Committed { seq, .. } => seq,
                    Outcome::Rejected { seq: Some(seq), .. } => seq,
                    Outcome::Duplicate { .. } | Outcome::Rejected { seq: None, .. } => continue,
                };
                let durable = d.stats.durable_seq.load(Ordering::Acquire);
                assert!(
                    durable >= seq,
                    "outcome {seq} released at durable {durable}"
                );
            }
        },
    );
    let syncs = d.stats.syncs.load(Ordering::Relaxed);
    let groups = d.stats.groups.load(Ordering::Relaxed);
    assert!(
        syncs > 0 && syncs <= groups,
        "{syncs} syncs for {groups} groups"
    );
    let (digest, next) = (d.runtime().digest(), d.runtime().next_seq());
    d.shutdown();
    // A clean close leaves no prepared segment behind.
    let preps: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".prep"))
        .collect();
    assert!(preps.is_empty(), "{preps:?}");
    // A segment a stopped process was preparing is no part of the log: it
    // is removed when the log is opened again.
    let stale = dir.path().join("segment-0000009999.wal.zeroed.prep");
    std::fs::write(&stale, [0u8; 4096]).unwrap();
    // What was acknowledged is what recovery finds.
    let again = open(dir.path(), 2);
    assert_eq!(again.runtime().next_seq(), next);
    assert_eq!(again.runtime().digest(), digest);
    assert!(!stale.exists(), "stale preparation removed");
}

/// Every in-flight reservation comes back exactly once, with the history
/// holding batches until it has indexed them: many small batches over two
/// shards from four threads, then the count must return to zero. (A shard
/// that signalled "executed" before counting its part out let the journal's
/// part finish first; the batch then gave its reservation back twice and the
/// count wrapped below zero, after which every write was answered `busy`.)
#[test]
fn every_reservation_comes_back_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(2, 1 << 20);
    c.history = Some(tally_wal::history::PageLimits::default());
    let (d, _) = tally_wal::Durable::open(dir.path(), c).unwrap();
    from_four_threads(&d, 400, |r| 1 + r % 3, drop);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d.runtime().inflight() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(d.runtime().inflight(), 0, "reservations given back");
    d.shutdown();
}
