//! Snapshots: taken beside a running ledger (by replaying the durable log),
//! restart starts from the newest valid one and reproduces the state, a
//! damaged snapshot is skipped and reported, and the audit checks each
//! snapshot against the replayed state.

mod common;

use common::*;
use std::process::Command as Process;
use tally_engine::*;
use tally_wal::Durable;

fn workload(d: &Durable, rounds: std::ops::Range<u128>) {
    for r in rounds {
        let batch: Vec<Command> = (0..60u128).map(|i| command(r, i)).collect();
        d.runtime().submit(batch).unwrap().wait();
    }
}

/// Writes `image` in place of the snapshot `info` (a forged one).
fn replace_snapshot(
    dir: &std::path::Path,
    info: &tally_wal::snapshot::SnapshotInfo,
    image: &tally_engine::image::LedgerImage,
) {
    std::fs::remove_file(&info.path).unwrap();
    tally_wal::snapshot::write(&tally_wal::storage::RealDisk, dir, image, &info.chain).unwrap();
}

fn audit(dir: &std::path::Path) -> (i32, serde_json::Value) {
    let out = Process::new(env!("CARGO_BIN_EXE_tally-audit"))
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
    )
}

#[test]
fn restart_from_snapshot_reproduces_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 2);
    d.runtime().submit(setup()).unwrap().wait();
    workload(&d, 0..5);
    // Taken while the ledger keeps running: a second thread keeps writing.
    let snap = std::thread::scope(|s| {
        let writer = s.spawn(|| workload(&d, 5..10));
        let snap = d.take_snapshot().unwrap().expect("something to snapshot");
        writer.join().unwrap();
        snap
    });
    assert!(snap.last_seq >= 14 + 5 * 60, "{}", snap.last_seq);
    workload(&d, 10..12);
    let second = d.take_snapshot().unwrap().expect("newer records");
    assert!(second.last_seq > snap.last_seq);
    assert!(
        d.take_snapshot().unwrap().is_none(),
        "nothing new to snapshot"
    );
    workload(&d, 12..14);
    let digest = d.runtime().digest();
    d.shutdown();

    let (d, rec) = Durable::open(dir.path(), config(4, 64 << 10)).unwrap();
    assert_eq!(rec.snapshot, Some(second.last_seq), "{}", rec.describe());
    assert!(rec.describe().contains("from the snapshot"));
    assert_eq!(d.runtime().digest(), digest);
    d.shutdown();

    let (code, report) = audit(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["snapshots_checked"], 2);

    // A damaged newest snapshot is skipped: the older one is used instead.
    let mut bytes = std::fs::read(&second.path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    std::fs::write(&second.path, bytes).unwrap();
    let (d, rec) = Durable::open(dir.path(), config(1, 64 << 10)).unwrap();
    assert_eq!(rec.snapshot, Some(snap.last_seq));
    assert_eq!(rec.skipped_snapshots[0].kind, "bad_snapshot");
    assert_eq!(d.runtime().digest(), digest);
    d.shutdown();
    let (code, report) = audit(dir.path());
    assert_eq!(code, 1);
    assert_eq!(report["problems"][0]["kind"], "bad_snapshot");
}

#[test]
fn forged_snapshot_is_caught_by_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 1);
    d.runtime().submit(setup()).unwrap().wait();
    workload(&d, 0..3);
    let info = d.take_snapshot().unwrap().unwrap();
    d.shutdown();
    // Rewrite the snapshot with one balance changed and valid checksums.
    let (_, mut image) =
        tally_wal::snapshot::read(&tally_wal::storage::RealDisk, &info.path).unwrap();
    image.accounts[1].0.credits_posted += 100;
    replace_snapshot(dir.path(), &info, &image);
    let (code, report) = audit(dir.path());
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["problems"][0]["kind"], "snapshot_mismatch");
    assert_eq!(report["problems"][0]["sequence"], info.last_seq);
}

