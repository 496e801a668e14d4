//! A history run: an immutable file of the history index's entries for a
//! range of sequences, sorted by (kind, key, sequence). Written when the
//! index's memory tail fills ([`super::sealer`]); read by statements,
//! lookups and the verifier. Derived from the log, so it can be rebuilt.
//!
//! Layout (integers little-endian unless said):
//! - header, [`HEADER`] bytes: magic `TALLYHST`, version (u32), entry size
//!   (u32), entries (u64), after and through (u64: the run holds every
//!   entry of the commands after `after` and at or before `through`),
//!   blocks (u64), filter bytes (u64), zeros, CRC32C of the bytes before it
//!   in the last 4;
//! - `blocks` blocks of [`BLOCK`] bytes: up to [`PER_BLOCK`] entries of
//!   [`ENTRY`] bytes (kind u8, key u128 big-endian, sequence u64 big-endian,
//!   so that bytes sort as entries do; then the value, an i128: the posted
//!   balance after a posting, zero otherwise), zeros, CRC32C of the block's
//!   first `BLOCK - 4` bytes in its last 4;
//! - the index: each block's first 25 bytes (its first key), a Bloom filter
//!   over the accounts with postings, and a CRC32C of both.
//!
//! Memory per entry: 25 bytes per block of 99 entries, and 10 bits per
//! account that posted in the run's range.

use crate::cold::bloom::{self, Bloom};
use crate::cold::run::{crc_at_end, crc_ok, u64_at};
use crate::problem::{file_label, Problem};
use crate::storage::{Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const RUN_MAGIC: &[u8; 8] = b"TALLYHST";
pub const RUN_VERSION: u32 = 1;
pub const HEADER: usize = 64;
pub const BLOCK: usize = 4096;
pub const ENTRY: usize = 41;
pub const PER_BLOCK: usize = (BLOCK - 4) / ENTRY;
const KEY: usize = 25;

/// What an entry indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A posting to account `key`; the value is the balance after it.
    Posting = 0,
    /// A record with reference text whose hash is `key`.
    Reference = 1,
    /// An entry with user data `key`.
    EntryUserData = 2,
    /// An account created with user data `key`.
    AccountUserData = 3,
}

/// One entry of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub key: u128,
    pub seq: u64,
    pub value: i128,
}

fn key_bytes(kind: Kind, key: u128, seq: u64) -> [u8; KEY] {
    let mut b = [0u8; KEY];
    b[0] = kind as u8;
    b[1..17].copy_from_slice(&key.to_be_bytes());
    b[17..25].copy_from_slice(&seq.to_be_bytes());
    b
}

impl Entry {
    fn encode(&self, out: &mut [u8]) {
        out[..KEY].copy_from_slice(&key_bytes(self.kind, self.key, self.seq));
        out[KEY..ENTRY].copy_from_slice(&self.value.to_le_bytes());
    }

    fn decode(b: &[u8]) -> (u8, u128, u64, i128) {
        let mut key = [0u8; 16];
        key.copy_from_slice(&b[1..17]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[17..25]);
        let mut value = [0u8; 16];
        value.copy_from_slice(&b[KEY..ENTRY]);
        (
            b[0],
            u128::from_be_bytes(key),
            u64::from_be_bytes(seq),
            i128::from_le_bytes(value),
        )
    }
}

/// A run file's name: the sequences it covers.
pub fn run_name(after: u64, through: u64) -> String {
    format!("hist-{after:020}-{through:020}.run")
}

/// The sequences a run's file name says it covers.
pub fn parse_run_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("hist-")?.strip_suffix(".run")?;
    let (a, t) = rest.split_once('-')?;
    Some((a.parse().ok()?, t.parse().ok()?))
}

/// An open run: its index in memory, its blocks on storage.
pub struct Run {
    pub path: PathBuf,
    file: Arc<dyn StorageFile>,
    pub after: u64,
    pub through: u64,
    pub entries: u64,
    fences: Vec<[u8; KEY]>,
    bloom: Bloom,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Run({}, ({}, {}], {})",
            self.path.display(),
            self.after,
            self.through,
            self.entries
        )
    }
}

