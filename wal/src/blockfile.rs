//! A block file: the on-disk shape that both kinds of run share (the cold
//! tier's id runs, [`crate::cold::run`], and the history's runs,
//! [`crate::history::run`]). Each kind names its [`Layout`] (magic, entry
//! and key sizes, error code) and what its entries and keys mean; this
//! module writes and checks the bytes.
//!
//! Layout (integers little-endian):
//! - header, [`HEADER`] bytes: magic (8), version (u32), entry size (u32),
//!   entries (u64), the sequence range `lo` and `hi` (u64 each: what they
//!   bound is the kind's to say), blocks (u64), filter bytes (u64), extra
//!   bytes (u32, zero when the kind keeps none), CRC32C of the bytes before
//!   it in the last 4;
//! - `blocks` blocks of [`BLOCK`] bytes: entries, each starting with its
//!   key (the first [`Layout::key`] bytes, compared as bytes: strictly
//!   increasing through the file), laid out as the layout's [`Packing`]
//!   says, zeros, CRC32C of the block's first `BLOCK - 4` bytes in its
//!   last 4;
//! - the index: each block's first key, the Bloom filter, the kind's extra
//!   bytes (a history run's position marks), and a CRC32C of them all.
//!
//! A reader keeps the index in memory (a key per block and the filter)
//! and reads one block per probe.

use crate::cold::bloom::{self, Bloom};
use crate::problem::{file_label, Problem};
use crate::storage::{write_behind, Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const HEADER: usize = 64;
pub const BLOCK: usize = 4096;
/// Blocks written in one call: 1 MiB.
const CHUNK_BLOCKS: usize = 256;

/// Bytes of a block before its checksum.
const BLOCK_BODY: usize = BLOCK - 4;
/// Bytes of a packed block's entry count.
const COUNT: usize = 2;
/// Bytes of a packed entry's value: an `i128`, little-endian.
const VALUE: usize = 16;
/// The longest LEB128 encoding of a `u128`.
const MAX_VARINT: usize = 19;

/// How a block's entries are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Entries of `entry` bytes one after another, [`Layout::per_block`]
    /// of them in every block but the last (which holds the rest).
    Fixed,
    /// The block's entry count (`u16`), then each entry against the one
    /// before it in the block (the first against nothing): how many of its
    /// key's first bytes it shares with that one (`u8`), the key's other
    /// bytes, and its value (the entry's last 16 bytes, an `i128`
    /// little-endian) as the zigzag LEB128 varint of its wrapping
    /// difference from the previous entry's value when the two share at
    /// least `group` key bytes, else of the value itself. A history run's
    /// postings of one account share 17 key bytes and most of their
    /// sequence's, and their balances move by an amount: about 5 bytes
    /// an entry instead of 41.
    Delta { group: usize },
}

/// What distinguishes one kind of block file from another.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub magic: &'static [u8; 8],
    pub version: u32,
    /// Bytes per entry (as a reader sees it: a packed block is unpacked
    /// into entries of this size).
    pub entry: usize,
    /// Bytes of an entry's key: its prefix.
    pub key: usize,
    /// The stable error code of a damaged file.
    pub code: &'static str,
    pub packing: Packing,
    /// How its filter's keys are probed (`Probes::Shared` before the
    /// kind's version 3).
    pub probes: bloom::Probes,
}

impl Layout {
    /// The most entries a block holds.
    pub const fn per_block(&self) -> usize {
        match self.packing {
            Packing::Fixed => BLOCK_BODY / self.entry,
            // The shortest packed entry: a shared length, one key byte, a
            // one-byte value.
            Packing::Delta { .. } => (BLOCK_BODY - COUNT) / 3,
        }
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

/// The value of an entry of a packed layout: its last [`VALUE`] bytes.
fn value_of(entry: &[u8]) -> i128 {
    let mut v = [0u8; VALUE];
    v.copy_from_slice(&entry[entry.len() - VALUE..]);
    i128::from_le_bytes(v)
}

/// Packs `entry` into `out` ([`Packing::Delta`]) against `prev` (when
/// `has_prev`): the bytes written.
fn pack(
    out: &mut [u8],
    entry: &[u8],
    has_prev: bool,
    prev: &[u8],
    layout: &Layout,
    group: usize,
) -> usize {
    let key = layout.key;
    let shared = if has_prev {
        entry[..key]
            .iter()
            .zip(&prev[..key])
            .take_while(|(a, b)| a == b)
            .count()
    } else {
        0
    };
    debug_assert!(shared < key, "keys are unique");
    out[0] = shared as u8;
    let rest = key - shared;
    out[1..1 + rest].copy_from_slice(&entry[shared..key]);
    let mut value = value_of(entry);
    if has_prev && shared >= group {
        value = value.wrapping_sub(value_of(prev));
    }
    let mut z = ((value << 1) ^ (value >> 127)) as u128;
    let mut n = 1 + rest;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out[n] = byte;
            return n + 1;
        }
        out[n] = byte | 0x80;
        n += 1;
    }
}

