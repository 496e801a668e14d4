//! A history run: an immutable file of the history index's entries for a
//! range of sequences, sorted by (kind, key, sequence). Written when the
//! index's memory tail fills ([`super::sealer`]); read by statements,
//! lookups and the verifier. Derived from the log, so it can be rebuilt.
//!
//! Layout (integers little-endian unless said):
//! - header, [`HEADER`] bytes: magic `TALLYHST`, version (u32), entry size
//!   (u32), entries (u64), after and through (u64: the run holds every
//!   entry of the commands after `after` and at or before `through`),
//!   blocks (u64), filter bytes (u64), marks bytes (u32), CRC32C of the
//!   bytes before it in the last 4;
//! - `blocks` blocks of [`BLOCK`] bytes, each holding entries of [`ENTRY`]
//!   bytes (kind u8, key u128 big-endian, sequence u64 big-endian, so that
//!   bytes sort as entries do; then the value, an i128: the posted balance
//!   after a posting, zero otherwise) packed against one another
//!   ([`Packing::Delta`]: the key's bytes not shared with the previous
//!   entry, the value's change since it), zeros, CRC32C of the block's
//!   first `BLOCK - 4` bytes in its last 4 (version 1, still read: up to
//!   99 entries of 41 bytes a block, unpacked);
//! - the index: each block's first 25 bytes (its first key), a Bloom filter
//!   over the accounts with postings, the position marks of its sequences
//!   ([`Mark`]: a count, then 28 bytes each), and a CRC32C of them all.
//!
//! The file is a [`crate::blockfile`] with this module's [`LAYOUT`]; the
//! header's sequence range is (after, through].
//!
//! Memory per entry: 25 bytes per block (about 500 postings of busy
//! accounts, at most [`PER_BLOCK`]), and 14 bits (10 before stop 32) per
//! account that posted in the run's range.
//!
//! Disk per entry: a posting of an account that posts again within the
//! block is its shared-prefix byte, the sequence's changed low bytes (2–3)
//! and its balance's change as a varint (the amount's size): about 5 bytes.

use crate::blockfile::{BlockFile, Layout, Packing};
use crate::cold::bloom::{self, Bloom, Probes};
use crate::problem::Problem;
use crate::storage::Storage;
use std::io;
use std::path::{Path, PathBuf};

pub use crate::blockfile::{BLOCK, HEADER};
pub const ENTRY: usize = 41;
const KEY: usize = 25;
/// The layout runs are written in (version 3): packed blocks, independent
/// filter probes.
pub const LAYOUT: Layout = Layout {
    magic: b"TALLYHST",
    version: 3,
    entry: ENTRY,
    key: KEY,
    code: "bad_history_run",
    // Entries of one (kind, key) share its 17 bytes.
    packing: Packing::Delta { group: 17 },
    probes: Probes::Independent,
};
/// Version 2: packed as version 3, its filter probed the first way
/// (`Probes::Shared`). Still read.
pub const LAYOUT_V2: Layout = Layout {
    version: 2,
    probes: Probes::Shared,
    ..LAYOUT
};
/// Version 1: 99 entries of 41 bytes a block. Still read.
pub const LAYOUT_V1: Layout = Layout {
    version: 1,
    packing: Packing::Fixed,
    ..LAYOUT_V2
};
const _: () = assert!(ENTRY == KEY + 16, "a packed entry ends with its i128 value");
/// The most entries a block holds.
pub const PER_BLOCK: usize = LAYOUT.per_block();

/// A position mark: where in the log the record that starts at `seq` is.
/// The index keeps one at each segment's start and every 64 sequences; a
/// run keeps those of its sequences (version 2), so that a restart need not
/// read the log before the runs' end to find them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub timestamp: u64,
    pub segment: u64,
    pub offset: u32,
}

/// Bytes of a mark in a run: sequence, timestamp, segment (u64 each) and
/// offset (u32), little-endian.
pub const MARK: usize = 28;

/// A run's marks as its index's extra bytes: their count (u32), then each.
fn encode_marks(marks: &[Mark]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + marks.len() * MARK);
    out.extend_from_slice(&(marks.len() as u32).to_le_bytes());
    for m in marks {
        out.extend_from_slice(&m.seq.to_le_bytes());
        out.extend_from_slice(&m.timestamp.to_le_bytes());
        out.extend_from_slice(&m.segment.to_le_bytes());
        out.extend_from_slice(&m.offset.to_le_bytes());
    }
    out
}