impl Run {
    /// Writes `entries` (sorted by (kind, key, seq), `count` of them, with
    /// `accounts` distinct posting accounts) as the run covering
    /// (after, through] into `dir`, under a temporary name, synced, then
    /// renamed. The caller syncs the directory.
    pub fn write(
        store: &dyn Storage,
        dir: &Path,
        entries: impl Iterator<Item = Entry>,
        accounts: usize,
        after: u64,
        through: u64,
    ) -> io::Result<Run> {
        let tmp = dir.join(format!("{}.tmp", run_name(after, through)));
        let written = Run::write_tmp(store, dir, &tmp, entries, accounts, after, through);
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
        entries: impl Iterator<Item = Entry>,
        accounts: usize,
        after: u64,
        through: u64,
    ) -> io::Result<Run> {
        let path = dir.join(run_name(after, through));
        if store.exists(tmp) {
            store.remove(tmp)?;
        }
        let file = store.create_new(tmp)?;
        let mut bloom = Bloom::with_keys(accounts.max(1));
        let mut fences = Vec::new();
        let mut count = 0u64;
        let mut chunk = Vec::with_capacity(256 * BLOCK);
        let mut block = vec![0u8; BLOCK];
        let mut in_block = 0usize;
        let mut offset = HEADER as u64;
        let mut last: Option<[u8; KEY]> = None;
        let mut last_account = None;
        for e in entries {
            let mut raw = [0u8; ENTRY];
            e.encode(&mut raw);
            let mut key = [0u8; KEY];
            key.copy_from_slice(&raw[..KEY]);
            debug_assert!(
                last.is_none_or(|l| l < key),
                "a run's entries are sorted and unique"
            );
            last = Some(key);
            if e.kind == Kind::Posting && last_account != Some(e.key) {
                bloom.insert(bloom::hash(Kind::Posting as u8, e.key));
                last_account = Some(e.key);
            }
            if in_block == 0 {
                fences.push(key);
            }
            block[in_block * ENTRY..(in_block + 1) * ENTRY].copy_from_slice(&raw);
            in_block += 1;
            count += 1;
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
        let mut index = Vec::with_capacity(fences.len() * KEY + bloom.byte_len() + 4);
        for f in &fences {
            index.extend_from_slice(f);
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
            (16, count),
            (24, after),
            (32, through),
            (40, fences.len() as u64),
            (48, bloom.byte_len() as u64),
        ] {
            header[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        crc_at_end(&mut header);
        file.write_all_at(&header, 0)?;
        file.sync_data()?;
        drop(file);
        store.rename(tmp, &path)?;
        let file = store.open(&path, false)?;
        Ok(Run {
            path,
            file,
            after,
            through,
            entries: count,
            fences,
            bloom,
        })
    }

    /// Opens a run, checking its header and index (each block is checked
    /// when read). A problem names the file and the offset.
    pub fn open(store: &dyn Storage, path: &Path) -> Result<Run, Problem> {
        let name = file_label(path);
        let bad = |offset: u64, msg: String| {
            Problem::new("bad_history_run", name.clone(), offset, 0, msg)
        };
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
        let (entries, after, through, blocks, filter) = (
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
            && after < through
            && index_at.checked_add(index_len) == Some(len)
            && filter > 0
            && filter % bloom::BLOCK_BYTES as u64 == 0;
        if !sane {
            return Err(bad(16, format!("the header's sizes ({entries} entries, {blocks} blocks, {filter}-byte filter, sequences ({after}, {through}]) do not match the file's {len} bytes")));
        }
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_at)
            .map_err(|e| bad(index_at, e.to_string()))?;
        if !crc_ok(&index) {
            return Err(bad(index_at, "the index's checksum is wrong".into()));
        }
        let keys = blocks as usize * KEY;
        let fences: Vec<[u8; KEY]> = index[..keys]
            .chunks_exact(KEY)
            .map(|c| {
                let mut k = [0u8; KEY];
                k.copy_from_slice(c);
                k
            })
            .collect();
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
            after,
            through,
            entries,
            fences,
            bloom,
        })
    }

    /// Bytes of memory its index takes.
    pub fn memory_bytes(&self) -> usize {
        self.fences.capacity() * KEY + self.bloom.byte_len()
    }

    /// Whether `account` may have postings here (`false`: certainly not).
    pub fn may_post(&self, account: u128) -> bool {
        self.bloom
            .may_contain(bloom::hash(Kind::Posting as u8, account))
    }

    /// Reads and checks block `b`: its entries as bytes.
    fn block(&self, b: usize) -> Result<Vec<u8>, Problem> {
        let offset = HEADER as u64 + (b * BLOCK) as u64;
        let bad =
            |msg: String| Problem::new("bad_history_run", file_label(&self.path), offset, 0, msg);
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
        buf.truncate(n * ENTRY);
        let keys_ok = buf.get(..KEY) == self.fences.get(b).map(|f| &f[..])
            && buf
                .chunks_exact(ENTRY)
                .zip(buf.chunks_exact(ENTRY).skip(1))
                .all(|(x, y)| x[..KEY] < y[..KEY])
            && buf
                .chunks_exact(ENTRY)
                .all(|e| e[0] <= Kind::AccountUserData as u8);
        if !keys_ok {
            return Err(bad(format!("block {b}'s keys disagree with the index")));
        }
        Ok(buf)
    }

    /// The block where entries at or after (kind, key, seq) start.
    fn first_block(&self, kind: Kind, key: u128, seq: u64) -> usize {
        let target = key_bytes(kind, key, seq);
        self.fences
            .partition_point(|f| *f <= target)
            .saturating_sub(1)
    }

    /// Calls `f` with (seq, value) of the entries of (kind, key) at or after
    /// `from_seq`, in order, until it returns false.
    pub fn scan(
        &self,
        kind: Kind,
        key: u128,
        from_seq: u64,
        mut f: impl FnMut(u64, i128) -> bool,
    ) -> Result<(), Problem> {
        if self.fences.is_empty() || (kind == Kind::Posting && !self.may_post(key)) {
            return Ok(());
        }
        let start = key_bytes(kind, key, from_seq);
        for b in self.first_block(kind, key, from_seq)..self.fences.len() {
            let block = self.block(b)?;
            for e in block.chunks_exact(ENTRY) {
                if e[..KEY] < start[..] {
                    continue;
                }
                let (k, id, seq, value) = Entry::decode(e);
                if k != kind as u8 || id != key {
                    return Ok(());
                }
                if !f(seq, value) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The last entry of (kind, key) at or before `seq`: (seq, value).
    pub fn last_at_or_before(
        &self,
        kind: Kind,
        key: u128,
        seq: u64,
    ) -> Result<Option<(u64, i128)>, Problem> {
        if self.fences.is_empty() || (kind == Kind::Posting && !self.may_post(key)) {
            return Ok(None);
        }
        let target = key_bytes(kind, key, seq);
        // Every entry of (kind, key) at or before `seq` that is at or after
        // this block's first key is in this block.
        let b = self.first_block(kind, key, seq);
        let block = self.block(b)?;
        let mut found = None;
        for e in block.chunks_exact(ENTRY) {
            if e[..KEY] > target[..] {
                break;
            }
            let (k, id, s, value) = Entry::decode(e);
            if k == kind as u8 && id == key {
                found = Some((s, value));
            }
        }
        Ok(found)
    }
}
