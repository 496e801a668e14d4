//! Segment files: preallocated (real blocks, not sparse: a full disk fails at
//! creation, never on a later write), appended to with positioned writes,
//! made durable with `fdatasync`. Readers use positioned reads into buffers
//! of their own ([`SegmentReader`]). Every byte goes through the storage seam
//! ([`crate::storage`]): the real disk (files created mode 0600) or the
//! simulator's disk.

use crate::format::{SegmentHeader, RECORD_ALIGN, SEGMENT_HEADER_BYTES};
use crate::problem::{file_label, Problem};
use crate::storage::{Storage, StorageFile};
use rkyv::util::AlignedVec;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment file shared by its writer and the [`SyncHandle`]s that sync it
/// from another thread. Every sync goes through [`SharedFile::sync`]: one at
/// a time, and once one has failed (or a write has) every later one fails
/// too. (Linux reports a write-back error to one `fdatasync` of an open file
/// only, and marks the failed pages clean: without this, a second thread's
/// sync could succeed after the first's failed and acknowledge bytes that
/// never reached the disk.)
pub struct SharedFile {
    file: Arc<dyn StorageFile>,
    /// Whether a sync or a write has failed.
    failed: parking_lot::Mutex<bool>,
}

impl SharedFile {
    fn new(file: Arc<dyn StorageFile>) -> SharedFile {
        SharedFile {
            file,
            failed: parking_lot::Mutex::new(false),
        }
    }

    /// `fdatasync`, refused for good after a failure.
    pub fn sync(&self) -> io::Result<()> {
        let mut failed = self.failed.lock();
        if *failed {
            return Err(io::Error::other(
                "an earlier sync or write of this segment failed: its unsynced bytes may be lost",
            ));
        }
        self.file.sync_data().inspect_err(|_| *failed = true)
    }

    /// A positioned write; a failure makes every later sync fail.
    fn write(&self, bytes: &[u8], at: usize) -> io::Result<()> {
        self.file
            .write_all_at(bytes, at as u64)
            .inspect_err(|_| *self.failed.lock() = true)
    }
}

/// Syncs a segment from another thread than the one appending to it
/// (pipelined group commit: the writer appends the next group while this
/// syncs the last). `fdatasync` makes durable every byte written to the
/// file before the call began.
#[derive(Clone)]
pub struct SyncHandle {
    file: Arc<SharedFile>,
    /// The segment's index (for messages).
    pub segment: u64,
}

impl SyncHandle {
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync()
    }
}

/// A segment open for appending.
pub struct SegmentWriter {
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Shared with the [`SyncHandle`]s that sync it off the writer's thread.
    file: Arc<SharedFile>,
    /// The file's size (segments never change size).
    size: usize,
    /// Next free byte.
    pub pos: usize,
    /// Bytes written but not yet synced start here.
    synced: usize,
    /// One record, staged for its single write.
    stage: Vec<u8>,
}

/// Makes a directory entry (a new or renamed file) on the real disk durable
/// (for the files `tally backup` writes).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::storage::RealDisk.sync_dir(dir)
}

/// A segment file made ready ahead of time under a `.prep` name that log
/// readers ignore. [`PreparedSegment::new`] allocates its blocks (fast: the
/// file system marks them unwritten); [`PreparedSegment::pre_write`] also
/// writes zeros over the whole file and syncs them, off the writer's thread,
/// so that appends never convert unwritten extents and each group's
/// `fdatasync` writes only the group (1.6-2.0x cheaper from 16 KiB groups
/// here: docs/PERFORMANCE.md, "Storage choice"). Activating either is a
/// header write; its sync and rename are left to the syncer.
pub struct PreparedSegment {
    prep_path: PathBuf,
    file: Arc<dyn StorageFile>,
    size: u64,
}

