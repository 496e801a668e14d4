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

use crate::follow::{self, OwnedRecord};
use crate::format::OUTCOME_COMMITTED;
use crate::journal::DurableGroup;
use crate::log::RecordPos;
use crate::problem::Problem;
use crate::scan::LogRecord;
use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex, RwLock};
use std::path::{Path, PathBuf};
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

#[derive(Clone, Copy, Debug)]
struct Mark {
    seq: u64,
    timestamp: u64,
    segment: u64,
    offset: u32,
}

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

#[derive(Default)]
struct Index {
    /// The first sequence the index covers (records before were archived).
    first_seq: u64,
    /// The next sequence to index.
    next_seq: u64,
    marks: Vec<Mark>,
    postings: HashMap<u128, Vec<Posting>>,
    /// Balances of accounts as of `first_seq - 1` (from a snapshot).
    opening: HashMap<u128, i128>,
    by_reference: HashMap<u64, Vec<u64>>,
    by_entry_user_data: HashMap<u128, Vec<u64>>,
    by_account_user_data: HashMap<u128, Vec<u64>>,
    /// Bytes allocated by the lists inside the maps above (kept as they
    /// grow, so a scrape need not walk a million accounts).
    posting_lists: usize,
    reference_lists: usize,
    user_data_lists: usize,
}

/// Heap bytes held by the history index, by structure ([`History::memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryMemory {
    /// Postings per account (and the opening balances).
    pub postings: usize,
    /// Sequences by reference text.
    pub references: usize,
    /// Sequences by entry and by account user data.
    pub user_data: usize,
    /// Position marks into the log.
    pub marks: usize,
}

