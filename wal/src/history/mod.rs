//! The history: an index over the durable log that serves what the
//! in-memory ledger does not keep: account statements (postings with the
//! balance after each), lookups by reference or user data within a time
//! range, the records of entries, and the subscription feed. The records
//! themselves stay in the log; the index keeps positions and, per posting,
//! 24 bytes.
//!
//! Nothing is decoded for the index alone: at start it is built from the
//! records recovery decodes anyway ([`HistoryBuilder::observe`]), and then
//! from the writer's own batches as each group becomes durable
//! ([`History::index_group`], fed by `journal::DurableGroup`). Only a query
//! reads records back from the log, to answer with them.

pub mod run;
pub mod sealer;

use crate::follow::{self, OwnedRecord};
use crate::format::OUTCOME_COMMITTED;
use crate::journal::DurableGroup;
use crate::log::RecordPos;
use crate::problem::Problem;
use crate::scan::LogRecord;
use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex, RwLock};
use run::{Entry, Kind, Run};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tally_engine::chain::Operation;
use tally_engine::Command;

/// How big a page of records may get: at most `max_items`, and no more than
/// `max_bytes` counted as record bodies plus `record_overhead` each (a
/// statement line adds [`STATEMENT_LINE_OVERHEAD`]). A page always holds at
/// least one record.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    pub max_items: u32,
    pub max_bytes: usize,
    pub record_overhead: usize,
}

impl Default for PageLimits {
    fn default() -> PageLimits {
        PageLimits {
            max_items: 1_000,
            max_bytes: 4 << 20,
            record_overhead: 256,
        }
    }
}

/// What to look records up by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindKey {
    /// Entries (and captures) with this reference text.
    Reference(String),
    /// Entries with this user data.
    EntryUserData(u128),
    /// Account creations with this user data.
    AccountUserData(u128),
}

/// A posting to an account: the record, what it moved on the account, and
/// the posted balance (credits - debits) after it.
#[derive(Clone, Debug)]
pub struct Posted {
    pub record: OwnedRecord,
    pub debit: u128,
    pub credit: u128,
    pub balance: i128,
}

/// Bytes a statement line adds to its record on the wire (debit, credit,
/// balance and framing), counted generously.
pub const STATEMENT_LINE_OVERHEAD: usize = 128;

/// Bytes taken by a page so far: admits an item while the page stays within
/// its limit, and always the first.
struct PageBytes {
    used: usize,
    items: usize,
    limits: PageLimits,
}

impl PageBytes {
    fn new(limits: PageLimits) -> PageBytes {
        PageBytes {
            used: 0,
            items: 0,
            limits,
        }
    }

    /// Admits a record of this body size (and `extra` bytes more).
    fn admit(&mut self, r: &OwnedRecord, extra: usize) -> bool {
        let bytes = r.header.body_len as usize + self.limits.record_overhead + extra;
        if self.items > 0 && self.used + bytes > self.limits.max_bytes {
            return false;
        }
        self.used += bytes;
        self.items += 1;
        true
    }
}

/// Commands indexed under one hold of the write lock at most.
pub const INDEX_CHUNK: usize = 1_024;

/// A position mark every this many records (and at each segment's start).
const MARK_EVERY: u64 = 64;

use run::Mark;

/// One posting: the record's sequence and the posted balance after it.
#[derive(Clone, Copy, Debug)]
struct Posting {
    seq: u64,
    balance: [u64; 2],
}

impl Posting {
    fn new(seq: u64, balance: i128) -> Posting {
        let b = balance as u128;
        Posting {
            seq,
            balance: [b as u64, (b >> 64) as u64],
        }
    }
    fn balance(&self) -> i128 {
        (self.balance[0] as u128 | (self.balance[1] as u128) << 64) as i128
    }
}

/// Entries of one stretch of sequences, in memory: the tail being indexed,
/// or a frozen one waiting for its run.
#[derive(Default)]
struct Tail {
    /// The sequence this tail starts after.
    after: u64,
    postings: HashMap<u128, Vec<Posting>>,
    by_reference: HashMap<u64, Vec<u64>>,
    by_entry_user_data: HashMap<u128, Vec<u64>>,
    by_account_user_data: HashMap<u128, Vec<u64>>,
    /// Entries in the lists (what a run of this tail holds).
    entries: usize,
    /// Bytes allocated by the lists inside the maps above (kept as they
    /// grow, so a scrape need not walk a million accounts).
    posting_lists: usize,
    reference_lists: usize,
    user_data_lists: usize,
}

/// A tail that stopped growing: it answers queries until its run is
/// written, with the balances every account had at its end.
pub struct Frozen {
    tail: Tail,
    through: u64,
    /// The position marks of its sequences, which its run keeps.
    marks: Vec<Mark>,
}

