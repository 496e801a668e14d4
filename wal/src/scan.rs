//! Reads a log back and proves it intact: segment headers, record framing,
//! CRC32C, the BLAKE3 hash chain (within and across segments), sequence
//! continuity, and the decoding of every command. Damage is a torn tail (the
//! unacknowledged end of an interrupted write) unless a valid record after it
//! carries a durable watermark at or past the damaged sequence: then records
//! that were acknowledged were lost, and the scan refuses, naming file,
//! offset and sequence.

use crate::format::*;
use crate::problem::{file_label, Problem};
use crate::record;
use crate::segment::{SegmentReader, READ_CHUNK};
use crate::storage::Storage;
use std::path::{Path, PathBuf};
use tally_engine::Command;

/// One command of a record, validated.
pub struct LogRecord<'a> {
    pub header: CommandHeader,
    pub command: Command,
    pub file: &'a Path,
    /// The index of that file's segment.
    pub segment: u64,
    /// Offset of the record that holds it.
    pub offset: usize,
    /// That record's durable watermark: every sequence up to it was synced
    /// before the record was written.
    pub watermark: u64,
}

/// A record cut short by a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: usize,
    pub sequence: u64,
    pub reason: String,
    /// Segments after the damaged one: they hold no valid record (they were
    /// created by a rotation whose records never completed).
    pub later_segments: Vec<PathBuf>,
}

/// Where the log ends.
#[derive(Clone, Debug)]
pub struct LogEnd {
    /// Segments in order, with their headers.
    pub segments: Vec<(PathBuf, SegmentHeader)>,
    pub records: u64,
    /// Sequence number of the last record (`first_seq - 1` when none).
    pub last_seq: u64,
    pub last_timestamp: u64,
    /// Chain value after the last record read (at `last_seq` when the scan
    /// ran to the end of the log or stopped at a record's end).
    pub chain: Hash,
    /// Offset just past the last good record in the last segment.
    pub end_offset: usize,
    /// The highest durable watermark of the records read: every sequence up
    /// to it was durable when a record read was appended.
    pub witnessed: u64,
    /// Where in the last segment the records start that no record read
    /// witnesses as durable (`end_offset` when there are none). They may be
    /// only in the page cache, even after a sync of the file returned: a
    /// failed `fdatasync` marks the pages it could not write clean, and a
    /// process started after it still reads them. Resuming writes them
    /// again before its first sync (see `LogWriter::resume`).
    pub unwitnessed_offset: usize,
    pub torn: Option<TornTail>,
}

/// The segment files of a directory, ordered by index.
pub fn segment_files(store: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>, Problem> {
    let entries = store.list(dir).map_err(|e| {
        Problem::new(
            "unreadable",
            dir.display().to_string(),
            0,
            0,
            format!("cannot list the directory: {e}"),
        )
    })?;
    let mut v = Vec::new();
    for path in entries {
        if let Some(index) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment_index)
        {
            v.push((index, path));
        }
    }
    v.sort();
    Ok(v)
}

/// Scans the log in `dir`, calling `visit` for every valid record in order.
/// `start` gives the expected first sequence number and chain value (from a
/// snapshot); `None` means from genesis (sequence 1).
pub fn scan(
    store: &dyn Storage,
    dir: &Path,
    start: Option<ScanStart>,
    visit: impl FnMut(&LogRecord) -> Result<(), Problem>,
) -> Result<LogEnd, Problem> {
    scan_until(store, dir, start, u64::MAX, visit)
}

/// Like `scan`, but stops after the record with sequence `until` (for reading
/// a log that is being appended to: only up to what is known durable).
pub fn scan_until(
    store: &dyn Storage,
    dir: &Path,
    start: Option<ScanStart>,
    until: u64,
    mut visit: impl FnMut(&LogRecord) -> Result<(), Problem>,
) -> Result<LogEnd, Problem> {
    scan_owned(store, dir, start, until, |rec| visit(&rec))
}

/// Where a scan starts when not at the log's genesis: a segment, from its
/// header the sequence of its first record and the chain before it. The
/// segments before it are not read (archived, or behind a snapshot and
/// the history's runs: [`crate::durable::start_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanStart {
    pub segment: u64,
    pub first_seq: u64,
    pub prev_chain: Hash,
}

