//! A simulated disk for the deterministic simulator: files in memory, a
//! sector-level model of durability, and faults drawn from a seed.
//!
//! What it models, per 512-byte sector:
//! - a write is visible to reads at once and durable only once a sync of its
//!   file covers it (the length too); a directory entry (create, rename,
//!   remove) is durable once its directory is synced;
//! - at a [`SimDisk::crash`], each file's unsynced sectors are lost, torn (a
//!   prefix of them in write order persisted), reordered (any subset
//!   persisted), or all persisted; the directory keeps either every change
//!   since its last sync or none;
//! - misdirected writes (the bytes land in other sectors of the file, past
//!   the ones meant, which keep their old bytes), `EIO` from a write or a sync (a failed
//!   sync forgets the unsynced sectors, as Linux marks such pages clean),
//!   `ENOSPC` from an allocation;
//! - latent sector errors (reads of the sector fail) and bit flips, planted
//!   on durable bytes by the simulator ([`SimDisk::flip_bit`],
//!   [`SimDisk::bad_sector`]);
//! - optionally a lying `fsync` ([`FaultRates::lying_fsync`]): syncs report
//!   success and persist nothing (the simulator's self-test).
//!
//! Every injected fault is remembered as a [`Damage`] (where, and the bytes
//! to put back) so that the checker can tell a refusal that names real
//! damage from one that does not, and heal the disk after a refusal.
//! Handles opened before a crash fail afterwards: a crash ends the process.

use super::{Storage, StorageFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The simulated sector size.
pub const SECTOR: u64 = 512;

/// A small, fast, seedable generator (SplitMix64): the simulator's only
/// source of chance.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n.max(1)
    }

    /// True with probability `ppm` parts per million.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }
}

/// How often each fault is drawn, in parts per million of its opportunity.
#[derive(Clone, Debug, Default)]
pub struct FaultRates {
    /// Per write.
    pub misdirected_write: u32,
    /// Per write.
    pub write_eio: u32,
    /// Per sync.
    pub sync_eio: u32,
    /// Per allocation.
    pub enospc: u32,
    /// Syncs (of files and directories) report success and do nothing.
    pub lying_fsync: bool,
}

/// Faults injected, by kind (the JSON keys of `tally-sim`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    pub lost_unsynced: u64,
    pub torn: u64,
    pub reordered: u64,
    pub latent_sector_error: u64,
    pub bit_flip: u64,
    pub misdirected: u64,
    pub eio: u64,
    pub enospc: u64,
}

impl FaultCounts {
    pub fn add(&mut self, o: &FaultCounts) {
        self.lost_unsynced += o.lost_unsynced;
        self.torn += o.torn;
        self.reordered += o.reordered;
        self.latent_sector_error += o.latent_sector_error;
        self.bit_flip += o.bit_flip;
        self.misdirected += o.misdirected;
        self.eio += o.eio;
        self.enospc += o.enospc;
    }
}

/// A fault that changed bytes (or their readability) on the disk.
#[derive(Clone)]
pub struct Damage {
    pub kind: DamageKind,
    /// The file's name when the damage was done.
    pub path: PathBuf,
    /// The damaged bytes: `[offset, offset + len)`.
    pub offset: u64,
    pub len: u64,
    /// For a misdirected write, the bytes it overwrote instead (same file).
    pub elsewhere: Option<u64>,
    inode: u64,
    undo: Undo,
}

impl Damage {
    /// Whether it touches `[from, to)` of the file named `path`.
    pub fn touches(&self, path: &Path, from: u64, to: u64) -> bool {
        let hit = |at: u64| at < to && from < at + self.len;
        self.path == path && (hit(self.offset) || self.elsewhere.is_some_and(hit))
    }
}