/// Where the history's entries are, oldest first: runs on storage, frozen
/// tails, then the tail (read under the lock).
#[derive(Clone, Default)]
struct Older {
    runs: Vec<Arc<Run>>,
    frozen: Vec<Arc<Frozen>>,
}

#[derive(Default)]
struct Index {
    /// The first sequence the index covers (records before were archived).
    first_seq: u64,
    /// The next sequence to index.
    next_seq: u64,
    marks: Vec<Mark>,
    /// Balances of accounts as of `first_seq - 1` (from a snapshot).
    opening: Arc<HashMap<u128, i128>>,
    /// Every account's posted balance as of `sealed_through` (the last
    /// sequence in runs or frozen tails; the opening balances before any).
    sealed: HashMap<u128, i128>,
    sealed_through: u64,
    older: Older,
    tail: Tail,
}

/// Heap bytes held by the history index, by structure ([`History::memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryMemory {
    /// Postings per account in memory, and the balances tables.
    pub postings: usize,
    /// Sequences by reference text, in memory.
    pub references: usize,
    /// Sequences by entry and by account user data, in memory.
    pub user_data: usize,
    /// Position marks into the log.
    pub marks: usize,
    /// The runs' indexes (block keys and filters).
    pub runs: usize,
}

impl HistoryMemory {
    /// Each structure with its name (the metric's `structure` label).
    pub fn parts(&self) -> [(&'static str, usize); 5] {
        [
            ("history_postings", self.postings),
            ("history_references", self.references),
            ("history_user_data", self.user_data),
            ("history_marks", self.marks),
            ("history_runs", self.runs),
        ]
    }
}

/// How the history keeps its entries.
#[derive(Clone, Copy, Debug)]
pub struct HistoryConfig {
    pub limits: PageLimits,
    /// Entries (postings, references, user data) the memory tail holds
    /// before it is written to storage as a run; 0 keeps all in memory.
    pub tail_entries: usize,
}

/// Entries in the memory tail before it is sealed, by default: about
/// 50-100 MiB of lists.
pub const DEFAULT_TAIL_ENTRIES: usize = 1 << 21;

/// Frozen tails waiting for their runs beyond which the tail keeps growing
/// instead (the sealer is behind: storage is slow or failing).
pub const MAX_FROZEN: usize = 2;

impl Default for HistoryConfig {
    fn default() -> HistoryConfig {
        HistoryConfig {
            limits: PageLimits::default(),
            tail_entries: DEFAULT_TAIL_ENTRIES,
        }
    }
}

/// Counters of the sealer.
#[derive(Debug, Default)]
pub struct HistoryStats {
    pub runs_written: AtomicU64,
    pub seal_failures: AtomicU64,
    /// Entries read back from runs by queries.
    pub run_reads: AtomicU64,
}

/// Pushes onto a list, counting what its allocation grew by.
fn push_counted<T>(list: &mut Vec<T>, item: T, bytes: &mut usize) {
    let before = list.capacity();
    list.push(item);
    let grown = list.capacity() - before;
    *bytes += grown * std::mem::size_of::<T>();
}

/// Told the next sequence not yet indexed.
type Listener = Box<dyn Fn(u64) + Send>;

/// The index, fed by recovery and then by the log writer.
pub struct History {
    /// The log's storage (statements read records back from it, and runs
    /// are written to it).
    store: crate::storage::Store,
    dir: PathBuf,
    index: RwLock<Index>,
    limits: PageLimits,
    tail_entries: usize,
    /// The next sequence not yet indexed, for waiters.
    indexed: Mutex<u64>,
    indexed_moved: Condvar,
    /// Told the next sequence not yet indexed after each group.
    listener: Mutex<Option<Listener>>,
    stats: HistoryStats,
    /// Wakes the sealer thread; its handle.
    sealer: Mutex<Option<(crossbeam_channel::Sender<()>, JoinHandle<()>)>>,
}

fn reference_key(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// Builds the index while recovery reads the log (each record is decoded
/// once, for both).
pub struct HistoryBuilder {
    index: Index,
    last_record: Option<(u64, usize)>,
    tail_entries: usize,
    /// Where frozen tails are sealed as recovery reads the log (none: they
    /// wait for the sealer thread, and at most [`MAX_FROZEN`] are frozen).
    sealing: Option<(crate::storage::Store, PathBuf)>,
    /// The highest durable watermark read: frozen tails at or before it
    /// are durable in the log and may be sealed.
    witnessed: u64,
    /// The last sequence the marks resumed from runs cover (0: none).
    marked_through: u64,
}

/// What a committed command moved on each account: (account, debit, credit).
/// In order of account; linear in the lines after a sort (a command may
/// have thousands). A transfer's two stay on the stack.
pub fn movements(cmd: &Command) -> Movements {
    let mut out = Movements::new();
    let mut add = |account: u128, debit: u128, credit: u128| out.push((account, debit, credit));
    for op in cmd.ops() {
        match op {
            Operation::Transfer(t) => {
                add(t.debit_account, t.amount, 0);
                add(t.credit_account, 0, t.amount);
            }
            Operation::Entry(e) => {
                for l in &e.lines {
                    match l.side {
                        tally_engine::Side::Debit => add(l.account, l.amount, 0),
                        tally_engine::Side::Credit => add(l.account, 0, l.amount),
                    }
                }
            }
            Operation::CaptureLien(c) => {
                add(c.account, c.total().unwrap_or(0), 0);
                for &(to, amount) in &c.credits {
                    add(to, 0, amount);
                }
            }
            _ => {}
        }
    }
    out.sort_unstable_by_key(|m| m.0);
    out.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = kept.1.saturating_add(later.1);
            kept.2 = kept.2.saturating_add(later.2);
        }
        same
    });
    out
}

