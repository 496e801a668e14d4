//! The cold tier: the id records that left the shards' memory, in sorted
//! immutable runs on storage (issue 14).
//!
//! Shards keep a window of recent id records (`IdIndex`); every record they
//! make reaches this store once its batch is durable ([`ColdStore::index_group`]),
//! first into a memory table, which is sealed into a run ([`run`]) when it
//! holds [`ColdConfig::run_records`] records. A run is searchable once
//! written, and the store's watermark ([`ColdIds::covered`]) moves to the
//! last sequence it covers; shards drop the generations it covers.
//!
//! Lookups happen in the runtime's prefetch stage, before a batch is
//! sequenced: a check of each run's Bloom filter in memory, and for the few
//! keys that pass (ids that were used before, and about 1–2% of new ones)
//! one block read. Runs are merged two at a time when the newer is at least
//! as large as the older, so there are O(log n) of them.
//!
//! Durability: the store is derived from the log, so runs are not synced on
//! the write path. A snapshot that leaves records out (they are here) first
//! calls [`ColdStore::persist`], which syncs the runs and writes
//! `cold/MANIFEST` (the runs and the watermark they cover, checksummed)
//! atomically. At open only the runs the manifest names are used (others are
//! leftovers of a crash and removed); records after the manifest's watermark
//! come back from the snapshot and the log (`Durable::open`). A named run
//! that is damaged is reported with its file and offset, never skipped.

pub mod bloom;
pub mod run;

use crate::problem::{file_label, Problem};
use crate::storage::Store;
use parking_lot::{Mutex, RwLock};
use run::{Item, Run};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tally_engine::idindex::{ColdAnswers, IdRecord};
use tally_engine::runtime::{Batch, ColdIds};
use tally_engine::{Error, ErrorCode, IdSpace};

/// The cold tier's directory inside the data directory.
pub const COLD_DIR: &str = "cold";
const MANIFEST: &str = "MANIFEST";
const MANIFEST_HEAD: &str = "tally-cold-manifest 1";
/// The cold writer thread's name.
pub const COLD_THREAD: &str = "tally-cold";
/// The thread that merges runs.
pub const COLD_MERGE_THREAD: &str = "tally-cold-merge";

/// Records in the memory table before it is sealed into a run.
pub const DEFAULT_RUN_RECORDS: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
pub struct ColdConfig {
    pub run_records: usize,
}

impl Default for ColdConfig {
    fn default() -> ColdConfig {
        ColdConfig {
            run_records: DEFAULT_RUN_RECORDS,
        }
    }
}

/// What a lookup sees: the runs and the watermark they cover together.
#[derive(Default)]
struct View {
    /// Oldest first.
    runs: Vec<Arc<Run>>,
    covered: u64,
}

struct Memtable {
    items: Vec<Item>,
    /// The watermark before these records (what the run will start after).
    from: u64,
    /// The last sequence fed.
    last: u64,
}

enum Job {
    Seal {
        items: Vec<Item>,
        from: u64,
        to: u64,
    },
    Persist(crossbeam_channel::Sender<Result<u64, Problem>>),
    /// A merge's run, put in place of the two it replaces (true when it
    /// was). Done by the writer thread, which runs at the write path's
    /// priority: the merger is a background thread (`crate::background`)
    /// and must never hold or wait for the view's write lock, behind which
    /// the prefetch's readers would queue.
    Install {
        a: Arc<Run>,
        b: Arc<Run>,
        merged: Arc<Run>,
        done: crossbeam_channel::Sender<bool>,
    },
}

/// Counters for metrics.
#[derive(Default)]
pub struct ColdStats {
    /// Keys looked up (every id of every command, with a cold tier).
    pub keys: AtomicU64,
    /// Block reads (keys a filter did not rule out).
    pub reads: AtomicU64,
    /// Keys found (ids used before whose record had left memory).
    pub hits: AtomicU64,
    /// Lookups that read storage, and their total and longest time (ns).
    pub slow_lookups: AtomicU64,
    pub lookup_ns: AtomicU64,
    pub lookup_max_ns: AtomicU64,
    pub runs_written: AtomicU64,
    pub merges: AtomicU64,
}