/// The marks of a version 2 run's extra bytes: increasing sequences within
/// (after, through], positions increasing; a message when they are not.
fn decode_marks(extra: &[u8], after: u64, through: u64) -> Result<Vec<Mark>, String> {
    let Some((count, rest)) = extra.split_first_chunk::<4>() else {
        return Err("the index has no marks".into());
    };
    let count = u32::from_le_bytes(*count) as usize;
    if rest.len() != count.saturating_mul(MARK) {
        return Err(format!(
            "the index's {count} marks take {} bytes, not {}",
            count.saturating_mul(MARK),
            rest.len()
        ));
    }
    let mut marks: Vec<Mark> = Vec::with_capacity(count);
    for b in rest.chunks_exact(MARK) {
        let m = Mark {
            seq: crate::blockfile::u64_at(b, 0),
            timestamp: crate::blockfile::u64_at(b, 8),
            segment: crate::blockfile::u64_at(b, 16),
            offset: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        };
        let ordered = marks
            .last()
            .is_none_or(|p| p.seq < m.seq && (p.segment, p.offset) < (m.segment, m.offset));
        if m.seq <= after || m.seq > through || !ordered {
            return Err(format!(
                "mark {} (sequence {}) is out of order or outside the run's sequences",
                marks.len(),
                m.seq
            ));
        }
        marks.push(m);
    }
    Ok(marks)
}

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
    pub after: u64,
    pub through: u64,
    pub entries: u64,
    /// The position marks of the records that start in its sequences, as
    /// read at open (version 2; `None` for version 1, which has none, and
    /// for a run this process wrote: its index has them). Taken when the
    /// index resumes from the runs ([`super::sealer::open`]).
    pub marks: Option<Vec<Mark>>,
    blocks: BlockFile,
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
    /// Writes `entries` (sorted by (kind, key, seq), with `accounts`
    /// distinct posting accounts) as the run covering (after, through]
    /// into `dir`, under a temporary name, synced, then renamed. The caller
    /// syncs the directory.
    pub fn write(
        store: &dyn Storage,
        dir: &Path,
        entries: impl Iterator<Item = Entry>,
        accounts: usize,
        (after, through): (u64, u64),
        marks: &[Mark],
    ) -> io::Result<Run> {
        Self::write_as(LAYOUT, store, dir, entries, accounts, after, through, marks)
    }

    /// [`Run::write`] in a given layout (tests write older versions, which
    /// keep no marks).
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn write_as(
        layout: Layout,
        store: &dyn Storage,
        dir: &Path,
        entries: impl Iterator<Item = Entry>,
        accounts: usize,
        after: u64,
        through: u64,
        marks: &[Mark],
    ) -> io::Result<Run> {
        debug_assert!(
            marks.windows(2).all(|w| w[0].seq < w[1].seq)
                && marks.iter().all(|m| m.seq > after && m.seq <= through),
            "a run's marks are its own, in order"
        );
        let keeps_marks = layout.version >= 2;
        debug_assert!(after < through, "a run covers at least one sequence");
        let path = dir.join(run_name(after, through));
        let tmp = dir.join(format!("{}.tmp", run_name(after, through)));
        let bloom = Bloom::with_keys(accounts.max(1), layout.probes);
        let blocks = BlockFile::write(
            store,
            layout,
            &tmp,
            &path,
            bloom,
            (after, through),
            true,
            |w| {
                if keeps_marks {
                    w.set_extra(encode_marks(marks))?;
                }
                let mut last_account = None;
                let mut raw = [0u8; ENTRY];
                for e in entries {
                    if e.kind == Kind::Posting && last_account != Some(e.key) {
                        w.bloom().insert(bloom::hash(Kind::Posting as u8, e.key));
                        last_account = Some(e.key);
                    }
                    e.encode(&mut raw);
                    w.push(&raw)?;
                }
                Ok(())
            },
        )?;
        Ok(Run::from_blocks(blocks, None))
    }

    fn from_blocks(mut blocks: BlockFile, marks: Option<Vec<Mark>>) -> Run {
        blocks.extra = Vec::new();
        Run {
            path: blocks.path.clone(),
            after: blocks.lo,
            through: blocks.hi,
            entries: blocks.entries,
            marks,
            blocks,
        }
    }

    /// Opens a run, checking its header and index (each block is checked
    /// when read). A problem names the file and the offset.
    pub fn open(store: &dyn Storage, path: &Path) -> Result<Run, Problem> {
        let blocks = BlockFile::open(store, path, &[LAYOUT, LAYOUT_V2, LAYOUT_V1])?;
        if blocks.lo >= blocks.hi {
            return Err(blocks.problem(
                24,
                format!(
                    "the header's sequences ({}, {}] are empty",
                    blocks.lo, blocks.hi
                ),
            ));
        }
        // A version 2 run written before runs kept their marks has none:
        // the log is then read from its start to find them.
        let marks = if blocks.version() >= 2 && !blocks.extra.is_empty() {
            let marks = decode_marks(&blocks.extra, blocks.lo, blocks.hi)
                .map_err(|m| blocks.problem(56, m))?;
            Some(marks)
        } else if blocks.extra.is_empty() {
            None
        } else {
            return Err(blocks.problem(56, "a version 1 run with extra bytes".into()));
        };
        Ok(Run::from_blocks(blocks, marks))
    }

    /// Bytes of memory its index takes.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.memory_bytes()
    }

    /// Whether `account` may have postings here (`false`: certainly not).
    pub fn may_post(&self, account: u128) -> bool {
        self.blocks
            .bloom
            .may_contain(bloom::hash(Kind::Posting as u8, account))
    }

    /// Reads and checks block `b`: its entries as bytes.
    fn block(&self, b: usize) -> Result<Vec<u8>, Problem> {
        let buf = self.blocks.block(b)?;
        if buf
            .chunks_exact(ENTRY)
            .any(|e| e[0] > Kind::AccountUserData as u8)
        {
            return Err(self.blocks.problem(
                BlockFile::block_offset(b),
                format!("block {b} holds an entry of an unknown kind"),
            ));
        }
        Ok(buf)
    }

    /// The block where entries at or after (kind, key, seq) start.
    fn first_block(&self, kind: Kind, key: u128, seq: u64) -> usize {
        self.blocks
            .blocks_starting_at_or_before(&key_bytes(kind, key, seq))
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
        if self.blocks.blocks() == 0 || (kind == Kind::Posting && !self.may_post(key)) {
            return Ok(());
        }
        let start = key_bytes(kind, key, from_seq);
        for b in self.first_block(kind, key, from_seq)..self.blocks.blocks() {
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
        if self.blocks.blocks() == 0 || (kind == Kind::Posting && !self.may_post(key)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn disk() -> Arc<SimDisk> {
        let d = Arc::new(SimDisk::new(3, Default::default()));
        d.create_dir(Path::new("/h")).unwrap();
        d
    }

    /// Sorts and dedups by key; writes them in `layout`.
    fn write(d: &SimDisk, layout: Layout, entries: Vec<Entry>) -> (Run, Vec<Entry>) {
        write_marked(d, layout, entries, &[])
    }

    fn write_marked(
        d: &SimDisk,
        layout: Layout,
        mut entries: Vec<Entry>,
        marks: &[Mark],
    ) -> (Run, Vec<Entry>) {
        entries.sort_by_key(|e| (e.kind, e.key, e.seq));
        entries.dedup_by_key(|e| (e.kind, e.key, e.seq));
        let accounts = entries
            .iter()
            .filter(|e| e.kind == Kind::Posting)
            .map(|e| e.key)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let run = Run::write_as(
            layout,
            d,
            Path::new("/h"),
            entries.clone().into_iter(),
            accounts,
            0,
            u64::MAX,
            marks,
        )
        .unwrap();
        (run, entries)
    }

    /// What `scan` and `last_at_or_before` say of every key, against the
    /// entries themselves.
    fn check(run: &Run, entries: &[Entry]) {
        let mut by_key: BTreeMap<(Kind, u128), Vec<(u64, i128)>> = BTreeMap::new();
        for e in entries {
            by_key
                .entry((e.kind, e.key))
                .or_default()
                .push((e.seq, e.value));
        }
        for ((kind, key), want) in &by_key {
            let mut got = Vec::new();
            run.scan(*kind, *key, 0, |s, v| {
                got.push((s, v));
                true
            })
            .unwrap();
            assert_eq!(&got, want, "{kind:?} {key}");
            for (i, (seq, value)) in want.iter().enumerate() {
                assert_eq!(
                    run.last_at_or_before(*kind, *key, *seq).unwrap(),
                    Some((*seq, *value))
                );
                let mut from = Vec::new();
                run.scan(*kind, *key, *seq, |s, v| {
                    from.push((s, v));
                    true
                })
                .unwrap();
                assert_eq!(&from[..], &want[i..]);
            }
            let before = want[0].0.checked_sub(1);
            if let Some(b) = before {
                assert_eq!(run.last_at_or_before(*kind, *key, b).unwrap(), None);
            }
        }
    }

    fn kind(k: u8) -> Kind {
        [
            Kind::Posting,
            Kind::Reference,
            Kind::EntryUserData,
            Kind::AccountUserData,
        ][k as usize % 4]
    }

    /// A ledger's postings: `accounts` accounts, each posting every few
    /// sequences, balances moving by small amounts.
    fn postings(accounts: u128, n: u64) -> Vec<Entry> {
        let mut balance = vec![0i128; accounts as usize];
        (0..n)
            .map(|i| {
                let a = (i.wrapping_mul(0x9e37_79b9) % accounts as u64) as usize;
                balance[a] += (i as i128 % 2_001) - 1_000;
                Entry {
                    kind: Kind::Posting,
                    key: a as u128 + 1,
                    seq: 1 + i * 3,
                    value: balance[a],
                }
            })
            .collect()
    }

    #[test]
    fn a_packed_run_of_postings_takes_under_ten_bytes_an_entry() {
        let d = disk();
        let marks: Vec<Mark> = (0..1_000u64)
            .map(|i| Mark {
                seq: 1 + i * 64,
                timestamp: 1_000 + i,
                segment: i / 100,
                offset: 4096 + (i % 100) as u32 * 512,
            })
            .collect();
        let (run, sorted) = write_marked(&d, LAYOUT, postings(1_000, 60_000), &marks);
        let len = d.open(&run.path, false).unwrap().len().unwrap();
        let per = len as f64 / sorted.len() as f64;
        assert!(per < 10.0, "{per:.1} bytes an entry ({len} bytes)");
        let d1 = disk();
        let (v1, _) = write(&d1, LAYOUT_V1, postings(1_000, 60_000));
        let len1 = d1.open(&v1.path, false).unwrap().len().unwrap();
        assert!(len1 > 4 * len, "version 1: {len1} bytes, version 2: {len}");
        let reopened = Run::open(&*d, &run.path).unwrap();
        assert_eq!(reopened.entries, sorted.len() as u64);
        assert_eq!(reopened.marks.as_deref(), Some(&marks[..]), "marks kept");
        check(&reopened, &sorted);
        assert_eq!(
            Run::open(&*d1, &v1.path).unwrap().marks,
            None,
            "version 1 keeps none"
        );
    }

    #[test]
    fn marks_out_of_order_or_outside_the_run_are_damage() {
        let m = |seq, offset| Mark {
            seq,
            timestamp: 0,
            segment: 0,
            offset,
        };
        assert!(decode_marks(&encode_marks(&[m(2, 10), m(5, 20)]), 1, 5).is_ok());
        for bad in [
            vec![m(5, 10), m(2, 20)],
            vec![m(2, 20), m(5, 10)],
            vec![m(1, 10)],
            vec![m(6, 10)],
        ] {
            assert!(decode_marks(&encode_marks(&bad), 1, 5).is_err(), "{bad:?}");
        }
        let mut short = encode_marks(&[m(2, 10)]);
        short.pop();
        assert!(decode_marks(&short, 1, 5).is_err());
        assert!(decode_marks(&[], 1, 5).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any entries, extreme keys, sequences and values included, read
        /// back as written from either version.
        #[test]
        fn any_entries_read_back_as_written(
            raw in prop::collection::vec(
                (0u8..4, prop_oneof![0u128..4, any::<u128>()], prop_oneof![0u64..50, any::<u64>()], prop_oneof![-3i128..3, any::<i128>(), Just(i128::MIN), Just(i128::MAX)]),
                1..3_000,
            )
        ) {
            let entries: Vec<Entry> = raw
                .into_iter()
                .map(|(k, key, seq, value)| Entry { kind: kind(k), key, seq, value })
                .collect();
            for layout in [LAYOUT, LAYOUT_V2, LAYOUT_V1] {
                let d = disk();
                let (run, sorted) = write(&d, layout, entries.clone());
                check(&run, &sorted);
                check(&Run::open(&*d, &run.path).unwrap(), &sorted);
            }
        }

        /// A block whose bytes are changed and whose checksum is made to
        /// match again (what a checksum cannot catch) is read as entries
        /// in order or refused with the run's code: never a panic.
        #[test]
        fn a_rewritten_block_is_refused_or_read_in_order(
            at in 0usize..BLOCK - 4,
            xor in 1u8..=255,
            seed in 0u64..1_000,
        ) {
            let d = disk();
            let (run, sorted) = write(&d, LAYOUT, postings(50 + seed as u128 % 50, 3_000));
            let file = d.open(&run.path, true).unwrap();
            let mut block = vec![0u8; BLOCK];
            let offset = BlockFile::block_offset(0);
            file.read_exact_at(&mut block, offset).unwrap();
            block[at] ^= xor;
            crate::blockfile::crc_at_end(&mut block);
            file.write_all_at(&block, offset).unwrap();
            let run = Run::open(&*d, &run.path).unwrap();
            for e in sorted.iter().take(200) {
                match run.scan(e.kind, e.key, 0, |_, _| true) {
                    Ok(()) => {}
                    Err(p) => prop_assert_eq!(p.kind, "bad_history_run"),
                }
                let _ = run.last_at_or_before(e.kind, e.key, e.seq);
            }
            match run.block(0) {
                Ok(bytes) => prop_assert!(bytes
                    .chunks_exact(ENTRY)
                    .zip(bytes.chunks_exact(ENTRY).skip(1))
                    .all(|(a, b)| a[..KEY] < b[..KEY])),
                Err(p) => prop_assert_eq!(p.kind, "bad_history_run"),
            }
        }
    }
}