/// What a command moved: (account, debit, credit).
pub type Movements = smallvec::SmallVec<[(u128, u128, u128); 2]>;

impl HistoryBuilder {
    /// An index that covers sequences from `first_seq`, with the balances
    /// accounts had before it (from the snapshot that covers the sequences
    /// of archived segments; empty when the log starts at sequence 1).
    pub fn new(first_seq: u64, opening: impl IntoIterator<Item = (u128, i128)>) -> HistoryBuilder {
        let opening: HashMap<u128, i128> = opening.into_iter().collect();
        HistoryBuilder {
            index: Index {
                first_seq,
                next_seq: 0,
                sealed: opening.clone(),
                opening: Arc::new(opening),
                ..Index::default()
            },
            last_record: None,
            tail_entries: 0,
            sealing: None,
            witnessed: 0,
            marked_through: 0,
        }
    }

    /// Freezes the tail each time it holds `entries` (0: never), so that a
    /// long log does not build one huge run.
    pub fn tail_entries(mut self, entries: usize) -> HistoryBuilder {
        self.tail_entries = entries;
        self
    }

    /// Seals each frozen tail into `data_dir`'s runs as recovery goes, once
    /// the log witnesses it durable (a record after it carries a watermark
    /// at or past its end: a run must never cover what a machine crash could
    /// still take from the log). Without it a long log's reindexing keeps
    /// every frozen tail in memory until the sealer thread starts.
    pub fn seal_while_recovering(
        mut self,
        store: crate::storage::Store,
        data_dir: &Path,
    ) -> HistoryBuilder {
        self.sealing = Some((store, data_dir.to_path_buf()));
        self
    }

    /// Where earlier runs end: their entries are not indexed again, and
    /// their balances continue. Refused when the runs start after the
    /// index does (a run is missing); `Ok(false)` when they end before it
    /// starts (the segments after them were archived: the runs no longer
    /// join the log and are to be discarded).
    pub fn resume(&mut self, mut sealed: sealer::Sealed) -> Result<bool, Problem> {
        let first = self.index.first_seq;
        if sealed.after() >= first {
            let label = sealed
                .runs
                .first()
                .map(|r| crate::problem::file_label(&r.path))
                .unwrap_or_default();
            return Err(Problem::new(
                "bad_history_run",
                label,
                0,
                first,
                format!(
                    "the history's runs start after sequence {}, but the log starts at {first}: a run is missing",
                    sealed.after()
                ),
            ));
        }
        if sealed.through + 1 < first {
            return Ok(false);
        }
        let i = &mut self.index;
        // The runs' marks stand for the log before their end, unless
        // segments were archived (the index then starts after the snapshot,
        // and its marks must not point into segments that are gone).
        if i.first_seq <= 1 {
            if let Some(marks) = sealed.marks.take() {
                i.marks = marks;
                self.marked_through = sealed.through;
            }
        }
        i.sealed = sealed.balances;
        i.sealed_through = sealed.through;
        i.older.runs = sealed.runs;
        i.tail.after = sealed.through;
        Ok(true)
    }

    /// The first sequence recovery must read for this index: the one after
    /// the runs it resumed when they kept their position marks (the log
    /// before them is neither indexed again nor needed to find records),
    /// else its first.
    pub fn needs_from(&self) -> u64 {
        if self.marked_through > 0 && self.marked_through == self.index.sealed_through {
            self.marked_through + 1
        } else {
            self.index.first_seq.max(1)
        }
    }

    /// Frozen tails waiting for their runs.
    pub fn frozen(&self) -> usize {
        self.index.older.frozen.len()
    }

    /// The last sequence the runs it resumed from cover (0: none).
    pub fn sealed_through(&self) -> u64 {
        self.index.sealed_through
    }

