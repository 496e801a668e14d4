//! A run: an immutable file of id records sorted by (space, id), covering
//! the records decided in a range of sequences.
//!
//! Layout (all integers little-endian):
//! - header, [`HEADER`] bytes: magic `TALLYCLD`, version (u32), entry size
//!   (u32), entries (u64), from and to (u64: the run holds every record
//!   decided after `from` and at or before `to`), blocks (u64), filter
//!   bytes (u64), zeros, CRC32C of the bytes before it in the last 4;
//! - `blocks` blocks of [`BLOCK`] bytes holding entries of [`ENTRY`] bytes
//!   (space u8, id u128 big-endian so that bytes sort as keys do, packed
//!   record u64, sequence u64) packed against one another
//!   ([`Packing::Delta`]; version 1, still read: up to 124 unpacked), zeros,
//!   CRC32C of the block's first `BLOCK - 4` bytes in its last 4;
//! - the index: each block's first key (17 bytes), the Bloom filter, and a
//!   CRC32C of both.
//!
//! The file is a [`crate::blockfile`] with this module's layout; the
//! header's sequence range is (from, to].
//!
//! Memory per record: the filter's 14 bits (10 in runs written before
//! stop 32) and a key per block of about 150 (random ids) to 300 (ids in
//! order) records (17 bytes in memory), about 1.9 bytes.

use super::bloom::{self, Bloom, Probes};
use crate::blockfile::{u64_at, BlockFile, Layout, Packing};
use crate::problem::Problem;
use crate::storage::Storage;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tally_engine::idindex::IdRecord;

