//! Segment files: preallocated (real blocks, not sparse: a full disk fails at
//! creation, never as a SIGBUS on a later write), memory-mapped by the writer
//! alone, appended to in place, made durable with `fdatasync`. Readers use
//! ordinary file reads ([`SegmentReader`]), never a mapping. Files are
//! created private to their owner (mode 0600).
//!
//! The only `unsafe` of the crate is here: mapping a segment for the writer
//! (`map_for_writer`).

use crate::format::{SegmentHeader, RECORD_ALIGN, SEGMENT_HEADER_BYTES};
use crate::problem::{file_label, Problem};
use memmap2::{MmapMut, MmapOptions};
use rkyv::util::AlignedVec;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment file shared by its writer and the [`SyncHandle`]s that sync it
/// from another thread. Every sync goes through [`SharedFile::sync`]: one at
/// a time, and once one has failed every later one fails too. (Linux
/// reports a write-back error to one `fdatasync` of an open file only, and
/// marks the failed pages clean: without this, a second thread's sync could
/// succeed after the first's failed and acknowledge bytes that never reached
/// the disk.)
pub struct SharedFile {
    file: File,
    /// Whether a sync has failed.
    failed: parking_lot::Mutex<bool>,
}

impl SharedFile {
    fn new(file: File) -> SharedFile {
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
                "an earlier sync of this segment failed: its unsynced bytes may be lost",
            ));
        }
        self.file.sync_data().inspect_err(|_| *failed = true)
    }
}

/// Syncs a segment from another thread than the one appending to it
/// (pipelined group commit: the writer appends the next group while this
/// syncs the last). `fdatasync` makes durable every byte written to the
/// file before the call began, through the writer's mapping included.
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
    map: MmapMut,
    /// Next free byte.
    pub pos: usize,
    /// Bytes written but not yet synced start here.
    synced: usize,
}

/// Makes a directory entry (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A segment file made ready ahead of time (allocated, mapped, its pages
/// faulted in) under a `.prep` name that log readers ignore. Preparing is
/// slow (the kernel zeroes every page); activating it is a header write, a
/// sync and a rename, so rotation does not stall the writer.
pub struct PreparedSegment {
    prep_path: PathBuf,
    file: File,
    map: MmapMut,
    size: u64,
}

impl PreparedSegment {
    pub fn new(dir: &Path, index: u64, size: u64) -> io::Result<PreparedSegment> {
        let prep_path = dir.join(format!("{}.prep", crate::format::segment_name(index)));
        match std::fs::remove_file(&prep_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&prep_path)?;
        // Real blocks: posix_fallocate semantics (mode 0) allocate and zero.
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)?;
        // `populate` faults the pages in now rather than on the writer's
        // first touch.
        let map = map_for_writer(&file, size, true)?;
        Ok(PreparedSegment {
            prep_path,
            file,
            map,
            size,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes the header, makes it durable, and gives the file its segment
    /// name (then syncs the directory), so readers only ever see it whole.
    pub fn activate(mut self, dir: &Path, header: SegmentHeader) -> io::Result<SegmentWriter> {
        debug_assert_eq!(header.size, self.size);
        header.encode(&mut self.map[..SEGMENT_HEADER_BYTES]);
        self.file.sync_all()?;
        let path = dir.join(crate::format::segment_name(header.index));
        if path.exists() {
            return Err(io::Error::other(format!(
                "{} already exists",
                path.display()
            )));
        }
        std::fs::rename(&self.prep_path, &path)?;
        sync_dir(dir)?;
        let (file, map) = (Arc::new(SharedFile::new(self.file)), self.map);
        let pos = SEGMENT_HEADER_BYTES;
        Ok(SegmentWriter {
            path,
            header,
            file,
            map,
            pos,
            synced: pos,
        })
    }
}

/// Maps `len` bytes of a segment file for the writer: the one mapping of a
/// segment this process ever makes.
#[allow(unsafe_code)]
fn map_for_writer(file: &File, len: u64, populate: bool) -> io::Result<MmapMut> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut options = MmapOptions::new();
    options.len(len);
    if populate {
        options.populate();
    }
    // SAFETY: `MmapMut` hands out `&mut [u8]` over the file's pages, which
    // is sound as long as nothing else changes or frees those bytes while the
    // mapping lives. What holds:
    // - In this process nothing else maps a segment: readers (the follower,
    //   `read_at`, recovery's scan, snapshots, the audit) read with `pread`
    //   into buffers of their own (`SegmentReader`), which the kernel fills
    //   the way it would for another process; they never hold a reference
    //   into these pages. Each segment has one writer at a time: a
    //   `PreparedSegment` moves its mapping into the `SegmentWriter` it
    //   becomes, and recovery drops the writer that cuts a torn tail before
    //   the log writer reopens the file.
    // - The file's length never changes while mapped: `PreparedSegment::new`
    //   fallocates the whole size before mapping, `SegmentWriter::open`
    //   checks the length against the header first, and no code of this
    //   crate truncates or resizes a segment (a torn tail is zeroed through
    //   this mapping, not truncated). Removing a segment's name (archiving)
    //   leaves the pages of an open mapping valid.
    // - Other processes: `Durable::open` takes the data directory's
    //   exclusive `flock` before any segment is created or opened for
    //   writing (direct users of `LogWriter`, benchmarks and tests, use a
    //   directory of their own), new segments are created with `create_new`
    //   and mode 0600, and `tally-audit` only reads. The lock is advisory:
    //   a process of the same user that ignores it and writes or truncates
    //   a segment can change these bytes under us, which no program can
    //   prevent for a file it maps; the worst a truncation does is a SIGBUS
    //   that stops the writer, before anything unsynced is acknowledged.
    unsafe { options.map_mut(file) }
}

impl SegmentWriter {
    /// Creates, preallocates and maps a new segment, writes its header, and
    /// makes file and directory entry durable.
    pub fn create(dir: &Path, header: SegmentHeader) -> io::Result<SegmentWriter> {
        PreparedSegment::new(dir, header.index, header.size)?.activate(dir, header)
    }