    /// Indexes one command that recovery read.
    pub fn observe(&mut self, rec: &LogRecord) {
        let seq = rec.header.seq;
        if self.index.next_seq == 0 {
            self.index.next_seq = seq;
            if self.index.sealed_through == 0 {
                self.index.tail.after = seq - 1;
            }
        }
        if self.last_record != Some((rec.segment, rec.offset)) {
            self.last_record = Some((rec.segment, rec.offset));
            self.index
                .mark(seq, rec.header.timestamp, rec.segment, rec.offset as u32);
        }
        let committed = rec.header.outcome == OUTCOME_COMMITTED;
        self.index.add(seq, committed, &rec.command);
        if rec.watermark > self.witnessed {
            self.witnessed = rec.watermark;
            self.seal_witnessed();
        }
        if self.tail_entries > 0
            && self.index.tail.entries >= self.tail_entries
            && self.index.older.frozen.len() < MAX_FROZEN
        {
            self.index.freeze();
            self.seal_witnessed();
        }
    }

    /// Seals the frozen tails the log witnesses durable, oldest first. A
    /// failure leaves them frozen for the sealer thread (the tail then
    /// grows past [`MAX_FROZEN`] frozen tails until it catches up).
    fn seal_witnessed(&mut self) {
        let Some((store, dir)) = &self.sealing else {
            return;
        };
        while let Some(frozen) = self.index.older.frozen.first().cloned() {
            if frozen.through > self.witnessed {
                return;
            }
            let previous = self.index.older.runs.last().map(|r| r.through);
            match sealer::seal(&**store, dir, &frozen, previous, &self.index.opening) {
                Ok(run) => {
                    self.index.older.frozen.remove(0);
                    self.index.older.runs.push(Arc::new(run));
                }
                Err(e) => {
                    tracing::warn!(
                        "writing the history's run for sequences {}..={} while recovering failed (kept in memory, retried after the start): {e}",
                        frozen.tail.after + 1,
                        frozen.through
                    );
                    self.sealing = None;
                    return;
                }
            }
        }
    }

    /// The history of `dir`, indexed up to where recovery ended
    /// (`next_seq`, the log's next sequence).
    pub fn finish(
        mut self,
        store: crate::storage::Store,
        dir: &Path,
        next_seq: u64,
        config: HistoryConfig,
    ) -> History {
        if self.index.next_seq == 0 {
            self.index.next_seq = next_seq;
            if self.index.sealed_through == 0 {
                self.index.tail.after = next_seq - 1;
            }
        }
        debug_assert_eq!(
            self.index.next_seq, next_seq,
            "recovery indexed every record"
        );
        self.index.first_seq = self.index.first_seq.min(next_seq);
        History {
            store,
            dir: dir.to_path_buf(),
            index: RwLock::new(self.index),
            limits: config.limits,
            tail_entries: config.tail_entries,
            indexed: Mutex::new(next_seq),
            indexed_moved: Condvar::new(),
            listener: Mutex::new(None),
            stats: HistoryStats::default(),
            sealer: Mutex::new(None),
        }
    }
}

impl History {
    /// Indexes a group the writer made durable: the commands are the ones
    /// in its batches (nothing is read back from the log).
    /// The write lock is let go every [`INDEX_CHUNK`] commands, so readers
    /// wait at most for a chunk (all of the group is durable: showing part
    /// of it is fine).
    pub fn index_group(&self, group: &DurableGroup) {
        let mut index = self.index.write();
        for r in &group.records {
            index.mark_record(r);
        }
        let mut rejected = group.not_committed.iter().copied().peekable();
        let mut done = 0;
        for batch in &group.batches {
            for (route, cmd) in batch.routes().iter().zip(batch.commands()) {
                let Some(route) = route else { continue };
                let committed = rejected.next_if_eq(&route.seq).is_none();
                index.add(route.seq, committed, cmd);
                done += 1;
                if done % INDEX_CHUNK == 0 {
                    parking_lot::RwLockWriteGuard::bump(&mut index);
                }
            }
        }
        let froze = self.tail_entries > 0
            && index.tail.entries >= self.tail_entries
            && index.older.frozen.len() < MAX_FROZEN;
        if froze {
            index.freeze();
        }
        let next = index.next_seq;
        drop(index);
        if froze {
            self.wake_sealer();
        }
        *self.indexed.lock() = next;
        self.indexed_moved.notify_all();
        if let Some(tell) = self.listener.lock().as_ref() {
            tell(next);
        }
    }