#[test]
fn segments_before_a_snapshot_can_be_archived() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 2);
    d.runtime().submit(setup()).unwrap().wait();
    workload(&d, 0..20);
    assert!(
        d.archive(None).unwrap().is_empty(),
        "nothing to archive without a snapshot"
    );
    let snap = d.take_snapshot().unwrap().unwrap();
    workload(&d, 20..24);
    let moved = d.archive(Some(archive.path())).unwrap();
    assert!(moved.len() >= 2, "{moved:?}");
    for p in &moved {
        assert!(!p.exists() && archive.path().join(p.file_name().unwrap()).exists());
    }
    let digest = d.runtime().digest();
    d.shutdown();
    let (d, rec) = Durable::open(dir.path(), config(2, 64 << 10)).unwrap();
    assert_eq!(rec.snapshot, Some(snap.last_seq));
    assert_eq!(d.runtime().digest(), digest);
    d.shutdown();
    let (code, report) = audit(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["warnings"][0]["kind"], "archived");
    // Without the snapshot, what the archived segments held is gone: refuse.
    std::fs::remove_file(&snap.path).unwrap();
    match Durable::open(dir.path(), config(2, 64 << 10)) {
        Err(tally_wal::OpenError::Corrupt(p)) => assert_eq!(p.kind, "segment_missing", "{p}"),
        _ => panic!("must not start without the removed history"),
    }
    assert_eq!(audit(dir.path()).0, 1);
}

#[test]
fn background_snapshots_with_a_delete_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2, 64 << 10);
    cfg.snapshot_every = Some(std::time::Duration::from_millis(30));
    cfg.archive = tally_wal::ArchivePolicy::Delete;
    let (d, _) = Durable::open(dir.path(), cfg).unwrap();
    d.runtime().submit(setup()).unwrap().wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut r = 0;
    while tally_wal::scan::segment_files(&tally_wal::storage::RealDisk, dir.path())
        .unwrap()
        .first()
        .map_or(0, |f| f.0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the policy never archived a segment"
        );
        workload(&d, r..r + 2);
        r += 2;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Snapshots keep working once early segments are gone.
    workload(&d, r..r + 2);
    assert!(d.take_snapshot().unwrap().is_some());
    let digest = d.runtime().digest();
    d.shutdown();
    assert!(!tally_wal::snapshot::list(&tally_wal::storage::RealDisk, dir.path()).is_empty());
    let mut bad = config(0, 64 << 10);
    bad.runtime.shards = 0;
    assert!(
        matches!(Durable::open(dir.path(), bad), Err(tally_wal::OpenError::Io(m)) if m.contains("shards"))
    );
    let (d, rec) = Durable::open(dir.path(), config(2, 64 << 10)).unwrap();
    assert!(rec.snapshot.is_some());
    assert_eq!(d.runtime().digest(), digest);
}

#[test]
fn a_failed_snapshot_write_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = Ledger::new(1).export();
    let chain = tally_wal::format::genesis();
    // A directory where the snapshot should go: the rename fails, after
    // the temporary file was created, written and synced.
    let name = tally_wal::snapshot::snapshot_name(image.last_seq);
    std::fs::create_dir(dir.path().join(&name)).unwrap();
    std::fs::write(dir.path().join(&name).join("occupied"), b"x").unwrap();
    assert!(
        tally_wal::snapshot::write(&tally_wal::storage::RealDisk, dir.path(), &image, &chain)
            .is_err()
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![name.clone()], "the .tmp file must be removed");
    // And on success, nothing but the snapshot remains.
    std::fs::remove_dir_all(dir.path().join(&name)).unwrap();
    let info =
        tally_wal::snapshot::write(&tally_wal::storage::RealDisk, dir.path(), &image, &chain)
            .unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
    assert!(tally_wal::snapshot::read(&tally_wal::storage::RealDisk, &info.path).is_ok());
}

#[test]
fn files_and_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data").join("ledger");
    let archive = root.path().join("archive").join("old");
    let d = open(&data, 1);
    d.runtime().submit(setup()).unwrap().wait();
    workload(&d, 0..20);
    let snap = d.take_snapshot().unwrap().unwrap();
    workload(&d, 20..22);
    let moved = d.archive(Some(&archive)).unwrap();
    assert!(!moved.is_empty());
    d.shutdown();
    for dir in [data.as_path(), data.parent().unwrap(), archive.as_path()] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(archive.parent().unwrap()), 0o700);
    assert_eq!(mode(&snap.path), 0o600, "{}", snap.path.display());
    assert_eq!(mode(&data.join("LOCK")), 0o600);
    let segments = tally_wal::scan::segment_files(&tally_wal::storage::RealDisk, &data).unwrap();
    assert!(!segments.is_empty());
    for (_, p) in &segments {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    for p in &moved {
        let copy = archive.join(p.file_name().unwrap());
        assert_eq!(mode(&copy), 0o600, "{}", copy.display());
    }
}

