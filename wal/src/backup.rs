//! What an online backup copies from a live data directory: a plan of files
//! and, for each, how many of its bytes.
//!
//! The cut is a durable sequence `D`. Every segment before the one holding
//! `D` is immutable and copied whole; the segment holding `D` is copied up to
//! the end of the record that ends at `D`, and the copy is given the
//! segment's full size, the rest zeros: exactly what that segment held on
//! disk when `D` became durable, so the copy reads as a clean log ending at
//! `D` (never a torn tail, never a byte that was not durable). Segments after
//! it hold nothing durable at the cut and are left out. The newest snapshot
//! at or before `D` goes with it, so that a server started on the copy
//! replays only the records after that snapshot.
//!
//! The bytes planned never change while the server runs: durable records are
//! never rewritten, sealed segments never change, snapshots are written
//! once. The plan is therefore a consistent copy however long the copying
//! takes, with no pause of the writer.

use crate::format::{RecordHeader, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::problem::Problem;
use crate::scan::segment_files;
use crate::segment::SegmentReader;
use crate::storage::{Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file of a backup.
#[derive(Clone)]
pub struct BackupFile {
    /// The name in the data directory (and in the copy).
    pub name: String,
    pub path: PathBuf,
    /// The copy's length.
    pub size: u64,
    /// Bytes copied from the start of the file; the rest of the copy is zero.
    pub copy: u64,
    /// The file, opened when planned, for the files that can be removed
    /// while the backup runs (the snapshot: only the newest two are kept);
    /// `None` for segments, read by path (`tallyd` never archives, and a
    /// log of thousands of segments must not hold thousands of handles).
    pub file: Option<Arc<dyn StorageFile>>,
}

impl BackupFile {
    /// Opens `path` for a backup of all its bytes, and keeps it open.
    pub fn open(store: &dyn Storage, path: &Path) -> Result<BackupFile, Problem> {
        let file = store
            .open(path, false)
            .map_err(|e| unreadable(path, &e.to_string()))?;
        let size = file.len().map_err(|e| unreadable(path, &e.to_string()))?;
        Ok(BackupFile {
            name: name_of(path),
            path: path.to_path_buf(),
            size,
            copy: size,
            file: Some(file),
        })
    }

    /// Reads `buf.len()` planned bytes from `offset`: through the handle
    /// when the plan kept one, else from the file by its path.
    pub fn read_exact_at(
        &self,
        store: &dyn Storage,
        buf: &mut [u8],
        offset: u64,
    ) -> std::io::Result<()> {
        match &self.file {
            Some(f) => f.read_exact_at(buf, offset),
            None => store.open(&self.path, false)?.read_exact_at(buf, offset),
        }
    }
}

impl std::fmt::Debug for BackupFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupFile")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("size", &self.size)
            .field("copy", &self.copy)
            .finish()
    }
}

impl PartialEq for BackupFile {
    fn eq(&self, o: &BackupFile) -> bool {
        (&self.name, &self.path, self.size, self.copy) == (&o.name, &o.path, o.size, o.copy)
    }
}

impl Eq for BackupFile {}

/// A backup's files, consistent at `durable_seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPlan {
    pub durable_seq: u64,
    /// The snapshot included, by its last sequence (none when the directory
    /// has none at or before the cut).
    pub snapshot_seq: Option<u64>,
    pub files: Vec<BackupFile>,
}

impl BackupPlan {
    /// Bytes to copy in all.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.copy).sum()
    }
}