    /// Starts the thread that writes frozen tails as runs (and writes the
    /// ones recovery froze).
    pub fn start_sealer(self: &Arc<History>) -> std::io::Result<()> {
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let me = self.clone();
        // Not lowered to background priority (`crate::background`): it puts
        // each run in place under the index's write lock, which the indexer
        // and every history query wait for.
        let thread = tally_engine::essential::spawn(sealer::SEAL_THREAD, move || loop {
            me.seal_frozen();
            match rx.recv_timeout(SEAL_RETRY) {
                Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        })?;
        *self.sealer.lock() = Some((tx, thread));
        Ok(())
    }

    fn wake_sealer(&self) {
        if let Some((tx, _)) = self.sealer.lock().as_ref() {
            let _ = tx.try_send(());
        }
    }

    /// Stops the sealer thread (what is frozen stays in memory, and is
    /// indexed again from the log at the next start).
    pub fn stop_sealer(&self) {
        let taken = self.sealer.lock().take();
        if let Some((tx, thread)) = taken {
            drop(tx);
            let _ = thread.join();
        }
    }

    /// Writes each frozen tail, oldest first, as a run; a failure leaves
    /// it frozen (still answering) for the next try.
    fn seal_frozen(&self) {
        loop {
            let (next, previous, opening) = {
                let i = self.index.read();
                let previous = i.older.runs.last().map(|r| r.through);
                (i.older.frozen.first().cloned(), previous, i.opening.clone())
            };
            let Some(frozen) = next else { return };
            match sealer::seal(&*self.store, &self.dir, &frozen, previous, &opening) {
                Ok(run) => {
                    let mut i = self.index.write();
                    debug_assert!(i
                        .older
                        .frozen
                        .first()
                        .is_some_and(|f| Arc::ptr_eq(f, &frozen)));
                    i.older.frozen.remove(0);
                    i.older.runs.push(Arc::new(run));
                    // A tail that filled while the sealer was behind is
                    // frozen now, not at the next group (there may be none).
                    if self.tail_entries > 0 && i.tail.entries >= self.tail_entries {
                        i.freeze();
                    }
                    self.stats.runs_written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.seal_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "writing the history's run for sequences {}..={} failed (kept in memory, retried): {e}",
                        frozen.tail.after + 1,
                        frozen.through
                    );
                    return;
                }
            }
        }
    }

    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// Runs on storage now.
    pub fn runs(&self) -> usize {
        self.index.read().older.runs.len()
    }

    /// Calls `tell` with the next sequence not yet indexed each time the
    /// index moves (from the history thread: keep it short).
    pub fn on_indexed(&self, tell: impl Fn(u64) + Send + 'static) {
        *self.listener.lock() = Some(Box::new(tell));
    }

    /// Waits until every sequence up to `seq` is indexed, or `deadline`;
    /// whether it is.
    pub fn wait_indexed(&self, seq: u64, deadline: Instant) -> bool {
        let mut next = self.indexed.lock();
        while *next <= seq {
            if self
                .indexed_moved
                .wait_until(&mut next, deadline)
                .timed_out()
            {
                return *next > seq;
            }
        }
        true
    }

    /// Heap bytes the index holds now, by structure.
    pub fn memory(&self) -> HistoryMemory {
        let i = self.index.read();
        let mut m = HistoryMemory {
            postings: i.opening.allocation_size() + i.sealed.allocation_size(),
            marks: i.marks.capacity() * std::mem::size_of::<Mark>(),
            runs: i.older.runs.iter().map(|r| r.memory_bytes()).sum(),
            ..HistoryMemory::default()
        };
        for f in &i.older.frozen {
            f.tail.memory(&mut m);
        }
        i.tail.memory(&mut m);
        m
    }

    /// The first sequence that statements and the feed can serve.
    pub fn first_seq(&self) -> u64 {
        self.index.read().first_seq
    }

    /// The next sequence not yet indexed.
    pub fn next_seq(&self) -> u64 {
        self.index.read().next_seq
    }

    /// Where to start reading to reach `seq` (the mark at or before it).
    fn mark_before(&self, seq: u64) -> Option<Mark> {
        let index = self.index.read();
        let i = index.marks.partition_point(|m| m.seq <= seq);
        index.marks.get(i.saturating_sub(1)).copied()
    }

    /// Records from `from_seq`, up to what is indexed: at most `limit`, and
    /// no more than the page's bytes ([`PageLimits`]), but always the first one
    /// (every record fits a page: a record body is at most
    /// `MAX_COMMAND_BYTES`).
    pub fn records(&self, from_seq: u64, limit: usize) -> Result<Vec<OwnedRecord>, Problem> {
        let until = self.next_seq().saturating_sub(1);
        let mut out = Vec::new();
        if from_seq > until || limit == 0 {
            return Ok(out);
        }
        let Some(mark) = self.mark_before(from_seq) else {
            return Ok(out);
        };
        let mut page = PageBytes::new(self.limits);
        follow::read_from(
            &*self.store,
            &self.dir,
            mark.segment,
            mark.offset,
            until,
            |r| {
                if r.header.seq < from_seq {
                    return true;
                }
                if !page.admit(&r, 0) {
                    return false;
                }
                out.push(r);
                out.len() < limit
            },
        )?;
        Ok(out)
    }

