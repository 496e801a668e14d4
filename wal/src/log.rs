//! Appending records: one record per sequenced batch (split only where the
//! batch's sequences break or its body would pass `MAX_RECORD_BODY`), one
//! segment open at a time, rotated when full. The full segment is synced
//! before the next one is given its name, so the log on disk never holds a
//! later segment over an unsynced earlier one; the writer does neither: it
//! goes on appending into the next segment (still under its `.prep` name)
//! and leaves both to whoever makes the records durable, as
//! [`SyncStep`]s ([`LogWriter::take_sync_steps`], or [`LogWriter::sync`]).

use crate::format::*;
use crate::record::{self, Item};
use crate::scan::LogEnd;
use crate::segment::{
    is_preparation, Preparation, PreparedSegment, SegmentNaming, SegmentWriter, SyncHandle,
};
use crate::storage::Store;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use tally_engine::{Command, Outcome};

/// The name of the thread that prepares the next segment.
pub const PREPARER_THREAD: &str = "tally-segment-prep";

pub struct LogWriter {
    store: Store,
    dir: PathBuf,
    current: SegmentWriter,
    chain: Hash,
    next_seq: u64,
    segment_size: u64,
    /// Reused record body buffer.
    body: Vec<u8>,
    /// The next segment, being pre-written in the background.
    next: Option<Preparing>,
    /// Where the records appended since the last [`LogWriter::take_written`]
    /// went (kept only when tracking, see [`LogWriter::track_positions`]).
    written: Vec<RecordPos>,
    track: bool,
    /// Durability work left by rotations, in order.
    steps: Vec<SyncStep>,
    /// Record bytes appended since the writer was made.
    appended: u64,
    /// A step failed: as with a segment's own syncs, every later sync fails
    /// (the step's bytes may be lost; a sync of a later segment alone must
    /// not then say they are durable).
    failed: bool,
}

/// The next segment, pre-written by the preparer thread.
struct Preparing {
    thread: Option<JoinHandle<io::Result<Option<PreparedSegment>>>>,
    handover: Arc<Preparation>,
    store: Store,
}

impl Drop for Preparing {
    /// A log closed abandons the preparation and waits for the preparer to
    /// stop (at its next chunk: it removes its file), so that a log opened
    /// again in this process never prepares the same name beside it; one it
    /// had finished is removed here. A rotation that abandons one does not
    /// wait: see [`LogWriter::take_prepared`].
    fn drop(&mut self) {
        self.handover.take_if_ready();
        if let Some(Ok(Ok(Some(done)))) = self.thread.take().map(JoinHandle::join) {
            // (Left behind if this fails: the next open removes it.)
            let _ = done.discard(&*self.store);
        }
    }
}

