//! A run: an immutable file of id records sorted by (space, id), covering
//! the records decided in a range of sequences.
//!
//! Layout (all integers little-endian):
//! - header, [`HEADER`] bytes: magic `TALLYCLD`, version (u32), entry size
//!   (u32), entries (u64), from and to (u64: the run holds every record
//!   decided after `from` and at or before `to`), blocks (u64), filter
//!   bytes (u64), zeros, CRC32C of the bytes before it in the last 4;
//! - `blocks` blocks of [`BLOCK`] bytes: up to [`PER_BLOCK`] entries of
//!   [`ENTRY`] bytes (space u8, id u128 big-endian so that bytes sort as
//!   keys do, packed record u64, sequence u64), zeros, CRC32C of the block's
//!   first `BLOCK - 4` bytes in its last 4;
//! - the index: each block's first key (17 bytes), the Bloom filter, and a
//!   CRC32C of both.
//!
//! Memory per record: the filter's 10 bits and a key per block of
//! 124 records (32 bytes in memory), about 1.5 bytes.

use super::bloom::{self, Bloom};
use crate::problem::{file_label, Problem};
use crate::storage::{Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tally_engine::idindex::IdRecord;

pub const RUN_MAGIC: &[u8; 8] = b"TALLYCLD";
pub const RUN_VERSION: u32 = 1;
pub const HEADER: usize = 64;
pub const BLOCK: usize = 4096;
pub const ENTRY: usize = 33;
pub const PER_BLOCK: usize = (BLOCK - 4) / ENTRY;
const KEY: usize = 17;

/// (space, id): the order of a run.
pub type Key = (u8, u128);

/// One record of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub space: u8,
    pub id: u128,
    pub record: IdRecord,
}

impl Item {
    pub fn key(&self) -> Key {
        (self.space, self.id)
    }

    fn encode(&self, out: &mut [u8]) {
        let (fp_code, seq) = self.record.to_raw();
        out[0] = self.space;
        out[1..17].copy_from_slice(&self.id.to_be_bytes());
        out[17..25].copy_from_slice(&fp_code.to_le_bytes());
        out[25..33].copy_from_slice(&seq.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Result<Item, String> {
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[1..17]);
        let record = IdRecord::try_from_raw(u64_at(17), u64_at(25))?;
        Ok(Item {
            space: b[0],
            id: u128::from_be_bytes(id),
            record,
        })
    }
}

fn key_bytes(k: Key) -> [u8; KEY] {
    let mut b = [0u8; KEY];
    b[0] = k.0;
    b[1..].copy_from_slice(&k.1.to_be_bytes());
    b
}

fn key_from(b: &[u8]) -> Key {
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[1..17]);
    (b[0], u128::from_be_bytes(id))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

pub(crate) fn crc_at_end(buf: &mut [u8]) {
    let n = buf.len() - 4;
    let crc = crc32c::crc32c(&buf[..n]);
    buf[n..].copy_from_slice(&crc.to_le_bytes());
}

pub(crate) fn crc_ok(buf: &[u8]) -> bool {
    let n = buf.len() - 4;
    let mut x = [0u8; 4];
    x.copy_from_slice(&buf[n..]);
    crc32c::crc32c(&buf[..n]) == u32::from_le_bytes(x)
}

/// A run file's name: the sequences it covers.
pub fn run_name(from: u64, to: u64) -> String {
    format!("ids-{from:020}-{to:020}.run")
}

/// An open run: its index in memory, its blocks on storage.
pub struct Run {
    pub path: PathBuf,
    file: Arc<dyn StorageFile>,
    pub from: u64,
    pub to: u64,
    pub entries: u64,
    fences: Vec<Key>,
    bloom: Bloom,
    /// Whether its bytes were synced.
    synced: AtomicBool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Run({}, {}..={}, {})",
            self.path.display(),
            self.from,
            self.to,
            self.entries
        )
    }
}

impl Run {
    /// Writes `items` (sorted by key, one record per key, at most
    /// `most` of them: the filter is sized for that) as a run covering
    /// (from, to] into `dir`: under a temporary name, renamed when whole. Not
    /// synced ([`Run::sync`]).
    pub fn write(
        store: &dyn Storage,
        dir: &Path,
        items: impl Iterator<Item = Item>,
        most: usize,
        from: u64,
        to: u64,
    ) -> io::Result<Run> {
        let raw = items.map(|item| {
            let mut e = [0u8; ENTRY];
            item.encode(&mut e);
            e
        });
        Run::write_raw(store, dir, raw, most, from, to)
    }

    /// [`Run::write`] of entries already encoded (a merge copies them).
    pub fn write_raw(
        store: &dyn Storage,
        dir: &Path,
        items: impl Iterator<Item = [u8; ENTRY]>,
        most: usize,
        from: u64,
        to: u64,
    ) -> io::Result<Run> {
        let tmp = dir.join(format!("{}.tmp", run_name(from, to)));
        let written = Run::write_tmp(store, dir, &tmp, items, most, from, to);
        if written.is_err() {
            // No partial file left behind to fill the disk the log shares.
            let _ = store.remove(&tmp);
        }
        written
    }

