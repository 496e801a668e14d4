//! Damaged logs: startup refuses (or truncates a torn tail) naming the
//! segment, byte offset and sequence, and `tally-audit` reports the same kind,
//! file and offset and exits 1 (0 for a torn tail, which is only a warning).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use tally_engine::Command;
use tally_wal::format::{RecordHeader, RECORD_HEADER_BYTES};
use tally_wal::{Durable, OpenError};

/// One record (a batch) of the log.
struct Rec {
    file: PathBuf,
    offset: usize,
    len: usize,
    /// Its first sequence.
    seq: u64,
    /// Commands in it.
    count: u64,
}

/// A log of several segments, one record per batch (each synced before the
/// next is sent); returns its records' positions.
fn build() -> (tempfile::TempDir, Vec<Rec>) {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), 2);
    d.runtime().submit(setup()).unwrap().wait();
    for r in 0..100u128 {
        let batch: Vec<Command> = (0..16u128).map(|i| command(r, i)).collect();
        d.runtime().submit(batch).unwrap().wait();
    }
    d.shutdown();
    let mut recs: Vec<Rec> = Vec::new();
    tally_wal::scan::scan(&tally_wal::storage::RealDisk, dir.path(), None, |r| {
        match recs.last_mut() {
            Some(last) if last.offset == r.offset && last.file == r.file => last.count += 1,
            _ => recs.push(Rec {
                file: r.file.to_path_buf(),
                offset: r.offset,
                len: 0,
                seq: r.header.seq,
                count: 1,
            }),
        }
        Ok(())
    })
    .unwrap();
    for r in &mut recs {
        let bytes = std::fs::read(&r.file).unwrap();
        r.len = RecordHeader::decode(&bytes[r.offset..]).total_len();
    }
    (dir, recs)
}

/// Commands in the log.
fn commands(recs: &[Rec]) -> u64 {
    recs.iter().map(|r| r.count).sum()
}

fn copy(src: &Path) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.path().join(e.file_name())).unwrap();
    }
    dst
}

