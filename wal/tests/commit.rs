//! Pipelined group commit: the writer appends the next group while the
//! syncer syncs the last, and an outcome is released only once the log is
//! durable up to it. Concurrent submitters check, at the moment each
//! outcome reaches them, that the durable watermark already covers it; and
//! that syncs cover groups (never more syncs than groups), across rotations.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use tally_engine::*;

#[test]
fn no_outcome_is_released_before_the_log_is_durable_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the groups cross rotations.
    let (d, _) = tally_wal::Durable::open(dir.path(), config(2, 64 << 10)).unwrap();
    assert!(d
        .runtime()
        .submit(setup())
        .unwrap()
        .wait()
        .iter()
        .all(|o| o.is_ok()));
    std::thread::scope(|s| {
        for t in 0..4u128 {
            let d = &d;
            s.spawn(move || {
                for r in 0..60u128 {
                    let batch: Vec<Command> =
                        (0..40u128).map(|i| command(t * 1_000 + r, i)).collect();
                    for o in d.runtime().submit(batch).unwrap().wait() {
                        let seq = match o {
                            Outcome::Committed { seq, .. } => seq,
                            Outcome::Rejected { seq: Some(seq), .. } => seq,
                            Outcome::Duplicate { .. } | Outcome::Rejected { seq: None, .. } => {
                                continue
                            }
                        };
                        let durable = d.stats.durable_seq.load(Ordering::Acquire);
                        assert!(
                            durable >= seq,
                            "outcome {seq} released at durable {durable}"
                        );
                    }
                }
            });
        }
    });
    let syncs = d.stats.syncs.load(Ordering::Relaxed);
    let groups = d.stats.groups.load(Ordering::Relaxed);
    assert!(
        syncs > 0 && syncs <= groups,
        "{syncs} syncs for {groups} groups"
    );
    let (digest, next) = (d.runtime().digest(), d.runtime().next_seq());
    d.shutdown();
    // What was acknowledged is what recovery finds.
    let again = open(dir.path(), 2);
    assert_eq!(again.runtime().next_seq(), next);
    assert_eq!(again.runtime().digest(), digest);
}
