//! A block file: the on-disk shape that both kinds of run share (the cold
//! tier's id runs, [`crate::cold::run`], and the history's runs,
//! [`crate::history::run`]). Each kind names its [`Layout`] (magic, entry
//! and key sizes, error code) and what its entries and keys mean; this
//! module writes and checks the bytes.
//!
//! Layout (integers little-endian):
//! - header, [`HEADER`] bytes: magic (8), version (u32), entry size (u32),
//!   entries (u64), the sequence range `lo` and `hi` (u64 each: what they
//!   bound is the kind's to say), blocks (u64), filter bytes (u64), zeros,
//!   CRC32C of the bytes before it in the last 4;
//! - `blocks` blocks of [`BLOCK`] bytes: up to [`Layout::per_block`]
//!   entries, each starting with its key (the first [`Layout::key`] bytes,
//!   compared as bytes: strictly increasing through the file), zeros,
//!   CRC32C of the block's first `BLOCK - 4` bytes in its last 4;
//! - the index: each block's first key, the Bloom filter, and a CRC32C of
//!   both.
//!
//! A reader keeps the index in memory (a key per block and the filter)
//! and reads one block per probe.

use crate::cold::bloom::{self, Bloom};
use crate::problem::{file_label, Problem};
use crate::storage::{Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const HEADER: usize = 64;
pub const BLOCK: usize = 4096;
/// Blocks written in one call: 1 MiB.
const CHUNK_BLOCKS: usize = 256;

/// What distinguishes one kind of block file from another.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub magic: &'static [u8; 8],
    pub version: u32,
    /// Bytes per entry.
    pub entry: usize,
    /// Bytes of an entry's key: its prefix.
    pub key: usize,
    /// The stable error code of a damaged file.
    pub code: &'static str,
}

impl Layout {
    /// Entries in a full block.
    pub const fn per_block(&self) -> usize {
        (BLOCK - 4) / self.entry
    }