/// Zeros are written in chunks of this many bytes...
pub const PREWRITE_CHUNK_BYTES: u64 = crate::storage::ZERO_CHUNK_BYTES;
/// ...and synced every this many, after which the preparer rests as long as
/// the last stretch took: it uses at most half the disk's time, and never
/// leaves more than this much of its own dirty data for a journal commit to
/// wait on (ext4 commits the data of converted extents with the metadata).
pub const PREWRITE_SYNC_BYTES: u64 = 8 << 20;

/// How a segment pre-written in the background is handed to the writer
/// without the writer ever waiting for it: at rotation the writer takes it
/// if it is ready, and otherwise abandons it (the preparer removes its file
/// at its next chunk) and allocates a segment itself.
#[derive(Debug, Default)]
pub struct Preparation {
    state: std::sync::atomic::AtomicU8,
}

const PREP_WORKING: u8 = 0;
const PREP_READY: u8 = 1;
const PREP_ABANDONED: u8 = 2;

impl Preparation {
    /// The writer's side: whether the segment is ready (then the preparer's
    /// result is there to join at once); if not, it is abandoned for good.
    pub fn take_if_ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        match self.state.compare_exchange(
            PREP_WORKING,
            PREP_ABANDONED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => false,
            Err(state) => state == PREP_READY,
        }
    }

    fn abandoned(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Acquire) == PREP_ABANDONED
    }

    /// The preparer's side, when done: whether the writer will take it.
    fn finish(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.state
            .compare_exchange(
                PREP_WORKING,
                PREP_READY,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// Sleeps for `d` in short slices, `false` as soon as the preparation is
/// abandoned (so its file goes at once, not after the rest: on a nearly
/// full disk the writer's own segment needs that room).
fn rest(d: std::time::Duration, prep: &Preparation) -> bool {
    const SLICE: std::time::Duration = std::time::Duration::from_millis(1);
    let until = std::time::Instant::now() + d;
    loop {
        if prep.abandoned() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(SLICE));
    }
}

/// Where a segment is prepared: `segment-N.wal.prep`, pre-written ones
/// `segment-N.wal.zeroed.prep` (so an abandoned one being removed never
/// meets the one allocated instead).
fn prep_path(dir: &Path, index: u64, zeroed: bool) -> PathBuf {
    let kind = if zeroed { ".zeroed" } else { "" };
    dir.join(format!("{}{kind}.prep", crate::format::segment_name(index)))
}

/// Whether `name` is a segment being prepared (left by a process that
/// stopped before using it: nothing refers to it).
pub fn is_preparation(name: &str) -> bool {
    name.starts_with("segment-") && name.ends_with(".prep")
}

impl PreparedSegment {
    /// Creates the file and allocates its blocks (`posix_fallocate`
    /// semantics; zeros written where the file system cannot).
    pub fn new(
        store: &dyn Storage,
        dir: &Path,
        index: u64,
        size: u64,
    ) -> io::Result<PreparedSegment> {
        let prep = PreparedSegment::create(store, prep_path(dir, index, false), size)?;
        if !prep.file.allocate(size)? {
            prep.file.set_len(size)?;
            crate::storage::write_zeros(&*prep.file, 0, size)?;
        }
        Ok(prep)
    }

    /// Creates the file, allocates it and writes zeros over all of it,
    /// synced, paced ([`PREWRITE_SYNC_BYTES`]). `None` when the writer
    /// abandoned it meanwhile ([`Preparation::take_if_ready`]); its file is
    /// removed then, and after a failure.
    pub fn pre_write(
        store: &dyn Storage,
        dir: &Path,
        index: u64,
        size: u64,
        prep: &Preparation,
    ) -> io::Result<Option<PreparedSegment>> {
        let segment = match PreparedSegment::create(store, prep_path(dir, index, true), size) {
            Ok(segment) => segment,
            Err(e) => {
                // Ready to be joined, so the writer sees why.
                prep.finish();
                return Err(e);
            }
        };
        match segment.write_zeros(prep) {
            Ok(true) if prep.finish() => Ok(Some(segment)),
            Ok(_) => {
                segment.discard(store)?;
                Ok(None)
            }
            Err(e) => {
                let _ = segment.discard(store);
                // Ready to be joined: the writer sees the error (and
                // allocates a segment itself).
                prep.finish();
                Err(e)
            }
        }
    }

    /// Zeros over the file, `false` as soon as it is abandoned.
    fn write_zeros(&self, prep: &Preparation) -> io::Result<bool> {
        if !self.file.allocate(self.size)? {
            self.file.set_len(self.size)?;
        }
        let mut abandoned = false;
        let mut stretch = std::time::Instant::now();
        let filled = crate::storage::fill_zeros(0, self.size, |zeros, at| {
            if prep.abandoned() {
                abandoned = true;
                return Err(io::Error::other("abandoned"));
            }
            self.file.write_all_at(zeros, at)?;
            let end = at + zeros.len() as u64;
            if end % PREWRITE_SYNC_BYTES == 0 || end == self.size {
                self.file.sync_data()?;
                if end < self.size && !rest(stretch.elapsed(), prep) {
                    abandoned = true;
                    return Err(io::Error::other("abandoned"));
                }
                stretch = std::time::Instant::now();
            }
            Ok(())
        });
        match filled {
            Ok(()) => Ok(true),
            Err(_) if abandoned => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create(store: &dyn Storage, prep_path: PathBuf, size: u64) -> io::Result<PreparedSegment> {
        match store.remove(&prep_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = store.create_new(&prep_path)?;
        Ok(PreparedSegment {
            prep_path,
            file,
            size,
        })
    }

    /// Removes the file (a segment not used).
    pub fn discard(self, store: &dyn Storage) -> io::Result<()> {
        store.remove(&self.prep_path)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes the header, makes it durable, and gives the file its segment
    /// name (then syncs the directory), so readers only ever see it whole.
    pub fn activate(
        self,
        store: &dyn Storage,
        dir: &Path,
        header: SegmentHeader,
    ) -> io::Result<SegmentWriter> {
        let (writer, naming) = self.start(store, dir, header)?;
        naming.run(store)?;
        Ok(writer)
    }

    /// Writes the header and opens the segment for appending under its
    /// `.prep` name; the [`SegmentNaming`] gives it its name later, off the
    /// writer's thread. Records appended before then are invisible to log
    /// readers (and lost in a crash: none of them is durable yet).
    pub fn start(
        self,
        store: &dyn Storage,
        dir: &Path,
        header: SegmentHeader,
    ) -> io::Result<(SegmentWriter, SegmentNaming)> {
        debug_assert_eq!(header.size, self.size);
        let path = dir.join(crate::format::segment_name(header.index));
        if store.exists(&path) {
            return Err(io::Error::other(format!(
                "{} already exists",
                path.display()
            )));
        }
        let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES];
        header.encode(&mut bytes);
        self.file.write_all_at(&bytes, 0)?;
        let size = usize::try_from(self.size).map_err(io::Error::other)?;
        let pos = SEGMENT_HEADER_BYTES;
        let file = Arc::new(SharedFile::new(self.file));
        let naming = SegmentNaming {
            file: file.clone(),
            prep_path: self.prep_path,
            path: path.clone(),
            dir: dir.to_path_buf(),
            index: header.index,
        };
        let writer = SegmentWriter {
            path,
            header,
            file,
            size,
            pos,
            // The naming's sync covers the header; the records after it
            // need their own.
            synced: pos,
            stage: Vec::new(),
        };
        Ok((writer, naming))
    }
}

/// A started segment's name, still to be given ([`PreparedSegment::start`]).
/// Runs after the segment before it is synced: a power loss can then never
/// leave this segment on disk over a lost tail of that one (which would
/// read as a gap).
pub struct SegmentNaming {
    file: Arc<SharedFile>,
    prep_path: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    /// The segment's index (for messages).
    pub index: u64,
}

impl SegmentNaming {
    /// Makes the header (and whatever was appended already) durable, renames
    /// the file to its segment name, and syncs the directory.
    pub fn run(&self, store: &dyn Storage) -> io::Result<()> {
        self.file.sync()?;
        if store.exists(&self.path) {
            return Err(io::Error::other(format!(
                "{} already exists",
                self.path.display()
            )));
        }
        store.rename(&self.prep_path, &self.path)?;
        store.sync_dir(&self.dir)
    }
}

impl SegmentWriter {
    /// Creates and preallocates a new segment, writes its header, and makes
    /// file and directory entry durable.
    pub fn create(
        store: &dyn Storage,
        dir: &Path,
        header: SegmentHeader,
    ) -> io::Result<SegmentWriter> {
        PreparedSegment::new(store, dir, header.index, header.size)?.activate(store, dir, header)
    }

    /// Opens an existing segment to append after `pos` (recovery).
    pub fn open(
        store: &dyn Storage,
        path: &Path,
        header: SegmentHeader,
        pos: usize,
    ) -> io::Result<SegmentWriter> {
        let file = store.open(path, true)?;
        let len = file.len()?;
        if len != header.size {
            return Err(io::Error::other(format!(
                "{}: size {len} differs from its header's {}",
                path.display(),
                header.size
            )));
        }
        // Real blocks under the whole file, as at creation: a segment copied
        // by a tool that makes holes (a backup restored with `cp --sparse`)
        // would otherwise turn a full disk into a failed append. Free when
        // the blocks are there; skipped where the file system cannot.
        file.allocate(header.size)?;
        let size = usize::try_from(header.size).map_err(io::Error::other)?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            header,
            file: Arc::new(SharedFile::new(file)),
            size,
            pos,
            // Nothing is known to be synced: the first sync covers it all.
            synced: 0,
            stage: Vec::new(),
        })
    }

    pub fn remaining(&self) -> usize {
        self.size - self.pos
    }

    /// A handle that syncs this segment from another thread.
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            file: self.file.clone(),
            segment: self.header.index,
        }
    }

    /// Writes bytes at the end; returns their offset.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<usize> {
        debug_assert!(bytes.len() <= self.remaining());
        let at = self.pos;
        self.file.write(bytes, at)?;
        self.pos += bytes.len();
        Ok(at)
    }

    /// Writes a record with one positioned write: header, body, then zero
    /// padding up to `total` bytes. Returns its offset. Nothing moves when
    /// the write fails (and the segment accepts no sync after it).
    pub fn append_record(&mut self, header: &[u8], body: &[u8], total: usize) -> io::Result<usize> {
        debug_assert!(total <= self.remaining() && header.len() + body.len() <= total);
        let mut stage = std::mem::take(&mut self.stage);
        stage.clear();
        stage.extend_from_slice(header);
        stage.extend_from_slice(body);
        stage.resize(total, 0);
        let at = self.pos;
        let written = self.file.write(&stage, at);
        self.stage = stage;
        written?;
        self.pos += total;
        Ok(at)
    }

    /// Writes the records `[from, to)` again, as they read now, after
    /// checking that they still are whole records with good checksums
    /// ending at `to` (pages a failed sync marked clean may have been
    /// evicted since recovery read them: writing back what the disk holds
    /// then would be writing back a hole). Their pages become dirty again,
    /// so the next sync writes them.
    pub fn rewrite(&mut self, from: usize, to: usize) -> io::Result<()> {
        use crate::format::{RecordHeader, RECORD_HEADER_BYTES};
        if to <= from {
            return Ok(());
        }
        let mut buf = vec![0u8; to - from];
        self.file.file.read_exact_at(&mut buf, from as u64)?;
        let changed = |at: usize| {
            io::Error::other(format!(
                "{}: the record at byte {at} changed after recovery read it (the page cache lost bytes a failed sync never wrote); start again to recover from what the disk holds",
                self.path.display()
            ))
        };
        let mut at = 0;
        while at < buf.len() {
            let head = buf
                .get(at..at + RECORD_HEADER_BYTES)
                .ok_or_else(|| changed(from + at))?;
            if !RecordHeader::well_formed(head) {
                return Err(changed(from + at));
            }
            let h = RecordHeader::decode(head);
            let body = buf
                .get(at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + h.body_len as usize)
                .ok_or_else(|| changed(from + at))?;
            if !h.crc_ok(body) {
                return Err(changed(from + at));
            }
            at = (at + h.total_len()).min(buf.len());
        }
        self.file.write(&buf, from)?;
        self.synced = self.synced.min(from);
        Ok(())
    }

    /// Makes `[from, end)` read as zeros (nothing durable lies there), to be
    /// made durable by the next sync.
    pub fn zero_rest(&mut self, from: usize) -> io::Result<()> {
        self.file
            .file
            .zero_range(from as u64, self.size as u64)
            .inspect_err(|_| *self.file.failed.lock() = true)?;
        self.synced = self.synced.min(from);
        Ok(())
    }

    /// Zeroes `[from, end)` (cutting off a torn tail) and syncs.
    pub fn zero_from(&mut self, from: usize) -> io::Result<()> {
        self.zero_rest(from)?;
        self.pos = from;
        self.synced = from;
        self.file.sync()
    }

    /// Makes everything appended so far durable (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        if *self.file.failed.lock() {
            return Err(io::Error::other(
                "an earlier sync or write of this segment failed: its unsynced bytes may be lost",
            ));
        }
        if self.pos > self.synced {
            self.file.sync()?;
            self.synced = self.pos;
        }
        Ok(())
    }
}

