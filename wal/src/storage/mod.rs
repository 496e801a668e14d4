//! The storage seam: every byte the log, the snapshots and the backups read
//! or write goes through a [`Storage`] (the directory: create, open, list,
//! rename, remove, sync) and the [`StorageFile`]s it opens (positioned reads
//! and writes, allocation, `fdatasync`). Two backends:
//!
//! - [`RealDisk`]: the operating system's files (`pread`, `pwrite`,
//!   `fallocate`, `fdatasync`, directory `fsync`), files created mode 0600;
//! - [`sim::SimDisk`]: an in-memory disk with a sector-level model of what a
//!   crash keeps and of the faults real disks have, every fault drawn from a
//!   seed (the deterministic simulator, `tally-sim`, runs the ledger on it).
//!
//! The model follows redb's `StorageBackend`: the code above the seam cannot
//! tell the backends apart, so what the simulator proves about recovery holds
//! for the code that runs on the real disk.

pub mod sim;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A shared handle to a storage backend (the log writer hands it to the
/// thread that prepares the next segment).
pub type Store = Arc<dyn Storage>;

/// A directory tree of files.
pub trait Storage: Send + Sync {
    /// Creates a new empty file, readable and writable, private to its
    /// owner (mode 0600); an existing file of that name is an error.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file, for reading only unless `write`.
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// The files directly in `dir` (paths, in no particular order).
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Renames a file, replacing `to` when it exists (atomic).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file's name (an open handle stays readable).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries (files created, renamed or removed in it)
    /// durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its missing parents, private (mode 0700); an
    /// existing directory is left as it is.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file of that name exists.
    fn exists(&self, path: &Path) -> bool;
    /// Whether the log may prepare segments on a background thread (the
    /// simulator runs everything on one thread, in order).
    fn background_threads(&self) -> bool {
        true
    }
}

/// One open file. Every method takes `&self`: a segment is written by its
/// writer and synced by the log's sync thread through the same handle.
// `len` is fallible (a stat): an `is_empty` beside it would add nothing.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync {
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; a file that ends first is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (not durable until a sync).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Gives `[0, size)` real blocks (zeros where nothing was written), so a
    /// full disk fails here and never on a later write; the file grows to
    /// `size` when shorter. `Ok(false)` where the file system cannot
    /// allocate: the caller writes zeros instead.
    fn allocate(&self, size: u64) -> io::Result<bool>;
    /// Sets the file's length (shorter cuts, longer adds zeros).
    fn set_len(&self, size: u64) -> io::Result<()>;
    /// Makes `[from, to)` read as zeros, durably at the next sync: the file
    /// system's zero-range where it has one, zeros written otherwise.
    fn zero_range(&self, from: u64, to: u64) -> io::Result<()> {
        write_zeros(self, from, to)
    }
    /// `fdatasync`: every byte written before the call began is durable
    /// when it returns `Ok`, with the length.
    fn sync_data(&self) -> io::Result<()>;
}