impl HistoryMemory {
    /// Each structure with its name (the metric's `structure` label).
    pub fn parts(&self) -> [(&'static str, usize); 4] {
        [
            ("history_postings", self.postings),
            ("history_references", self.references),
            ("history_user_data", self.user_data),
            ("history_marks", self.marks),
        ]
    }
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
    /// The log's storage (statements read records back from it).
    store: crate::storage::Store,
    dir: PathBuf,
    index: RwLock<Index>,
    limits: PageLimits,
    /// The next sequence not yet indexed, for waiters.
    indexed: Mutex<u64>,
    indexed_moved: Condvar,
    /// Told the next sequence not yet indexed after each group.
    listener: Mutex<Option<Listener>>,
}

fn reference_key(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// Builds the index while recovery reads the log (each record is decoded
/// once, for both).
pub struct HistoryBuilder {
    index: Index,
    last_record: Option<(u64, usize)>,
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
        HistoryBuilder {
            index: Index {
                first_seq,
                next_seq: 0,
                opening: opening.into_iter().collect(),
                ..Index::default()
            },
            last_record: None,
        }
    }

    /// Indexes one command that recovery read.
    pub fn observe(&mut self, rec: &LogRecord) {
        let seq = rec.header.seq;
        if self.index.next_seq == 0 {
            self.index.next_seq = seq;
        }
        if self.last_record != Some((rec.segment, rec.offset)) {
            self.last_record = Some((rec.segment, rec.offset));
            self.index
                .mark(seq, rec.header.timestamp, rec.segment, rec.offset as u32);
        }
        let committed = rec.header.outcome == OUTCOME_COMMITTED;
        self.index.add(seq, committed, &rec.command);
    }

    /// The history of `dir`, indexed up to where recovery ended
    /// (`next_seq`, the log's next sequence).
    pub fn finish(
        mut self,
        store: crate::storage::Store,
        dir: &Path,
        next_seq: u64,
        limits: PageLimits,
    ) -> History {
        if self.index.next_seq == 0 {
            self.index.next_seq = next_seq;
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
            limits,
            indexed: Mutex::new(next_seq),
            indexed_moved: Condvar::new(),
            listener: Mutex::new(None),
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
        let next = index.next_seq;
        drop(index);
        *self.indexed.lock() = next;
        self.indexed_moved.notify_all();
        if let Some(tell) = self.listener.lock().as_ref() {
            tell(next);
        }
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
        HistoryMemory {
            postings: i.postings.allocation_size() + i.opening.allocation_size() + i.posting_lists,
            references: i.by_reference.allocation_size() + i.reference_lists,
            user_data: i.by_entry_user_data.allocation_size()
                + i.by_account_user_data.allocation_size()
                + i.user_data_lists,
            marks: i.marks.capacity() * std::mem::size_of::<Mark>(),
        }
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

    /// `account`'s posted balance (credits - debits) after sequence `seq`, as
    /// the log's records imply it (what the verifier compares with the
    /// ledger). `seq` must be indexed.
    pub fn balance_at(&self, account: u128, seq: u64) -> i128 {
        let index = self.index.read();
        let opening = index.opening.get(&account).copied().unwrap_or(0);
        match index.postings.get(&account) {
            Some(list) => {
                let n = list.partition_point(|p| p.seq <= seq);
                n.checked_sub(1).map_or(opening, |i| list[i].balance())
            }
            None => opening,
        }
    }

    /// What sequence `seq` moved on `account` by the index (credits -
    /// debits), if it posted to the account.
    pub fn posting_delta(&self, account: u128, seq: u64) -> Option<i128> {
        let index = self.index.read();
        let list = index.postings.get(&account)?;
        let i = list.binary_search_by_key(&seq, |p| p.seq).ok()?;
        let before = match i.checked_sub(1) {
            Some(j) => list[j].balance(),
            None => index.opening.get(&account).copied().unwrap_or(0),
        };
        Some(list[i].balance().saturating_sub(before))
    }

    /// A page of `account`'s statement.
    pub fn statement(
        &self,
        account: u128,
        from_seq: u64,
        limit: u32,
    ) -> Result<(Vec<Posted>, Option<u64>), Problem> {
        let limit = limit.clamp(1, self.limits.max_items) as usize;
        let (page, more): (Vec<Posting>, bool) = {
            let index = self.index.read();
            let Some(list) = index.postings.get(&account) else {
                return Ok((Vec::new(), None));
            };
            let start = list.partition_point(|p| p.seq < from_seq);
            let end = (start + limit).min(list.len());
            (list[start..end].to_vec(), end < list.len())
        };
        let mut lines = Vec::with_capacity(page.len());
        let mut bytes = PageBytes::new(self.limits);
        let mut last = None;
        for p in &page {
            let Some(rec) = self.record(p.seq)? else {
                continue;
            };
            if !bytes.admit(&rec, STATEMENT_LINE_OVERHEAD) {
                break;
            }
            last = Some(p.seq);
            let (_, debit, credit) = movements(&rec.command)
                .into_iter()
                .find(|m| m.0 == account)
                .unwrap_or((account, 0, 0));
            lines.push(Posted {
                record: rec,
                debit,
                credit,
                balance: p.balance(),
            });
        }
        let cut_short = last != page.last().map(|p| p.seq);
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
        let seqs: Vec<u64> = {
            let index = self.index.read();
            let list = match key {
                FindKey::Reference(t) => index.by_reference.get(&reference_key(t)),
                FindKey::EntryUserData(u) => index.by_entry_user_data.get(u),
                FindKey::AccountUserData(u) => index.by_account_user_data.get(u),
            };
            // Timestamps increase with sequence numbers: marks bound the range.
            let lo = index.marks.partition_point(|m| m.timestamp < from_ts);
            let lo_seq = lo.checked_sub(1).map_or(0, |i| index.marks[i].seq);
            list.map(|l| l.iter().copied().filter(|&s| s >= lo_seq).collect())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let mut bytes = PageBytes::new(self.limits);
        for seq in seqs {
            let Some(rec) = self.record(seq)? else {
                continue;
            };
            if rec.header.timestamp < from_ts {
                continue;
            }
            if rec.header.timestamp > to_ts || out.len() == limit {
                break;
            }
            if !bytes.admit(&rec, 0) {
                break;
            }
            let matches = match key {
                FindKey::Reference(t) => rec.command.ops().iter().any(|op| match op {
                    Operation::Entry(e) => e.reference.as_deref() == Some(t.as_str()),
                    Operation::CaptureLien(c) => c.reference.as_deref() == Some(t.as_str()),
                    // A transfer has no reference.
                    Operation::Transfer(_)
                    | Operation::CreateLien(_)
                    | Operation::ReleaseLien(_) => false,
                }),
                _ => true,
            };
            if matches {
                out.push(rec);
            }
        }
        Ok(out)
    }
}

impl Index {
    /// A position mark for a record starting at `seq` (at each segment's
    /// start and every [`MARK_EVERY`] sequences).
    fn mark(&mut self, seq: u64, timestamp: u64, segment: u64, offset: u32) {
        let due = match self.marks.last() {
            None => true,
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

    /// Indexes command `seq` (`committed`: its outcome was "committed").
    fn add(&mut self, seq: u64, committed: bool, command: &Command) {
        debug_assert_eq!(seq, self.next_seq, "commands are indexed in order");
        self.next_seq = seq + 1;
        if seq < self.first_seq || !committed {
            return;
        }
        if let Command::CreateAccount(a) = command {
            if a.user_data != 0 {
                let list = self.by_account_user_data.entry(a.user_data).or_default();
                push_counted(list, seq, &mut self.user_data_lists);
            }
        }
        for op in command.ops() {
            let (reference, user_data) = match op {
                Operation::Entry(e) => (e.reference.as_deref(), e.user_data),
                Operation::Transfer(t) => (None, t.user_data),
                Operation::CaptureLien(c) => (c.reference.as_deref(), 0),
                Operation::CreateLien(_) | Operation::ReleaseLien(_) => (None, 0),
            };
            if let Some(t) = reference {
                let list = self.by_reference.entry(reference_key(t)).or_default();
                if list.last() != Some(&seq) {
                    push_counted(list, seq, &mut self.reference_lists);
                }
            }
            if user_data != 0 {
                let list = self.by_entry_user_data.entry(user_data).or_default();
                if list.last() != Some(&seq) {
                    push_counted(list, seq, &mut self.user_data_lists);
                }
            }
        }
        for (account, debit, credit) in movements(command) {
            let opening = self.opening.get(&account).copied().unwrap_or(0);
            let list = self.postings.entry(account).or_default();
            let before = list.last().map_or(opening, |p| p.balance());
            let after = before
                .saturating_add(credit as i128)
                .saturating_sub(debit as i128);
            push_counted(list, Posting::new(seq, after), &mut self.posting_lists);
        }
    }
}