struct Inner {
    store: Store,
    dir: PathBuf,
    config: ColdConfig,
    view: RwLock<Arc<View>>,
    /// The view's watermark, for [`ColdIds::covered`] (every batch asks):
    /// stored after each new view is in place, so whoever reads it finds
    /// the runs that cover it.
    covered: AtomicU64,
    /// The writer thread's jobs (`None` once shut down).
    jobs: Mutex<Option<crossbeam_channel::Sender<Job>>>,
    memtable: Mutex<Memtable>,
    /// The runs the manifest names (they stay until a newer one does not).
    manifest: Mutex<(u64, Vec<PathBuf>)>,
    /// Runs merged away but still named by the manifest.
    obsolete: Mutex<Vec<PathBuf>>,
    /// A seal whose run could not be written: its records and where they
    /// start. The watermark stays before them, and the next seal writes
    /// them with its own (a run must start at the watermark).
    failed: Mutex<Option<(Vec<Item>, u64)>>,
    /// Held by a persist for its whole length and by a merge's install
    /// while it puts its run in place: a merge must not remove a run that
    /// the manifest being written names. (Both run on the writer thread
    /// now; the lock keeps the rule explicit.)
    commit: Mutex<()>,
    stats: ColdStats,
}

/// The cold tier of one data directory.
pub struct ColdStore {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    merge_thread: Mutex<Option<JoinHandle<()>>>,
}

fn problem(kind: &'static str, path: &Path, msg: impl Into<String>) -> Problem {
    Problem::new(kind, file_label(path), 0, 0, msg)
}

impl ColdStore {
    /// Opens (or creates) `data_dir/cold`: reads the manifest, opens the
    /// runs it names and removes any other run or temporary file.
    pub fn open(store: Store, data_dir: &Path, config: ColdConfig) -> Result<ColdStore, Problem> {
        let dir = data_dir.join(COLD_DIR);
        if !store.exists(&dir) {
            store
                .create_dir(&dir)
                .map_err(|e| problem("unwritable", &dir, format!("creating it: {e}")))?;
        }
        let manifest_path = dir.join(MANIFEST);
        let (covered, names) = if store.exists(&manifest_path) {
            read_manifest(&*store, &manifest_path)?
        } else {
            (0, Vec::new())
        };
        let mut runs = Vec::with_capacity(names.len());
        for name in &names {
            runs.push(Arc::new(Run::open(&*store, &dir.join(name))?));
        }
        check_coverage(&runs, covered).map_err(|m| problem("bad_cold_run", &manifest_path, m))?;
        let listed: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        for path in store.list(&dir).into_iter().flatten() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ours = name.ends_with(".run") || name.ends_with(".tmp");
            if ours && !listed.contains(&path) {
                store.remove(&path).map_err(|e| {
                    problem("unwritable", &path, format!("removing a leftover run: {e}"))
                })?;
            }
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let inner = Arc::new(Inner {
            store,
            dir,
            config,
            view: RwLock::new(Arc::new(View { runs, covered })),
            covered: AtomicU64::new(covered),
            jobs: Mutex::new(Some(tx)),
            memtable: Mutex::new(Memtable {
                items: Vec::new(),
                from: covered,
                last: covered,
            }),
            manifest: Mutex::new((covered, listed)),
            obsolete: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            commit: Mutex::new(()),
            stats: ColdStats::default(),
        });
        // Merges run on their own thread, so that a long one never holds
        // back the seals that move the watermark (and free the shards'
        // generations).
        let (poke, pokes) = crossbeam_channel::bounded::<()>(1);
        let worker = inner.clone();
        let merger = inner.clone();
        let spawn_failed = |name: &str, e: std::io::Error| {
            problem("unwritable", data_dir, format!("starting {name}: {e}"))
        };
        let merge_thread = tally_engine::essential::spawn(COLD_MERGE_THREAD, move || {
            crate::background::lower_this_thread();
            for () in pokes {
                merger.merge_some();
            }
        })
        .map_err(|e| spawn_failed(COLD_MERGE_THREAD, e))?;
        let thread = tally_engine::essential::spawn(COLD_THREAD, move || {
            for job in rx {
                if worker.run_job(job) {
                    // Full: a merge is on its way and will see this run.
                    let _ = poke.try_send(());
                }
            }
        })
        .map_err(|e| spawn_failed(COLD_THREAD, e))?;
        Ok(ColdStore {
            inner,
            thread: Mutex::new(Some(thread)),
            merge_thread: Mutex::new(Some(merge_thread)),
        })
    }

    /// The watermark the manifest on storage covers.
    pub fn persisted(&self) -> u64 {
        self.inner.manifest.lock().0
    }

