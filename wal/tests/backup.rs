//! Online backup (`tally_wal::backup`): a plan taken while four threads keep
//! writing across segment rotations is a consistent copy. Each copy audits
//! clean, ends exactly at the plan's durable sequence, restarts there, and
//! every byte it took is still the original's (durable bytes never change).

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use tally_engine::*;

#[test]
fn a_backup_taken_under_load_is_a_consistent_copy_at_its_durable_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let (d, _) = tally_wal::Durable::open(dir.path(), config(2, 64 << 10)).unwrap();
    set_up(&d);
    let stop = AtomicBool::new(false);
    let mut plans = Vec::new();
    std::thread::scope(|s| {
        for t in 0..4u128 {
            let (d, stop) = (&d, &stop);
            s.spawn(move || {
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<Command> =
                        (0..20).map(|i| command(t * 100_000 + r, i)).collect();
                    d.runtime().submit(batch).unwrap().wait();
                    r += 1;
                }
            });
        }
        for k in 0..4 {
            std::thread::sleep(std::time::Duration::from_millis(150));
            let plan = d.backup_plan().unwrap();
            let dest = copies.path().join(format!("copy-{k}"));
            tally_wal::backup::copy_to(&plan, &dest).unwrap();
            plans.push((plan, dest));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let last = d.runtime().next_seq() - 1;
    d.shutdown();
    let mut segments_seen = 0;
    for (plan, dest) in &plans {
        assert!(plan.durable_seq > 0 && plan.durable_seq <= last);
        assert!(
            plan.snapshot_seq.is_some_and(|s| s <= plan.durable_seq),
            "{plan:?}"
        );
        segments_seen = segments_seen.max(plan.files.len());
        let report = tally_wal::audit::audit(dest, None).unwrap();
        assert!(
            report.clean,
            "{dest:?}: {:?} {:?}",
            report.problems, report.warnings
        );
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.last_sequence, plan.durable_seq);
        // The bytes copied are the original's, which never changed; read
        // through the file the plan opened (older snapshots were pruned
        // since: an open file stays readable).
        for f in &plan.files {
            let mut original = vec![0u8; f.size as usize];
            f.read_exact_at(&tally_wal::storage::RealDisk, &mut original, 0)
                .unwrap();
            let copy = std::fs::read(dest.join(&f.name)).unwrap();
            assert_eq!(copy.len() as u64, f.size);
            assert_eq!(
                &copy[..f.copy as usize],
                &original[..f.copy as usize],
                "{}",
                f.name
            );
            assert!(
                copy[f.copy as usize..].iter().all(|&b| b == 0),
                "{}",
                f.name
            );
        }
        // A server started on the copy resumes at the cut, and can go on.
        let again = open(dest, 2);
        assert_eq!(again.runtime().next_seq(), plan.durable_seq + 1);
        let more = again
            .runtime()
            .submit(vec![command(9_999_999, 1)])
            .unwrap()
            .wait();
        assert!(more[0].is_ok(), "{more:?}");
        again.shutdown();
    }
    assert!(segments_seen > 1, "the load crossed a segment rotation");
    // Nothing is overwritten: a second copy into the same place is refused.
    let (plan, dest) = &plans[0];
    assert!(tally_wal::backup::copy_to(plan, dest).is_err());
}

#[test]
fn an_empty_ledger_backs_up_to_a_ledger_that_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = tally_wal::Durable::open(dir.path(), config(1, 64 << 10)).unwrap();
    let plan = d.backup_plan().unwrap();
    assert_eq!(plan.durable_seq, 0);
    assert_eq!(plan.snapshot_seq, None);
    let dest = dir.path().join("copy");
    tally_wal::backup::copy_to(&plan, &dest).unwrap();
    d.shutdown();
    assert!(tally_wal::audit::audit(&dest, None).unwrap().clean);
    let again = open(&dest, 1);
    assert_eq!(again.runtime().next_seq(), 1);
    again.shutdown();
}

/// Backups and the snapshot thread write snapshots at the same time: one at
/// a time (they would share a temporary file), so every planned snapshot is
/// whole and valid.
#[test]
fn backups_and_the_snapshot_thread_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(1, 64 << 10);
    c.snapshot_every = Some(std::time::Duration::from_millis(2));
    let (d, _) = tally_wal::Durable::open(dir.path(), c).unwrap();
    set_up(&d);
    std::thread::scope(|s| {
        for t in 0..2u128 {
            let d = &d;
            s.spawn(move || {
                for r in 0..6 {
                    let batch: Vec<Command> = (0..50).map(|i| command(t * 1_000 + r, i)).collect();
                    d.runtime().submit(batch).unwrap().wait();
                    let plan = d.backup_plan().unwrap();
                    let snap = plan
                        .files
                        .iter()
                        .find(|f| f.name.starts_with("snapshot-"))
                        .unwrap();
                    let (info, _) =
                        tally_wal::snapshot::read(&tally_wal::storage::RealDisk, &snap.path)
                            .unwrap();
                    assert_eq!(info.bytes, snap.size, "{}", snap.name);
                    assert!(info.last_seq <= plan.durable_seq);
                }
            });
        }
    });
    d.shutdown();
}
