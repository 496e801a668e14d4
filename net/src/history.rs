//! The server's history: an index over the durable log, built by following
//! it ([`tally_wal::follow::Follower`]), that serves what the in-memory ledger
//! does not keep: account statements (postings with the balance after each),
//! lookups by reference or user data within a time range, the records of
//! entries, and the subscription feed. The records themselves stay in the
//! log; the index keeps positions and, per posting, 24 bytes.

use crate::limits::{MAX_PAGE, MAX_PAGE_BYTES, RECORD_WIRE_OVERHEAD};
use crate::message::{StatementLine, WireRecord};
use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tally_engine::chain::Operation;
use tally_engine::Command;
use tally_wal::follow::{self, Follower, OwnedRecord};
use tally_wal::format::OUTCOME_COMMITTED;
use tally_wal::Problem;

/// Bytes a statement line adds to its record on the wire (debit, credit,
/// balance and framing), counted generously.
const STATEMENT_LINE_OVERHEAD: usize = 128;

/// A record's size on the wire, counted generously.
fn wire_bytes(r: &OwnedRecord) -> usize {
    r.header.body_len as usize + RECORD_WIRE_OVERHEAD
}

/// Bytes taken by a page so far: admits an item while the page stays within
/// [`MAX_PAGE_BYTES`], and always the first.
#[derive(Default)]
struct PageBytes {
    used: usize,
    items: usize,
}

impl PageBytes {
    fn admit(&mut self, bytes: usize) -> bool {
        if self.items > 0 && self.used + bytes > MAX_PAGE_BYTES {
            return false;
        }
        self.used += bytes;
        self.items += 1;
        true
    }
}

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
    last_segment: Option<u64>,
    postings: HashMap<u128, Vec<Posting>>,
    /// Balances of accounts as of `first_seq - 1` (from a snapshot).
    opening: HashMap<u128, i128>,
    by_reference: HashMap<u64, Vec<u64>>,
    by_entry_user_data: HashMap<u128, Vec<u64>>,
    by_account_user_data: HashMap<u128, Vec<u64>>,
}

/// The index and the follower that feeds it.
pub struct History {
    dir: PathBuf,
    index: RwLock<Index>,
    follower: Mutex<Follower>,
    durable: Arc<tally_wal::journal::LogStats>,
    /// A damaged log found while following (the feed stops there).
    failure: Mutex<Option<Problem>>,
}

