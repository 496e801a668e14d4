//! Reading a live log: a [`Follower`] walks the commands of a data
//! directory's records in order while the writer appends to it, up to a
//! sequence number the caller knows is durable (records at or below it are
//! complete). It checks framing, CRC32C, sequence and segment continuity,
//! and decodes every command, so a feed built on it never passes on damaged
//! data. It does not recompute the BLAKE3 hash chain (that cost a third of
//! the server's CPU under load); recovery and `tally-audit` verify the chain.
//!
//! Readers copy the file's bytes with ordinary reads (see
//! [`SegmentReader`]), never map it, and never interpret a byte of a record
//! that starts after the durable bound: the writer may be copying it at that
//! moment. (The log becomes durable a whole record at a time, so a record
//! that starts at or below the bound is complete.)

use crate::format::*;
use crate::problem::{file_label, Problem};
use crate::record;
use crate::segment::SegmentReader;
use crate::storage::{Storage, Store};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use tally_engine::Command;

/// One command read from the log, with where its record lies.
#[derive(Clone, Debug)]
pub struct OwnedRecord {
    pub header: CommandHeader,
    pub command: Command,
    pub segment: u64,
    /// Offset of the record holding it.
    pub offset: u32,
}

/// Walks a log in order, following it as it grows.
pub struct Follower {
    store: Store,
    dir: PathBuf,
    segment: u64,
    reader: Option<SegmentReader>,
    offset: usize,
    /// The sequence of the next command handed out.
    next_seq: u64,
    /// The first sequence of the next record to read from the file.
    disk_seq: u64,
    chain: Hash,
    /// Commands of the last record read, not yet handed out.
    pending: VecDeque<OwnedRecord>,
    /// The durable sequence the caller gave when the reader's buffer could
    /// last have been filled: the buffer holds the records up to it as they
    /// are for good, and may hold bytes of later ones from the middle of
    /// being written.
    buffered_until: u64,
}

impl Follower {
    /// Positioned at the first record of the first segment present.
    pub fn from_start(store: Store, dir: &Path) -> Result<Follower, Problem> {
        let files = crate::scan::segment_files(&*store, dir)?;
        let mut f = Follower {
            store,
            dir: dir.to_path_buf(),
            segment: 0,
            reader: None,
            offset: SEGMENT_HEADER_BYTES,
            next_seq: 1,
            disk_seq: 1,
            chain: genesis(),
            pending: VecDeque::new(),
            buffered_until: 0,
        };
        let Some((index, path)) = files.first() else {
            return Ok(f);
        };
        let mut reader = open(&*f.store, path)?;
        let header = segment_header(&mut reader)?;
        f.segment = *index;
        f.reader = Some(reader);
        f.next_seq = header.first_seq;
        f.disk_seq = header.first_seq;
        f.chain = header.prev_chain;
        Ok(f)
    }

    /// The sequence number the next command will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next command if its sequence is at most `until` (the caller's
    /// durable sequence), `None` when there is none yet. Interprets no byte
    /// of a record that starts after `until`, and reads again what it had
    /// buffered of a record that was not durable then.
    pub fn next(&mut self, until: u64) -> Result<Option<OwnedRecord>, Problem> {
        if self.next_seq > until {
            return Ok(None);
        }
        if self.pending.is_empty() {
            self.read_record(until)?;
        }
        let Some(rec) = self.pending.pop_front() else {
            return Ok(None);
        };
        debug_assert_eq!(rec.header.seq, self.next_seq);
        self.next_seq += 1;
        Ok(Some(rec))
    }