pub use crate::blockfile::{BLOCK, HEADER};
pub const RUN_MAGIC: &[u8; 8] = b"TALLYCLD";
pub const RUN_VERSION: u32 = 3;
pub const ENTRY: usize = 33;
const KEY: usize = 17;
const LAYOUT: Layout = Layout {
    magic: RUN_MAGIC,
    version: RUN_VERSION,
    entry: ENTRY,
    key: KEY,
    code: "bad_cold_run",
    // Ids sorted share their first bytes; the value (packed record and
    // sequence as one i128) is kept as its change from the previous
    // entry's: about 13 bytes a record for ids given in order (the bench's,
    // time-ordered ones), about 27 for random ones, instead of 33.
    packing: Packing::Delta { group: 1 },
    probes: Probes::Independent,
};
/// Version 2: packed as version 3, its filter probed the first way
/// (`Probes::Shared`). Still read.
const LAYOUT_V2: Layout = Layout {
    version: 2,
    probes: Probes::Shared,
    ..LAYOUT
};
/// Version 1: 124 entries of 33 bytes a block. Still read.
const LAYOUT_V1: Layout = Layout {
    version: 1,
    packing: Packing::Fixed,
    ..LAYOUT_V2
};
pub const PER_BLOCK: usize = LAYOUT.per_block();

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
        out[..KEY].copy_from_slice(&key_bytes(self.key()));
        out[17..25].copy_from_slice(&fp_code.to_le_bytes());
        out[25..33].copy_from_slice(&seq.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Result<Item, String> {
        let (space, id) = key_from(b);
        let record = IdRecord::try_from_raw(u64_at(b, 17), u64_at(b, 25))?;
        Ok(Item { space, id, record })
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

/// A run file's name: the sequences it covers.
pub fn run_name(from: u64, to: u64) -> String {
    format!("ids-{from:020}-{to:020}.run")
}

/// An open run: its index in memory, its blocks on storage.
pub struct Run {
    pub path: PathBuf,
    pub from: u64,
    pub to: u64,
    pub entries: u64,
    blocks: BlockFile,
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
    fn new(blocks: BlockFile, synced: bool) -> Run {
        Run {
            path: blocks.path.clone(),
            from: blocks.lo,
            to: blocks.hi,
            entries: blocks.entries,
            blocks,
            synced: AtomicBool::new(synced),
        }
    }

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
        Run::write_raw_as(LAYOUT, store, dir, items, most, from, to)
    }

    /// [`Run::write_raw`] in a given layout (tests write version 1).
    fn write_raw_as(
        layout: Layout,
        store: &dyn Storage,
        dir: &Path,
        items: impl Iterator<Item = [u8; ENTRY]>,
        most: usize,
        from: u64,
        to: u64,
    ) -> io::Result<Run> {
        let name = run_name(from, to);
        let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(name));
        let bloom = Bloom::with_keys(most, layout.probes);
        let blocks = BlockFile::write(store, layout, &tmp, &path, bloom, (from, to), false, |w| {
            let mut n = 0usize;
            for entry in items {
                let key = key_from(&entry);
                w.bloom().insert(bloom::hash(key.0, key.1));
                w.push(&entry)?;
                n += 1;
            }
            debug_assert!(n <= most.max(1), "more items than the filter was sized for");
            Ok(())
        })?;
        Ok(Run::new(blocks, false))
    }

    /// Opens a run, checking its header and index (each block is checked
    /// when read). A problem names the file and the offset.
    pub fn open(store: &dyn Storage, path: &Path) -> Result<Run, Problem> {
        Ok(Run::new(
            BlockFile::open(store, path, &[LAYOUT, LAYOUT_V2, LAYOUT_V1])?,
            true,
        ))
    }

    pub fn sync(&self) -> io::Result<()> {
        if !self.synced.load(Ordering::Acquire) {
            self.blocks.sync()?;
            self.synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Bytes of memory its index takes.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.memory_bytes()
    }

    /// Whether the filter lets a key with hash `h` through.
    #[inline]
    pub fn may_contain(&self, h: u64) -> bool {
        self.blocks.bloom.may_contain(h)
    }

    /// The record of `key` (`h` = [`bloom::hash`] of it), if this run has one.
    /// `Ok(None)` without reading storage when the filter rules it out.
    pub fn get(&self, key: Key, h: u64) -> Result<Option<IdRecord>, Problem> {
        if !self.may_contain(h) {
            return Ok(None);
        }
        let target = key_bytes(key);
        let Some(b) = self
            .blocks
            .blocks_starting_at_or_before(&target)
            .checked_sub(1)
        else {
            return Ok(None);
        };
        let Some(e) = self.blocks.find(b, &target)? else {
            return Ok(None);
        };
        Item::decode(&e)
            .map(|item| Some(item.record))
            .map_err(|m| self.blocks.problem(BlockFile::block_offset(b), m))
    }

    /// Every entry, in key order, a block at a time, as bytes (for merges).
    pub fn raw_entries(&self) -> impl Iterator<Item = Result<[u8; ENTRY], Problem>> + '_ {
        (0..self.blocks.blocks()).flat_map(move |b| match self.blocks.block(b) {
            Ok(bytes) => bytes
                .chunks_exact(ENTRY)
                .map(|c| {
                    let mut e = [0u8; ENTRY];
                    e.copy_from_slice(c);
                    Ok(e)
                })
                .collect::<Vec<_>>(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;

    /// Runs of versions 1 and 2 are still read, entry for entry as
    /// version 3 holds them (a merge copies raw entries into the current
    /// version, its filter built anew), and the packed versions are smaller
    /// than version 1 for ids given in order.
    #[test]
    fn runs_of_every_version_hold_the_same_entries() {
        let d = SimDisk::new(5, Default::default());
        d.create_dir(Path::new("/c")).unwrap();
        let items: Vec<[u8; ENTRY]> = (1..=5_000u64)
            .map(|i| {
                let record = IdRecord::new(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 16, i, None);
                let mut e = [0u8; ENTRY];
                Item {
                    space: 0,
                    id: (7u128 << 64) | u128::from(i),
                    record,
                }
                .encode(&mut e);
                e
            })
            .collect();
        let dir = Path::new("/c");
        let v1 =
            Run::write_raw_as(LAYOUT_V1, &d, dir, items.iter().copied(), 5_000, 0, 10).unwrap();
        let v1 = Run::open(&d, &v1.blocks.path).unwrap();
        let v2 =
            Run::write_raw_as(LAYOUT_V2, &d, dir, items.iter().copied(), 5_000, 10, 20).unwrap();
        let v2 = Run::open(&d, &v2.blocks.path).unwrap();
        let v3 = Run::write_raw(&d, dir, items.iter().copied(), 5_000, 20, 30).unwrap();
        let v3 = Run::open(&d, &v3.blocks.path).unwrap();
        assert_eq!(
            (
                v1.blocks.version(),
                v2.blocks.version(),
                v3.blocks.version()
            ),
            (1, 2, 3)
        );
        for run in [&v1, &v2, &v3] {
            let read: Vec<[u8; ENTRY]> = run.raw_entries().map(|e| e.unwrap()).collect();
            assert_eq!(read, items);
            for e in &items {
                let key = key_from(e);
                let want = Item::decode(e).unwrap().record;
                assert_eq!(run.get(key, bloom::hash(key.0, key.1)).unwrap(), Some(want));
            }
        }
        let len = |r: &Run| d.open(&r.blocks.path, false).unwrap().len().unwrap();
        assert!(
            len(&v2) * 2 < len(&v1),
            "v2 {} bytes, v1 {} bytes",
            len(&v2),
            len(&v1)
        );
    }
}