    /// The record with sequence `seq`, if indexed.
    pub fn record(&self, seq: u64) -> Result<Option<OwnedRecord>, Problem> {
        Ok(self
            .records(seq, 1)?
            .into_iter()
            .find(|r| r.header.seq == seq))
    }

    /// The last posting to `account` at or before `seq`: (its sequence, or
    /// a later one at or before `seq` when it is older than the tail; the
    /// balance after it); `None` before its first. Reads at most one block of one run per run
    /// that may hold the account, newest first.
    fn last_posting(&self, account: u128, seq: u64) -> Result<Option<(u64, i128)>, Problem> {
        let older = {
            let index = self.index.read();
            if seq > index.sealed_through {
                if let Some(p) = index.tail.last_posting(account, seq) {
                    return Ok(Some(p));
                }
                if index.sealed_through == index.tail.after && index.sealed_through > 0 {
                    if let Some(&b) = index.sealed.get(&account) {
                        return Ok(Some((index.sealed_through, b)));
                    }
                }
            }
            index.older.clone()
        };
        for f in older.frozen.iter().rev() {
            if f.tail.after < seq {
                if let Some(p) = f.tail.last_posting(account, seq) {
                    return Ok(Some(p));
                }
            }
        }
        for r in older.runs.iter().rev() {
            if r.after < seq {
                self.stats.run_reads.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = r.last_at_or_before(Kind::Posting, account, seq)? {
                    return Ok(Some(p));
                }
            }
        }
        Ok(None)
    }

    /// `account`'s posted balance (credits - debits) after sequence `seq`, as
    /// the log's records imply it (what the verifier compares with the
    /// ledger). `seq` must be indexed.
    pub fn balance_at(&self, account: u128, seq: u64) -> Result<i128, Problem> {
        Ok(match self.last_posting(account, seq)? {
            Some((_, b)) => b,
            None => self
                .index
                .read()
                .opening
                .get(&account)
                .copied()
                .unwrap_or(0),
        })
    }

    /// What sequence `seq` moved on `account` by the index (credits -
    /// debits), if it posted to the account.
    pub fn posting_delta(&self, account: u128, seq: u64) -> Result<Option<i128>, Problem> {
        let Some((at, after)) = self.last_posting(account, seq)? else {
            return Ok(None);
        };
        if at != seq {
            return Ok(None);
        }
        let before = self.balance_at(account, seq.saturating_sub(1))?;
        Ok(Some(after.saturating_sub(before)))
    }

    /// Up to `n` entries of (kind, key) from `from_seq`, in order, from
    /// the runs, the frozen tails and the tail.
    fn entries_from(
        &self,
        kind: Kind,
        key: u128,
        from_seq: u64,
        n: usize,
    ) -> Result<Vec<(u64, i128)>, Problem> {
        let (older, tail, from_seq) = {
            let index = self.index.read();
            // Runs may reach back before the index's start (segments were
            // archived since): it serves what the in-memory index would.
            let from_seq = from_seq.max(index.first_seq);
            let tail = index.tail.entries_of(kind, key, from_seq, n);
            (index.older.clone(), tail, from_seq)
        };
        let mut out = Vec::new();
        for r in &older.runs {
            if out.len() >= n {
                break;
            }
            if r.through < from_seq {
                continue;
            }
            self.stats.run_reads.fetch_add(1, Ordering::Relaxed);
            r.scan(kind, key, from_seq, |seq, v| {
                out.push((seq, v));
                out.len() < n
            })?;
        }
        for f in &older.frozen {
            if out.len() >= n {
                break;
            }
            if f.through >= from_seq {
                out.extend(f.tail.entries_of(kind, key, from_seq, n - out.len()));
            }
        }
        // All three were taken under one hold of the lock: they follow one
        // another without overlap.
        out.extend(tail);
        out.truncate(n);
        Ok(out)
    }