impl std::fmt::Debug for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} in {} at bytes {}..{}",
            self.kind,
            self.path.display(),
            self.offset,
            self.offset + self.len
        )?;
        if let Some(at) = self.elsewhere {
            write!(f, " (written at {}..{})", at, at + self.len)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageKind {
    BitFlip,
    LatentSectorError,
    /// The bytes meant for `offset` went elsewhere; `offset` kept old bytes.
    Misdirected,
}

#[derive(Clone, Debug)]
enum Undo {
    /// The bytes `[offset, offset + len)` and, for a misdirected write,
    /// those it landed on, are put back from the undamaged view.
    Bytes,
    Sector(u64),
}

#[derive(Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What a crash keeps (before the unsynced sectors are drawn).
    durable: Vec<u8>,
    /// Sectors written since the last sync, in the order first written.
    pending: Vec<u64>,
    pending_set: BTreeSet<u64>,
    /// Sectors whose reads fail.
    bad: BTreeSet<u64>,
    /// Sectors a failed sync did not write: clean in the page cache, so
    /// reads see the new bytes until the kernel evicts them (then the old).
    unwritten: BTreeSet<u64>,
    /// `data` and `durable` as a disk without planted damage would hold
    /// them (every write where it was meant, no flipped bit): what healing
    /// puts back.
    truth: Vec<u8>,
    truth_durable: Vec<u8>,
}

impl Inode {
    fn touch(&mut self, from: u64, to: u64) {
        if to <= from {
            return;
        }
        for s in from / SECTOR..to.div_ceil(SECTOR) {
            self.unwritten.remove(&s);
            if self.pending_set.insert(s) {
                self.pending.push(s);
            }
        }
    }

    fn persist_sector(&mut self, s: u64) {
        let (from, to) = ((s * SECTOR) as usize, ((s + 1) * SECTOR) as usize);
        let to_data = to.min(self.data.len());
        if from >= to_data {
            return;
        }
        if self.durable.len() < to_data {
            self.durable.resize(to_data, 0);
        }
        self.durable[from..to_data].copy_from_slice(&self.data[from..to_data]);
        let to_truth = to.min(self.truth.len());
        if from < to_truth {
            if self.truth_durable.len() < to_truth {
                self.truth_durable.resize(to_truth, 0);
            }
            self.truth_durable[from..to_truth].copy_from_slice(&self.truth[from..to_truth]);
        }
    }

    /// Puts `[from, to)` back from the undamaged view.
    fn restore(&mut self, from: u64, to: u64) {
        let (from, to) = (from as usize, to as usize);
        for (v, t) in [
            (&mut self.data, &self.truth),
            (&mut self.durable, &self.truth_durable),
        ] {
            let end = to.min(v.len()).min(t.len());
            if from < end {
                v[from..end].copy_from_slice(&t[from..end]);
            }
        }
    }

    fn sync(&mut self) {
        for s in std::mem::take(&mut self.pending) {
            self.persist_sector(s);
        }
        self.pending_set.clear();
        self.durable.resize(self.data.len(), 0);
        self.truth_durable.resize(self.truth.len(), 0);
    }
}

struct State {
    rng: Rng,
    rates: FaultRates,
    counts: FaultCounts,
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    damage: Vec<Damage>,
    /// Bumped at each crash: handles from before fail.
    generation: u64,
    /// Syncs that did nothing (lying fsync).
    lies: u64,
    /// Changes left before the power fails or the process is killed (see
    /// [`SimDisk::crash_after`], [`SimDisk::kill_after`]); `true`: a kill.
    countdown: Option<(u64, bool)>,
    /// The power failed or the process was killed: everything fails until
    /// [`SimDisk::crash`].
    halted: bool,
    /// Whether what halted was a kill (the page cache stays).
    killed: bool,
}

impl State {
    /// Before a change: fails once the power has, and cuts it when the
    /// countdown runs out (the change does not happen).
    fn step(&mut self) -> io::Result<()> {
        if self.halted {
            return Err(crashed());
        }
        if let Some((n, kill)) = self.countdown.as_mut() {
            if *n == 0 {
                let kill = *kill;
                self.countdown = None;
                if kill {
                    self.kill_process();
                } else {
                    self.power_off();
                }
                return Err(crashed());
            }
            *n -= 1;
        }
        Ok(())
    }