    /// Binary search of a checked block's entries ([`BlockFile::block`])
    /// for `key`: as [`slice::binary_search`].
    pub fn search(&self, block: &[u8], key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, block.len() / self.entry);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = mid * self.entry;
            match block[at..at + self.key].cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Writes the CRC32C of `buf`'s bytes but the last 4 into its last 4.
pub fn crc_at_end(buf: &mut [u8]) {
    let n = buf.len() - 4;
    let crc = crc32c::crc32c(&buf[..n]);
    buf[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Whether `buf`'s last 4 bytes are the CRC32C of the bytes before them.
pub fn crc_ok(buf: &[u8]) -> bool {
    let Some(n) = buf.len().checked_sub(4) else {
        return false;
    };
    let mut x = [0u8; 4];
    x.copy_from_slice(&buf[n..]);
    crc32c::crc32c(&buf[..n]) == u32::from_le_bytes(x)
}

/// An open block file: its index in memory, its blocks on storage.
pub struct BlockFile {
    pub path: PathBuf,
    file: Arc<dyn StorageFile>,
    layout: Layout,
    pub entries: u64,
    pub lo: u64,
    pub hi: u64,
    /// Each block's first key, `layout.key` bytes apiece.
    fences: Vec<u8>,
    pub bloom: Bloom,
}

impl BlockFile {
    /// Writes a block file: `fill` pushes the entries into a
    /// [`BlockWriter`] under the temporary name `tmp`; then the index and
    /// header are written, the file synced if `sync`, and renamed to
    /// `path`. A failure removes the temporary file.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        store: &dyn Storage,
        layout: Layout,
        tmp: &Path,
        path: &Path,
        bloom: Bloom,
        (lo, hi): (u64, u64),
        sync: bool,
        fill: impl FnOnce(&mut BlockWriter) -> io::Result<()>,
    ) -> io::Result<BlockFile> {
        let written = (|| {
            let mut w = BlockWriter::create(store, layout, tmp, bloom)?;
            fill(&mut w)?;
            let (file, entries, fences, bloom) = w.finish(lo, hi)?;
            if sync {
                file.sync_data()?;
            }
            drop(file);
            store.rename(tmp, path)?;
            Ok(BlockFile {
                path: path.to_path_buf(),
                file: store.open(path, false)?,
                layout,
                entries,
                lo,
                hi,
                fences,
                bloom,
            })
        })();
        if written.is_err() {
            // No partial file left behind to fill the disk the log shares.
            let _ = store.remove(tmp);
        }
        written
    }

    /// Opens a block file, checking its header and index (each block is
    /// checked when read). A problem names the file and the offset.
    pub fn open(store: &dyn Storage, path: &Path, layout: Layout) -> Result<BlockFile, Problem> {
        let name = file_label(path);
        let bad =
            |offset: u64, msg: String| Problem::new(layout.code, name.clone(), offset, 0, msg);
        let file = store
            .open(path, false)
            .map_err(|e| bad(0, format!("cannot open: {e}")))?;
        let len = file.len().map_err(|e| bad(0, e.to_string()))?;
        if len < HEADER as u64 {
            return Err(bad(0, format!("{len} bytes: shorter than a run's header")));
        }
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| bad(0, e.to_string()))?;
        if &header[..8] != layout.magic || !crc_ok(&header) {
            return Err(bad(0, "the header's magic or checksum is wrong".into()));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let entry = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if version != layout.version || entry as usize != layout.entry {
            return Err(bad(
                8,
                format!("version {version} with {entry}-byte entries is not this build's"),
            ));
        }
        let (entries, lo, hi, blocks, filter) = (
            u64_at(&header, 16),
            u64_at(&header, 24),
            u64_at(&header, 32),
            u64_at(&header, 40),
            u64_at(&header, 48),
        );
        let index_at = blocks
            .checked_mul(BLOCK as u64)
            .and_then(|b| b.checked_add(HEADER as u64));
        let index_len = blocks
            .checked_mul(layout.key as u64)
            .and_then(|k| k.checked_add(filter))
            .and_then(|k| k.checked_add(4));
        let (Some(index_at), Some(index_len)) = (index_at, index_len) else {
            return Err(bad(16, "the header's sizes overflow".into()));
        };
        // The index's length is bounded by the file's, so it can be read
        // whole.
        let sane = blocks == entries.div_ceil(layout.per_block() as u64)
            && lo <= hi
            && index_at.checked_add(index_len) == Some(len)
            && filter > 0
            && filter % bloom::BLOCK_BYTES as u64 == 0;
        if !sane {
            return Err(bad(16, format!("the header's sizes ({entries} entries, {blocks} blocks, {filter}-byte filter, sequences {lo}..{hi}) do not match the file's {len} bytes")));
        }
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_at)
            .map_err(|e| bad(index_at, e.to_string()))?;
        if !crc_ok(&index) {
            return Err(bad(index_at, "the index's checksum is wrong".into()));
        }
        let keys = blocks as usize * layout.key;
        let fences = index[..keys].to_vec();
        let ordered = fences
            .chunks_exact(layout.key)
            .zip(fences.chunks_exact(layout.key).skip(1))
            .all(|(a, b)| a < b);
        if !ordered {
            return Err(bad(index_at, "the index's keys are not in order".into()));
        }
        let Some(bloom) = Bloom::from_bytes(&index[keys..index.len() - 4]) else {
            return Err(bad(
                index_at + keys as u64,
                "the filter is malformed".into(),
            ));
        };
        Ok(BlockFile {
            path: path.to_path_buf(),
            file,
            layout,
            entries,
            lo,
            hi,
            fences,
            bloom,
        })
    }

    /// A problem with this file at `offset`, under its layout's code.
    pub fn problem(&self, offset: u64, msg: String) -> Problem {
        Problem::new(self.layout.code, file_label(&self.path), offset, 0, msg)
    }

    /// Where block `b` starts.
    pub fn block_offset(b: usize) -> u64 {
        HEADER as u64 + (b as u64) * BLOCK as u64
    }

    pub fn blocks(&self) -> usize {
        self.fences.len() / self.layout.key
    }

    /// Block `b`'s first key.
    pub fn fence(&self, b: usize) -> &[u8] {
        &self.fences[b * self.layout.key..(b + 1) * self.layout.key]
    }

    /// How many blocks start at or before `key`: the block that may hold
    /// `key` is the one before that count (none when it is 0).
    pub fn blocks_starting_at_or_before(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.blocks());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.fence(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Bytes of memory its index takes.
    pub fn memory_bytes(&self) -> usize {
        self.fences.capacity() + self.bloom.byte_len()
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Reads and checks block `b` (checksum, and keys increasing from the
    /// index's first key): its entries' bytes, `layout.entry` apiece.
    pub fn block(&self, b: usize) -> Result<Vec<u8>, Problem> {
        let offset = Self::block_offset(b);
        let bad = |msg: String| self.problem(offset, msg);
        if b >= self.blocks() {
            return Err(bad(format!("block {b} is past the last")));
        }
        let mut buf = vec![0u8; BLOCK];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| bad(format!("reading block {b}: {e}")))?;
        if !crc_ok(&buf) {
            return Err(bad(format!("block {b}'s checksum is wrong")));
        }
        let per = self.layout.per_block();
        // `open` checked that blocks = ceil(entries / per), so the last
        // block holds 1..=per entries.
        let n = if b + 1 == self.blocks() {
            (self.entries - (b * per) as u64) as usize
        } else {
            per
        };
        let (entry, key) = (self.layout.entry, self.layout.key);
        buf.truncate(n * entry);
        let keys_ok = buf.get(..key) == Some(self.fence(b))
            && buf
                .chunks_exact(entry)
                .zip(buf.chunks_exact(entry).skip(1))
                .all(|(x, y)| x[..key] < y[..key]);
        if !keys_ok {
            return Err(bad(format!("block {b}'s keys disagree with the index")));
        }
        Ok(buf)
    }
}

/// Fills a block file's blocks ([`BlockFile::write`]).
pub struct BlockWriter {
    layout: Layout,
    file: Arc<dyn StorageFile>,
    fences: Vec<u8>,
    bloom: Bloom,
    chunk: Vec<u8>,
    block: Vec<u8>,
    in_block: usize,
    offset: u64,
    entries: u64,
}

impl BlockWriter {
    fn create(
        store: &dyn Storage,
        layout: Layout,
        tmp: &Path,
        bloom: Bloom,
    ) -> io::Result<BlockWriter> {
        if store.exists(tmp) {
            store.remove(tmp)?;
        }
        Ok(BlockWriter {
            layout,
            file: store.create_new(tmp)?,
            fences: Vec::new(),
            bloom,
            chunk: Vec::with_capacity(CHUNK_BLOCKS * BLOCK),
            block: vec![0u8; BLOCK],
            in_block: 0,
            offset: HEADER as u64,
            entries: 0,
        })
    }

    /// The filter, for the kind to insert what it filters on.
    pub fn bloom(&mut self) -> &mut Bloom {
        &mut self.bloom
    }

    /// Appends an entry (`layout.entry` bytes; its key greater than the
    /// previous entry's).
    pub fn push(&mut self, entry: &[u8]) -> io::Result<()> {
        let (size, key) = (self.layout.entry, self.layout.key);
        debug_assert_eq!(entry.len(), size);
        let at = self.in_block * size;
        debug_assert!(
            self.in_block == 0 || self.block[at - size..at - size + key] < entry[..key],
            "a run's keys are sorted and unique"
        );
        if self.in_block == 0 {
            debug_assert!(
                self.fences.len() < key || self.fences[self.fences.len() - key..] < entry[..key],
                "a run's keys are sorted and unique"
            );
            self.fences.extend_from_slice(&entry[..key]);
        }
        self.block[at..at + size].copy_from_slice(entry);
        self.in_block += 1;
        self.entries += 1;
        if self.in_block == self.layout.per_block() {
            self.end_block();
            if self.chunk.len() >= CHUNK_BLOCKS * BLOCK {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn end_block(&mut self) {
        crc_at_end(&mut self.block);
        self.chunk.extend_from_slice(&self.block);
        self.block.fill(0);
        self.in_block = 0;
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.chunk, self.offset)?;
        self.offset += self.chunk.len() as u64;
        self.chunk.clear();
        Ok(())
    }

    /// Writes the last block, the index and the header.
    #[allow(clippy::type_complexity)]
    fn finish(
        mut self,
        lo: u64,
        hi: u64,
    ) -> io::Result<(Arc<dyn StorageFile>, u64, Vec<u8>, Bloom)> {
        if self.in_block > 0 {
            self.end_block();
        }
        self.flush()?;
        let blocks = (self.fences.len() / self.layout.key) as u64;
        let mut index = Vec::with_capacity(self.fences.len() + self.bloom.byte_len() + 4);
        index.extend_from_slice(&self.fences);
        self.bloom.write_to(&mut index);
        index.extend_from_slice(&[0; 4]);
        crc_at_end(&mut index);
        self.file.write_all_at(&index, self.offset)?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(self.layout.magic);
        header[8..12].copy_from_slice(&self.layout.version.to_le_bytes());
        header[12..16].copy_from_slice(&(self.layout.entry as u32).to_le_bytes());
        for (at, v) in [
            (16, self.entries),
            (24, lo),
            (32, hi),
            (40, blocks),
            (48, self.bloom.byte_len() as u64),
        ] {
            header[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        crc_at_end(&mut header);
        self.file.write_all_at(&header, 0)?;
        self.fences.shrink_to_fit();
        Ok((self.file, self.entries, self.fences, self.bloom))
    }
}
