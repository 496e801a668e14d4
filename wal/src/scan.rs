//! Reads a log back and proves it intact: segment headers, record framing,
//! CRC32C, the BLAKE3 hash chain (within and across segments), sequence
//! continuity, and rkyv validation of every body. Damage with no valid record
//! anywhere after it is a torn tail (a write that never completed: records
//! become durable in order, so an acknowledged record after it would be
//! intact); damage with a valid record after it is corruption, reported with
//! file, offset and sequence.

use crate::format::*;
use crate::problem::{file_label, Problem};
use crate::record;
use crate::segment::{SegmentReader, READ_CHUNK};
use std::path::{Path, PathBuf};
use tally_engine::Command;

/// One record, validated.
pub struct LogRecord<'a> {
    pub header: RecordHeader,
    pub command: Command,
    pub file: &'a Path,
    pub offset: usize,
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
    /// Chain value after the last record.
    pub chain: Hash,
    /// Offset just past the last good record in the last segment.
    pub end_offset: usize,
    pub torn: Option<TornTail>,
}

/// The segment files of a directory, ordered by index.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Problem> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Problem::new(
            "unreadable",
            dir.display().to_string(),
            0,
            0,
            format!("cannot list the directory: {e}"),
        )
    })?;
    let mut v = Vec::new();
    for entry in entries.flatten() {
        if let Some(index) = entry.file_name().to_str().and_then(segment_index) {
            v.push((index, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Scans the log in `dir`, calling `visit` for every valid record in order.
/// `start` gives the expected first sequence number and chain value (from a
/// snapshot); `None` means from genesis (sequence 1).
pub fn scan(
    dir: &Path,
    start: Option<(u64, Hash)>,
    visit: impl FnMut(&LogRecord) -> Result<(), Problem>,
) -> Result<LogEnd, Problem> {
    scan_until(dir, start, u64::MAX, visit)
}

/// Like `scan`, but stops after the record with sequence `until` (for reading
/// a log that is being appended to: only up to what is known durable).
pub fn scan_until(
    dir: &Path,
    start: Option<(u64, Hash)>,
    until: u64,
    mut visit: impl FnMut(&LogRecord) -> Result<(), Problem>,
) -> Result<LogEnd, Problem> {
    let files = segment_files(dir)?;
    let (mut next_seq, mut chain) = start.unwrap_or((1, genesis()));
    let mut end = LogEnd {
        segments: Vec::new(),
        records: 0,
        last_seq: next_seq - 1,
        last_timestamp: 0,
        chain,
        end_offset: SEGMENT_HEADER_BYTES,
        torn: None,
    };
    for (n, (index, path)) in files.iter().enumerate() {
        let name = file_label(path);
        let bad = |kind, offset: usize, seq, msg: String| {
            Problem::new(kind, name.clone(), offset as u64, seq, msg)
        };
        if n > 0 && *index != files[n - 1].0 + 1 {
            let missing = segment_name(files[n - 1].0 + 1);
            return Err(bad(
                "segment_missing",
                0,
                next_seq,
                format!("{missing} is missing before this segment"),
            ));
        }
        let mut reader =
            SegmentReader::open(path).map_err(|e| bad("unreadable", 0, 0, e.to_string()))?;
        let len = reader.len();
        let header = SegmentHeader::decode(reader.header_bytes()?)
            .map_err(|m| bad("bad_segment_header", 0, 0, m))?;
        if header.index != *index {
            return Err(bad(
                "bad_segment_header",
                16,
                0,
                format!("header says index {}, file name says {index}", header.index),
            ));
        }
        if header.size != len as u64 {
            return Err(bad(
                "bad_segment_header",
                64,
                0,
                format!("header says {} bytes, file has {len}", header.size),
            ));
        }
        let first = n == 0 && start.is_none();
        if first && (header.first_seq != 1 || header.prev_chain != genesis()) {
            return Err(bad(
                "segment_missing",
                0,
                header.first_seq,
                "the log does not start at sequence 1 and no snapshot covers what is before".into(),
            ));
        }
        if header.first_seq != next_seq {
            return Err(bad(
                "sequence_gap",
                24,
                next_seq,
                format!(
                    "segment starts at sequence {}, expected {next_seq}",
                    header.first_seq
                ),
            ));
        }
        if header.prev_chain != chain {
            return Err(bad(
                "broken_hash_chain",
                32,
                next_seq,
                "segment does not continue the previous segment's hash chain".into(),
            ));
        }
        let mut at = SEGMENT_HEADER_BYTES;
        loop {
            if at + RECORD_HEADER_BYTES > len {
                break;
            }
            let head = reader.bytes(at, RECORD_HEADER_BYTES)?;
            let zero = head.iter().all(|&b| b == 0);
            let h = RecordHeader::decode(head);
            if zero {
                // End of this segment's records. The rest must be zeros, or
                // the remains of a write that never completed.
                if let Some(p) = first_nonzero(&mut reader, at)? {
                    if !holds_valid_record(&mut reader, at)? && !later_valid(&files[n + 1..]) {
                        let reason = "a record whose header never reached the file".to_string();
                        end.torn = Some(TornTail {
                            file: path.clone(),
                            offset: at,
                            sequence: next_seq,
                            reason,
                            later_segments: later(&files[n + 1..]),
                        });
                        break;
                    }
                    let msg = "data after the end of the records, and valid records after it";
                    return Err(bad("bad_record", p, next_seq, msg.into()));
                }
                break;
            }
            let body_at = at + RECORD_HEADER_BYTES;
            let body_len = h.body_len as usize;
            let failure: Option<(&'static str, String)> = if h.kind != KIND_COMMAND {
                Some(("bad_record", format!("unknown record kind {}", h.kind)))
            } else if body_len > MAX_READ_RECORD_BODY || body_at + body_len > len {
                Some((
                    "bad_record",
                    format!("record length {} runs past the segment", h.body_len),
                ))
            } else if !h.crc_ok(reader.bytes(body_at, body_len)?) {
                Some(("bad_crc", "record checksum mismatch".into()))
            } else {
                None
            };
            if let Some((kind, msg)) = failure {
                // Records become durable in order: if an acknowledged record
                // followed this one it would be intact. None does, so this is
                // the unacknowledged tail of an interrupted write.
                if !holds_valid_record(&mut reader, at + RECORD_ALIGN)?
                    && !later_valid(&files[n + 1..])
                {
                    end.torn = Some(TornTail {
                        file: path.clone(),
                        offset: at,
                        sequence: next_seq,
                        reason: msg,
                        later_segments: later(&files[n + 1..]),
                    });
                    break;
                }
                return Err(bad(kind, at, next_seq, msg));
            }
            if h.seq != next_seq {
                return Err(bad(
                    "sequence_gap",
                    at,
                    next_seq,
                    format!("record has sequence {}, expected {next_seq}", h.seq),
                ));
            }
            let body = reader.bytes(body_at, body_len)?;
            if !h.chain_ok(&chain, body) {
                return Err(bad("broken_hash_chain", at, h.seq, "record does not continue the hash chain (edited, removed or reordered records)".into()));
            }
            let command = record::decode(body).map_err(|m| bad("bad_body", at, h.seq, m))?;
            visit(&LogRecord {
                header: h,
                command,
                file: path,
                offset: at,
            })?;
            chain = h.chain;
            next_seq += 1;
            end.records += 1;
            end.last_timestamp = h.timestamp;
            // The padding after the last record may run past the end of a
            // segment whose size is not a multiple of the alignment.
            at = (at + h.total_len()).min(len);
            if h.seq >= until {
                break;
            }
        }
        end.segments.push((path.clone(), header));
        end.end_offset = at;
        if end.torn.is_some() || next_seq > until {
            break;
        }
    }
    end.last_seq = next_seq - 1;
    end.chain = chain;
    Ok(end)
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

/// Whether a well-formed record with a valid checksum starts anywhere at or
/// after `from` (on a record boundary).
fn holds_valid_record(reader: &mut SegmentReader, from: usize) -> Result<bool, Problem> {
    let len = reader.len();
    let mut at = align(from);
    while at + RECORD_HEADER_BYTES <= len {
        let h = RecordHeader::decode(reader.bytes(at, RECORD_HEADER_BYTES)?);
        let body_len = h.body_len as usize;
        let body_at = at + RECORD_HEADER_BYTES;
        if h.kind == KIND_COMMAND
            && body_len <= MAX_READ_RECORD_BODY
            && body_at + body_len <= len
            && h.crc_ok(reader.bytes(body_at, body_len)?)
        {
            return Ok(true);
        }
        at += RECORD_ALIGN;
    }
    Ok(false)
}

/// Whether any of these segments holds a valid record. A segment that cannot
/// be read counts as holding one: never discard what cannot be examined.
fn later_valid(files: &[(u64, PathBuf)]) -> bool {
    files
        .iter()
        .any(|(_, path)| match SegmentReader::open(path) {
            Ok(mut r) => {
                r.len() > SEGMENT_HEADER_BYTES
                    && holds_valid_record(&mut r, SEGMENT_HEADER_BYTES).unwrap_or(true)
            }
            Err(_) => true,
        })
}

fn later(files: &[(u64, PathBuf)]) -> Vec<PathBuf> {
    files.iter().map(|(_, p)| p.clone()).collect()
}

/// Records handed from the scanning thread to the replaying one at a time.
const PIPELINE_CHUNK: usize = 1_024;

/// Like `scan_until`, but verification and decoding run on a helper thread
/// while `visit` runs on the caller's, so a replay uses two cores. Records
/// still reach `visit` one at a time, in order; the first problem from either
/// side ends the scan.
pub fn scan_pipelined(
    dir: &Path,
    start: Option<(u64, Hash)>,
    until: u64,
    mut visit: impl FnMut(&LogRecord) -> Result<(), Problem>,
) -> Result<LogEnd, Problem> {
    type Chunk = Vec<(RecordHeader, Command, usize, std::sync::Arc<PathBuf>)>;
    let (tx, rx) = crossbeam_channel::bounded::<Chunk>(8);
    std::thread::scope(|scope| {
        let scanner = scope.spawn(move || {
            let mut chunk: Chunk = Vec::with_capacity(PIPELINE_CHUNK);
            let mut current: Option<std::sync::Arc<PathBuf>> = None;
            let end = scan_until(dir, start, until, |rec| {
                let path = match &current {
                    Some(p) if p.as_path() == rec.file => p.clone(),
                    _ => {
                        let p = std::sync::Arc::new(rec.file.to_path_buf());
                        current = Some(p.clone());
                        p
                    }
                };
                chunk.push((rec.header, rec.command.clone(), rec.offset, path));
                if chunk.len() == PIPELINE_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(PIPELINE_CHUNK));
                    // The replaying side hung up: it found a problem of its own.
                    tx.send(full).map_err(|_| {
                        Problem::new("stopped", "", 0, rec.header.seq, "replay stopped")
                    })?;
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
            for (header, command, offset, file) in chunk {
                if let Err(p) = visit(&LogRecord {
                    header,
                    command,
                    file: &file,
                    offset,
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
