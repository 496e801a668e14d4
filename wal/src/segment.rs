//! Segment files: preallocated (real blocks, not sparse: a full disk fails at
//! creation, never as a SIGBUS on a later write), memory-mapped, appended to
//! in place, made durable with `fdatasync`.

use crate::format::{SegmentHeader, SEGMENT_HEADER_BYTES};
use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A segment open for appending.
pub struct SegmentWriter {
    pub path: PathBuf,
    pub header: SegmentHeader,
    file: File,
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
            .open(&prep_path)?;
        // Real blocks: posix_fallocate semantics (mode 0) allocate and zero.
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)?;
        // SAFETY: the file was just created by us (create_new) in a data
        // directory this process holds the lock on, so no one else maps,
        // truncates or writes it; its length is fixed for its whole life, so
        // the mapping never outlives the file's bytes. `populate` faults the
        // pages in now rather than on the writer's first touch.
        let map = unsafe {
            MmapOptions::new()
                .len(size as usize)
                .populate()
                .map_mut(&file)?
        };
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
        let (file, map) = (self.file, self.map);
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
        // SAFETY: as in `create`: our locked data directory, fixed length.
        let map = unsafe {
            MmapOptions::new()
                .len(header.size as usize)
                .map_mut(&file)?
        };
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            header,
            file,
            map,
            pos,
            synced: pos,
        })
    }

    pub fn remaining(&self) -> usize {
        self.map.len() - self.pos
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
        self.file.sync_data()
    }

    /// Makes everything appended so far durable. `fdatasync` of the file
    /// flushes the mapping's dirty pages (they are the page cache); measured
    /// faster than `msync` of the range on this kind of disk (see
    /// docs/PERFORMANCE.md).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.pos > self.synced {
            self.file.sync_data()?;
            self.synced = self.pos;
        }
        Ok(())
    }

    /// The alternative sync, kept for the measurement.
    pub fn msync(&mut self) -> io::Result<()> {
        if self.pos > self.synced {
            self.map.flush_range(self.synced, self.pos - self.synced)?;
            self.synced = self.pos;
        }
        Ok(())
    }
}

/// A read-only view of a segment file.
pub struct SegmentReader {
    pub path: PathBuf,
    map: Option<Mmap>,
}

impl SegmentReader {
    pub fn open(path: &Path) -> io::Result<SegmentReader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: read-only mapping of a segment. Another process could
            // truncate the file under us only by ignoring the data directory's
            // lock (tally-audit is pointed at copies); bytes read are
            // validated before use.
            Some(unsafe { Mmap::map(&file)? })
        };
        Ok(SegmentReader {
            path: path.to_path_buf(),
            map,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::genesis;

    #[test]
    fn create_append_sync_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let header = SegmentHeader {
            index: 0,
            first_seq: 1,
            prev_chain: genesis(),
            size: 1 << 16,
        };
        let mut w = SegmentWriter::create(dir.path(), header).unwrap();
        let at = w.append(b"0123456789abcdef");
        assert_eq!(at, SEGMENT_HEADER_BYTES);
        w.sync().unwrap();
        w.msync().unwrap();
        drop(w);
        let path = dir.path().join(crate::format::segment_name(0));
        // Preallocated, not sparse: every block is allocated.
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 1 << 16, "segment must not be sparse");
        let r = SegmentReader::open(&path).unwrap();
        assert_eq!(SegmentHeader::decode(r.bytes()).unwrap(), header);
        assert_eq!(&r.bytes()[at..at + 16], b"0123456789abcdef");
        let mut w = SegmentWriter::open(&path, header, at + 16).unwrap();
        w.zero_from(at).unwrap();
        assert!(SegmentReader::open(&path).unwrap().bytes()[at..]
            .iter()
            .all(|&b| b == 0));
        assert!(
            SegmentWriter::create(dir.path(), header).is_err(),
            "never overwrite a segment"
        );
    }
}