/// The longest entry a packed layout may have.
const MAX_ENTRY: usize = 64;

/// Walks a [`Packing::Delta`] block's bytes (before its checksum): `f` gets
/// each entry in order, unpacked to `layout.entry` bytes, and says whether
/// to go on. `Ok(true)` when it walked them all (and the bytes after them
/// are zero), `Ok(false)` when `f` stopped it; a message saying what is
/// wrong when the bytes are not a packed block (keys out of order
/// included).
fn walk(
    body: &[u8],
    layout: &Layout,
    group: usize,
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<bool, String> {
    let (size, key) = (layout.entry, layout.key);
    debug_assert!(size <= MAX_ENTRY && size == key + VALUE);
    let count = u16::from_le_bytes([body[0], body[1]]) as usize;
    if count == 0 || count > layout.per_block() {
        return Err(format!("it says it holds {count} entries"));
    }
    // One buffer: an entry's shared prefix is the previous entry's, in place.
    let mut entry = [0u8; MAX_ENTRY];
    let mut prev_value = 0i128;
    let mut at = COUNT;
    for i in 0..count {
        let shared = *body.get(at).ok_or("an entry runs past the block")? as usize;
        at += 1;
        if shared >= key || (i == 0 && shared != 0) {
            return Err(format!(
                "entry {i} shares {shared} bytes with the one before it"
            ));
        }
        let before = entry[shared];
        let tail = body
            .get(at..at + key - shared)
            .ok_or("an entry runs past the block")?;
        entry[shared..key].copy_from_slice(tail);
        at += key - shared;
        // The first byte not shared is where the keys differ: it must grow.
        if i > 0 && entry[shared] <= before {
            return Err(format!("entry {i}'s key is not after the one before it"));
        }
        let mut z: u128 = 0;
        let mut shift = 0;
        loop {
            let byte = *body.get(at).ok_or("an entry runs past the block")?;
            at += 1;
            if shift == 7 * (MAX_VARINT - 1) && byte > 0x03 {
                return Err(format!("entry {i}'s value is longer than 128 bits"));
            }
            z |= ((byte & 0x7f) as u128) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut value = (z >> 1) as i128 ^ -((z & 1) as i128);
        if i > 0 && shared >= group {
            value = value.wrapping_add(prev_value);
        }
        prev_value = value;
        entry[key..size].copy_from_slice(&value.to_le_bytes());
        if !f(&entry[..size]) {
            return Ok(false);
        }
    }
    if body[at..].iter().any(|&b| b != 0) {
        return Err(format!("bytes after its {count} entries are not zero"));
    }
    Ok(true)
}

/// Unpacks a [`Packing::Delta`] block's bytes (before its checksum) into
/// entries of `layout.entry` bytes.
fn unpack(body: &[u8], layout: &Layout, group: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(layout.per_block().min(512) * layout.entry);
    walk(body, layout, group, |e| {
        out.extend_from_slice(e);
        true
    })?;
    Ok(out)
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
    /// The index's extra bytes, as the kind wrote them (taken by the kind
    /// at open: not counted in [`BlockFile::memory_bytes`]).
    pub extra: Vec<u8>,
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
            let (file, entries, fences, bloom, extra) = w.finish(lo, hi)?;
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
                extra,
            })
        })();
        if written.is_err() {
            // No partial file left behind to fill the disk the log shares.
            let _ = store.remove(tmp);
        }
        written
    }

    /// Opens a block file written in one of `layouts` (the same kind's
    /// versions, newest first), checking its header and index (each block
    /// is checked when read). A problem names the file and the offset.
    pub fn open(
        store: &dyn Storage,
        path: &Path,
        layouts: &[Layout],
    ) -> Result<BlockFile, Problem> {
        debug_assert!(!layouts.is_empty(), "a kind has a layout");
        let newest = layouts[0];
        let name = file_label(path);
        let bad =
            |offset: u64, msg: String| Problem::new(newest.code, name.clone(), offset, 0, msg);
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
        if &header[..8] != newest.magic || !crc_ok(&header) {
            return Err(bad(0, "the header's magic or checksum is wrong".into()));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let entry = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let Some(layout) = layouts
            .iter()
            .copied()
            .find(|l| l.version == version && l.entry == entry as usize)
        else {
            return Err(bad(
                8,
                format!("version {version} with {entry}-byte entries is not this build's"),
            ));
        };
        let (entries, lo, hi, blocks, filter) = (
            u64_at(&header, 16),
            u64_at(&header, 24),
            u64_at(&header, 32),
            u64_at(&header, 40),
            u64_at(&header, 48),
        );
        let extra = u64::from(u32::from_le_bytes([
            header[56], header[57], header[58], header[59],
        ]));
        let index_at = blocks
            .checked_mul(BLOCK as u64)
            .and_then(|b| b.checked_add(HEADER as u64));
        let index_len = blocks
            .checked_mul(layout.key as u64)
            .and_then(|k| k.checked_add(filter))
            .and_then(|k| k.checked_add(extra))
            .and_then(|k| k.checked_add(4));
        let (Some(index_at), Some(index_len)) = (index_at, index_len) else {
            return Err(bad(16, "the header's sizes overflow".into()));
        };
        // The index's length is bounded by the file's, so it can be read
        // whole.
        let blocks_fit = match layout.packing {
            Packing::Fixed => blocks == entries.div_ceil(layout.per_block() as u64),
            Packing::Delta { .. } => {
                blocks <= entries
                    && entries.div_ceil(layout.per_block() as u64) <= blocks
                    && (blocks == 0) == (entries == 0)
            }
        };
        let sane = blocks_fit
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
        let filter_end = keys + filter as usize;
        let Some(bloom) = Bloom::from_bytes(&index[keys..filter_end], layout.probes) else {
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
            extra: index[filter_end..index.len() - 4].to_vec(),
        })
    }

    /// The version of the layout it was written in.
    pub fn version(&self) -> u32 {
        self.layout.version
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

    /// Reads block `b` and checks its checksum: its bytes.
    fn read_block(&self, b: usize) -> Result<Vec<u8>, Problem> {
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
        Ok(buf)
    }

    /// The entry of block `b` whose key is `key`, if it has one: a point
    /// lookup (a packed block is walked up to the key, not unpacked whole:
    /// the cold tier's prefetch does this for every filter hit).
    pub fn find(&self, b: usize, key: &[u8]) -> Result<Option<Vec<u8>>, Problem> {
        let (entry, key_len) = (self.layout.entry, self.layout.key);
        let Packing::Delta { group } = self.layout.packing else {
            let block = self.block(b)?;
            return Ok(self
                .layout
                .search(&block, key)
                .ok()
                .map(|k| block[k * entry..(k + 1) * entry].to_vec()));
        };
        let offset = Self::block_offset(b);
        let buf = self.read_block(b)?;
        let fence = self.fence(b);
        let (mut found, mut first, mut fence_ok) = (None, true, true);
        walk(&buf[..BLOCK_BODY], &self.layout, group, |e| {
            if std::mem::take(&mut first) && &e[..key_len] != fence {
                fence_ok = false;
                return false;
            }
            match e[..key_len].cmp(key) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => {
                    found = Some(e.to_vec());
                    false
                }
                std::cmp::Ordering::Greater => false,
            }
        })
        .map_err(|m| self.problem(offset, format!("block {b}: {m}")))?;
        if !fence_ok {
            return Err(self.problem(offset, format!("block {b}'s keys disagree with the index")));
        }
        Ok(found)
    }

    /// Reads and checks block `b` (checksum, and keys increasing from the
    /// index's first key): its entries' bytes, `layout.entry` apiece.
    pub fn block(&self, b: usize) -> Result<Vec<u8>, Problem> {
        let offset = Self::block_offset(b);
        let bad = |msg: String| self.problem(offset, msg);
        let mut buf = self.read_block(b)?;
        let (entry, key) = (self.layout.entry, self.layout.key);
        let buf = match self.layout.packing {
            Packing::Fixed => {
                let per = self.layout.per_block();
                // `open` checked that blocks = ceil(entries / per), so the
                // last block holds 1..=per entries.
                let n = if b + 1 == self.blocks() {
                    (self.entries - (b * per) as u64) as usize
                } else {
                    per
                };
                buf.truncate(n * entry);
                buf
            }
            Packing::Delta { group } => unpack(&buf[..BLOCK_BODY], &self.layout, group)
                .map_err(|m| bad(format!("block {b}: {m}")))?,
        };
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
    /// Bytes of the block used (packed blocks).
    used: usize,
    /// The block's previous entry (packed blocks).
    prev: Vec<u8>,
    offset: u64,
    entries: u64,
    extra: Vec<u8>,
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
            used: COUNT,
            prev: vec![0u8; layout.entry],
            offset: HEADER as u64,
            entries: 0,
            extra: Vec::new(),
        })
    }

    /// Bytes the kind keeps in the index after the filter (at most
    /// `u32::MAX`; checked with the index).
    pub fn set_extra(&mut self, extra: Vec<u8>) -> io::Result<()> {
        if u32::try_from(extra.len()).is_err() {
            return Err(io::Error::other("a block file's extra bytes exceed 4 GiB"));
        }
        self.extra = extra;
        Ok(())
    }

    /// The filter, for the kind to insert what it filters on.
    pub fn bloom(&mut self) -> &mut Bloom {
        &mut self.bloom
    }

    /// Appends an entry (`layout.entry` bytes; its key greater than the
    /// previous entry's).
    pub fn push(&mut self, entry: &[u8]) -> io::Result<()> {
        match self.layout.packing {
            Packing::Fixed => self.push_fixed(entry),
            Packing::Delta { group } => self.push_packed(entry, group),
        }
    }

    fn start_block(&mut self, entry: &[u8]) {
        let key = self.layout.key;
        debug_assert!(
            self.fences.len() < key || self.fences[self.fences.len() - key..] < entry[..key],
            "a run's keys are sorted and unique"
        );
        self.fences.extend_from_slice(&entry[..key]);
    }

    fn push_packed(&mut self, entry: &[u8], group: usize) -> io::Result<()> {
        debug_assert_eq!(entry.len(), self.layout.entry);
        let mut packed = [0u8; 1 + 255 + MAX_VARINT];
        let mut n = pack(
            &mut packed,
            entry,
            self.in_block > 0,
            &self.prev,
            &self.layout,
            group,
        );
        if self.used + n > BLOCK_BODY {
            self.end_block();
            self.flush_if_full()?;
            n = pack(&mut packed, entry, false, &self.prev, &self.layout, group);
        }
        if self.in_block == 0 {
            self.start_block(entry);
        }
        self.block[self.used..self.used + n].copy_from_slice(&packed[..n]);
        self.used += n;
        self.prev.copy_from_slice(entry);
        self.pushed()
    }

    /// Counts an entry put in the block; ends the block when it is full.
    fn pushed(&mut self) -> io::Result<()> {
        self.in_block += 1;
        self.entries += 1;
        if self.in_block == self.layout.per_block() {
            self.end_block();
            self.flush_if_full()?;
        }
        Ok(())
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.chunk.len() >= CHUNK_BLOCKS * BLOCK {
            self.flush()?;
        }
        Ok(())
    }

    fn push_fixed(&mut self, entry: &[u8]) -> io::Result<()> {
        let (size, key) = (self.layout.entry, self.layout.key);
        debug_assert_eq!(entry.len(), size);
        let at = self.in_block * size;
        debug_assert!(
            self.in_block == 0 || self.block[at - size..at - size + key] < entry[..key],
            "a run's keys are sorted and unique"
        );
        if self.in_block == 0 {
            self.start_block(entry);
        }
        self.block[at..at + size].copy_from_slice(entry);
        self.pushed()
    }

    fn end_block(&mut self) {
        if let Packing::Delta { .. } = self.layout.packing {
            debug_assert!(self.in_block > 0 && self.in_block <= u16::MAX as usize);
            self.block[..COUNT].copy_from_slice(&(self.in_block as u16).to_le_bytes());
            self.used = COUNT;
        }
        crc_at_end(&mut self.block);
        self.chunk.extend_from_slice(&self.block);
        self.block.fill(0);
        self.in_block = 0;
    }

    fn flush(&mut self) -> io::Result<()> {
        // Write-behind: a run of gigabytes never sits dirty in the page
        // cache for one flush to write while the log waits behind it.
        write_behind(&*self.file, &self.chunk, self.offset)?;
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
    ) -> io::Result<(Arc<dyn StorageFile>, u64, Vec<u8>, Bloom, Vec<u8>)> {
        if self.in_block > 0 {
            self.end_block();
        }
        self.flush()?;
        let blocks = (self.fences.len() / self.layout.key) as u64;
        let mut index = Vec::with_capacity(self.fences.len() + self.bloom.byte_len() + 4);
        index.extend_from_slice(&self.fences);
        self.bloom.write_to(&mut index);
        index.extend_from_slice(&self.extra);
        index.extend_from_slice(&[0; 4]);
        crc_at_end(&mut index);
        // Hundreds of megabytes for a large run (its filter and block keys).
        write_behind(&*self.file, &index, self.offset)?;
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
        // `set_extra` bounded it.
        header[56..60].copy_from_slice(&(self.extra.len() as u32).to_le_bytes());
        crc_at_end(&mut header);
        self.file.write_all_at(&header, 0)?;
        self.fences.shrink_to_fit();
        Ok((self.file, self.entries, self.fences, self.bloom, self.extra))
    }
}