/// [`scan_until`], handing each command over by value.
fn scan_owned(
    store: &dyn Storage,
    dir: &Path,
    start: Option<ScanStart>,
    until: u64,
    mut visit: impl FnMut(LogRecord) -> Result<(), Problem>,
) -> Result<LogEnd, Problem> {
    let mut files = segment_files(store, dir)?;
    if let Some(s) = start {
        // The segments before the start are not read.
        files.retain(|(index, _)| *index >= s.segment);
    }
    let (mut next_seq, mut chain) = start.map_or((1, genesis()), |s| (s.first_seq, s.prev_chain));
    let mut end = LogEnd {
        segments: Vec::new(),
        records: 0,
        last_seq: next_seq - 1,
        last_timestamp: 0,
        chain,
        end_offset: SEGMENT_HEADER_BYTES,
        witnessed: 0,
        unwitnessed_offset: SEGMENT_HEADER_BYTES,
        torn: None,
    };
    // The records of the segment being read that no record read so far
    // witnesses: (offset, last sequence).
    let mut unwitnessed: std::collections::VecDeque<(usize, u64)> = Default::default();
    for (n, (index, path)) in files.iter().enumerate() {
        let name = file_label(path);
        let bad = |kind, offset: usize, seq, msg: String| {
            Problem::new(kind, name.clone(), offset as u64, seq, msg)
        };
        if n > 0 && *index != files[n - 1].0 + 1 {
            let missing = segment_name(files[n - 1].0 + 1);
            let msg = format!("{missing} is missing before this segment");
            return Err(bad("segment_missing", 0, next_seq, msg));
        }
        let mut reader =
            SegmentReader::open(store, path).map_err(|e| bad("unreadable", 0, 0, e.to_string()))?;
        let len = reader.len();
        let first = n == 0 && start.is_none();
        let header = check_segment_header(&mut reader, &name, *index, first, next_seq, &chain)?;
        let mut at = SEGMENT_HEADER_BYTES;
        unwitnessed.clear();
        while at + RECORD_HEADER_BYTES <= len {
            let h = match read_slot(&mut reader, at)? {
                Slot::End => break,
                Slot::Record(h) => h,
                Slot::Damaged(damage) => {
                    let later = &files[n + 1..];
                    let torn =
                        classify_damage(store, &mut reader, path, at, next_seq, damage, later)?;
                    end.torn = Some(torn);
                    break;
                }
            };
            if h.first_seq != next_seq {
                let msg = format!(
                    "record starts at sequence {}, expected {next_seq}",
                    h.first_seq
                );
                return Err(bad("sequence_gap", at, next_seq, msg));
            }
            let body = reader.bytes(at + RECORD_HEADER_BYTES, h.body_len as usize)?;
            if !h.chain_ok(&chain, body) {
                return Err(bad("broken_hash_chain", at, h.first_seq, "record does not continue the hash chain (edited, removed or reordered records)".into()));
            }
            let commands =
                record::decode_batch(&h, body).map_err(|m| bad("bad_body", at, h.first_seq, m))?;
            for (header, command) in commands {
                if header.seq > until {
                    break;
                }
                visit(LogRecord {
                    header,
                    command,
                    file: path,
                    segment: *index,
                    offset: at,
                    watermark: h.watermark,
                })?;
                next_seq = header.seq + 1;
                end.records += 1;
                end.last_timestamp = header.timestamp;
            }
            chain = h.chain;
            end.witnessed = end.witnessed.max(h.watermark);
            // In order, and the witness only grows: drop from the front.
            unwitnessed.push_back((at, h.last_seq()));
            while unwitnessed
                .front()
                .is_some_and(|&(_, last)| last <= end.witnessed)
            {
                unwitnessed.pop_front();
            }
            // The padding after the last record may run past the end of a
            // segment whose size is not a multiple of the alignment.
            at = (at + h.total_len()).min(len);
            if next_seq > until {
                break;
            }
        }
        end.segments.push((path.clone(), header));
        end.end_offset = at;
        end.unwitnessed_offset = unwitnessed.front().map_or(at, |&(o, _)| o);
        if end.torn.is_some() || next_seq > until {
            break;
        }
    }
    end.last_seq = next_seq - 1;
    end.chain = chain;
    Ok(end)
}