fn reference_key(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

pub fn wire_record(r: &OwnedRecord) -> WireRecord {
    WireRecord {
        seq: r.header.seq,
        timestamp: r.header.timestamp,
        outcome: r.header.outcome,
        code: r.header.code,
        original_seq: r.header.original_seq,
        command: r.command.clone(),
    }
}

/// What a committed command moved on each account: (account, debit, credit).
pub fn movements(cmd: &Command) -> Vec<(u128, u128, u128)> {
    let mut out: Vec<(u128, u128, u128)> = Vec::new();
    let mut add =
        |account: u128, debit: u128, credit: u128| match out.iter_mut().find(|m| m.0 == account) {
            Some(m) => {
                m.1 = m.1.saturating_add(debit);
                m.2 = m.2.saturating_add(credit);
            }
            None => out.push((account, debit, credit)),
        };
    for op in cmd.ops() {
        match op {
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
    out
}

impl History {
    /// Opens the history of `dir`; `durable` is the log's durable sequence.
    /// Indexing happens in [`History::catch_up`].
    pub fn open(
        dir: &Path,
        durable: Arc<tally_wal::journal::LogStats>,
    ) -> Result<History, Problem> {
        let follower = Follower::from_start(dir)?;
        let mut index = Index {
            first_seq: follower.next_seq(),
            next_seq: follower.next_seq(),
            ..Index::default()
        };
        if index.first_seq > 1 {
            // Early segments were archived: start from the newest snapshot
            // that covers them, with its balances as opening balances.
            let covering = tally_wal::snapshot::list(dir)
                .into_iter()
                .rev()
                .filter_map(|(_, p)| tally_wal::snapshot::read(&p).ok())
                .find(|(info, _)| info.last_seq + 1 >= index.first_seq);
            if let Some((info, image)) = covering {
                index.first_seq = info.last_seq + 1;
                for (a, _) in &image.accounts {
                    index.opening.insert(a.id, a.balance());
                }
            }
        }
        Ok(History {
            dir: dir.to_path_buf(),
            index: RwLock::new(index),
            follower: Mutex::new(follower),
            durable,
            failure: Mutex::new(None),
        })
    }

    /// Indexes every record that is durable now. Returns the next sequence
    /// not yet indexed.
    pub fn catch_up(&self) -> Result<u64, Problem> {
        if let Some(p) = self.failure.lock().clone() {
            return Err(p);
        }
        let until = self.durable.durable_seq.load(Ordering::Acquire);
        let mut follower = self.follower.lock();
        let mut chunk = Vec::with_capacity(1_024);
        loop {
            chunk.clear();
            while chunk.len() < 1_024 {
                match follower.next(until) {
                    Ok(Some(r)) => chunk.push(r),
                    Ok(None) => break,
                    Err(p) => {
                        *self.failure.lock() = Some(p.clone());
                        return Err(p);
                    }
                }
            }
            if chunk.is_empty() {
                return Ok(follower.next_seq());
            }
            let mut index = self.index.write();
            for r in &chunk {
                index.add(r);
            }
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
    /// no more than [`MAX_PAGE_BYTES`] on the wire, but always the first one
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
        let mut page = PageBytes::default();
        follow::read_from(&self.dir, mark.segment, mark.offset, until, |r| {
            if r.header.seq < from_seq {
                return true;
            }
            if !page.admit(wire_bytes(&r)) {
                return false;
            }
            out.push(r);
            out.len() < limit
        })?;
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

    /// A page of `account`'s statement.
    pub fn statement(
        &self,
        account: u128,
        from_seq: u64,
        limit: u32,
    ) -> Result<(Vec<StatementLine>, Option<u64>), Problem> {
        let limit = limit.clamp(1, MAX_PAGE) as usize;
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
        let mut bytes = PageBytes::default();
        let mut last = None;
        for p in &page {
            let Some(rec) = self.record(p.seq)? else {
                continue;
            };
            if !bytes.admit(wire_bytes(&rec) + STATEMENT_LINE_OVERHEAD) {
                break;
            }
            last = Some(p.seq);
            let (_, debit, credit) = movements(&rec.command)
                .into_iter()
                .find(|m| m.0 == account)
                .unwrap_or((account, 0, 0));
            lines.push(StatementLine {
                record: wire_record(&rec),
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
        key: &crate::message::FindKey,
        from_ts: u64,
        to_ts: u64,
        limit: u32,
    ) -> Result<Vec<OwnedRecord>, Problem> {
        use crate::message::FindKey;
        let limit = limit.clamp(1, MAX_PAGE) as usize;
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
        let mut bytes = PageBytes::default();
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
            if !bytes.admit(wire_bytes(&rec)) {
                break;
            }
            let matches = match key {
                FindKey::Reference(t) => rec.command.ops().iter().any(|op| match op {
                    Operation::Entry(e) => e.reference.as_deref() == Some(t.as_str()),
                    Operation::CaptureLien(c) => c.reference.as_deref() == Some(t.as_str()),
                    _ => false,
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
    fn add(&mut self, r: &OwnedRecord) {
        let seq = r.header.seq;
        debug_assert_eq!(seq, self.next_seq, "the follower delivers records in order");
        self.next_seq = seq + 1;
        if self.last_segment != Some(r.segment) || seq % MARK_EVERY == 0 || self.marks.is_empty() {
            self.marks.push(Mark {
                seq,
                timestamp: r.header.timestamp,
                segment: r.segment,
                offset: r.offset,
            });
            self.last_segment = Some(r.segment);
        }
        if seq < self.first_seq || r.header.outcome != OUTCOME_COMMITTED {
            return;
        }
        match &r.command {
            Command::CreateAccount(a) if a.user_data != 0 => self
                .by_account_user_data
                .entry(a.user_data)
                .or_default()
                .push(seq),
            _ => {}
        }
        for op in r.command.ops() {
            let (reference, user_data) = match op {
                Operation::Entry(e) => (e.reference.as_deref(), e.user_data),
                Operation::CaptureLien(c) => (c.reference.as_deref(), 0),
                _ => (None, 0),
            };
            if let Some(t) = reference {
                let list = self.by_reference.entry(reference_key(t)).or_default();
                if list.last() != Some(&seq) {
                    list.push(seq);
                }
            }
            if user_data != 0 {
                let list = self.by_entry_user_data.entry(user_data).or_default();
                if list.last() != Some(&seq) {
                    list.push(seq);
                }
            }
        }
        for (account, debit, credit) in movements(&r.command) {
            let opening = self.opening.get(&account).copied().unwrap_or(0);
            let list = self.postings.entry(account).or_default();
            let before = list.last().map_or(opening, |p| p.balance());
            let after = before
                .saturating_add(credit as i128)
                .saturating_sub(debit as i128);
            list.push(Posting::new(seq, after));
        }
    }
}