/// Removes the segments a stopped process was preparing (under `.prep`
/// names nothing refers to: readers ignore them).
fn remove_stale_preparations(store: &dyn crate::storage::Storage, dir: &Path) -> io::Result<()> {
    for path in store.list(dir)? {
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_preparation);
        if stale {
            match store.remove(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// What makes appended records durable, in the order it must be done.
pub enum SyncStep {
    /// `fdatasync` of a segment: covers every byte written to it before the
    /// call began, so of consecutive syncs of one segment only one is needed.
    Sync(SyncHandle),
    /// The next segment's name, given once the segment before it is synced
    /// (the step before this one).
    Name(SegmentNaming),
}

impl SyncStep {
    /// The segment the step is for.
    pub fn segment(&self) -> u64 {
        match self {
            SyncStep::Sync(h) => h.segment,
            SyncStep::Name(n) => n.index,
        }
    }
}

/// Runs `steps` in order, skipping a sync that the next step repeats or
/// that the naming just before it did (a naming syncs its segment, and
/// every step given to one call was written before the call began).
pub fn run_sync_steps(store: &dyn crate::storage::Storage, steps: &[SyncStep]) -> io::Result<()> {
    for (i, step) in steps.iter().enumerate() {
        match step {
            SyncStep::Sync(h) => {
                let repeated =
                    matches!(steps.get(i + 1), Some(SyncStep::Sync(n)) if n.segment == h.segment);
                let named =
                    i > 0 && matches!(&steps[i - 1], SyncStep::Name(n) if n.index == h.segment);
                if !repeated && !named {
                    h.sync()?;
                }
            }
            SyncStep::Name(n) => n.run(store)?,
        }
    }
    Ok(())
}

/// Where one record lies in the log, and the sequences it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPos {
    pub first_seq: u64,
    pub first_timestamp: u64,
    pub count: u32,
    pub segment: u64,
    pub offset: u32,
}

impl LogWriter {
    /// Starts a new log (segment 0, sequence 1, genesis chain).
    pub fn create(store: Store, dir: &Path, segment_size: u64) -> io::Result<LogWriter> {
        Self::create_at(store, dir, 0, 1, genesis(), segment_size)
    }

    /// Starts a segment at an index, sequence and chain (a fresh log, or the
    /// segment after a snapshot when older segments were archived).
    pub fn create_at(
        store: Store,
        dir: &Path,
        index: u64,
        first_seq: u64,
        chain: Hash,
        segment_size: u64,
    ) -> io::Result<LogWriter> {
        let size = segment_size.max(MIN_SEGMENT_BYTES);
        remove_stale_preparations(&*store, dir)?;
        let current = SegmentWriter::create(
            &*store,
            dir,
            SegmentHeader {
                index,
                first_seq,
                prev_chain: chain,
                size,
            },
        )?;
        Ok(LogWriter {
            store,
            dir: dir.to_path_buf(),
            current,
            chain,
            next_seq: first_seq,
            segment_size: size,
            body: Vec::new(),
            next: None,
            written: Vec::new(),
            track: false,
            steps: Vec::new(),
            appended: 0,
            failed: false,
        })
    }

    /// Continues after a scanned log.
    pub fn resume(
        store: Store,
        dir: &Path,
        end: &LogEnd,
        segment_size: u64,
    ) -> io::Result<LogWriter> {
        let Some((path, header)) = end.segments.last() else {
            return Self::create(store, dir, segment_size);
        };
        if let Some(torn) = end
            .torn
            .as_ref()
            .filter(|t| t.later_segments.iter().any(|p| store.exists(p)))
        {
            return Err(io::Error::other(format!(
                "{}: a torn tail at byte {} is not cut yet (cut_torn_tail first)",
                torn.file.display(),
                torn.offset
            )));
        }
        remove_stale_preparations(&*store, dir)?;
        let mut current = SegmentWriter::open(&*store, path, *header, end.end_offset)?;
        // What recovery read may still be only in the page cache (the last
        // process died before its sync): make it durable before anything is
        // said to be, or written after it. The records no record witnesses
        // as durable are written again first: after a failed `fdatasync`
        // the kernel marks the pages it could not write clean, so a sync
        // alone would return at once and leave them to vanish at the next
        // power failure, under later records that would vouch for them.
        current.rewrite(end.unwitnessed_offset.min(end.end_offset), end.end_offset)?;
        // And after the last record nothing may reappear: a torn tail's cut
        // (or the zeros before any record) whose sync failed would read as
        // zeros here and come back as old bytes after a power failure, behind
        // the records appended next.
        current.zero_rest(end.end_offset)?;
        current.sync()?;
        // The directory too: the names of this segment (a rotation's rename)
        // and of the segments a torn-tail cut removed may be only in memory.
        store.sync_dir(dir)?;
        Ok(LogWriter {
            store,
            dir: dir.to_path_buf(),
            current,
            chain: end.chain,
            next_seq: end.last_seq + 1,
            segment_size: segment_size.max(MIN_SEGMENT_BYTES),
            body: Vec::new(),
            next: None,
            written: Vec::new(),
            track: false,
            steps: Vec::new(),
            appended: 0,
            failed: false,
        })
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn chain(&self) -> Hash {
        self.chain
    }

    /// Appends one sequenced command with its outcome as a record of its own.
    pub fn append(
        &mut self,
        cmd: &Command,
        seq: u64,
        timestamp: u64,
        outcome: &Outcome,
    ) -> io::Result<()> {
        let item = Item {
            command: cmd,
            seq,
            timestamp,
            outcome,
            wire: None,
        };
        self.append_batch(&[item], seq.saturating_sub(1))
    }

    /// Appends a batch's sequenced commands, in order, as few records as
    /// their sequences and the record size allow. `watermark` is the last
    /// sequence already durable (it goes into every record). Sequence
    /// numbers must continue the log exactly.
    pub fn append_batch(&mut self, items: &[Item], watermark: u64) -> io::Result<()> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let mut start = 0;
        for (i, it) in items.iter().enumerate() {
            if i == start && it.seq != self.next_seq {
                self.body = body;
                return Err(io::Error::other(format!(
                    "log expects sequence {}, got {}",
                    self.next_seq, it.seq
                )));
            }
            let before = body.len();
            record::put_item(&mut body, it);
            let consecutive = i == start
                || (Some(it.seq) == items[i - 1].seq.checked_add(1)
                    && Some(it.timestamp) == items[i - 1].timestamp.checked_add(1));
            let fits = body.len() + (i + 1 - start) * EXCEPTION_BYTES <= MAX_RECORD_BODY;
            if i > start && !(consecutive && fits) {
                body.truncate(before);
                self.write_record(&items[start..i], &mut body, watermark)?;
                body.clear();
                start = i;
                if it.seq != self.next_seq {
                    self.body = body;
                    return Err(io::Error::other(format!(
                        "log expects sequence {}, got {}",
                        self.next_seq, it.seq
                    )));
                }
                record::put_item(&mut body, it);
            }
            if body.len() + EXCEPTION_BYTES > MAX_RECORD_BODY {
                self.body = body;
                let len = it
                    .wire
                    .map_or_else(|| record::command_len(it.command), <[u8]>::len);
                return Err(io::Error::other(format!(
                    "a command of {len} bytes exceeds the record limit"
                )));
            }
        }
        if start < items.len() {
            self.write_record(&items[start..], &mut body, watermark)?;
        }
        self.body = body;
        Ok(())
    }

    /// Writes one record: `body` holds the commands of `items`, encoded.
    fn write_record(
        &mut self,
        items: &[Item],
        body: &mut Vec<u8>,
        watermark: u64,
    ) -> io::Result<()> {
        // The commands are already in `body`: add the exceptions.
        let count = record::put_exceptions(items, body);
        let first = items[0];
        let mut h = RecordHeader {
            body_len: body.len() as u32,
            kind: KIND_BATCH,
            first_seq: first.seq,
            first_timestamp: first.timestamp,
            count: items.len() as u32,
            exceptions: count,
            watermark,
            chain: [0; 32],
            crc: 0,
        };
        h.seal(&self.chain, body);
        let total = h.total_len();
        if total > self.current.remaining() {
            self.rotate(first.seq, total)?;
        }
        let mut header = [0u8; RECORD_HEADER_BYTES];
        h.encode(&mut header);
        let at = self.current.append_record(&header, body, total)?;
        self.appended += total as u64;
        if self.track {
            self.written.push(RecordPos {
                first_seq: first.seq,
                first_timestamp: first.timestamp,
                count: items.len() as u32,
                segment: self.current.header.index,
                offset: at as u32,
            });
        }
        self.chain = h.chain;
        self.next_seq += items.len() as u64;
        // Get the next segment ready in the background, from the start of
        // this one: pre-writing takes a fraction of a segment's time even
        // at the batched peak, and rotation never waits for it.
        if self.next.is_none() && self.store.background_threads() {
            let (store, dir, index, size) = (
                self.store.clone(),
                self.dir.clone(),
                self.current.header.index + 1,
                self.segment_size,
            );
            let handover = Arc::new(Preparation::default());
            let theirs = handover.clone();
            // Essential: a panic must not pass unseen. When no thread can
            // be started, rotation allocates the segment itself.
            self.next = tally_engine::essential::spawn(PREPARER_THREAD, move || {
                PreparedSegment::pre_write(&*store, &dir, index, size, &theirs)
            })
            .ok()
            .map(|thread| Preparing {
                thread: Some(thread),
                handover,
                store: self.store.clone(),
            });
        }
        Ok(())
    }

    fn rotate(&mut self, first_seq: u64, need: usize) -> io::Result<()> {
        // A second rotation before anyone took the first's steps (one group
        // longer than a segment, or a log written without syncing) queues
        // behind them: the steps run in order, so segment k+2 is named only
        // after k+1 is synced. (Running them here instead would name k+1
        // while the syncer may not yet have synced k, under earlier groups
        // already handed to it.)
        self.steps.push(SyncStep::Sync(self.current.sync_handle()));
        let index = self.current.header.index + 1;
        let prepared = match self.take_prepared()? {
            Some(p) if p.size() as usize >= need + SEGMENT_HEADER_BYTES => p,
            other => {
                if let Some(small) = other {
                    // An unused file: a failure to remove it leaves it for
                    // the next open to remove, and fails nothing.
                    if let Err(e) = small.discard(&*self.store) {
                        tracing::warn!("removing an unused prepared segment: {e}");
                    }
                }
                let size = self.segment_size.max((need + SEGMENT_HEADER_BYTES) as u64);
                PreparedSegment::new(&*self.store, &self.dir, index, size)?
            }
        };
        let header = SegmentHeader {
            index,
            first_seq,
            prev_chain: self.chain,
            size: prepared.size(),
        };
        let (next, naming) = prepared.start(&*self.store, &self.dir, header)?;
        self.steps.push(SyncStep::Name(naming));
        // The old segment's file lives on in the sync step.
        drop(std::mem::replace(&mut self.current, next));
        Ok(())
    }

    /// The pre-written segment if it is ready; if not it is abandoned and
    /// rotation allocates one instead (never waiting for the zeros).
    fn take_prepared(&mut self) -> io::Result<Option<PreparedSegment>> {
        let Some(mut preparing) = self.next.take() else {
            return Ok(None);
        };
        if !preparing.handover.take_if_ready() {
            // The preparer removes its file when it sees this (a thread
            // that ended with an error removed it already). Not waited
            // for: the next segment is prepared under other names.
            drop(preparing.thread.take());
            return Ok(None);
        }
        match preparing.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(prepared))) => Ok(prepared),
            // Its file is removed; rotation allocates one itself and fails
            // only if that fails too (the preparer's own sync covers no
            // record, so its failure loses nothing).
            Some(Ok(Err(e))) => {
                tracing::warn!("pre-writing the next log segment failed: {e}");
                Ok(None)
            }
            _ => Err(io::Error::other("the segment preparer panicked")),
        }
    }

    /// Runs the steps rotations left (the writer's own thread: a log
    /// written without the journal's syncer).
    fn run_steps(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier sync of this log failed: its unsynced bytes may be lost",
            ));
        }
        let steps = std::mem::take(&mut self.steps);
        run_sync_steps(&*self.store, &steps).inspect_err(|_| self.failed = true)
    }

    /// What makes everything appended so far durable, in order: the steps
    /// rotations left, then a sync of the segment being appended to. The
    /// caller runs them ([`run_sync_steps`]); until it has, nothing
    /// appended since the last call is durable.
    pub fn take_sync_steps(&mut self, into: &mut Vec<SyncStep>) {
        into.append(&mut self.steps);
        into.push(SyncStep::Sync(self.current.sync_handle()));
    }

    /// Keeps where each record goes, for [`LogWriter::take_written`].
    pub fn track_positions(&mut self) {
        self.track = true;
    }

    /// Where the records appended since the last call went, in order (the
    /// history indexes them once they are durable).
    pub fn take_written(&mut self, into: &mut Vec<RecordPos>) {
        into.append(&mut self.written);
    }

    /// Record bytes appended since the writer was made (group commit bounds
    /// a group by them).
    pub fn appended_bytes(&self) -> u64 {
        self.appended
    }

    /// The storage the log is on (for whoever runs its [`SyncStep`]s).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.run_steps()?;
        self.current.sync()
    }

    /// The segment being appended to.
    pub fn current_segment(&self) -> &Path {
        &self.current.path
    }
}