    /// The process dies, the machine stays up: handles fail, the page cache
    /// stays, except that the kernel may evict the pages a failed sync
    /// marked clean (reads then see the disk's old bytes).
    fn kill_process(&mut self) {
        self.halted = true;
        self.killed = true;
        self.generation += 1;
        for inode in self.inodes.values_mut() {
            for s in std::mem::take(&mut inode.unwritten) {
                if self.rng.below(2) == 0 {
                    let (from, to) = ((s * SECTOR) as usize, ((s + 1) * SECTOR) as usize);
                    let to = to.min(inode.data.len()).min(inode.durable.len());
                    if from < to {
                        inode.data[from..to].copy_from_slice(&inode.durable[from..to]);
                    }
                    let to = to.min(inode.truth.len()).min(inode.truth_durable.len());
                    if from < to {
                        inode.truth[from..to].copy_from_slice(&inode.truth_durable[from..to]);
                    }
                } else {
                    inode.unwritten.insert(s);
                }
            }
        }
    }

    fn live(&self) -> io::Result<()> {
        if self.halted {
            Err(crashed())
        } else {
            Ok(())
        }
    }

    /// The power fails: the disk keeps what the model draws.
    fn power_off(&mut self) {
        self.halted = true;
        self.killed = false;
        self.generation += 1;
        // The directory: every unsynced change, or none.
        if self.names != self.durable_names && self.rng.below(2) == 0 {
            self.names = self.durable_names.clone();
        }
        self.durable_names = self.names.clone();
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        for inode in self.inodes.values_mut() {
            let pending = std::mem::take(&mut inode.pending);
            inode.pending_set.clear();
            if !pending.is_empty() {
                match self.rng.below(4) {
                    0 => self.counts.lost_unsynced += 1,
                    1 => {
                        self.counts.torn += 1;
                        let keep = self.rng.below(pending.len() as u64) as usize;
                        for &s in &pending[..keep] {
                            inode.persist_sector(s);
                        }
                    }
                    2 => {
                        self.counts.reordered += 1;
                        for &s in &pending {
                            if self.rng.below(2) == 0 {
                                inode.persist_sector(s);
                            }
                        }
                    }
                    _ => {
                        for &s in &pending {
                            inode.persist_sector(s);
                        }
                    }
                }
            }
            inode.data = inode.durable.clone();
            inode.truth = inode.truth_durable.clone();
            inode.unwritten.clear();
        }
    }
}

/// An in-memory disk (cheap to clone: clones share the disk).
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
    write: bool,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO: {what}"))
}

fn crashed() -> io::Error {
    io::Error::other("the simulated process crashed: this handle is gone")
}