/// Bytes a reader asks the kernel for at least, at first and after
/// [`SegmentReader::forget`]: one record's worth of reading stays cheap.
const FIRST_CHUNK: usize = 32 << 10;
/// Bytes a reader asks for at least once it has been reading a while (the
/// chunk doubles up to this): a scan of a segment takes few system calls.
pub const READ_CHUNK: usize = 1 << 20;

/// A segment read with positioned reads (`pread`) into a buffer of its own,
/// reused from read to read. Nothing maps a segment: a copy made by the
/// kernel is ours alone; bytes that were being written when it was made may
/// be torn, which is why readers only trust records they know were complete
/// before the read (see `follow`). A read that fails (a bad sector, a file
/// cut short under us) is a [`Problem`] naming the file and the offset.
pub struct SegmentReader {
    pub path: PathBuf,
    file: Arc<dyn StorageFile>,
    len: usize,
    /// A copy of the file's bytes `[start, start + filled)`. `start` is a
    /// multiple of the record alignment and the buffer is 16-aligned, so
    /// record bodies in it are aligned as rkyv wants them.
    buf: AlignedVec<16>,
    start: usize,
    filled: usize,
    /// Bytes the next refill reads at least.
    chunk: usize,
}

impl SegmentReader {
    pub fn open(store: &dyn Storage, path: &Path) -> io::Result<SegmentReader> {
        let file = store.open(path, false)?;
        let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
        Ok(SegmentReader {
            path: path.to_path_buf(),
            file,
            len,
            buf: AlignedVec::new(),
            start: 0,
            filled: 0,
            chunk: FIRST_CHUNK,
        })
    }