    /// A page of `account`'s statement.
    pub fn statement(
        &self,
        account: u128,
        from_seq: u64,
        limit: u32,
    ) -> Result<(Vec<Posted>, Option<u64>), Problem> {
        let limit = limit.clamp(1, self.limits.max_items) as usize;
        let mut page = self.entries_from(Kind::Posting, account, from_seq, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let mut lines = Vec::with_capacity(page.len());
        let mut bytes = PageBytes::new(self.limits);
        let mut last = None;
        for &(seq, balance) in &page {
            let Some(rec) = self.record(seq)? else {
                continue;
            };
            if !bytes.admit(&rec, STATEMENT_LINE_OVERHEAD) {
                break;
            }
            last = Some(seq);
            let (_, debit, credit) = movements(&rec.command)
                .into_iter()
                .find(|m| m.0 == account)
                .unwrap_or((account, 0, 0));
            lines.push(Posted {
                record: rec,
                debit,
                credit,
                balance,
            });
        }
        let cut_short = last != page.last().map(|p| p.0);
        let next = if more || cut_short {
            last.map(|s| s + 1)
        } else {
            None
        };
        Ok((lines, next))
    }

    /// Records with this reference text, entry user data or account user
    /// data, with timestamps in `from_ts..=to_ts`.
    pub fn find(
        &self,
        key: &FindKey,
        from_ts: u64,
        to_ts: u64,
        limit: u32,
    ) -> Result<Vec<OwnedRecord>, Problem> {
        let limit = limit.clamp(1, self.limits.max_items) as usize;
        let (kind, k) = match key {
            FindKey::Reference(t) => (Kind::Reference, reference_key(t) as u128),
            FindKey::EntryUserData(u) => (Kind::EntryUserData, *u),
            FindKey::AccountUserData(u) => (Kind::AccountUserData, *u),
        };
        // Timestamps increase with sequence numbers: marks bound the range.
        let mut from_seq = {
            let index = self.index.read();
            let lo = index.marks.partition_point(|m| m.timestamp < from_ts);
            lo.checked_sub(1).map_or(0, |i| index.marks[i].seq)
        };
        let mut out = Vec::new();
        let mut bytes = PageBytes::new(self.limits);
        loop {
            let seqs = self.entries_from(kind, k, from_seq, FIND_CHUNK)?;
            let Some(&(last, _)) = seqs.last() else {
                return Ok(out);
            };
            for &(seq, _) in &seqs {
                let Some(rec) = self.record(seq)? else {
                    continue;
                };
                if rec.header.timestamp < from_ts {
                    continue;
                }
                if rec.header.timestamp > to_ts || out.len() == limit {
                    return Ok(out);
                }
                if !bytes.admit(&rec, 0) {
                    return Ok(out);
                }
                if matches_key(key, &rec.command) {
                    out.push(rec);
                }
            }
            if seqs.len() < FIND_CHUNK {
                return Ok(out);
            }
            from_seq = last + 1;
        }
    }
}

/// Sequences a lookup gathers at a time.
const FIND_CHUNK: usize = 1_024;

/// How long the sealer waits before it tries a failed run again.
const SEAL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a record found by a key's hash has the key (references are
/// indexed by a hash of the text).
fn matches_key(key: &FindKey, cmd: &Command) -> bool {
    match key {
        FindKey::Reference(t) => cmd.ops().iter().any(|op| match op {
            Operation::Entry(e) => e.reference.as_deref() == Some(t.as_str()),
            Operation::CaptureLien(c) => c.reference.as_deref() == Some(t.as_str()),
            // A transfer has no reference.
            Operation::Transfer(_) | Operation::CreateLien(_) | Operation::ReleaseLien(_) => false,
        }),
        _ => true,
    }
}

impl Tail {
    fn new(after: u64) -> Tail {
        Tail {
            after,
            ..Tail::default()
        }
    }

    fn memory(&self, m: &mut HistoryMemory) {
        m.postings += self.postings.allocation_size() + self.posting_lists;
        m.references += self.by_reference.allocation_size() + self.reference_lists;
        m.user_data += self.by_entry_user_data.allocation_size()
            + self.by_account_user_data.allocation_size()
            + self.user_data_lists;
    }

    fn last_posting(&self, account: u128, seq: u64) -> Option<(u64, i128)> {
        let list = self.postings.get(&account)?;
        let n = list.partition_point(|p| p.seq <= seq);
        n.checked_sub(1).map(|i| (list[i].seq, list[i].balance()))
    }

    fn seqs(&self, kind: Kind, key: u128) -> Option<&Vec<u64>> {
        match kind {
            Kind::Posting => None,
            Kind::Reference => self.by_reference.get(&(key as u64)),
            Kind::EntryUserData => self.by_entry_user_data.get(&key),
            Kind::AccountUserData => self.by_account_user_data.get(&key),
        }
    }

    /// Up to `n` entries of (kind, key) from `from_seq`: (seq, value).
    fn entries_of(&self, kind: Kind, key: u128, from_seq: u64, n: usize) -> Vec<(u64, i128)> {
        if kind == Kind::Posting {
            let Some(list) = self.postings.get(&key) else {
                return Vec::new();
            };
            let start = list.partition_point(|p| p.seq < from_seq);
            return list[start..]
                .iter()
                .take(n)
                .map(|p| (p.seq, p.balance()))
                .collect();
        }
        let Some(list) = self.seqs(kind, key) else {
            return Vec::new();
        };
        let start = list.partition_point(|&s| s < from_seq);
        list[start..].iter().take(n).map(|&s| (s, 0)).collect()
    }