    /// Reads the record that starts at `disk_seq` (at most `until`).
    fn read_record(&mut self, until: u64) -> Result<(), Problem> {
        loop {
            // When the record we want was not durable when the buffer was
            // filled, what the buffer holds of it may be stale.
            let stale = self.disk_seq > self.buffered_until;
            if stale || self.reader.is_none() {
                self.buffered_until = until;
            }
            let reader = match &mut self.reader {
                Some(r) => {
                    if stale {
                        r.forget();
                    }
                    r
                }
                None => self.reader.insert(open_next(
                    &*self.store,
                    &self.dir,
                    self.segment,
                    self.disk_seq,
                    &self.chain,
                )?),
            };
            let at = self.offset;
            if segment_ends(reader, at)? {
                // A durable record we have not read lies in the next segment.
                self.segment += 1;
                self.reader = None;
                self.offset = SEGMENT_HEADER_BYTES;
                continue;
            }
            let (h, recs) = decode_at(reader, at, self.segment)?;
            if h.first_seq != self.disk_seq {
                let msg = format!(
                    "record starts at sequence {}, expected {}",
                    h.first_seq, self.disk_seq
                );
                return Err(Problem::new(
                    "sequence_gap",
                    file_label(&reader.path),
                    at as u64,
                    self.disk_seq,
                    msg,
                ));
            }
            self.chain = h.chain;
            self.disk_seq = h.last_seq() + 1;
            self.offset = (at + h.total_len()).min(reader.len());
            self.pending.extend(recs);
            return Ok(());
        }
    }
}

/// Opens segment `index`, which must continue the log at `next_seq` after
/// chain value `chain` (a durable record lies in it).
fn open_next(
    store: &dyn Storage,
    dir: &Path,
    index: u64,
    next_seq: u64,
    chain: &Hash,
) -> Result<SegmentReader, Problem> {
    let path = dir.join(segment_name(index));
    if !store.exists(&path) {
        let msg = format!("sequence {next_seq} is durable but its segment is missing");
        return Err(Problem::new(
            "segment_missing",
            file_label(&path),
            0,
            next_seq,
            msg,
        ));
    }
    let mut reader = open(store, &path)?;
    let h = segment_header(&mut reader)?;
    if h.first_seq != next_seq || h.prev_chain != *chain {
        let msg = "the segment does not continue the log";
        return Err(Problem::new(
            "sequence_gap",
            file_label(&path),
            24,
            next_seq,
            msg,
        ));
    }
    Ok(reader)
}

fn open(store: &dyn Storage, path: &Path) -> Result<SegmentReader, Problem> {
    SegmentReader::open(store, path)
        .map_err(|e| Problem::new("unreadable", file_label(path), 0, 0, e.to_string()))
}

fn segment_header(reader: &mut SegmentReader) -> Result<SegmentHeader, Problem> {
    let name = file_label(&reader.path);
    SegmentHeader::decode(reader.header_bytes()?)
        .map_err(|m| Problem::new("bad_segment_header", name, 0, 0, m))
}

/// Whether the records of the segment end before `at` (no room for a
/// header, or a header of zeros).
fn segment_ends(reader: &mut SegmentReader, at: usize) -> Result<bool, Problem> {
    if at + RECORD_HEADER_BYTES > reader.len() {
        return Ok(true);
    }
    Ok(reader
        .bytes(at, RECORD_HEADER_BYTES)?
        .iter()
        .all(|&b| b == 0))
}

/// Decodes and checks (framing, CRC, every command) the record at `at` of a
/// segment.
fn decode_at(
    reader: &mut SegmentReader,
    at: usize,
    segment: u64,
) -> Result<(RecordHeader, Vec<OwnedRecord>), Problem> {
    let name = file_label(&reader.path);
    let bad = |kind, msg: String| Problem::new(kind, name.clone(), at as u64, 0, msg);
    let len = reader.len();
    if at + RECORD_HEADER_BYTES > len {
        return Err(bad("bad_record", "no record at this offset".into()));
    }
    let head = reader.bytes(at, RECORD_HEADER_BYTES)?;
    let well_formed = RecordHeader::well_formed(head);
    let h = RecordHeader::decode(head);
    let end = at + RECORD_HEADER_BYTES + h.body_len as usize;
    if !well_formed || h.body_len as usize > MAX_READ_RECORD_BODY || end > len {
        return Err(bad(
            "bad_record",
            format!(
                "malformed record header (kind {}, length {})",
                h.kind, h.body_len
            ),
        ));
    }
    let body = reader.bytes(at + RECORD_HEADER_BYTES, h.body_len as usize)?;
    if !h.crc_ok(body) {
        return Err(bad("bad_crc", "record checksum mismatch".into()));
    }
    let commands = record::decode_batch(&h, body).map_err(|m| bad("bad_body", m))?;
    let recs = commands
        .into_iter()
        .map(|(header, command)| OwnedRecord {
            header,
            command,
            segment,
            offset: at as u32,
        })
        .collect();
    Ok((h, recs))
}