/// Checks a segment's header against its file (name, length) and the log
/// before it (`next_seq`, `chain`; `first`: the log's first segment, with no
/// snapshot before it).
fn check_segment_header(
    reader: &mut SegmentReader,
    name: &str,
    index: u64,
    first: bool,
    next_seq: u64,
    chain: &Hash,
) -> Result<SegmentHeader, Problem> {
    let bad = |kind, offset: u64, seq, msg: String| Problem::new(kind, name, offset, seq, msg);
    let len = reader.len();
    let header = SegmentHeader::decode(reader.header_bytes()?)
        .map_err(|m| bad("bad_segment_header", 0, 0, m))?;
    if header.index != index {
        let msg = format!("header says index {}, file name says {index}", header.index);
        return Err(bad("bad_segment_header", 16, 0, msg));
    }
    if header.size != len as u64 {
        let msg = format!("header says {} bytes, file has {len}", header.size);
        return Err(bad("bad_segment_header", 64, 0, msg));
    }
    if first && (header.first_seq != 1 || header.prev_chain != genesis()) {
        let msg = "the log does not start at sequence 1 and no snapshot covers what is before";
        return Err(bad("segment_missing", 0, header.first_seq, msg.into()));
    }
    if header.first_seq != next_seq {
        let msg = format!(
            "segment starts at sequence {}, expected {next_seq}",
            header.first_seq
        );
        return Err(bad("sequence_gap", 24, next_seq, msg));
    }
    if header.prev_chain != *chain {
        let msg = "segment does not continue the previous segment's hash chain";
        return Err(bad("broken_hash_chain", 32, next_seq, msg.into()));
    }
    Ok(header)
}

/// What lies at a record boundary.
enum Slot {
    /// The zero header that ends a segment's records, zeros after it.
    End,
    /// A record whose framing, checksum and padding are good.
    Record(RecordHeader),
    Damaged(Damage),
}

/// A record that cannot be read, and what its header still says.
struct Damage {
    kind: &'static str,
    message: String,
    header: RecordHeader,
    zero: bool,
    well_formed: bool,
}

/// Reads the record boundary at `at` (a header fits before the end).
fn read_slot(reader: &mut SegmentReader, at: usize) -> Result<Slot, Problem> {
    let len = reader.len();
    let head = reader.bytes(at, RECORD_HEADER_BYTES)?;
    let zero = head.iter().all(|&b| b == 0);
    let well_formed = RecordHeader::well_formed(head);
    let h = RecordHeader::decode(head);
    let failure: Option<(&'static str, String)> = if zero {
        // End of this segment's records. The rest must be zeros, or the
        // remains of a write that never completed.
        match first_nonzero(reader, at)? {
            None => return Ok(Slot::End),
            Some(_) => Some((
                "bad_record",
                "a record whose header never reached the file".into(),
            )),
        }
    } else if !well_formed {
        Some((
            "bad_record",
            format!("unknown record kind {} or nonzero reserved bytes", h.kind),
        ))
    } else if h.body_len as usize > MAX_READ_RECORD_BODY
        || at + RECORD_HEADER_BYTES + h.body_len as usize > len
    {
        Some((
            "bad_record",
            format!("record length {} runs past the segment", h.body_len),
        ))
    } else if !h.crc_ok(reader.bytes(at + RECORD_HEADER_BYTES, h.body_len as usize)?) {
        Some(("bad_crc", "record checksum mismatch".into()))
    } else if !padding_is_zero(reader, &h, at)? {
        Some(("bad_record", "nonzero padding after the record".into()))
    } else {
        None
    };
    Ok(match failure {
        None => Slot::Record(h),
        Some((kind, message)) => Slot::Damaged(Damage {
            kind,
            message,
            header: h,
            zero,
            well_formed,
        }),
    })
}