fn patch(file: &Path, at: usize, f: impl FnOnce(&mut [u8])) {
    let mut bytes = std::fs::read(file).unwrap();
    f(&mut bytes[at..]);
    std::fs::write(file, bytes).unwrap();
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn audit(dir: &Path) -> (i32, serde_json::Value) {
    let out = Process::new(env!("CARGO_BIN_EXE_tally-audit"))
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

/// Startup refuses with this kind at this file and offset; the audit agrees.
fn refused(dir: &Path, kind: &str, file: &str, offset: usize, seq: u64) {
    match Durable::open(dir, config(2, 64 << 10)) {
        Err(OpenError::Corrupt(p)) => {
            assert_eq!(
                (p.kind, p.file.as_str(), p.offset, p.sequence),
                (kind, file, offset as u64, seq),
                "{p}"
            );
            assert!(p.to_string().contains(file));
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a corrupt log must not start"),
    }
    let (code, report) = audit(dir);
    assert_eq!(code, 1, "{report}");
    let p = &report["problems"][0];
    assert_eq!(p["kind"], kind, "{report}");
    assert_eq!(p["file"], file);
    assert_eq!(p["offset"], offset as u64);
    assert_eq!(p["sequence"], seq);
    assert_eq!(report["clean"], false);
}

#[test]
fn clean_log_audits_clean() {
    let (dir, recs) = build();
    let (code, report) = audit(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["records"], commands(&recs));
    let last = recs.last().unwrap();
    assert_eq!(report["last_sequence"], last.seq + last.count - 1);
    assert_eq!(report["accounts"], 1 + WALLETS as u64);
    assert_eq!(report["currencies"][0]["code"], "USD");
    assert_eq!(report["currencies"][0]["sum"], "0.00");
    assert_eq!(report["snapshots_checked"], 0);
    assert!(report["problems"].as_array().unwrap().is_empty());
    // Statement of one account: running balances, ending at its balance.
    let out = Process::new(env!("CARGO_BIN_EXE_tally-audit"))
        .arg(dir.path())
        .args(["--json", "--account", "3"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = report["statement"].as_array().unwrap();
    assert!(lines.len() > 10);
    assert_eq!(lines[0]["kind"], "account_opened");
    assert_eq!(lines[1]["kind"], "entry");
    assert_eq!(lines[1]["credit"], "100.00");
    assert_eq!(lines[1]["balance"], "100.00");
    let d = open(dir.path(), 2);
    let balance = d.runtime().account(3).unwrap().balance();
    assert_eq!(
        lines.last().unwrap()["balance"],
        tally_engine::amount::format_balance(balance, 2)
    );
}

#[test]
fn flipped_byte_in_the_middle_is_refused() {
    let (dir, recs) = build();
    let victim = &recs[20];
    let d = copy(dir.path());
    let file = d.path().join(name(&victim.file));
    patch(&file, victim.offset + RECORD_HEADER_BYTES + 3, |b| {
        b[0] ^= 0x40
    });
    refused(
        d.path(),
        "bad_crc",
        &name(&victim.file),
        victim.offset,
        victim.seq,
    );
}

#[test]
fn deleted_segment_is_refused() {
    let (dir, recs) = build();
    let files: Vec<_> =
        tally_wal::scan::segment_files(&tally_wal::storage::RealDisk, dir.path()).unwrap();
    assert!(files.len() >= 3, "{}", files.len());
    let d = copy(dir.path());
    std::fs::remove_file(d.path().join(name(&files[1].1))).unwrap();
    let first_of_third = recs
        .iter()
        .find(|r| name(&r.file) == name(&files[1].1))
        .unwrap()
        .seq;
    let _ = first_of_third;
    match Durable::open(d.path(), config(2, 64 << 10)) {
        Err(OpenError::Corrupt(p)) => {
            assert_eq!(p.kind, "segment_missing");
            assert_eq!(p.file, name(&files[2].1));
            assert!(p.message.contains(&name(&files[1].1)), "{p}");
        }
        _ => panic!("a log with a missing segment must not start"),
    }
    let (code, report) = audit(d.path());
    assert_eq!(code, 1);
    assert_eq!(report["problems"][0]["kind"], "segment_missing");
}

#[test]
fn reordered_records_are_refused() {
    let (dir, recs) = build();
    // Two neighbours of equal length in one segment: swap their bytes.
    let i = (5..recs.len() - 1)
        .find(|&i| recs[i].len == recs[i + 1].len && recs[i].file == recs[i + 1].file)
        .unwrap();
    let (a, b) = (&recs[i], &recs[i + 1]);
    let d = copy(dir.path());
    let file = d.path().join(name(&a.file));
    let mut bytes = std::fs::read(&file).unwrap();
    let first = bytes[a.offset..a.offset + a.len].to_vec();
    let second = bytes[b.offset..b.offset + b.len].to_vec();
    bytes[a.offset..a.offset + a.len].copy_from_slice(&second);
    bytes[b.offset..b.offset + b.len].copy_from_slice(&first);
    std::fs::write(&file, bytes).unwrap();
    refused(d.path(), "sequence_gap", &name(&a.file), a.offset, a.seq);
}

#[test]
fn edited_record_with_fixed_checksum_breaks_the_hash_chain() {
    let (dir, recs) = build();
    let victim = &recs[30];
    let d = copy(dir.path());
    let file = d.path().join(name(&victim.file));
    let mut bytes = std::fs::read(&file).unwrap();
    let at = victim.offset;
    let mut h = RecordHeader::decode(&bytes[at..]);
    let body_end = at + RECORD_HEADER_BYTES + h.body_len as usize;
    // Change the timestamp and recompute the CRC, as a naive forger would.
    h.first_timestamp += 1;
    let chain = h.chain;
    h.seal(&[0u8; 32], &bytes[at + RECORD_HEADER_BYTES..body_end]);
    h.chain = chain;
    let body = bytes[at + RECORD_HEADER_BYTES..body_end].to_vec();
    let mut fixed = [0u8; RECORD_HEADER_BYTES];
    h.encode(&mut fixed);
    // Recompute the CRC over the header with the original chain.
    let mut crc = crc32c::crc32c(&fixed[0..40]);
    crc = crc32c::crc32c_append(crc, &chain);
    crc = crc32c::crc32c_append(crc, &body);
    fixed[72..76].copy_from_slice(&crc.to_le_bytes());
    bytes[at..at + RECORD_HEADER_BYTES].copy_from_slice(&fixed);
    std::fs::write(&file, bytes).unwrap();
    refused(
        d.path(),
        "broken_hash_chain",
        &name(&victim.file),
        victim.offset,
        victim.seq,
    );
}

#[test]
fn truncated_segment_file_is_refused() {
    let (dir, recs) = build();
    let d = copy(dir.path());
    let file = d.path().join(name(&recs[0].file));
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    match Durable::open(d.path(), config(2, 64 << 10)) {
        Err(OpenError::Corrupt(p)) => assert_eq!(
            (p.kind, p.file.as_str()),
            ("bad_segment_header", name(&recs[0].file).as_str())
        ),
        _ => panic!("a truncated segment must not start"),
    }
    assert_eq!(audit(d.path()).0, 1);
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let (dir, recs) = build();
    let last = recs.last().unwrap();
    let d = copy(dir.path());
    let file = d.path().join(name(&last.file));
    // The last write stopped halfway: its second half never reached the file.
    patch(&file, last.offset + last.len / 2, |b| {
        b[..last.len - last.len / 2].fill(0)
    });
    let (code, report) = audit(d.path());
    assert_eq!(
        code, 0,
        "a torn tail is a warning, not corruption: {report}"
    );
    assert_eq!(report["warnings"][0]["kind"], "torn_tail");
    assert_eq!(report["warnings"][0]["offset"], last.offset as u64);
    assert_eq!(report["records"], commands(&recs) - last.count);
    let (db, rec) = Durable::open(d.path(), config(2, 64 << 10)).unwrap();
    let t = rec.truncated.clone().expect("torn tail reported");
    assert_eq!((t.offset, t.sequence), (last.offset, last.seq));
    assert!(rec.describe().contains("truncated a torn tail"));
    assert_eq!(rec.last_seq, last.seq - 1);
    // The ledger goes on from there; the cut bytes are gone.
    assert!(db.runtime().execute(command(500, 1)).is_ok());
    db.shutdown();
    let (_db, rec) = Durable::open(d.path(), config(2, 64 << 10)).unwrap();
    assert!(rec.truncated.is_none());
    assert_eq!(rec.last_seq, last.seq);
}

#[test]
fn unreadable_input_exits_2() {
    let out = Process::new(env!("CARGO_BIN_EXE_tally-audit"))
        .arg("/nonexistent/tally")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreadable"));
}

#[test]
fn record_whose_header_never_landed_is_a_torn_tail() {
    // memcpy may write a record's end before its start: the body is there,
    // the header is still zeros.
    let (dir, recs) = build();
    let last = recs.last().unwrap();
    let d = copy(dir.path());
    let file = d.path().join(name(&last.file));
    patch(&file, last.offset, |b| b[..RECORD_HEADER_BYTES].fill(0));
    let (code, report) = audit(d.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["warnings"][0]["kind"], "torn_tail");
    let (db, rec) = Durable::open(d.path(), config(2, 64 << 10)).unwrap();
    assert_eq!(rec.truncated.as_ref().map(|t| t.offset), Some(last.offset));
    assert_eq!(rec.last_seq, last.seq - 1);
    db.shutdown();
    // But a zeroed header with complete records after it, whose watermarks
    // say it was durable (each batch was synced before the next), is the
    // loss of acknowledged records.
    let d = copy(dir.path());
    let victim = &recs[recs.len() - 3];
    assert_eq!(
        victim.file, last.file,
        "needs three records in the last segment"
    );
    patch(&d.path().join(name(&victim.file)), victim.offset, |b| {
        b[..RECORD_HEADER_BYTES].fill(0)
    });
    assert!(matches!(
        Durable::open(d.path(), config(2, 64 << 10)),
        Err(OpenError::Corrupt(_))
    ));
    assert_eq!(audit(d.path()).0, 1);
}

#[test]
fn torn_tail_before_an_empty_rotated_segment() {
    // The process died after rotating to a new segment, while the old one's
    // last record was incomplete and before any record reached the new one.
    let (dir, recs) = build();
    let files = tally_wal::scan::segment_files(&tally_wal::storage::RealDisk, dir.path()).unwrap();
    let (last_file, prev_file) = (&files[files.len() - 1].1, &files[files.len() - 2].1);
    let d = copy(dir.path());
    // Empty the newest segment's records (keep its header) ...
    let newest = d.path().join(name(last_file));
    let first_in_newest = recs
        .iter()
        .find(|r| name(&r.file) == name(last_file))
        .unwrap();
    patch(&newest, first_in_newest.offset, |b| b.fill(0));
    // ... and tear the previous segment's last record.
    let victim = recs
        .iter()
        .rfind(|r| name(&r.file) == name(prev_file))
        .unwrap();
    patch(
        &d.path().join(name(prev_file)),
        victim.offset + RECORD_HEADER_BYTES,
        |b| b[..8].fill(0xee),
    );
    let (db, rec) = Durable::open(d.path(), config(2, 64 << 10)).unwrap();
    let t = rec.truncated.clone().expect("torn tail");
    assert_eq!(
        (name(&t.file), t.offset, t.sequence),
        (name(prev_file), victim.offset, victim.seq)
    );
    assert_eq!(t.later_segments.len(), 1);
    assert!(
        !newest.exists(),
        "the empty segment after the tear is removed"
    );
    assert!(db.runtime().execute(command(600, 1)).is_ok());
    db.shutdown();
    let (_db, rec) = Durable::open(d.path(), config(2, 64 << 10)).unwrap();
    assert_eq!(rec.last_seq, victim.seq);
}