#[test]
fn snapshot_with_an_unknown_outcome_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 1);
    d.runtime().submit(setup()).unwrap().wait();
    workload(&d, 0..3);
    let info = d.take_snapshot().unwrap().unwrap();
    let digest = d.runtime().digest();
    d.shutdown();
    // A crafted snapshot, checksums valid: one rejected id's outcome code
    // replaced with a number no error code has.
    let (_, mut image) =
        tally_wal::snapshot::read(&tally_wal::storage::RealDisk, &info.path).unwrap();
    let unknown = 0xfffe_u64;
    assert!(ErrorCode::from_u16(unknown as u16).is_none());
    let record = image
        .ids
        .iter_mut()
        .find(|r| r.2 & 0xffff != 0)
        .expect("the workload has rejected commands");
    record.2 = (record.2 & !0xffff) | unknown;
    replace_snapshot(dir.path(), &info, &image);
    let p = tally_wal::snapshot::read(&tally_wal::storage::RealDisk, &info.path).unwrap_err();
    assert_eq!(p.kind, "bad_snapshot", "{p}");
    assert!(p.message.contains("unknown outcome code 65534"), "{p}");
    // Startup skips it (the log is replayed instead), and says why.
    let (d, rec) = Durable::open(dir.path(), config(2, 64 << 10)).unwrap();
    assert_eq!(rec.snapshot, None, "{}", rec.describe());
    assert_eq!(rec.skipped_snapshots[0].kind, "bad_snapshot");
    assert!(rec.describe().contains("unknown outcome code 65534"));
    assert_eq!(d.runtime().digest(), digest);
    d.shutdown();
    let (code, report) = audit(dir.path());
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["problems"][0]["kind"], "bad_snapshot");
}

/// Only the newest `KEEP_SNAPSHOTS` snapshots stay after a new one: each
/// holds the whole state, and one a minute would fill the disk. Restart
/// loads the newest and reproduces the state.
#[test]
fn old_snapshots_are_removed_after_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 2);
    d.runtime().submit(setup()).unwrap().wait();
    let mut taken = Vec::new();
    for r in 0..4u128 {
        workload(&d, r * 3..r * 3 + 3);
        taken.push(d.take_snapshot().unwrap().unwrap().last_seq);
    }
    let left: Vec<u64> = tally_wal::snapshot::list(&tally_wal::storage::RealDisk, dir.path())
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(
        left,
        taken[4 - tally_wal::snapshot::KEEP_SNAPSHOTS..],
        "the newest two"
    );
    let digest = d.runtime().digest();
    d.shutdown();
    let (d, rec) = Durable::open(dir.path(), config(2, 64 << 10)).unwrap();
    assert_eq!(rec.snapshot, taken.last().copied());
    assert_eq!(d.runtime().digest(), digest);
    d.shutdown();
    let (code, report) = audit(dir.path());
    assert_eq!(code, 0, "{report}");
}

/// A start that replays more than `SNAPSHOT_AFTER_REPLAY_RECORDS` records
/// takes its first background snapshot soon, not a whole period later (a
/// server restarted more often than the period would never take one).
#[test]
fn a_long_replay_is_followed_by_a_snapshot_soon() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 1);
    d.runtime().submit(setup()).unwrap().wait();
    let n = tally_wal::durable::SNAPSHOT_AFTER_REPLAY_RECORDS as u128 + 1_000;
    for r in 0..n / 1_000 {
        let batch: Vec<Command> = (0..1_000u128)
            .map(|i| Transfer::new(10_000_000 + r * 1_000 + i, 1, 2, 1, usd()).into())
            .collect();
        d.runtime().submit(batch).unwrap().wait();
    }
    d.shutdown();
    let list = || tally_wal::snapshot::list(&tally_wal::storage::RealDisk, dir.path());
    assert!(list().is_empty());
    let mut c = config(1, 64 << 20);
    c.snapshot_every = Some(std::time::Duration::from_secs(3_600));
    let (d, rec) = Durable::open(dir.path(), c).unwrap();
    assert!(rec.records > tally_wal::durable::SNAPSHOT_AFTER_REPLAY_RECORDS);
    // Generous: the snapshot replays the log once more (seconds here).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while list().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot after the long replay"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.shutdown();
    // A short replay waits for the period as before.
    let mut c = config(1, 64 << 20);
    c.snapshot_every = Some(std::time::Duration::from_secs(3_600));
    let (d, _) = Durable::open(dir.path(), c).unwrap();
    let before = list();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    assert_eq!(list(), before, "no new snapshot after a short replay");
    d.shutdown();
}