impl SimDisk {
    pub fn new(seed: u64, rates: FaultRates) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                rng: Rng::new(seed),
                rates,
                counts: FaultCounts::default(),
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                next_inode: 1,
                damage: Vec::new(),
                generation: 0,
                lies: 0,
                countdown: None,
                halted: false,
                killed: false,
            })),
        }
    }

    /// Changes the fault rates (the simulator turns faults off to check).
    pub fn set_rates(&self, rates: FaultRates) {
        self.state.lock().rates = rates;
    }

    pub fn counts(&self) -> FaultCounts {
        self.state.lock().counts
    }

    /// Syncs that reported success without persisting (lying fsync).
    pub fn lies(&self) -> u64 {
        self.state.lock().lies
    }

    /// Damage done since the last [`SimDisk::forget_damage`], each under
    /// its file's name now (a segment is written as `.prep`, then renamed).
    pub fn damage(&self) -> Vec<Damage> {
        let st = self.state.lock();
        let mut v = st.damage.clone();
        for d in &mut v {
            if let Some((p, _)) = st.names.iter().find(|(_, &i)| i == d.inode) {
                d.path = p.clone();
            }
        }
        v
    }

    pub fn forget_damage(&self) {
        self.state.lock().damage.clear();
    }

    /// The process dies (the power fails, unless it already did) and the
    /// machine starts again: every handle opened before fails from now on,
    /// and the disk holds what the model drew.
    pub fn crash(&self) {
        self.start_again(State::power_off);
    }

    /// Starts the process again after [`SimDisk::kill_after`] fired (or
    /// kills it now): the page cache is what the killed process left.
    pub fn restart(&self) {
        self.start_again(State::kill_process);
    }

    /// Stops the process with `stop` unless it already stopped, and lets
    /// a new one start.
    fn start_again(&self, stop: fn(&mut State)) {
        let mut st = self.state.lock();
        if !st.halted {
            stop(&mut st);
        }
        st.halted = false;
        st.killed = false;
        st.countdown = None;
    }

    /// The process is killed (`kill -9`) but the machine keeps running:
    /// every handle opened before fails from now on, and what was written
    /// stays (in the page cache: readable, and durable only once synced).
    /// After a power failure it is the same as [`SimDisk::crash`].
    pub fn kill(&self) {
        let halted = self.state.lock().halted;
        if halted {
            return self.crash();
        }
        self.restart();
    }

    /// The power fails just before the `n`-th change from now (a write, a
    /// sync, an allocation, a create, rename or remove): that change and
    /// every later operation fail, as they would in a process on a machine
    /// that lost power.
    pub fn crash_after(&self, n: u64) {
        self.state.lock().countdown = Some((n, false));
    }

    /// The process is killed just before the `n`-th change from now (the
    /// machine stays up): that change and every later operation fail.
    pub fn kill_after(&self, n: u64) {
        self.state.lock().countdown = Some((n, true));
    }

    /// Whether what halted the process was a kill (not a power failure).
    pub fn was_killed(&self) -> bool {
        self.state.lock().killed
    }

    /// Whether the power has failed (and [`SimDisk::crash`] not yet run).
    pub fn halted(&self) -> bool {
        self.state.lock().halted
    }

    fn inode_of(st: &State, path: &Path) -> io::Result<u64> {
        st.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    /// Flips one bit of `path` at `offset` (in what reads see and in what
    /// is durable).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut st = self.state.lock();
        let ino = Self::inode_of(&st, path)?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(crashed)?;
        let at = offset as usize;
        if at >= inode.data.len() {
            return Err(io::Error::other("flip past the end"));
        }
        inode.data[at] ^= 1 << (bit % 8);
        if at < inode.durable.len() {
            inode.durable[at] ^= 1 << (bit % 8);
        }
        st.counts.bit_flip += 1;
        st.damage.push(Damage {
            kind: DamageKind::BitFlip,
            path: path.to_path_buf(),
            offset,
            len: 1,
            elsewhere: None,
            inode: ino,
            undo: Undo::Bytes,
        });
        Ok(())
    }

    /// Makes the sector holding `offset` of `path` unreadable.
    pub fn bad_sector(&self, path: &Path, offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let ino = Self::inode_of(&st, path)?;
        let s = offset / SECTOR;
        st.inodes.get_mut(&ino).ok_or_else(crashed)?.bad.insert(s);
        st.counts.latent_sector_error += 1;
        st.damage.push(Damage {
            kind: DamageKind::LatentSectorError,
            path: path.to_path_buf(),
            offset: s * SECTOR,
            len: SECTOR,
            elsewhere: None,
            inode: ino,
            undo: Undo::Sector(s),
        });
        Ok(())
    }

    /// Puts back what the recorded damage changed (an operator restoring
    /// the bytes from a good copy), durably, and forgets it.
    pub fn heal(&self) {
        let mut st = self.state.lock();
        let damage = std::mem::take(&mut st.damage);
        for d in damage.iter().rev() {
            let Some(inode) = st.inodes.get_mut(&d.inode) else {
                continue;
            };
            match &d.undo {
                Undo::Bytes => {
                    inode.restore(d.offset, d.offset + d.len);
                    if let Some(at) = d.elsewhere {
                        inode.restore(at, at + d.len);
                    }
                }
                Undo::Sector(s) => {
                    inode.bad.remove(s);
                }
            }
        }
    }

    /// Every file name (for tests and reports).
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().names.keys().cloned().collect()
    }

    /// A file's length (what reads see), if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let st = self.state.lock();
        let ino = st.names.get(path)?;
        st.inodes.get(ino).map(|i| i.data.len() as u64)
    }
}