    pub fn stats(&self) -> &ColdStats {
        &self.inner.stats
    }

    /// Runs searchable now.
    pub fn runs(&self) -> usize {
        self.inner.view.read().runs.len()
    }

    /// Bytes of memory: the runs' indexes and the memory table.
    pub fn memory_bytes(&self) -> usize {
        let view = self.inner.view.read().clone();
        let runs: usize = view.runs.iter().map(|r| r.memory_bytes()).sum();
        let failed = self
            .inner
            .failed
            .lock()
            .as_ref()
            .map_or(0, |(v, _)| v.capacity());
        runs + (self.inner.memtable.lock().items.capacity() + failed) * std::mem::size_of::<Item>()
    }

    /// Takes records decided after the watermark, up to sequence `last`
    /// (all of them: a caller feeds every record up to `last` before a later
    /// one). Seals the memory table into a run when it is full.
    pub fn feed(&self, records: impl IntoIterator<Item = (u8, u128, IdRecord)>, last: u64) {
        let mut m = self.inner.memtable.lock();
        m.items.extend(
            records
                .into_iter()
                .map(|(space, id, record)| Item { space, id, record }),
        );
        m.last = m.last.max(last);
        if m.items.len() >= self.inner.config.run_records {
            self.seal_locked(&mut m);
        }
    }

    /// Feeds the id records of a group of durable batches.
    pub fn index_group(&self, batches: &[Arc<Batch>]) {
        for b in batches {
            let last = b
                .routes()
                .iter()
                .flatten()
                .map(|r| r.seq)
                .max()
                .unwrap_or(0);
            self.feed(b.take_id_records(), last);
        }
    }

    /// Seals whatever the memory table holds into a run now.
    pub fn seal(&self) {
        let mut m = self.inner.memtable.lock();
        self.seal_locked(&mut m);
    }

    fn seal_locked(&self, m: &mut Memtable) {
        if m.items.is_empty() || m.last <= m.from {
            return;
        }
        let items = std::mem::take(&mut m.items);
        let (from, to) = (m.from, m.last);
        m.from = to;
        self.inner.send(Job::Seal { items, from, to });
    }