/// Damage at `at` in `path` is a torn tail, unless a valid later record
/// (here or in the `later` segments) says the log was durable past
/// `next_seq`: then acknowledged records were lost, and the scan refuses.
fn classify_damage(
    store: &dyn Storage,
    reader: &mut SegmentReader,
    path: &Path,
    at: usize,
    next_seq: u64,
    damage: Damage,
    later: &[(u64, PathBuf)],
) -> Result<TornTail, Problem> {
    let (len, h) = (reader.len(), &damage.header);
    // Where to look for a later record: after the damaged one when its
    // header is intact and only its body is damaged (a record-shaped text
    // inside its body is no proof), else from the next boundary.
    let fits = at + h.total_len() <= len && h.body_len as usize <= MAX_READ_RECORD_BODY;
    let from = if damage.zero {
        at
    } else if damage.well_formed && fits && h.first_seq == next_seq {
        at + h.total_len()
    } else {
        at + RECORD_ALIGN
    };
    match acknowledged_after(store, reader, from, later, next_seq)? {
        None => Ok(TornTail {
            file: path.to_path_buf(),
            offset: at,
            sequence: next_seq,
            reason: damage.message,
            later_segments: self::later(later),
        }),
        Some(w) => {
            let msg = format!(
                "{}; a later record says the log was durable up to sequence {w}, \
                 so acknowledged records were lost here",
                damage.message
            );
            Err(Problem::new(
                damage.kind,
                file_label(path),
                at as u64,
                next_seq,
                msg,
            ))
        }
    }
}

/// Whether the padding between the record at `at` and the next 16-byte
/// boundary is zero (it is outside the checksum).
fn padding_is_zero(
    reader: &mut SegmentReader,
    h: &RecordHeader,
    at: usize,
) -> Result<bool, Problem> {
    let end = at + RECORD_HEADER_BYTES + h.body_len as usize;
    let pad = (at + h.total_len()).min(reader.len()) - end;
    Ok(pad == 0 || reader.bytes(end, pad)?.iter().all(|&b| b == 0))
}

/// The offset of the first nonzero byte at or after `from`, if any.
fn first_nonzero(reader: &mut SegmentReader, from: usize) -> Result<Option<usize>, Problem> {
    let mut at = from;
    while at < reader.len() {
        let chunk = reader.bytes(at, READ_CHUNK)?;
        if let Some(p) = chunk.iter().position(|&b| b != 0) {
            return Ok(Some(at + p));
        }
        at += chunk.len();
    }
    Ok(None)
}

/// The highest durable watermark of the valid records (well formed, checksum
/// verified) starting at or after `from` in this segment or anywhere in the
/// later ones, if it is `next_seq` or more: the proof that the damage before
/// them swallowed acknowledged records. A later segment that cannot be read
/// counts as holding such a record: never discard what cannot be examined.
fn acknowledged_after(
    store: &dyn Storage,
    reader: &mut SegmentReader,
    from: usize,
    later: &[(u64, PathBuf)],
    next_seq: u64,
) -> Result<Option<u64>, Problem> {
    let mut best = max_watermark(reader, from, next_seq)?;
    for (_, path) in later {
        let w = match SegmentReader::open(store, path) {
            Ok(mut r) if r.len() > SEGMENT_HEADER_BYTES => {
                max_watermark(&mut r, SEGMENT_HEADER_BYTES, next_seq).unwrap_or(Some(u64::MAX))
            }
            Ok(_) => None,
            Err(_) => Some(u64::MAX),
        };
        best = best.max(w);
    }
    Ok(best.filter(|&w| w >= next_seq))
}

/// The highest watermark of the valid records that start at or after `from`
/// (on a record boundary) and after sequence `after`, with a watermark
/// below their own first sequence (as every record the writer makes has).
fn max_watermark(
    reader: &mut SegmentReader,
    from: usize,
    after: u64,
) -> Result<Option<u64>, Problem> {
    let len = reader.len();
    let mut at = align(from);
    let mut best = None;
    while at + RECORD_HEADER_BYTES <= len {
        let head = reader.bytes(at, RECORD_HEADER_BYTES)?;
        if RecordHeader::well_formed(head) {
            let h = RecordHeader::decode(head);
            let body_len = h.body_len as usize;
            let body_at = at + RECORD_HEADER_BYTES;
            if body_len <= MAX_READ_RECORD_BODY
                && body_at + body_len <= len
                && h.first_seq > after
                && h.watermark < h.first_seq
                && h.crc_ok(reader.bytes(body_at, body_len)?)
            {
                best = best.max(Some(h.watermark));
                at += h.total_len();
                continue;
            }
        }
        at += RECORD_ALIGN;
    }
    Ok(best)
}

fn later(files: &[(u64, PathBuf)]) -> Vec<PathBuf> {
    files.iter().map(|(_, p)| p.clone()).collect()
}

/// Records handed from the scanning thread to the replaying one at a time.
const PIPELINE_CHUNK: usize = 1_024;