/// The plan for `dir` at the durable sequence `durable` (which the log must
/// have reached: a record ends exactly there, or nothing is logged yet).
pub fn plan(store: &dyn Storage, dir: &Path, durable: u64) -> Result<BackupPlan, Problem> {
    let segments = segment_files(store, dir)?;
    // One segment open at a time: a log kept for years has many.
    let mut firsts = Vec::with_capacity(segments.len());
    for (_, path) in &segments {
        let mut r = open(store, path)?;
        let h = SegmentHeader::decode(r.header_bytes()?)
            .map_err(|e| Problem::new("bad_segment_header", name_of(path), 0, 0, e))?;
        firsts.push(h.first_seq);
    }
    let mut files = Vec::new();
    for (k, (_, path)) in segments.iter().enumerate() {
        if firsts[k] > durable && !files.is_empty() {
            break;
        }
        // Wholly durable when the next segment starts at or before the cut.
        let whole = firsts.get(k + 1).is_some_and(|next| *next <= durable);
        let mut reader = open(store, path)?;
        let size = reader.len() as u64;
        let copy = if whole {
            size
        } else {
            end_of(&mut reader, firsts[k], durable)?
        };
        files.push(BackupFile {
            name: name_of(path),
            path: path.clone(),
            size,
            copy,
            file: None,
        });
        if !whole {
            break;
        }
    }
    let snapshot = crate::snapshot::list(store, dir)
        .into_iter()
        .filter(|(seq, _)| *seq <= durable)
        .max_by_key(|(seq, _)| *seq);
    let snapshot_seq = snapshot.as_ref().map(|(s, _)| *s);
    // The cold tier as its manifest names it (a snapshot that left id
    // records to it needs it). Its watermark is never past a durable
    // sequence, and the caller holds the snapshot lock (no newer manifest
    // meanwhile); held open, since a later manifest may drop merged runs.
    let (covered, cold) = crate::cold::manifest_files(store, dir)?;
    if covered > durable {
        let msg =
            format!("the cold tier covers sequence {covered}, past the durable sequence {durable}");
        return Err(Problem::new(
            "cold_tier_ahead",
            crate::cold::COLD_DIR,
            0,
            durable,
            msg,
        ));
    }
    for path in cold {
        let mut f = BackupFile::open(store, &path)?;
        f.name = format!("{}/{}", crate::cold::COLD_DIR, f.name);
        files.push(f);
    }
    if let Some((_, path)) = snapshot {
        files.push(BackupFile::open(store, &path)?);
    }
    Ok(BackupPlan {
        durable_seq: durable,
        snapshot_seq,
        files,
    })
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn unreadable(path: &Path, why: &str) -> Problem {
    Problem::new("unreadable", name_of(path), 0, 0, why.to_string())
}

fn open(store: &dyn Storage, path: &Path) -> Result<SegmentReader, Problem> {
    SegmentReader::open(store, path).map_err(|e| unreadable(path, &e.to_string()))
}

/// The offset just after the record of this segment that ends at `durable`
/// (the header's end when the segment holds nothing durable).
fn end_of(r: &mut SegmentReader, first_seq: u64, durable: u64) -> Result<u64, Problem> {
    let file = name_of(&r.path);
    if durable < first_seq {
        return Ok(SEGMENT_HEADER_BYTES as u64);
    }
    let mut at = SEGMENT_HEADER_BYTES;
    let mut expect = first_seq;
    loop {
        let b = r.bytes(at, RECORD_HEADER_BYTES)?;
        let problem =
            |what: String| Problem::new("damaged_record", file.clone(), at as u64, expect, what);
        if b.len() < RECORD_HEADER_BYTES || b.iter().all(|&x| x == 0) {
            return Err(problem(format!(
                "the log ends at sequence {} in this segment, before the durable sequence {durable}",
                expect - 1
            )));
        }
        if !RecordHeader::well_formed(b) {
            return Err(problem(
                "a malformed record header inside the durable region".into(),
            ));
        }
        let h = RecordHeader::decode(b);
        if h.first_seq != expect {
            return Err(problem(format!(
                "a record holds sequence {} where {expect} was expected",
                h.first_seq
            )));
        }
        let end = at + h.total_len();
        if end > r.len() {
            return Err(problem(format!(
                "a record of {} bytes runs past the end of the segment ({} bytes)",
                h.total_len(),
                r.len()
            )));
        }
        if h.last_seq() == durable {
            return Ok(end as u64);
        }
        if h.last_seq() > durable {
            return Err(problem(format!(
                "no record ends at the durable sequence {durable} (this one ends at {})",
                h.last_seq()
            )));
        }
        expect = h.last_seq() + 1;
        at = end;
    }
}

/// Copies a plan's files into the directory `dest` (created private, mode
/// 0700; it must not hold files of the same names), each file private
/// (0600), synced, and the directory synced. For copies on the same machine
/// and for tests; `tally backup` fetches the same bytes over the network.
pub fn copy_to(plan: &BackupPlan, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    crate::durable::create_private_dir(dest)?;
    let mut buf = vec![0u8; 1 << 20];
    for f in &plan.files {
        let out = create_private(&dest.join(&f.name))?;
        let mut at = 0;
        while at < f.copy {
            let n = (f.copy - at).min(buf.len() as u64) as usize;
            f.read_exact_at(&crate::storage::RealDisk, &mut buf[..n], at)?;
            out.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        finish_file(&out, f.copy, f.size)?;
    }
    crate::segment::sync_dir(dest)
}

/// Gives a copied file (`copied` bytes written) its full length `size`
/// with real blocks (a segment's tail must never be a hole: on a full disk
/// the writer's append into it would fail where creation should have), then
/// syncs it. Where the filesystem cannot allocate (some network and FUSE
/// filesystems), the tail is written with zeros instead.
pub fn finish_file(file: &std::fs::File, copied: u64, size: u64) -> std::io::Result<()> {
    file.set_len(size)?;
    if !allocate(file, size)? {
        use std::os::unix::fs::FileExt;
        crate::storage::fill_zeros(copied, size, |zeros, at| file.write_all_at(zeros, at))?;
    }
    file.sync_all()
}

/// `fallocate` mode 0 over `[0, size)`: allocates the holes, keeps the data.
/// `Ok(false)` where the filesystem does not support it.
pub fn allocate(file: &std::fs::File, size: u64) -> std::io::Result<bool> {
    if size == 0 {
        return Ok(true);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A new file, mode 0600 (an existing one is an error: nothing is
/// overwritten).
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}