    fn write_tmp(
        store: &dyn Storage,
        dir: &Path,
        tmp: &Path,
        items: impl Iterator<Item = [u8; ENTRY]>,
        most: usize,
        from: u64,
        to: u64,
    ) -> io::Result<Run> {
        let path = dir.join(run_name(from, to));
        if store.exists(tmp) {
            store.remove(tmp)?;
        }
        let file = store.create_new(tmp)?;
        let mut bloom = Bloom::with_keys(most);
        let mut fences = Vec::with_capacity(most.div_ceil(PER_BLOCK));
        let mut entries = 0usize;
        // Written in chunks of up to 256 blocks (1 MiB).
        let mut chunk = Vec::with_capacity(256 * BLOCK);
        let mut block = vec![0u8; BLOCK];
        let mut in_block = 0usize;
        let mut offset = HEADER as u64;
        let mut last: Option<Key> = None;
        for entry in items {
            let key = key_from(&entry);
            debug_assert!(
                last.is_none_or(|l| l < key),
                "a run's keys are sorted and unique"
            );
            last = Some(key);
            if in_block == 0 {
                fences.push(key);
            }
            block[in_block * ENTRY..(in_block + 1) * ENTRY].copy_from_slice(&entry);
            bloom.insert(bloom::hash(key.0, key.1));
            in_block += 1;
            entries += 1;
            if in_block == PER_BLOCK {
                crc_at_end(&mut block);
                chunk.extend_from_slice(&block);
                block.fill(0);
                in_block = 0;
                if chunk.len() >= 256 * BLOCK {
                    file.write_all_at(&chunk, offset)?;
                    offset += chunk.len() as u64;
                    chunk.clear();
                }
            }
        }
        if in_block > 0 {
            crc_at_end(&mut block);
            chunk.extend_from_slice(&block);
        }
        file.write_all_at(&chunk, offset)?;
        offset += chunk.len() as u64;
        let blocks = fences.len();
        debug_assert!(
            entries <= most.max(1),
            "more items than the filter was sized for"
        );
        let mut index = Vec::with_capacity(fences.len() * KEY + bloom.byte_len() + 4);
        for f in &fences {
            index.extend_from_slice(&key_bytes(*f));
        }
        bloom.write_to(&mut index);
        index.extend_from_slice(&[0; 4]);
        crc_at_end(&mut index);
        file.write_all_at(&index, offset)?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(RUN_MAGIC);
        header[8..12].copy_from_slice(&RUN_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(ENTRY as u32).to_le_bytes());
        for (at, v) in [
            (16, entries as u64),
            (24, from),
            (32, to),
            (40, blocks as u64),
            (48, bloom.byte_len() as u64),
        ] {
            header[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        crc_at_end(&mut header);
        file.write_all_at(&header, 0)?;
        drop(file);
        store.rename(tmp, &path)?;
        let file = store.open(&path, false)?;
        Ok(Run {
            path,
            file,
            from,
            to,
            entries: entries as u64,
            fences,
            bloom,
            synced: AtomicBool::new(false),
        })
    }

    /// Opens a run, checking its header and index (each block is checked
    /// when read). A problem names the file and the offset.
    pub fn open(store: &dyn Storage, path: &Path) -> Result<Run, Problem> {
        let name = file_label(path);
        let bad =
            |offset: u64, msg: String| Problem::new("bad_cold_run", name.clone(), offset, 0, msg);
        let file = store
            .open(path, false)
            .map_err(|e| bad(0, format!("cannot open: {e}")))?;
        let len = file.len().map_err(|e| bad(0, e.to_string()))?;
        let mut header = [0u8; HEADER];
        if len < HEADER as u64 {
            return Err(bad(0, format!("{len} bytes: shorter than a run's header")));
        }
        file.read_exact_at(&mut header, 0)
            .map_err(|e| bad(0, e.to_string()))?;
        if &header[..8] != RUN_MAGIC || !crc_ok(&header) {
            return Err(bad(0, "the header's magic or checksum is wrong".into()));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let entry = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if version != RUN_VERSION || entry as usize != ENTRY {
            return Err(bad(
                8,
                format!("version {version} with {entry}-byte entries is not this build's"),
            ));
        }
        let (entries, from, to, blocks, filter) = (
            u64_at(&header, 16),
            u64_at(&header, 24),
            u64_at(&header, 32),
            u64_at(&header, 40),
            u64_at(&header, 48),
        );
        let index_at = (HEADER as u64).checked_add(blocks.saturating_mul(BLOCK as u64));
        let index_len = blocks
            .checked_mul(KEY as u64)
            .and_then(|k| k.checked_add(filter))
            .and_then(|k| k.checked_add(4));
        let (Some(index_at), Some(index_len)) = (index_at, index_len) else {
            return Err(bad(16, "the header's sizes overflow".into()));
        };
        let sane = blocks == entries.div_ceil(PER_BLOCK as u64)
            && from <= to
            && index_at.checked_add(index_len) == Some(len)
            && filter > 0
            && filter % bloom::BLOCK_BYTES as u64 == 0;
        if !sane {
            return Err(bad(16, format!("the header's sizes ({entries} entries, {blocks} blocks, {filter}-byte filter) do not match the file's {len} bytes")));
        }
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_at)
            .map_err(|e| bad(index_at, e.to_string()))?;
        if !crc_ok(&index) {
            return Err(bad(index_at, "the index's checksum is wrong".into()));
        }
        let keys = blocks as usize * KEY;
        let fences: Vec<Key> = index[..keys].chunks_exact(KEY).map(key_from).collect();
        if fences.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(index_at, "the index's keys are not in order".into()));
        }
        let Some(bloom) = Bloom::from_bytes(&index[keys..index.len() - 4]) else {
            return Err(bad(
                index_at + keys as u64,
                "the filter is malformed".into(),
            ));
        };
        Ok(Run {
            path: path.to_path_buf(),
            file,
            from,
            to,
            entries,
            fences,
            bloom,
            synced: AtomicBool::new(true),
        })
    }