/// Like `scan_until`, but verification and decoding run on a helper thread
/// while `visit` runs on the caller's, so a replay uses two cores. Records
/// still reach `visit` one at a time, in order; the first problem from either
/// side ends the scan. `observe` sees each record first, on the helper
/// thread (the history index is built there, beside the decoding).
pub fn scan_pipelined(
    store: &dyn Storage,
    dir: &Path,
    start: Option<ScanStart>,
    until: u64,
    mut observe: impl FnMut(&LogRecord) + Send,
    mut visit: impl FnMut(&LogRecord) -> Result<(), Problem>,
) -> Result<LogEnd, Problem> {
    type Chunk = Vec<(
        CommandHeader,
        Command,
        u64,
        usize,
        u64,
        std::sync::Arc<PathBuf>,
    )>;
    let (tx, rx) = crossbeam_channel::bounded::<Chunk>(8);
    std::thread::scope(|scope| {
        let scanner = scope.spawn(move || {
            let mut chunk: Chunk = Vec::with_capacity(PIPELINE_CHUNK);
            let mut current: Option<std::sync::Arc<PathBuf>> = None;
            let end = scan_owned(store, dir, start, until, |rec| {
                let path = match &current {
                    // Bytes, not path components: this runs per command.
                    Some(p) if p.as_os_str() == rec.file.as_os_str() => p.clone(),
                    _ => {
                        let p = std::sync::Arc::new(rec.file.to_path_buf());
                        current = Some(p.clone());
                        p
                    }
                };
                let seq = rec.header.seq;
                observe(&rec);
                chunk.push((
                    rec.header,
                    rec.command,
                    rec.segment,
                    rec.offset,
                    rec.watermark,
                    path,
                ));
                if chunk.len() == PIPELINE_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(PIPELINE_CHUNK));
                    // The replaying side hung up: it found a problem of its own.
                    tx.send(full)
                        .map_err(|_| Problem::new("stopped", "", 0, seq, "replay stopped"))?;
                }
                Ok(())
            });
            if !chunk.is_empty() {
                let _ = tx.send(chunk);
            }
            end
        });
        let mut failure = None;
        for chunk in rx.iter() {
            for (header, command, segment, offset, watermark, file) in chunk {
                if let Err(p) = visit(&LogRecord {
                    header,
                    command,
                    file: &file,
                    segment,
                    offset,
                    watermark,
                }) {
                    failure = Some(p);
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
        }
        drop(rx);
        let scanned = scanner.join().unwrap_or_else(|_| {
            Err(Problem::new(
                "unreadable",
                "",
                0,
                0,
                "the scanning thread failed",
            ))
        });
        match (failure, scanned) {
            (Some(p), _) => Err(p),
            (None, r) => r,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogWriter;
    use crate::record::Item;
    use crate::storage::RealDisk;
    use tally_engine::{CurrencyCode, Entry, Outcome};

    /// Records of four transfers each, from sequence 1, with these watermarks.
    fn log(dir: &Path, watermarks: &[u64], segment: u64) -> Vec<(PathBuf, usize)> {
        let usd = CurrencyCode::parse("USD").unwrap();
        let mut w = LogWriter::create(crate::storage::real(), dir, segment).unwrap();
        for (r, &mark) in watermarks.iter().enumerate() {
            let first = 1 + 4 * r as u64;
            let cmds: Vec<Command> = (first..first + 4)
                .map(|s| Entry::transfer(s as u128, 1, 2, 5, usd).into())
                .collect();
            let outs: Vec<Outcome> = (first..first + 4)
                .map(|seq| Outcome::Committed {
                    seq,
                    timestamp: seq,
                })
                .collect();
            let items: Vec<Item> = cmds
                .iter()
                .zip(&outs)
                .enumerate()
                .map(|(i, (command, outcome))| Item {
                    command,
                    seq: first + i as u64,
                    timestamp: first + i as u64,
                    outcome,
                    wire: None,
                })
                .collect();
            w.append_batch(&items, mark).unwrap();
        }
        w.sync().unwrap();
        let mut at = Vec::new();
        scan(&RealDisk, dir, None, |r| {
            if r.header.seq % 4 == 1 {
                at.push((r.file.to_path_buf(), r.offset));
            }
            Ok(())
        })
        .unwrap();
        at
    }

    fn flip(path: &Path, at: usize) {
        let mut b = std::fs::read(path).unwrap();
        b[at] ^= 0x10;
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn damage_inside_a_group_that_was_never_acknowledged_is_a_torn_tail() {
        // The page cache wrote the group's later pages but not an earlier
        // one: the later records are intact, but none says the damaged one
        // was durable (they were all appended after sequence 4 was synced).
        let dir = tempfile::tempdir().unwrap();
        let at = log(dir.path(), &[0, 4, 4, 4], 1 << 16);
        flip(&at[1].0, at[1].1 + RECORD_HEADER_BYTES + 10);
        let end = scan(&RealDisk, dir.path(), None, |_| Ok(())).unwrap();
        let torn = end.torn.expect("a torn tail");
        assert_eq!((torn.offset, torn.sequence), (at[1].1, 5));
        assert_eq!(end.last_seq, 4);
    }

    #[test]
    fn damage_before_a_record_that_proves_it_durable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // The last record was appended after sequence 12 was synced: the
        // records before it were acknowledged.
        let at = log(dir.path(), &[0, 4, 4, 12], 1 << 16);
        flip(&at[1].0, at[1].1 + RECORD_HEADER_BYTES + 10);
        let p = scan(&RealDisk, dir.path(), None, |_| Ok(())).expect_err("refused");
        assert_eq!(
            (p.kind, p.offset, p.sequence),
            ("bad_crc", at[1].1 as u64, 5)
        );
        assert!(p.message.contains("acknowledged"), "{p}");
        // A zeroed header in the same place: the same verdict.
        let dir = tempfile::tempdir().unwrap();
        let at = log(dir.path(), &[0, 4, 8, 12], 1 << 16);
        let mut b = std::fs::read(&at[2].0).unwrap();
        b[at[2].1..at[2].1 + RECORD_HEADER_BYTES].fill(0);
        std::fs::write(&at[2].0, b).unwrap();
        let p = scan(&RealDisk, dir.path(), None, |_| Ok(())).expect_err("refused");
        assert_eq!((p.offset, p.sequence), (at[2].1 as u64, 9));
    }

    #[test]
    fn nonzero_padding_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let usd = CurrencyCode::parse("USD").unwrap();
        let mut w = LogWriter::create(crate::storage::real(), dir.path(), 1 << 16).unwrap();
        // A reference of 3 bytes: the record ends 13 bytes before a boundary.
        let odd: Command = Entry::transfer(1, 1, 2, 5, usd)
            .with_reference("abc")
            .into();
        let plain: Command = Entry::transfer(2, 1, 2, 5, usd).into();
        let done = |seq| Outcome::Committed {
            seq,
            timestamp: seq,
        };
        let (o1, o2) = (done(1), done(2));
        let item = |command, seq, outcome| Item {
            command,
            seq,
            timestamp: seq,
            outcome,
            wire: None,
        };
        w.append_batch(&[item(&odd, 1, &o1)], 0).unwrap();
        w.append_batch(&[item(&plain, 2, &o2)], 1).unwrap();
        w.sync().unwrap();
        drop(w);
        let path = dir.path().join(segment_name(0));
        let mut b = std::fs::read(&path).unwrap();
        let end = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 56 + 2 * 72 + 3;
        assert_eq!(b[end], 0);
        b[end + 4] = 7;
        std::fs::write(&path, b).unwrap();
        let p = scan(&RealDisk, dir.path(), None, |_| Ok(())).expect_err("refused");
        assert_eq!((p.kind, p.sequence), ("bad_record", 1));
        assert!(p.message.contains("padding"), "{p}");
    }

    #[test]
    fn a_proof_in_a_later_segment_counts_too() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: about 150 records of four transfers per segment.
        let marks: Vec<u64> = (0..400u64).map(|r| 4 * r).collect();
        let at = log(dir.path(), &marks, 64 << 10);
        let last_of_first = at
            .iter()
            .rposition(|(f, _)| f == &at[0].0)
            .expect("records in the first segment");
        assert!(last_of_first + 1 < at.len(), "the log rotated");
        let (file, off) = &at[last_of_first];
        flip(file, off + RECORD_HEADER_BYTES + 3);
        let p = scan(&RealDisk, dir.path(), None, |_| Ok(())).expect_err("refused");
        assert_eq!(p.offset, *off as u64);
    }
}