    /// Syncs every run written so far and writes a manifest naming them;
    /// returns the watermark now persisted. Waits for the runs sealed
    /// before it.
    pub fn persist(&self) -> Result<u64, Problem> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner.send(Job::Persist(tx));
        rx.recv().unwrap_or_else(|_| {
            Err(problem(
                "unwritable",
                &self.inner.dir,
                "the cold writer stopped",
            ))
        })
    }

    /// Looks one key up now (queries).
    pub fn get(&self, space: IdSpace, id: u128) -> Result<Option<IdRecord>, Problem> {
        let view = self.inner.view.read().clone();
        self.inner.find(&view, space.tag(), id)
    }

    /// Stops the writer thread after the jobs queued, then the merger
    /// after the merge in progress.
    pub fn shutdown(&self) {
        self.inner.jobs.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        if let Some(t) = self.merge_thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for ColdStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl ColdIds for ColdStore {
    fn covered(&self) -> u64 {
        self.inner.covered.load(Ordering::Acquire)
    }

    fn lookup(&self, keys: &[(IdSpace, u128)]) -> Result<ColdAnswers, Error> {
        self.lookup_after(keys, 0)
    }

    fn lookup_after(&self, keys: &[(IdSpace, u128)], after: u64) -> Result<ColdAnswers, Error> {
        let mut view = self.inner.view.read().clone();
        if after > 0 {
            // Records decided after `after` are only in runs that end past it.
            let runs = view.runs.iter().filter(|r| r.to > after).cloned().collect();
            view = Arc::new(View {
                runs,
                covered: view.covered,
            });
        }
        let stats = &self.inner.stats;
        stats.keys.fetch_add(keys.len() as u64, Ordering::Relaxed);
        if view.runs.is_empty() {
            return Ok(ColdAnswers::new(view.covered, Vec::new()));
        }
        let started = Instant::now();
        let reads_before = stats.reads.load(Ordering::Relaxed);
        let mut found = Vec::new();
        for &(space, id) in keys {
            let found_one = self.inner.find(&view, space.tag(), id).map_err(|p| {
                tracing::error!("the cold tier cannot be read: {p}");
                Error::new(ErrorCode::ColdTierUnreadable).with_text(p.to_string())
            })?;
            if let Some(r) = found_one {
                found.push((space.tag(), id, r));
            }
        }
        stats.hits.fetch_add(found.len() as u64, Ordering::Relaxed);
        if stats.reads.load(Ordering::Relaxed) != reads_before {
            let ns = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
            stats.slow_lookups.fetch_add(1, Ordering::Relaxed);
            stats.lookup_ns.fetch_add(ns, Ordering::Relaxed);
            stats.lookup_max_ns.fetch_max(ns, Ordering::Relaxed);
        }
        Ok(ColdAnswers::new(view.covered, found))
    }
}

impl Inner {
    /// Queues a job for the writer thread; false once it was shut down.
    fn send(&self, job: Job) -> bool {
        match &*self.jobs.lock() {
            // The thread is essential: were it gone, the process would be.
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// The earliest record of a key over the runs of `view`.
    fn find(&self, view: &View, space: u8, id: u128) -> Result<Option<IdRecord>, Problem> {
        let h = bloom::hash(space, id);
        let mut best: Option<IdRecord> = None;
        for run in &view.runs {
            if !run.may_contain(h) {
                continue;
            }
            self.stats.reads.fetch_add(1, Ordering::Relaxed);
            if let Some(r) = run.get((space, id), h)? {
                if best.is_none_or(|b| r.seq < b.seq) {
                    best = Some(r);
                }
            }
        }
        Ok(best)
    }

    /// Runs one job; true when a run was added (a merge may be due).
    fn run_job(&self, job: Job) -> bool {
        match job {
            Job::Seal { items, from, to } => match self.seal(items, from, to) {
                Ok(()) => true,
                Err(e) => {
                    // The watermark did not move: the shards keep the
                    // records in memory meanwhile, and the next seal tries
                    // these again with its own.
                    tracing::error!(
                        "writing a cold run up to sequence {to} (from {from} or earlier; kept for the next run): {e}"
                    );
                    false
                }
            },
            Job::Persist(reply) => {
                let _ = reply.send(self.persist());
                false
            }
            Job::Install { a, b, merged, done } => {
                let _ = done.send(self.install(&a, &b, merged));
                false
            }
        }
    }

    /// Writes the records of (from, to] (and those of a seal that failed
    /// before, which start at the watermark) as a run, and moves the
    /// watermark to `to`.
    fn seal(&self, items: Vec<Item>, from: u64, to: u64) -> Result<(), String> {
        let (mut items, from) = match self.failed.lock().take() {
            Some((mut earlier, start)) => {
                earlier.extend(items);
                (earlier, start)
            }
            None => (items, from),
        };
        let covered = self.view.read().covered;
        if from != covered {
            let msg = format!("a run must start at the watermark {covered}, not after {from}");
            *self.failed.lock() = Some((items, from));
            return Err(msg);
        }
        // One record per key, the earliest decided (a chain's operation id
        // is only ever recorded once by the shards, but be strict).
        items.sort_unstable_by_key(|i| (i.key(), i.record.seq));
        items.dedup_by_key(|i| i.key());
        let n = items.len();
        let run = match Run::write(&*self.store, &self.dir, items.iter().copied(), n, from, to) {
            Ok(run) => run,
            Err(e) => {
                *self.failed.lock() = Some((items, from));
                return Err(e.to_string());
            }
        };
        self.stats.runs_written.fetch_add(1, Ordering::Relaxed);
        let mut view = self.view.write();
        let mut runs = view.runs.clone();
        runs.push(Arc::new(run));
        *view = Arc::new(View { runs, covered: to });
        self.covered.store(to, Ordering::Release);
        Ok(())
    }

    /// Merges adjacent runs, newest first, while a newer one is at least as
    /// large as the one before it (a binary counter: O(log n) runs, each
    /// record rewritten O(log n) times over its life).
    fn merge_some(&self) {
        loop {
            let view = self.view.read().clone();
            let Some(i) = (1..view.runs.len())
                .rev()
                .find(|&i| view.runs[i].entries >= view.runs[i - 1].entries)
            else {
                return;
            };
            let (a, b) = (view.runs[i - 1].clone(), view.runs[i].clone());
            let merged = match self.merge(&a, &b) {
                Ok(run) => Arc::new(run),
                Err(e) => {
                    tracing::error!(
                        "merging cold runs {} and {}: {e}",
                        a.path.display(),
                        b.path.display()
                    );
                    return;
                }
            };
            // The writer thread puts it in place (see `Job::Install`).
            let (done, installed) = crossbeam_channel::bounded(1);
            let path = merged.path.clone();
            let job = Job::Install { a, b, merged, done };
            if !(self.send(job) && installed.recv().unwrap_or(false)) {
                // Shut down meanwhile: the merged copy is not needed (a
                // leftover run is removed at the next open anyway).
                let _ = self.store.remove(&path);
                return;
            }
        }
    }

    /// Puts `merged` in place of runs `a` and `b` (the writer thread's
    /// `Job::Install`); false when they are no longer side by side.
    fn install(&self, a: &Arc<Run>, b: &Arc<Run>, merged: Arc<Run>) -> bool {
        let _commit = self.commit.lock();
        let mut view = self.view.write();
        // Seals only append: the two are still side by side.
        let mut runs = view.runs.clone();
        let at = runs.iter().position(|r| Arc::ptr_eq(r, a));
        let Some(at) = at.filter(|&at| runs.get(at + 1).is_some_and(|r| Arc::ptr_eq(r, b))) else {
            // Cannot happen with one merging thread.
            return false;
        };
        runs.splice(at..at + 2, [merged]);
        let covered = view.covered;
        *view = Arc::new(View { runs, covered });
        drop(view);
        self.self_obsolete(&[a.path.clone(), b.path.clone()]);
        self.stats.merges.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Removes merged-away runs the manifest does not name; keeps the others
    /// until a manifest without them is written.
    fn self_obsolete(&self, paths: &[PathBuf]) {
        let manifest = self.manifest.lock();
        let mut obsolete = self.obsolete.lock();
        for p in paths {
            if manifest.1.contains(p) {
                obsolete.push(p.clone());
            } else if let Err(e) = self.store.remove(p) {
                tracing::warn!("removing merged cold run {}: {e}", p.display());
            }
        }
    }

    /// Merges two runs entry by entry, copying their bytes (blocks are
    /// checked as they are read); for a key in both, the earlier record.
    fn merge(&self, a: &Run, b: &Run) -> Result<Run, String> {
        use run::{entry_key, entry_seq, ENTRY};
        let failed: std::cell::RefCell<Option<Problem>> = Default::default();
        let take = |it: &mut dyn Iterator<Item = Result<[u8; ENTRY], Problem>>| match it.next() {
            Some(Ok(e)) => Some(e),
            Some(Err(p)) => {
                failed.borrow_mut().get_or_insert(p);
                None
            }
            None => None,
        };
        let mut xs = a.raw_entries();
        let mut ys = b.raw_entries();
        let (mut x, mut y) = (take(&mut xs), take(&mut ys));
        let merged = std::iter::from_fn(|| {
            let next = match (x, y) {
                (None, None) => return None,
                (Some(i), None) => {
                    x = take(&mut xs);
                    i
                }
                (None, Some(j)) => {
                    y = take(&mut ys);
                    j
                }
                (Some(i), Some(j)) => match entry_key(&i).cmp(&entry_key(&j)) {
                    std::cmp::Ordering::Less => {
                        x = take(&mut xs);
                        i
                    }
                    std::cmp::Ordering::Greater => {
                        y = take(&mut ys);
                        j
                    }
                    std::cmp::Ordering::Equal => {
                        x = take(&mut xs);
                        y = take(&mut ys);
                        if entry_seq(&i) <= entry_seq(&j) {
                            i
                        } else {
                            j
                        }
                    }
                },
            };
            Some(next)
        });
        let most = (a.entries + b.entries) as usize;
        let run = Run::write_raw(
            &*self.store,
            &self.dir,
            merged,
            most,
            a.from.min(b.from),
            a.to.max(b.to),
        )
        .map_err(|e| e.to_string());
        if let Some(p) = failed.into_inner() {
            if let Ok(r) = &run {
                let _ = self.store.remove(&r.path);
            }
            return Err(p.to_string());
        }
        run
    }

    fn persist(&self) -> Result<u64, Problem> {
        let _commit = self.commit.lock();
        let view = self.view.read().clone();
        let unwritable = |e: std::io::Error| problem("unwritable", &self.dir, e.to_string());
        check_coverage(&view.runs, view.covered)
            .map_err(|m| problem("bad_cold_run", &self.dir, m))?;
        for run in &view.runs {
            run.sync().map_err(unwritable)?;
        }
        self.store.sync_dir(&self.dir).map_err(unwritable)?;
        let names: Vec<String> = view
            .runs
            .iter()
            .filter_map(|r| r.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let paths: Vec<PathBuf> = view.runs.iter().map(|r| r.path.clone()).collect();
        let written = write_manifest(&*self.store, &self.dir, view.covered, &names);
        let mut manifest = self.manifest.lock();
        if let Err(e) = written {
            // Which manifest is on storage now is unknown: keep every run
            // either names until one is written.
            for p in paths {
                if !manifest.1.contains(&p) {
                    manifest.1.push(p);
                }
            }
            return Err(unwritable(e));
        }
        *manifest = (view.covered, paths);
        let mut obsolete = self.obsolete.lock();
        for p in std::mem::take(&mut *obsolete) {
            if manifest.1.contains(&p) {
                obsolete.push(p);
            } else if let Err(e) = self.store.remove(&p) {
                tracing::warn!("removing merged cold run {}: {e}", p.display());
            }
        }
        Ok(view.covered)
    }
}

/// The files of `data_dir`'s cold tier a copy needs (the manifest and the
/// runs it names), with the watermark they cover; none without a manifest.
pub fn manifest_files(
    store: &dyn crate::storage::Storage,
    data_dir: &Path,
) -> Result<(u64, Vec<PathBuf>), Problem> {
    let dir = data_dir.join(COLD_DIR);
    let manifest = dir.join(MANIFEST);
    if !store.exists(&manifest) {
        return Ok((0, Vec::new()));
    }
    let (covered, names) = read_manifest(store, &manifest)?;
    let mut files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    files.push(manifest);
    Ok((covered, files))
}

/// Runs must cover (0, covered] without gaps or overlaps, in order.
fn check_coverage(runs: &[Arc<Run>], covered: u64) -> Result<(), String> {
    let mut at = 0u64;
    for r in runs {
        if r.from != at {
            return Err(format!(
                "the run {} starts after sequence {}, but the runs before it end at {at}",
                r.path.display(),
                r.from
            ));
        }
        at = r.to;
    }
    if at != covered {
        return Err(format!(
            "the runs cover sequences up to {at}, the manifest says {covered}"
        ));
    }
    Ok(())
}

fn write_manifest(
    store: &dyn crate::storage::Storage,
    dir: &Path,
    covered: u64,
    names: &[String],
) -> std::io::Result<()> {
    let mut text = format!("{MANIFEST_HEAD}\ncovered {covered}\n");
    for n in names {
        text.push_str(&format!("run {n}\n"));
    }
    let crc = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("crc32c {crc:08x}\n"));
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    if store.exists(&tmp) {
        store.remove(&tmp)?;
    }
    let file = store.create_new(&tmp)?;
    file.write_all_at(text.as_bytes(), 0)?;
    file.sync_data()?;
    drop(file);
    store.rename(&tmp, &dir.join(MANIFEST))?;
    store.sync_dir(dir)
}

fn read_manifest(
    store: &dyn crate::storage::Storage,
    path: &Path,
) -> Result<(u64, Vec<String>), Problem> {
    let bad = |offset: usize, msg: String| {
        Problem::new("bad_cold_run", file_label(path), offset as u64, 0, msg)
    };
    let bytes =
        crate::storage::read_all(store, path).map_err(|e| bad(0, format!("cannot read: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| bad(e.valid_up_to(), "not UTF-8".into()))?;
    let Some(at) = text.rfind("crc32c ") else {
        return Err(bad(0, "no checksum line".into()));
    };
    let want = text[at + 7..].trim_end();
    let got = format!("{:08x}", crc32c::crc32c(&bytes[..at]));
    if want != got {
        return Err(bad(at, format!("checksum {want}, the contents give {got}")));
    }
    let mut lines = text[..at].lines();
    if lines.next() != Some(MANIFEST_HEAD) {
        return Err(bad(0, format!("the first line is not {MANIFEST_HEAD:?}")));
    }
    let covered = lines
        .next()
        .and_then(|l| l.strip_prefix("covered "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(MANIFEST_HEAD.len() + 1, "no \"covered N\" line".into()))?;
    let mut names = Vec::new();
    for line in lines {
        match line.strip_prefix("run ") {
            Some(n) if !n.contains('/') && n.ends_with(".run") => names.push(n.to_string()),
            _ => return Err(bad(0, format!("unexpected line {line:?}"))),
        }
    }
    Ok((covered, names))
}

#[cfg(test)]
mod tests;