    pub fn sync(&self) -> io::Result<()> {
        if !self.synced.load(Ordering::Acquire) {
            self.file.sync_data()?;
            self.synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Bytes of memory its index takes.
    pub fn memory_bytes(&self) -> usize {
        self.fences.len() * std::mem::size_of::<Key>() + self.bloom.byte_len()
    }

    /// Reads and checks block `b`.
    fn block(&self, b: usize) -> Result<Vec<Item>, Problem> {
        let offset = HEADER as u64 + (b * BLOCK) as u64;
        self.raw_block(b)?
            .iter()
            .map(|e| {
                Item::decode(e)
                    .map_err(|m| Problem::new("bad_cold_run", file_label(&self.path), offset, 0, m))
            })
            .collect()
    }

    /// Whether the filter lets a key with hash `h` through.
    #[inline]
    pub fn may_contain(&self, h: u64) -> bool {
        self.bloom.may_contain(h)
    }

    /// The record of `key` (`h` = [`bloom::hash`] of it), if this run has one.
    /// `Ok(None)` without reading storage when the filter rules it out.
    pub fn get(&self, key: Key, h: u64) -> Result<Option<IdRecord>, Problem> {
        if !self.bloom.may_contain(h) {
            return Ok(None);
        }
        let b = match self.fences.binary_search(&key) {
            Ok(b) => b,
            Err(0) => return Ok(None),
            Err(b) => b - 1,
        };
        let items = self.block(b)?;
        Ok(items
            .binary_search_by_key(&key, Item::key)
            .ok()
            .map(|k| items[k].record))
    }

    /// Reads and checks block `b`'s bytes (checksum and key order), without
    /// decoding the records: what a merge copies.
    fn raw_block(&self, b: usize) -> Result<Vec<[u8; ENTRY]>, Problem> {
        let offset = HEADER as u64 + (b * BLOCK) as u64;
        let bad =
            |msg: String| Problem::new("bad_cold_run", file_label(&self.path), offset, 0, msg);
        let mut buf = vec![0u8; BLOCK];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| bad(format!("reading block {b}: {e}")))?;
        if !crc_ok(&buf) {
            return Err(bad(format!("block {b}'s checksum is wrong")));
        }
        let n = if b + 1 == self.fences.len() {
            self.entries as usize - b * PER_BLOCK
        } else {
            PER_BLOCK
        };
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let mut e = [0u8; ENTRY];
            e.copy_from_slice(&buf[k * ENTRY..(k + 1) * ENTRY]);
            out.push(e);
        }
        let keys_ok = out.first().map(|e| key_from(e)) == self.fences.get(b).copied()
            && out.windows(2).all(|w| key_from(&w[0]) < key_from(&w[1]));
        if !keys_ok {
            return Err(bad(format!("block {b}'s keys disagree with the index")));
        }
        Ok(out)
    }

    /// Every entry, in key order, a block at a time, as bytes (for merges).
    pub fn raw_entries(&self) -> impl Iterator<Item = Result<[u8; ENTRY], Problem>> + '_ {
        (0..self.fences.len()).flat_map(move |b| match self.raw_block(b) {
            Ok(entries) => entries.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(p) => vec![Err(p)],
        })
    }
}

/// The key of an encoded entry.
pub fn entry_key(e: &[u8; ENTRY]) -> Key {
    key_from(e)
}

/// The deciding sequence of an encoded entry.
pub fn entry_seq(e: &[u8; ENTRY]) -> u64 {
    u64_at(e, 25)
}

impl Run {}