/// Reads a whole file.
pub fn read_all(store: &dyn Storage, path: &Path) -> io::Result<Vec<u8>> {
    let file = store.open(path, false)?;
    let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Background writers (snapshots, the history's and the cold tier's runs)
/// make what they wrote durable every this many bytes ("write-behind", as
/// RocksDB's `bytes_per_sync`). Left to the kernel, a merge's or a
/// snapshot's hundreds of megabytes stay dirty until a flush writes them at
/// once, and the log's group syncs, which must not wait, queue behind that
/// flush (measured: log appends and syncs of 0.5–0.6 s during a soak). At
/// this size the writer waits on its own small syncs instead.
pub const WRITE_BEHIND_BYTES: u64 = 8 << 20;

/// Writes `buf` at `offset`, syncing (`fdatasync`) each time the write
/// reaches a multiple of [`WRITE_BEHIND_BYTES`] in the file (see there).
/// Bytes after the last such multiple are not synced: the caller syncs at
/// its end as it would have (a file under that size syncs exactly as often
/// as without write-behind).
pub fn write_behind(file: &dyn StorageFile, buf: &[u8], offset: u64) -> io::Result<()> {
    let (mut at, mut rest) = (offset, buf);
    while !rest.is_empty() {
        let to_boundary = WRITE_BEHIND_BYTES - at % WRITE_BEHIND_BYTES;
        let n = (rest.len() as u64).min(to_boundary) as usize;
        file.write_all_at(&rest[..n], at)?;
        at += n as u64;
        rest = &rest[n..];
        if at % WRITE_BEHIND_BYTES == 0 {
            file.sync_data()?;
        }
    }
    Ok(())
}

/// Writes zeros over `[from, to)` (where a file system cannot allocate).
pub fn write_zeros<F: StorageFile + ?Sized>(file: &F, from: u64, to: u64) -> io::Result<()> {
    fill_zeros(from, to, |zeros, at| file.write_all_at(zeros, at))
}

/// The largest chunk [`fill_zeros`] writes at once.
pub const ZERO_CHUNK_BYTES: u64 = 1 << 20;

/// Calls `write(zeros, at)` over `[from, to)` in chunks of up to
/// [`ZERO_CHUNK_BYTES`].
pub fn fill_zeros(
    from: u64,
    to: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let zeros = vec![0u8; (to.saturating_sub(from)).min(ZERO_CHUNK_BYTES) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        write(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The operating system's files.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

/// The real disk as a [`Store`].
pub fn real() -> Store {
    Arc::new(RealDisk)
}

struct RealFile(File);

impl Storage for RealDisk {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut v = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            v.push(entry?.path());
        }
        Ok(v)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn allocate(&self, size: u64) -> io::Result<bool> {
        crate::backup::allocate(&self.0, size)
    }

    fn set_len(&self, size: u64) -> io::Result<()> {
        self.0.set_len(size)
    }

    fn zero_range(&self, from: u64, to: u64) -> io::Result<()> {
        if to <= from {
            return Ok(());
        }
        use rustix::fs::FallocateFlags as F;
        match rustix::fs::fallocate(&self.0, F::ZERO_RANGE | F::KEEP_SIZE, from, to - from) {
            Ok(()) => Ok(()),
            // No zero-range here, or one that reallocates and finds the
            // disk full (btrfs, XFS): writing zeros over the blocks the
            // file already has needs no new space.
            Err(e)
                if [
                    rustix::io::Errno::OPNOTSUPP,
                    rustix::io::Errno::NOSYS,
                    rustix::io::Errno::INVAL,
                    rustix::io::Errno::NOSPC,
                    rustix::io::Errno::DQUOT,
                ]
                .contains(&e) =>
            {
                write_zeros(self, from, to)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_real_disk_creates_private_files_and_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk;
        let path = dir.path().join("a");
        let f = disk.create_new(&path).unwrap();
        assert!(disk.create_new(&path).is_err(), "never overwrite");
        assert!(f.allocate(8192).unwrap());
        f.write_all_at(b"hello", 4096).unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.len().unwrap(), 8192);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut buf = [0u8; 5];
        disk.open(&path, false)
            .unwrap()
            .read_exact_at(&mut buf, 4096)
            .unwrap();
        assert_eq!(&buf, b"hello");
        assert!(f.read_exact_at(&mut buf, 8190).is_err(), "past the end");
        disk.rename(&path, &dir.path().join("b")).unwrap();
        disk.sync_dir(dir.path()).unwrap();
        assert_eq!(disk.list(dir.path()).unwrap(), vec![dir.path().join("b")]);
        assert_eq!(read_all(&disk, &dir.path().join("b")).unwrap().len(), 8192);
        disk.remove(&dir.path().join("b")).unwrap();
        assert!(!disk.exists(&dir.path().join("b")));
    }
}