impl SimFile {
    /// Runs `f` on the file; `change` counts toward a planned power cut.
    fn with<T>(
        &self,
        change: bool,
        f: impl FnOnce(&mut State, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.state.lock();
        if st.generation != self.generation || !st.inodes.contains_key(&self.inode) {
            return Err(crashed());
        }
        if change {
            st.step()?;
        } else {
            st.live()?;
        }
        f(&mut st, self.inode)
    }
}

fn inode(st: &mut State, ino: u64) -> &mut Inode {
    st.inodes.entry(ino).or_default()
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(false, |st, ino| Ok(inode(st, ino).data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(false, |st, ino| {
            let f = inode(st, ino);
            let end = offset + buf.len() as u64;
            if end > f.data.len() as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            if !buf.is_empty() {
                let (s, e) = (offset / SECTOR, (end - 1) / SECTOR);
                if let Some(bad) = f.bad.range(s..=e).next() {
                    return Err(eio(&format!("latent sector error at sector {bad}")));
                }
            }
            buf.copy_from_slice(&f.data[offset as usize..end as usize]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.write {
            return Err(io::Error::other("file opened read-only"));
        }
        self.with(true, |st, ino| {
            if st.rng.chance(st.rates.write_eio) {
                st.counts.eio += 1;
                return Err(eio("write"));
            }
            let len = inode(st, ino).data.len() as u64;
            let mut at = offset;
            let misdirect = st.rng.chance(st.rates.misdirected_write);
            if misdirect {
                // Elsewhere: past the bytes meant (never overlapping them).
                let shift = (buf.len() as u64).div_ceil(SECTOR) * SECTOR + st.rng.below(8) * SECTOR;
                let fits = |o: u64| o + buf.len() as u64 <= len;
                let target = if st.rng.below(2) == 0 && offset >= shift {
                    offset - shift
                } else {
                    offset + shift
                };
                if fits(target) && fits(offset) && target != offset {
                    at = target;
                }
            }
            let f = inode(st, ino);
            let end = (at + buf.len() as u64) as usize;
            if f.data.len() < end {
                f.data.resize(end, 0);
            }
            f.data[at as usize..end].copy_from_slice(buf);
            f.touch(at, end as u64);
            let meant = offset as usize + buf.len();
            if f.truth.len() < meant {
                f.truth.resize(meant, 0);
            }
            f.truth[offset as usize..meant].copy_from_slice(buf);
            f.touch(offset, meant as u64);
            if at != offset {
                st.counts.misdirected += 1;
                let path = st
                    .names
                    .iter()
                    .find(|(_, &i)| i == ino)
                    .map(|(p, _)| p.clone())
                    .unwrap_or_default();
                st.damage.push(Damage {
                    kind: DamageKind::Misdirected,
                    path,
                    offset,
                    len: buf.len() as u64,
                    elsewhere: Some(at),
                    inode: ino,
                    undo: Undo::Bytes,
                });
            }
            Ok(())
        })
    }

    fn allocate(&self, size: u64) -> io::Result<bool> {
        self.with(true, |st, ino| {
            if st.rng.chance(st.rates.enospc) {
                st.counts.enospc += 1;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated ENOSPC",
                ));
            }
            let f = inode(st, ino);
            if (f.data.len() as u64) < size {
                f.data.resize(size as usize, 0);
            }
            if (f.truth.len() as u64) < size {
                f.truth.resize(size as usize, 0);
            }
            Ok(true)
        })
    }

    fn set_len(&self, size: u64) -> io::Result<()> {
        self.with(true, |st, ino| {
            let f = inode(st, ino);
            let old = f.data.len() as u64;
            f.data.resize(size as usize, 0);
            f.truth.resize(size as usize, 0);
            f.touch(old.min(size), old.max(size));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(true, |st, ino| {
            if st.rates.lying_fsync {
                st.lies += 1;
                return Ok(());
            }
            if st.rng.chance(st.rates.sync_eio) {
                st.counts.eio += 1;
                // The kernel marks the pages clean: the unsynced bytes stay
                // readable but are never written.
                let f = inode(st, ino);
                f.pending_set.clear();
                for s in std::mem::take(&mut f.pending) {
                    f.unwritten.insert(s);
                }
                return Err(eio("fdatasync"));
            }
            inode(st, ino).sync();
            Ok(())
        })
    }
}

impl Storage for SimDisk {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.state.lock();
        st.step()?;
        let parent = path.parent().unwrap_or(Path::new(""));
        if !st.dirs.contains(parent) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", parent.display()),
            ));
        }
        if st.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        let ino = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(ino, Inode::default());
        st.names.insert(path.to_path_buf(), ino);
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode: ino,
            generation: st.generation,
            write: true,
        }))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let st = self.state.lock();
        st.live()?;
        let ino = Self::inode_of(&st, path)?;
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode: ino,
            generation: st.generation,
            write,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let st = self.state.lock();
        st.live()?;
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                dir.display().to_string(),
            ));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        let ino = Self::inode_of(&st, from)?;
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        Self::inode_of(&st, path)?;
        st.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        if st.rates.lying_fsync {
            st.lies += 1;
            return Ok(());
        }
        let rate = st.rates.sync_eio;
        if st.rng.chance(rate) {
            st.counts.eio += 1;
            return Err(eio("fsync of a directory"));
        }
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, ino) in &st.names {
            if p.parent() == Some(dir) {
                st.durable_names.insert(p.clone(), *ino);
            }
        }
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        for a in dir.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock();
        st.names.contains_key(path) || st.dirs.contains(path)
    }

    fn background_threads(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (SimDisk, PathBuf) {
        let d = SimDisk::new(7, FaultRates::default());
        let dir = PathBuf::from("/data");
        d.create_dir(&dir).unwrap();
        (d, dir)
    }

    #[test]
    fn synced_bytes_survive_a_crash_and_unsynced_names_may_not() {
        let (d, dir) = disk();
        let p = dir.join("f");
        let f = d.create_new(&p).unwrap();
        f.allocate(4096).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all_at(b"maybe", 1024).unwrap();
        d.crash();
        assert!(f.len().is_err(), "a handle from before the crash is gone");
        let g = d.open(&p, false).unwrap();
        let mut b = [0u8; 7];
        g.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"durable");
        assert_eq!(g.len().unwrap(), 4096);
    }

    #[test]
    fn a_lying_fsync_keeps_nothing() {
        let (d, dir) = disk();
        d.set_rates(FaultRates {
            lying_fsync: true,
            ..FaultRates::default()
        });
        let f = d.create_new(&dir.join("f")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        d.sync_dir(&dir).unwrap();
        d.crash();
        assert!(
            d.open(&dir.join("f"), false).is_err(),
            "its name was never synced"
        );
        assert_eq!(d.lies(), 2);
    }

    #[test]
    fn crashes_draw_every_outcome_for_unsynced_sectors_and_damage_heals() {
        let (d, dir) = disk();
        let p = dir.join("f");
        let f = d.create_new(&p).unwrap();
        f.allocate(64 * SECTOR).unwrap();
        f.sync_data().unwrap();
        d.sync_dir(&dir).unwrap();
        drop(f);
        for _ in 0..64 {
            let f = d.open(&p, true).unwrap();
            for s in 0..16 {
                f.write_all_at(&[0xab; SECTOR as usize], s * SECTOR)
                    .unwrap();
            }
            d.crash();
        }
        let c = d.counts();
        assert!(
            c.lost_unsynced > 0 && c.torn > 0 && c.reordered > 0,
            "{c:?}"
        );
        d.flip_bit(&p, 3, 1).unwrap();
        d.bad_sector(&p, 2 * SECTOR).unwrap();
        let f = d.open(&p, false).unwrap();
        let mut b = [0u8; 8];
        assert!(f.read_exact_at(&mut b, 2 * SECTOR).is_err(), "latent error");
        assert_eq!(d.damage().len(), 2);
        let before = super::super::read_all(&d, &p).is_err();
        assert!(before, "the bad sector fails a whole read");
        d.heal();
        assert!(d.damage().is_empty());
        f.read_exact_at(&mut b, 2 * SECTOR).unwrap();
    }

    #[test]
    fn misdirected_writes_land_elsewhere_and_heal() {
        let (d, dir) = disk();
        d.set_rates(FaultRates {
            misdirected_write: 1_000_000,
            ..FaultRates::default()
        });
        let p = dir.join("f");
        let f = d.create_new(&p).unwrap();
        f.allocate(64 * SECTOR).unwrap();
        f.write_all_at(b"meant for sector 20", 20 * SECTOR).unwrap();
        let mut b = [0u8; 19];
        f.read_exact_at(&mut b, 20 * SECTOR).unwrap();
        assert_eq!(b, [0; 19], "the intended place kept its old bytes");
        assert_eq!(d.counts().misdirected, 1);
        d.set_rates(FaultRates::default());
        d.heal();
        f.read_exact_at(&mut b, 20 * SECTOR).unwrap();
        assert_eq!(&b, b"meant for sector 20");
    }
}