    /// Opens an existing segment to append after `pos` (recovery).
    pub fn open(path: &Path, header: SegmentHeader, pos: usize) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len != header.size {
            return Err(io::Error::other(format!(
                "{}: size {len} differs from its header's {}",
                path.display(),
                header.size
            )));
        }
        // Real blocks under the whole map, as at creation: a segment copied
        // by a tool that makes holes (a backup restored with `cp --sparse`)
        // would otherwise turn a full disk into a SIGBUS. Free when the
        // blocks are there; skipped where the filesystem cannot.
        crate::backup::allocate(&file, header.size)?;
        let map = map_for_writer(&file, header.size, false)?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            header,
            file: Arc::new(SharedFile::new(file)),
            map,
            pos,
            // Nothing is known to be synced: the first sync covers it all.
            synced: 0,
        })
    }

    pub fn remaining(&self) -> usize {
        self.map.len() - self.pos
    }

    /// A handle that syncs this segment from another thread.
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            file: self.file.clone(),
            segment: self.header.index,
        }
    }

    /// Copies a record into the mapping; returns its offset.
    pub fn append(&mut self, bytes: &[u8]) -> usize {
        debug_assert!(bytes.len() <= self.remaining());
        let at = self.pos;
        self.map[at..at + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
        at
    }

    /// Writes a record in place: header, body, then zero padding up to
    /// `total` bytes (no staging copy). Returns its offset.
    pub fn append_record(&mut self, header: &[u8], body: &[u8], total: usize) -> usize {
        debug_assert!(total <= self.remaining() && header.len() + body.len() <= total);
        let at = self.pos;
        let body_at = at + header.len();
        self.map[at..body_at].copy_from_slice(header);
        self.map[body_at..body_at + body.len()].copy_from_slice(body);
        self.map[body_at + body.len()..at + total].fill(0);
        self.pos += total;
        at
    }

    /// Zeroes `[from, end)` (cutting off a torn tail) and syncs.
    pub fn zero_from(&mut self, from: usize) -> io::Result<()> {
        self.map[from..].fill(0);
        self.pos = from;
        self.synced = from;
        self.file.sync()
    }

    /// Makes everything appended so far durable. `fdatasync` of the file
    /// flushes the mapping's dirty pages (they are the page cache); measured
    /// faster than `msync` of the range on this kind of disk (see
    /// docs/PERFORMANCE.md).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.pos > self.synced {
            self.file.sync()?;
            self.synced = self.pos;
        }
        Ok(())
    }

    /// The alternative sync, kept for the measurement.
    pub fn msync(&mut self) -> io::Result<()> {
        if self.pos > self.synced {
            // Through the shared file's lock and failure flag, like `sync`.
            let mut failed = self.file.failed.lock();
            if *failed {
                return Err(io::Error::other("an earlier sync of this segment failed"));
            }
            self.map
                .flush_range(self.synced, self.pos - self.synced)
                .inspect_err(|_| *failed = true)?;
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

/// A segment read with ordinary file reads (`pread`) into a buffer of its
/// own, reused from read to read. Readers never map segment files: the
/// writer changes the bytes of the live segment through its mapping, and a
/// `&[u8]` over those pages would be aliased by that change (undefined
/// behaviour). A copy made by the kernel is ours alone; bytes that were being
/// written when it was made may be torn, which is why readers only trust
/// records they know were complete before the read (see `follow`). A read
/// that fails (a bad sector, a file cut short under us) is a [`Problem`]
/// naming the file and the offset, not a SIGBUS.
pub struct SegmentReader {
    pub path: PathBuf,
    file: File,
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
    pub fn open(path: &Path) -> io::Result<SegmentReader> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
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
        let mut w = SegmentWriter::create(dir.path(), header).unwrap();
        let at = w.append(b"0123456789abcdef");
        assert_eq!(at, SEGMENT_HEADER_BYTES);
        w.sync().unwrap();
        w.msync().unwrap();
        drop(w);
        let path = dir.path().join(crate::format::segment_name(0));
        // Preallocated, not sparse: every block is allocated.
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 >= 1 << 16, "segment must not be sparse");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "private");
        let mut r = SegmentReader::open(&path).unwrap();
        assert_eq!(
            SegmentHeader::decode(r.header_bytes().unwrap()).unwrap(),
            header
        );
        assert_eq!(r.bytes(at, 16).unwrap(), b"0123456789abcdef");
        let mut w = SegmentWriter::open(&path, header, at + 16).unwrap();
        w.zero_from(at).unwrap();
        let mut r = SegmentReader::open(&path).unwrap();
        assert_eq!(r.len(), 1 << 16);
        assert!(r.bytes(at, 1 << 16).unwrap().iter().all(|&b| b == 0));
        assert_eq!(
            r.bytes(at, 1 << 16).unwrap().len(),
            (1 << 16) - at,
            "clamped"
        );
        assert!(r.bytes(1 << 16, 80).unwrap().is_empty(), "past the end");
        assert!(
            SegmentWriter::create(dir.path(), header).is_err(),
            "never overwrite a segment"
        );
    }

    /// Whether this process maps `path` (from /proc/self/maps).
    fn mapped(path: &Path) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let name = path.to_string_lossy().into_owned();
        maps.lines().any(|l| l.ends_with(&name))
    }

    #[test]
    fn readers_never_map_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), header(1 << 16)).unwrap();
        let path = w.path.clone();
        assert!(mapped(&path), "the check sees the writer's mapping");
        let at = w.append(b"live bytes, 16 b");
        // The writer keeps appending while a reader reads: the reader holds
        // a copy, never a view of the pages the writer changes.
        let mut r = SegmentReader::open(&path).unwrap();
        assert_eq!(r.bytes(at, 16).unwrap(), b"live bytes, 16 b");
        w.append(b"more live bytes.");
        drop(w);
        assert!(!mapped(&path), "only the writer maps segments");
        let mut r2 = SegmentReader::open(&path).unwrap();
        assert_eq!(r2.bytes(at + 16, 16).unwrap(), b"more live bytes.");
        assert_eq!(r.bytes(at, 16).unwrap(), b"live bytes, 16 b");
        assert!(!mapped(&path));
    }

    #[test]
    fn a_failed_read_names_the_file_and_offset() {
        // With a mapping this read would be a SIGBUS.
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentWriter::create(dir.path(), header(1 << 20)).unwrap();
        let path = w.path.clone();
        drop(w);
        let mut r = SegmentReader::open(&path).unwrap();
        assert!(r.header_bytes().is_ok());
        OpenOptions::new()
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
        let mut w = SegmentWriter::create(dir.path(), header(size)).unwrap();
        let pattern: Vec<u8> = (0..(size as usize - SEGMENT_HEADER_BYTES))
            .map(|i| (i % 251) as u8)
            .collect();
        w.append(&pattern);
        w.sync().unwrap();
        let mut r = SegmentReader::open(&w.path).unwrap();
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