/// Reads commands in order starting at the record at (`segment`, `offset`),
/// without the hash chain (each record's checksum is verified), calling
/// `visit` until it returns false or the commands up to `until` (the
/// caller's durable sequence) are read. The record at the start must begin
/// at most at `until`.
///
/// The records after `until` may be being written while this reads: it
/// stops right after the command `until`, and never reads the header of a
/// record that starts after it. Sequence numbers must continue from the
/// record at the start.
pub fn read_from(
    store: &dyn Storage,
    dir: &Path,
    mut segment: u64,
    mut offset: u32,
    until: u64,
    mut visit: impl FnMut(OwnedRecord) -> bool,
) -> Result<(), Problem> {
    let mut expected: Option<u64> = None;
    loop {
        let path = dir.join(segment_name(segment));
        if !store.exists(&path) {
            // Records up to `until` are durable, and this one is not read
            // yet: its segment was removed (archived) or lost.
            let want = expected.unwrap_or(0);
            let msg = format!(
                "the log is durable up to sequence {until}, but the segment that holds sequence {want} is missing"
            );
            return Err(Problem::new(
                "segment_missing",
                file_label(&path),
                0,
                want,
                msg,
            ));
        }
        let mut reader = open(store, &path)?;
        let mut at = offset as usize;
        while !segment_ends(&mut reader, at)? {
            let (h, recs) = decode_at(&mut reader, at, segment)?;
            if let Some(want) = expected.filter(|&e| e != h.first_seq) {
                let msg = format!("record starts at sequence {}, expected {want}", h.first_seq);
                return Err(Problem::new(
                    "sequence_gap",
                    file_label(&path),
                    at as u64,
                    want,
                    msg,
                ));
            }
            at = (at + h.total_len()).min(reader.len());
            for rec in recs {
                let seq = rec.header.seq;
                if seq > until {
                    // Only when the caller started past its own bound.
                    return Ok(());
                }
                if !visit(rec) || seq >= until {
                    return Ok(());
                }
            }
            expected = Some(h.last_seq() + 1);
        }
        segment += 1;
        offset = SEGMENT_HEADER_BYTES as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogWriter;
    use tally_engine::{CurrencyCode, Entry, Outcome};

    fn command(i: u64) -> Command {
        let usd = CurrencyCode::parse("USD").unwrap();
        Entry::transfer(i as u128, 1, 2, 1 + i as u128, usd).into()
    }

    fn append(log: &mut LogWriter, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            let outcome = Outcome::Committed {
                seq,
                timestamp: seq,
            };
            log.append(&command(seq), seq, seq, &outcome).unwrap();
        }
        log.sync().unwrap();
    }

    /// Appends `seqs` as records of up to seven commands each.
    fn append_batches(log: &mut LogWriter, seqs: std::ops::RangeInclusive<u64>) {
        let all: Vec<u64> = seqs.collect();
        for chunk in all.chunks(7) {
            let cmds: Vec<Command> = chunk.iter().map(|&s| command(s)).collect();
            let outs: Vec<Outcome> = chunk
                .iter()
                .map(|&seq| Outcome::Committed {
                    seq,
                    timestamp: seq,
                })
                .collect();
            let items: Vec<crate::record::Item> = chunk
                .iter()
                .zip(cmds.iter().zip(&outs))
                .map(|(&seq, (command, outcome))| crate::record::Item {
                    command,
                    seq,
                    timestamp: seq,
                    outcome,
                    wire: None,
                })
                .collect();
            log.append_batch(&items, chunk[0] - 1).unwrap();
        }
        log.sync().unwrap();
    }

    /// Where each record of segment 0 starts, by sequence (of the five the
    /// test writes).
    fn offsets(dir: &Path) -> Vec<u32> {
        let mut v = Vec::new();
        read_from(
            &crate::storage::RealDisk,
            dir,
            0,
            SEGMENT_HEADER_BYTES as u32,
            5,
            |r| {
                v.push(r.offset);
                true
            },
        )
        .unwrap();
        v
    }

    fn patch(path: &Path, at: usize, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, bytes, at as u64).unwrap();
    }

    fn seqs(dir: &Path, segment: u64, offset: u32, until: u64) -> Result<Vec<u64>, Problem> {
        let mut v = Vec::new();
        read_from(
            &crate::storage::RealDisk,
            dir,
            segment,
            offset,
            until,
            |r| {
                v.push(r.header.seq);
                true
            },
        )?;
        Ok(v)
    }

    #[test]
    fn nothing_after_the_durable_bound_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::create(crate::storage::real(), dir.path(), 1 << 16).unwrap();
        append(&mut log, 1..=5);
        drop(log);
        let at = offsets(dir.path());
        // Record 4 is what a writer in the middle of copying it leaves:
        // garbage in its header and body.
        let path = dir.path().join(segment_name(0));
        patch(&path, at[3] as usize, &[0xa5; 96]);
        let start = SEGMENT_HEADER_BYTES as u32;
        assert_eq!(seqs(dir.path(), 0, start, 3), Ok(vec![1, 2, 3]));
        assert_eq!(seqs(dir.path(), 0, at[1], 3), Ok(vec![2, 3]));
        let mut f = Follower::from_start(crate::storage::real(), dir.path()).unwrap();
        let read: Vec<u64> = std::iter::from_fn(|| f.next(3).unwrap())
            .map(|r| r.header.seq)
            .collect();
        assert_eq!(read, vec![1, 2, 3]);
        assert!(f.next(3).unwrap().is_none());
        // The damage is there for whoever reads past the bound.
        assert_eq!(
            seqs(dir.path(), 0, start, 4).unwrap_err().kind,
            "bad_record"
        );
        assert_eq!(f.next(4).unwrap_err().kind, "bad_record");
        // Record 4 not written at all yet (zeros), record 5 there: a reader
        // bounded at 3 stops before the zeros; one told 5 is durable finds
        // the log ending at 3 and says so (the segment after is missing),
        // and reports the gap once record 5's bytes sit where 4 should be.
        patch(&path, at[3] as usize, &[0; 96]);
        assert_eq!(seqs(dir.path(), 0, start, 3), Ok(vec![1, 2, 3]));
        let lost = seqs(dir.path(), 0, start, 5).unwrap_err();
        assert_eq!((lost.kind, lost.sequence), ("segment_missing", 4), "{lost}");
        let len = (at[4] - at[3]) as usize;
        let fifth = std::fs::read(&path).unwrap()[at[4] as usize..][..len].to_vec();
        patch(&path, at[3] as usize, &fifth);
        assert_eq!(
            seqs(dir.path(), 0, start, 5).unwrap_err().kind,
            "sequence_gap"
        );
    }

    #[test]
    fn follower_sees_records_that_became_durable_after_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::create(crate::storage::real(), dir.path(), 1 << 16).unwrap();
        append(&mut log, 1..=2);
        let mut f = Follower::from_start(crate::storage::real(), dir.path()).unwrap();
        assert_eq!(f.next(2).unwrap().unwrap().header.seq, 1);
        assert_eq!(f.next(2).unwrap().unwrap().header.seq, 2);
        assert!(f.next(2).unwrap().is_none());
        // The follower's buffer holds zeros where the next records now are;
        // it must read them again, across rotations too.
        let mut next = 3;
        for round in 0..40u64 {
            let last = next + 20 + round * 3;
            append_batches(&mut log, next..=last);
            while let Some(r) = f.next(last).unwrap() {
                assert_eq!(r.header.seq, next);
                assert_eq!(r.command, command(next));
                next += 1;
            }
            assert_eq!(next, last + 1);
        }
        assert!(
            crate::scan::segment_files(&crate::storage::RealDisk, dir.path())
                .unwrap()
                .len()
                > 1,
            "the log rotated while followed"
        );
    }
}
