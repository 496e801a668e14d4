//! Appending records: one segment open at a time, rotated when full; older
//! segments stay queued for the next sync so a group commit covers them too.

use crate::format::*;
use crate::record;
use crate::scan::LogEnd;
use crate::segment::{PreparedSegment, SegmentWriter};
use rkyv::util::AlignedVec;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use tally_engine::{Command, Outcome};

/// The name of the thread that prepares the next segment.
pub const PREPARER_THREAD: &str = "tally-segment-prep";

pub struct LogWriter {
    dir: PathBuf,
    current: SegmentWriter,
    /// Rotated-out segments with appends not yet synced.
    unsynced: Vec<SegmentWriter>,
    chain: Hash,
    next_seq: u64,
    segment_size: u64,
    /// Reused serialization buffer.
    body: AlignedVec,
    /// The next segment, being prepared in the background.
    next: Option<JoinHandle<io::Result<PreparedSegment>>>,
}

impl LogWriter {
    /// Starts a new log (segment 0, sequence 1, genesis chain).
    pub fn create(dir: &Path, segment_size: u64) -> io::Result<LogWriter> {
        Self::create_at(dir, 0, 1, genesis(), segment_size)
    }

    /// Starts a segment at an index, sequence and chain (a fresh log, or the
    /// segment after a snapshot when older segments were archived).
    pub fn create_at(
        dir: &Path,
        index: u64,
        first_seq: u64,
        chain: Hash,
        segment_size: u64,
    ) -> io::Result<LogWriter> {
        let size = segment_size.max(MIN_SEGMENT_BYTES);
        let current = SegmentWriter::create(
            dir,
            SegmentHeader {
                index,
                first_seq,
                prev_chain: chain,
                size,
            },
        )?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            current,
            unsynced: Vec::new(),
            chain,
            next_seq: first_seq,
            segment_size: size,
            body: AlignedVec::new(),
            next: None,
        })
    }

    /// Continues after a scanned log.
    pub fn resume(dir: &Path, end: &LogEnd, segment_size: u64) -> io::Result<LogWriter> {
        let Some((path, header)) = end.segments.last() else {
            return Self::create(dir, segment_size);
        };
        let current = SegmentWriter::open(path, *header, end.end_offset)?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            current,
            unsynced: Vec::new(),
            chain: end.chain,
            next_seq: end.last_seq + 1,
            segment_size: segment_size.max(MIN_SEGMENT_BYTES),
            body: AlignedVec::new(),
            next: None,
        })
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn chain(&self) -> Hash {
        self.chain
    }

    /// Appends one sequenced command with its outcome. Sequence numbers must
    /// continue the log exactly.
    pub fn append(
        &mut self,
        cmd: &Command,
        seq: u64,
        timestamp: u64,
        outcome: &Outcome,
    ) -> io::Result<()> {
        if seq != self.next_seq {
            return Err(io::Error::other(format!(
                "log expects sequence {}, got {seq}",
                self.next_seq
            )));
        }
        // Serialize into the reused buffer (no allocation per record).
        let body =
            record::encode_into(cmd, std::mem::take(&mut self.body)).map_err(io::Error::other)?;
        if body.len() > MAX_RECORD_BODY {
            return Err(io::Error::other(format!(
                "record of {} bytes exceeds the limit",
                body.len()
            )));
        }
        let (kind, code, original_seq) = record::outcome_fields(outcome);
        let mut h = RecordHeader {
            body_len: body.len() as u32,
            kind: KIND_COMMAND,
            outcome: kind,
            code,
            seq,
            timestamp,
            original_seq,
            chain: [0; 32],
            crc: 0,
        };
        h.seal(&self.chain, &body);
        let total = h.total_len();
        if total > self.current.remaining() {
            self.rotate(seq, total)?;
        }
        let mut header = [0u8; RECORD_HEADER_BYTES];
        h.encode(&mut header);
        self.current.append_record(&header, &body, total);
        self.body = body;
        self.chain = h.chain;
        self.next_seq += 1;
        // Past half of this segment: get the next one ready in the background.
        if self.next.is_none() && self.current.remaining() < self.current.header.size as usize / 2 {
            let (dir, index, size) = (
                self.dir.clone(),
                self.current.header.index + 1,
                self.segment_size,
            );
            // Essential: the writer waits for it at the next rotation. When
            // no thread can be started, rotation creates the segment itself.
            self.next = tally_engine::essential::spawn(PREPARER_THREAD, move || {
                PreparedSegment::new(&dir, index, size)
            })
            .ok();
        }
        Ok(())
    }

    fn rotate(&mut self, first_seq: u64, need: usize) -> io::Result<()> {
        let index = self.current.header.index + 1;
        let prepared = match self.next.take().map(|h| h.join()) {
            Some(Ok(Ok(p))) if p.size() as usize >= need + SEGMENT_HEADER_BYTES => Some(p),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(_)) => return Err(io::Error::other("the segment preparer panicked")),
            _ => None,
        };
        let next = match prepared {
            Some(p) => {
                let header = SegmentHeader {
                    index,
                    first_seq,
                    prev_chain: self.chain,
                    size: p.size(),
                };
                p.activate(&self.dir, header)?
            }
            None => {
                let size = self.segment_size.max((need + SEGMENT_HEADER_BYTES) as u64);
                let header = SegmentHeader {
                    index,
                    first_seq,
                    prev_chain: self.chain,
                    size,
                };
                SegmentWriter::create(&self.dir, header)?
            }
        };
        let old = std::mem::replace(&mut self.current, next);
        self.unsynced.push(old);
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> io::Result<()> {
        for mut s in self.unsynced.drain(..) {
            s.sync()?;
        }
        self.current.sync()
    }

    /// The segment being appended to.
    pub fn current_segment(&self) -> &Path {
        &self.current.path
    }
}