    /// The file's length when it was opened (segments never change size).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `[at, at + n)` of the file, fewer where the file ends first;
    /// from the buffer when it holds them, else by one read that refills it.
    pub fn bytes(&mut self, at: usize, n: usize) -> Result<&[u8], Problem> {
        let n = n.min(self.len.saturating_sub(at));
        if n == 0 {
            return Ok(&[]);
        }
        if at < self.start || at + n > self.start + self.filled {
            self.fill(at, n)?;
        }
        let from = at - self.start;
        Ok(&self.buf[from..from + n])
    }

    /// The segment header's bytes (fewer when the file is shorter).
    pub fn header_bytes(&mut self) -> Result<&[u8], Problem> {
        self.bytes(0, SEGMENT_HEADER_BYTES)
    }

    /// Forgets the buffered bytes, so that the next read comes from the file.
    /// For a segment being appended to: bytes buffered before a record was
    /// complete may be stale.
    pub fn forget(&mut self) {
        self.filled = 0;
        self.chunk = FIRST_CHUNK;
    }

    /// Reads at least `[at, at + n)` (`n > 0`, within the file) into the
    /// buffer, from the record boundary at or before `at`.
    fn fill(&mut self, at: usize, n: usize) -> Result<(), Problem> {
        let start = at - at % RECORD_ALIGN;
        let want = (at + n - start).max(self.chunk).min(self.len - start);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        // Nothing buffered is valid until the read succeeds.
        self.filled = 0;
        self.file
            .read_exact_at(&mut self.buf[..want], start as u64)
            .map_err(|e| {
                let msg = format!("cannot read bytes {start}..{}: {e}", start + want);
                Problem::new("unreadable", file_label(&self.path), start as u64, 0, msg)
            })?;
        self.start = start;
        self.filled = want;
        self.chunk = (self.chunk * 2).min(READ_CHUNK);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::genesis;
    use crate::storage::RealDisk;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn header(size: u64) -> SegmentHeader {
        SegmentHeader {
            index: 0,
            first_seq: 1,
            prev_chain: genesis(),
            size,
        }
    }

    #[test]
    fn create_append_sync_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let header = header(1 << 16);
        let mut w = SegmentWriter::create(&RealDisk, dir.path(), header).unwrap();
        let at = w.append(b"0123456789abcdef").unwrap();
        assert_eq!(at, SEGMENT_HEADER_BYTES);
        w.sync().unwrap();
        drop(w);
        let path = dir.path().join(crate::format::segment_name(0));
        // Preallocated, not sparse: every block is allocated.
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 >= 1 << 16, "segment must not be sparse");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "private");
        let mut r = SegmentReader::open(&RealDisk, &path).unwrap();
        assert_eq!(
            SegmentHeader::decode(r.header_bytes().unwrap()).unwrap(),
            header
        );
        assert_eq!(r.bytes(at, 16).unwrap(), b"0123456789abcdef");
        let mut w = SegmentWriter::open(&RealDisk, &path, header, at + 16).unwrap();
        w.zero_from(at).unwrap();
        let mut r = SegmentReader::open(&RealDisk, &path).unwrap();
        assert_eq!(r.len(), 1 << 16);
        assert!(r.bytes(at, 1 << 16).unwrap().iter().all(|&b| b == 0));
        assert_eq!(
            r.bytes(at, 1 << 16).unwrap().len(),
            (1 << 16) - at,
            "clamped"
        );
        assert!(r.bytes(1 << 16, 80).unwrap().is_empty(), "past the end");
        assert!(
            SegmentWriter::create(&RealDisk, dir.path(), header).is_err(),
            "never overwrite a segment"
        );
    }

    #[test]
    fn a_pre_written_segment_is_zeros_on_real_blocks_and_handed_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let size = PREWRITE_SYNC_BYTES + PREWRITE_CHUNK_BYTES + 4096;
        let prep = Preparation::default();
        let segment = PreparedSegment::pre_write(&RealDisk, dir.path(), 7, size, &prep)
            .unwrap()
            .expect("not abandoned");
        assert!(prep.take_if_ready(), "ready: the writer takes it");
        assert!(prep.take_if_ready(), "and it stays ready");
        let path = dir.path().join("segment-0000000007.wal.zeroed.prep");
        assert!(is_preparation("segment-0000000007.wal.zeroed.prep"));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size);
        assert!(meta.blocks() * 512 >= size, "every block allocated");
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.iter().all(|&b| b == 0));
        segment.discard(&RealDisk).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn an_abandoned_preparation_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let prep = Preparation::default();
        assert!(!prep.take_if_ready(), "not ready: abandoned");
        let got = PreparedSegment::pre_write(&RealDisk, dir.path(), 3, 4 << 20, &prep).unwrap();
        assert!(got.is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Abandoned while it writes: the writer gives up on it from another
        // thread; the preparer stops and removes its file.
        let prep = std::sync::Arc::new(Preparation::default());
        let theirs = prep.clone();
        let path = dir.path().to_path_buf();
        let preparer = std::thread::spawn(move || {
            PreparedSegment::pre_write(&RealDisk, &path, 4, 256 << 20, &theirs)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        let taken = prep.take_if_ready();
        let got = preparer.join().unwrap().unwrap();
        assert_eq!(taken, got.is_some(), "handed over exactly when taken");
        if let Some(segment) = got {
            segment.discard(&RealDisk).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_write_fails_every_later_sync() {
        use crate::storage::sim::{FaultRates, SimDisk};
        let disk = SimDisk::new(1, FaultRates::default());
        let dir = Path::new("/d");
        disk.create_dir(dir).unwrap();
        let mut w = SegmentWriter::create(&disk, dir, header(1 << 16)).unwrap();
        w.append(b"fine").unwrap();
        w.sync().unwrap();
        disk.set_rates(FaultRates {
            write_eio: 1_000_000,
            ..FaultRates::default()
        });
        let pos = w.pos;
        assert!(w.append_record(&[1; 16], &[2; 16], 48).is_err());
        assert_eq!(w.pos, pos, "nothing moved");
        disk.set_rates(FaultRates::default());
        w.append(b"later").unwrap();
        assert!(w.sync().is_err(), "no sync succeeds after a failed write");
        assert!(w.sync_handle().sync().is_err(), "on any thread");
    }

    #[test]
    fn a_failed_read_names_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentWriter::create(&RealDisk, dir.path(), header(1 << 20)).unwrap();
        let path = w.path.clone();
        drop(w);
        let mut r = SegmentReader::open(&RealDisk, &path).unwrap();
        assert!(r.header_bytes().is_ok());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(8192)
            .unwrap();
        let p = r.bytes(512 << 10, 80).unwrap_err();
        assert_eq!(p.kind, "unreadable");
        assert_eq!(p.file, "segment-0000000000.wal");
        assert_eq!(p.offset, 512 << 10);
        assert!(p.message.contains("cannot read bytes 524288.."), "{p}");
    }

    #[test]
    fn reads_refill_by_growing_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let size = 8 << 20;
        let mut w = SegmentWriter::create(&RealDisk, dir.path(), header(size)).unwrap();
        let pattern: Vec<u8> = (0..(size as usize - SEGMENT_HEADER_BYTES))
            .map(|i| (i % 251) as u8)
            .collect();
        w.append(&pattern).unwrap();
        w.sync().unwrap();
        let mut r = SegmentReader::open(&RealDisk, &w.path).unwrap();
        let mut at = SEGMENT_HEADER_BYTES;
        while at < size as usize {
            let n = 1000.min(size as usize - at);
            let expect = &pattern[at - SEGMENT_HEADER_BYTES..at - SEGMENT_HEADER_BYTES + n];
            assert_eq!(r.bytes(at, n).unwrap(), expect, "at {at}");
            at += n;
        }
        assert_eq!(r.chunk, READ_CHUNK, "grew to the largest chunk");
        // Backwards and unaligned reads come from the file again.
        assert_eq!(
            r.bytes(SEGMENT_HEADER_BYTES + 3, 5).unwrap(),
            &pattern[3..8]
        );
        r.forget();
        assert_eq!(r.chunk, FIRST_CHUNK);
        assert_eq!(
            r.bytes(SEGMENT_HEADER_BYTES + 3, 5).unwrap(),
            &pattern[3..8]
        );
    }
}