    /// Every entry, sorted by (kind, key, seq): what its run holds.
    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        fn sorted<K: Copy + Ord, V>(m: &HashMap<K, V>) -> Vec<K> {
            let mut keys: Vec<K> = m.keys().copied().collect();
            keys.sort_unstable();
            keys
        }
        fn seqs(kind: Kind, key: u128, list: &[u64]) -> impl Iterator<Item = Entry> + '_ {
            list.iter().map(move |&seq| Entry {
                kind,
                key,
                seq,
                value: 0,
            })
        }
        let postings = sorted(&self.postings).into_iter().flat_map(move |a| {
            self.postings[&a].iter().map(move |p| Entry {
                kind: Kind::Posting,
                key: a,
                seq: p.seq,
                value: p.balance(),
            })
        });
        let refs = sorted(&self.by_reference)
            .into_iter()
            .flat_map(move |k| seqs(Kind::Reference, k as u128, &self.by_reference[&k]));
        let entry_ud = sorted(&self.by_entry_user_data)
            .into_iter()
            .flat_map(move |k| seqs(Kind::EntryUserData, k, &self.by_entry_user_data[&k]));
        let account_ud = sorted(&self.by_account_user_data)
            .into_iter()
            .flat_map(move |k| seqs(Kind::AccountUserData, k, &self.by_account_user_data[&k]));
        postings.chain(refs).chain(entry_ud).chain(account_ud)
    }
}

impl Index {
    /// A position mark for a record starting at `seq` (at each segment's
    /// start and every [`MARK_EVERY`] sequences).
    fn mark(&mut self, seq: u64, timestamp: u64, segment: u64, offset: u32) {
        let due = match self.marks.last() {
            None => true,
            // A restart that resumed from runs with their marks reads the
            // log from a segment's start: records up to the last mark are
            // marked already.
            Some(m) if seq <= m.seq => false,
            Some(m) => m.segment != segment || seq >= m.seq + MARK_EVERY,
        };
        if due {
            self.marks.push(Mark {
                seq,
                timestamp,
                segment,
                offset,
            });
        }
    }

    fn mark_record(&mut self, r: &RecordPos) {
        self.mark(r.first_seq, r.first_timestamp, r.segment, r.offset);
    }

    /// Ends the tail at the last sequence indexed: it is frozen (to be
    /// written as a run) with every account's balance as of its end.
    fn freeze(&mut self) {
        let through = self.next_seq - 1;
        if through <= self.tail.after {
            return;
        }
        let tail = std::mem::replace(&mut self.tail, Tail::new(through));
        for (&account, list) in &tail.postings {
            if let Some(p) = list.last() {
                self.sealed.insert(account, p.balance());
            }
        }
        self.sealed_through = through;
        let from = self.marks.partition_point(|m| m.seq <= tail.after);
        let to = self.marks.partition_point(|m| m.seq <= through);
        let marks = self.marks[from..to].to_vec();
        // The balances at its end are written from the previous run's and
        // its own last postings when it is sealed: no copy of every
        // account's balance is made here, under the index's lock.
        self.older.frozen.push(Arc::new(Frozen {
            through,
            tail,
            marks,
        }));
    }

    /// Indexes command `seq` (`committed`: its outcome was "committed").
    fn add(&mut self, seq: u64, committed: bool, command: &Command) {
        debug_assert_eq!(seq, self.next_seq, "commands are indexed in order");
        self.next_seq = seq + 1;
        if seq < self.first_seq || seq <= self.sealed_through || !committed {
            return;
        }
        let t = &mut self.tail;
        if let Command::CreateAccount(a) = command {
            if a.user_data != 0 {
                let list = t.by_account_user_data.entry(a.user_data).or_default();
                push_counted(list, seq, &mut t.user_data_lists);
                t.entries += 1;
            }
        }
        for op in command.ops() {
            let (reference, user_data) = match op {
                Operation::Entry(e) => (e.reference.as_deref(), e.user_data),
                Operation::Transfer(t) => (None, t.user_data),
                Operation::CaptureLien(c) => (c.reference.as_deref(), 0),
                Operation::CreateLien(_) | Operation::ReleaseLien(_) => (None, 0),
            };
            if let Some(text) = reference {
                let list = t.by_reference.entry(reference_key(text)).or_default();
                if list.last() != Some(&seq) {
                    push_counted(list, seq, &mut t.reference_lists);
                    t.entries += 1;
                }
            }
            if user_data != 0 {
                let list = t.by_entry_user_data.entry(user_data).or_default();
                if list.last() != Some(&seq) {
                    push_counted(list, seq, &mut t.user_data_lists);
                    t.entries += 1;
                }
            }
        }
        for (account, debit, credit) in movements(command) {
            let list = t.postings.entry(account).or_default();
            let before = match list.last() {
                Some(p) => p.balance(),
                None => self.sealed.get(&account).copied().unwrap_or(0),
            };
            let after = before
                .saturating_add(credit as i128)
                .saturating_sub(debit as i128);
            push_counted(list, Posting::new(seq, after), &mut t.posting_lists);
            t.entries += 1;
        }
    }
}
