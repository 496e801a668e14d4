//! One shard's state and the rules that change it. A shard owns the accounts
//! (and their liens) that hash to it, and the idempotency records of the ids
//! that hash to it. A command touching several shards is evaluated by each
//! participant on its own part; the participants' verdicts are combined by
//! `Verdict::combine` and each participant then finalizes its part. Errors are
//! ordered by (operation, phase, line) so the combined verdict is exactly the
//! first error a one-shard ledger would report.

use crate::account::{Account, AccountState, AccountTable, BalancePolicy, NewAccount};
use crate::chain::Operation;
use crate::command::{op_fingerprint, Command, IdSpace, Outcome};
use crate::currency::{Currencies, Currency};
use crate::entry::{Entry, Side};
use crate::error::{Error, ErrorCode};
use crate::id::{shard_of, AccountId, LienId};
use crate::idindex::{ColdAnswers, IdIndex, IdRecord};
use crate::lien::{CaptureLien, CreateLien, Lien, LienStatus, ReleaseLien};
use crate::limits::MAX_AMOUNT;
use crate::sequencer::Route;
use crate::transfer::Transfer;
use crate::view::{AccountView, IdStatus};
use hashbrown::HashMap;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Checking phases, in the order a command's checks run.
mod phase {
    /// The command's own id: duplicate or reuse.
    pub const COMMAND_ID: u8 = 0;
    /// An operation's own id inside a chain.
    pub const OP_ID: u8 = 1;
    /// Referenced objects: the corrected entry, the lien.
    pub const REFERENCE: u8 = 2;
    /// Per line: account exists, currency, state, expected version.
    pub const ACCOUNT: u8 = 3;
    /// Per line: applying the amount (overflow).
    pub const ARITHMETIC: u8 = 4;
    /// Per line: balance policy and condition after the whole operation.
    pub const POLICY: u8 = 5;
}

#[inline]
fn key_phase(key: u64) -> u8 {
    (key >> 16) as u8
}

#[inline]
fn key(op: usize, phase: u8, line: usize) -> u64 {
    ((op as u64) << 32) | ((phase as u64) << 16) | line as u64
}

/// A participant's verdict on its part of a command (or the combination).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Commit,
    /// The command's id was seen with the same content: its original outcome.
    Duplicate(Outcome),
    /// The first failure in (operation, phase, line) order.
    Reject(u64, Error),
}

impl Verdict {
    /// Combines two participants' verdicts.
    pub fn combine(self, other: Verdict) -> Verdict {
        match (self, other) {
            (d @ Verdict::Duplicate(_), _) | (_, d @ Verdict::Duplicate(_)) => d,
            (Verdict::Reject(a, ea), Verdict::Reject(b, eb)) => {
                debug_assert_ne!(a, b, "one owner per (operation, phase, line)");
                if a <= b {
                    Verdict::Reject(a, ea)
                } else {
                    Verdict::Reject(b, eb)
                }
            }
            (r @ Verdict::Reject(..), Verdict::Commit)
            | (Verdict::Commit, r @ Verdict::Reject(..)) => r,
            (Verdict::Commit, Verdict::Commit) => Verdict::Commit,
        }
    }

    /// The outcome a client sees.
    pub fn outcome(&self, route: &Route) -> Outcome {
        match self {
            Verdict::Commit => Outcome::Committed {
                seq: route.seq,
                timestamp: route.timestamp,
            },
            Verdict::Duplicate(o) => o.clone(),
            Verdict::Reject(_, e) => Outcome::Rejected {
                seq: Some(route.seq),
                error: e.clone(),
            },
        }
    }
}

/// Tentative changes of one command on one shard, applied only on commit.
/// Reused across commands (cleared by `finalize`) so nothing is allocated or
/// moved per command.
#[derive(Default)]
pub struct Txn {
    accounts: SmallVec<[(u32, Account); 4]>,
    liens: SmallVec<[Lien; 1]>,
    /// Ids taken by earlier operations of this command (this shard's ones).
    ids: SmallVec<[(IdSpace, u128); 2]>,
    /// Entries corrected by earlier operations of this command (owned here).
    corrections: SmallVec<[crate::id::EntryId; 1]>,
}

impl Txn {
    /// Forgets the tentative changes, keeping the buffers.
    pub fn clear(&mut self) {
        self.accounts.clear();
        self.liens.clear();
        self.ids.clear();
        self.corrections.clear();
    }
}

type Check = Result<(), (u64, Error)>;

/// Heap bytes held by one shard's tables, by structure ([`ShardState::memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    pub accounts: usize,
    pub entry_ids: usize,
    pub lien_ids: usize,
    pub chain_ids: usize,
    pub liens: usize,
    /// The liens' expiry deadlines.
    pub lien_expiry: usize,
    pub lien_accounts: usize,
    pub corrected: usize,
}

impl MemoryUse {
    /// Each structure with its name (the metric's `structure` label).
    pub fn parts(&self) -> [(&'static str, usize); 8] {
        [
            ("accounts", self.accounts),
            ("entry_ids", self.entry_ids),
            ("lien_ids", self.lien_ids),
            ("chain_ids", self.chain_ids),
            ("liens", self.liens),
            ("lien_expiry", self.lien_expiry),
            ("lien_accounts", self.lien_accounts),
            ("corrected", self.corrected),
        ]
    }

    /// The sum of two shards' figures.
    pub fn add(&mut self, o: &MemoryUse) {
        self.accounts += o.accounts;
        self.entry_ids += o.entry_ids;
        self.lien_ids += o.lien_ids;
        self.chain_ids += o.chain_ids;
        self.liens += o.liens;
        self.lien_expiry += o.lien_expiry;
        self.lien_accounts += o.lien_accounts;
        self.corrected += o.corrected;
    }

    pub fn total(&self) -> usize {
        self.parts().iter().map(|p| p.1).sum()
    }
}

/// The state of one shard. Deterministic: no clock, no threads, no I/O.
pub struct ShardState {
    index: usize,
    shards: usize,
    currencies: Currencies,
    accounts: AccountTable,
    liens: HashMap<LienId, Lien>,
    expiry: BinaryHeap<Reverse<(u64, LienId)>>,
    entry_ids: IdIndex,
    lien_ids: IdIndex,
    /// For each lien id recorded here: the account its creation named.
    lien_accounts: crate::table::IdTable<AccountId>,
    /// Entries (whose id lives here) that a committed entry corrects.
    corrected: crate::table::IdTable<()>,
    chain_ids: IdIndex,
    /// Events whose id lives here.
    events: crate::event::table::EventTable,
    /// Liens with a deadline at or before this time have been expired.
    swept_to: u64,
    /// The cold tier's answers for the batch being executed (see
    /// [`ShardState::begin_batch`]).
    cold: std::sync::Arc<ColdAnswers>,
    /// When a cold tier follows this shard: every id record it makes, in
    /// order, until taken ([`ShardState::take_id_records`]).
    emitted: Option<Vec<(u8, u128, IdRecord)>>,
}

impl ShardState {
    pub fn new(index: usize, shards: usize) -> ShardState {
        assert!(index < shards);
        ShardState {
            index,
            shards,
            currencies: Currencies::default(),
            accounts: AccountTable::default(),
            liens: HashMap::new(),
            expiry: BinaryHeap::new(),
            entry_ids: IdIndex::default(),
            lien_ids: IdIndex::default(),
            lien_accounts: crate::table::IdTable::new(),
            corrected: crate::table::IdTable::new(),
            chain_ids: IdIndex::default(),
            events: Default::default(),
            swept_to: 0,
            cold: Default::default(),
            emitted: None,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    #[inline]
    fn owns(&self, id: u128) -> bool {
        self.shards == 1 || shard_of(id, self.shards) == self.index
    }

    fn ids(&self, space: IdSpace) -> &IdIndex {
        match space {
            IdSpace::Entry => &self.entry_ids,
            IdSpace::Lien => &self.lien_ids,
            IdSpace::Chain => &self.chain_ids,
        }
    }

    fn ids_mut(&mut self, space: IdSpace) -> &mut IdIndex {
        match space {
            IdSpace::Entry => &mut self.entry_ids,
            IdSpace::Lien => &mut self.lien_ids,
            IdSpace::Chain => &mut self.chain_ids,
        }
    }

    /// Keeps at most about two windows of `window` id records per namespace
    /// in memory, and reports every record made
    /// ([`ShardState::take_id_records`]) for the cold tier to keep.
    pub fn set_id_window(&mut self, window: usize) {
        for space in IdSpace::ALL {
            self.ids_mut(space).set_window(window);
        }
        self.emitted.get_or_insert_with(Vec::new);
    }

    /// Installs the cold tier's answers for the next batch, and drops the
    /// id generations the cold tier now holds. Batches must come with
    /// watermarks that never go back (the prefetch stage sees to it).
    pub fn begin_batch(&mut self, cold: &std::sync::Arc<ColdAnswers>) {
        debug_assert!(
            cold.covered >= self.cold.covered,
            "the cold watermark went back"
        );
        for space in IdSpace::ALL {
            self.ids_mut(space).release(cold.covered);
        }
        if !std::sync::Arc::ptr_eq(&self.cold, cold) {
            self.cold = cold.clone();
        }
    }

    /// The id records made since the last call, in the order they were made.
    pub fn take_id_records(&mut self) -> Vec<(u8, u128, IdRecord)> {
        // The next batch's records go into a vector of this one's size:
        // no regrowing from nothing every batch.
        self.emitted
            .as_mut()
            .map(|v| std::mem::replace(v, Vec::with_capacity(v.len())))
            .unwrap_or_default()
    }

    /// An id's record, from memory or from the cold tier's answers.
    #[inline]
    fn find_id(&self, space: IdSpace, id: u128) -> Option<IdRecord> {
        match self.ids(space).get(id) {
            Some(r) => Some(*r),
            None => self.cold.get(space.tag(), id),
        }
    }

    /// Pre-sizes the tables (static allocation, as a production deployment
    /// would configure): no rehash pauses, denser memory.
    pub fn reserve(&mut self, accounts: usize, entry_ids: usize) {
        self.accounts.reserve(accounts);
        self.entry_ids.reserve(entry_ids);
    }

    /// Touches the index buckets and accounts a command will read, so that a
    /// shard working through a batch can overlap the cache misses of the next
    /// few commands with the work on the current one (the loads are
    /// independent, so the CPU issues them in parallel). Changes nothing.
    pub fn prefetch(&self, cmd: &Command) {
        if let Some((space, id)) = cmd.top_id() {
            if self.owns(id) {
                std::hint::black_box(self.ids(space).get(id));
            }
        }
        let touch = |account| {
            if self.owns(account) {
                std::hint::black_box(self.accounts.get(account).map(|a| a.version));
            }
        };
        match cmd {
            Command::Op(Operation::Transfer(t)) => t.accounts().into_iter().for_each(touch),
            Command::Op(Operation::Entry(e)) => e.lines.iter().for_each(|l| touch(l.account)),
            _ => {}
        }
    }

    // ---- time -------------------------------------------------------------

    /// Expires every active lien whose deadline is at or before `now`.
    /// Expiry touches only this shard's accounts, and every observation of
    /// them passes through here first, so sweeping lazily (when a command or a
    /// query with a later time arrives) is indistinguishable from sweeping
    /// eagerly at every command.
    pub fn sweep(&mut self, now: u64) {
        if now <= self.swept_to {
            return;
        }
        self.swept_to = now;
        while let Some(&Reverse((deadline, id))) = self.expiry.peek() {
            if deadline > now {
                break;
            }
            self.expiry.pop();
            let Some(lien) = self.liens.get_mut(&id) else {
                continue;
            };
            if lien.status != LienStatus::Active {
                continue;
            }
            lien.status = LienStatus::Expired;
            let (account, amount) = (lien.account, lien.amount);
            if let Some(slot) = self.accounts.slot(account) {
                let a = self.accounts.at_mut(slot);
                debug_assert!(a.reserved >= amount);
                a.reserved -= amount;
                a.version += 1;
            }
        }
    }

    /// The earliest deadline of a lien that may still be active.
    pub fn next_deadline(&self) -> Option<u64> {
        self.expiry.peek().map(|r| r.0 .0)
    }

    // ---- commands that never cross shards ----------------------------------

    /// Applies a command that every shard applies identically (currency
    /// creation, ticks). Each shard returns the same outcome.
    pub fn apply_everywhere(&mut self, cmd: &Command, route: &Route) -> Outcome {
        self.sweep(route.timestamp);
        let committed = Outcome::Committed {
            seq: route.seq,
            timestamp: route.timestamp,
        };
        match cmd {
            Command::CreateCurrency(c) => match self.currencies.get(c.code) {
                Some((i, existing)) if existing == *c => Outcome::Duplicate {
                    seq: self.currencies.created_seq(i),
                    code: None,
                },
                Some(_) => reject(
                    route,
                    Error::new(ErrorCode::IdReusedWithDifferentContent).with_text(c.code.as_str()),
                ),
                None if self.currencies.is_full() => reject(
                    route,
                    Error::new(ErrorCode::InvalidCurrency).with_text("currency limit reached"),
                ),
                None => {
                    self.currencies.insert(*c, route.seq);
                    committed
                }
            },
            Command::Tick => committed,
            _ => unreachable!("not a broadcast command"),
        }
    }

    /// Applies a command owned by this shard alone.
    /// `txn` is a scratch buffer the caller keeps across commands (empty).
    pub fn apply_local(&mut self, cmd: &Command, route: &Route, txn: &mut Txn) -> Outcome {
        debug_assert!(route.is_single() && route.involves(self.index));
        self.sweep(route.timestamp);
        match cmd {
            Command::CreateAccount(a) => self.create_account(a, route),
            Command::SetAccountState { account, state } => self.set_state(*account, *state, route),
            Command::Event(e) => self.events.apply(e, route),
            Command::Op(_) | Command::Chain(_) => {
                let verdict = self.evaluate(cmd, route, txn);
                let outcome = verdict.outcome(route);
                self.finalize(cmd, route, &verdict, txn);
                outcome
            }
            Command::CreateCurrency(_) | Command::Tick => self.apply_everywhere(cmd, route),
        }
    }

    fn create_account(&mut self, new: &NewAccount, route: &Route) -> Outcome {
        let Some((currency, _)) = self.currencies.get(new.currency) else {
            return reject(
                route,
                Error::new(ErrorCode::CurrencyNotFound).with_text(new.currency.as_str()),
            );
        };
        if let Some(a) = self.accounts.get(new.id) {
            return if a.currency == currency
                && a.policy == new.policy
                && a.user_data == new.user_data
            {
                Outcome::Duplicate {
                    seq: a.created_seq,
                    code: None,
                }
            } else {
                reject(
                    route,
                    Error::new(ErrorCode::IdReusedWithDifferentContent).with_subject(new.id),
                )
            };
        }
        self.accounts.insert(Account {
            id: new.id,
            policy: new.policy,
            user_data: new.user_data,
            currency,
            created_seq: route.seq,
            created_ts: route.timestamp,
            ..Account::default()
        });
        Outcome::Committed {
            seq: route.seq,
            timestamp: route.timestamp,
        }
    }

    fn set_state(&mut self, id: AccountId, state: AccountState, route: &Route) -> Outcome {
        let Some(slot) = self.accounts.slot(id) else {
            return reject(
                route,
                Error::new(ErrorCode::AccountNotFound).with_subject(id),
            );
        };
        let a = self.accounts.at_mut(slot);
        if a.state == state {
            return Outcome::Committed {
                seq: route.seq,
                timestamp: route.timestamp,
            };
        }
        if a.state == AccountState::Closed {
            return reject(
                route,
                Error::new(ErrorCode::InvalidStateTransition).with_subject(id),
            );
        }
        if state == AccountState::Closed && (a.balance() != 0 || a.reserved != 0) {
            return reject(
                route,
                Error::new(ErrorCode::AccountNotEmpty).with_subject(id),
            );
        }
        a.state = state;
        a.version += 1;
        Outcome::Committed {
            seq: route.seq,
            timestamp: route.timestamp,
        }
    }

    // ---- ledger operations: evaluate, then finalize -----------------------

    /// Evaluates this shard's part of an operation command against its state
    /// plus the tentative effects of the command's earlier operations.
    /// Changes nothing: `txn` (empty on entry) receives the tentative effects.
    pub fn evaluate(&self, cmd: &Command, route: &Route, txn: &mut Txn) -> Verdict {
        debug_assert!(txn.accounts.is_empty() && txn.liens.is_empty() && txn.ids.is_empty());
        match self.evaluate_into(cmd, route, txn) {
            Ok(None) => Verdict::Commit,
            Ok(Some(duplicate)) => Verdict::Duplicate(duplicate),
            Err((k, mut e)) => {
                if matches!(cmd, Command::Chain(_)) && key_phase(k) != phase::COMMAND_ID {
                    e.op = Some((k >> 32) as u16);
                }
                Verdict::Reject(k, e)
            }
        }
    }

    fn evaluate_into(
        &self,
        cmd: &Command,
        route: &Route,
        txn: &mut Txn,
    ) -> Result<Option<Outcome>, (u64, Error)> {
        let ops = cmd.ops();
        let chained = matches!(cmd, Command::Chain(_));
        if let Some((space, id)) = cmd.top_id() {
            if self.holds_top(cmd) {
                if let Some(rec) = self.find_id(space, id) {
                    let fp = cmd.fingerprint();
                    if rec.matches(fp) {
                        return Ok(Some(Outcome::Duplicate {
                            seq: rec.seq,
                            code: rec.code(),
                        }));
                    }
                    let e = Error::new(ErrorCode::IdReusedWithDifferentContent).with_subject(id);
                    return Err((key(0, phase::COMMAND_ID, 0), e));
                }
                if chained {
                    txn.ids.push((space, id));
                }
            }
        }
        for (k, op) in ops.iter().enumerate() {
            match op {
                Operation::Transfer(t) => self.eval_transfer(txn, k, t, chained)?,
                Operation::Entry(e) => self.eval_entry(txn, k, e, chained)?,
                Operation::CreateLien(c) => self.eval_create_lien(txn, k, c, chained, route)?,
                Operation::CaptureLien(c) => self.eval_capture(txn, k, c, chained)?,
                Operation::ReleaseLien(r) => self.eval_release(txn, k, r)?,
            }
        }
        Ok(None)
    }

    /// Whether this shard holds the command's own id record.
    fn holds_top(&self, cmd: &Command) -> bool {
        cmd.top_id().is_some_and(|(_, id)| self.owns(id))
    }

    fn id_taken(&self, txn: &Txn, space: IdSpace, id: u128) -> bool {
        txn.ids.contains(&(space, id)) || self.find_id(space, id).is_some()
    }

    /// An operation's own id inside a chain must be new.
    fn check_op_id(
        &self,
        txn: &mut Txn,
        k: usize,
        space: IdSpace,
        id: u128,
        chained: bool,
        home: bool,
    ) -> Check {
        if chained && home {
            if self.id_taken(txn, space, id) {
                return Err((
                    key(k, phase::OP_ID, 0),
                    Error::new(ErrorCode::IdAlreadyUsed).with_subject(id),
                ));
            }
            txn.ids.push((space, id));
        }
        Ok(())
    }

    /// An account as this command sees it: tentative if it touched it already.
    fn load<'a>(&'a self, txn: &'a Txn, id: AccountId) -> Option<&'a Account> {
        match txn.accounts.iter().find(|(_, a)| a.id == id) {
            Some((_, a)) => Some(a),
            None => self.accounts.get(id),
        }
    }

    fn tentative<'t>(&self, txn: &'t mut Txn, id: AccountId) -> Option<&'t mut Account> {
        let pos = match txn.accounts.iter().position(|(_, a)| a.id == id) {
            Some(p) => p,
            None => {
                let slot = self.accounts.slot(id)?;
                txn.accounts.push((slot, *self.accounts.at(slot)));
                txn.accounts.len() - 1
            }
        };
        Some(&mut txn.accounts[pos].1)
    }

    /// Account checks shared by every line: exists, currency, state.
    fn check_account<'a>(
        &'a self,
        txn: &'a Txn,
        at: u64,
        line: Option<usize>,
        id: AccountId,
        currency: crate::currency::CurrencyCode,
    ) -> Result<&'a Account, (u64, Error)> {
        let fail = |code| {
            let e = Error::new(code).with_subject(id);
            Err((
                at,
                if let Some(l) = line {
                    e.with_line(l)
                } else {
                    e
                },
            ))
        };
        let Some(a) = self.load(txn, id) else {
            return fail(ErrorCode::AccountNotFound);
        };
        if self.currencies.by_index(a.currency).code != currency {
            return fail(ErrorCode::CurrencyMismatch);
        }
        match a.state {
            AccountState::Active => Ok(a),
            AccountState::Frozen => fail(ErrorCode::AccountFrozen),
            AccountState::Closed => fail(ErrorCode::AccountClosed),
        }
    }

    fn eval_entry(&self, txn: &mut Txn, k: usize, e: &Entry, chained: bool) -> Check {
        let posting = Posting {
            id: e.id,
            corrects: e.corrects,
            allow_repeat_correction: e.allow_repeat_correction,
            lines: &e.lines,
        };
        self.eval_posting(txn, k, posting, chained)
    }

    /// A transfer is evaluated as the entry it means: the same function over
    /// its two lines, built on the stack.
    fn eval_transfer(&self, txn: &mut Txn, k: usize, t: &Transfer, chained: bool) -> Check {
        let lines = t.lines();
        let posting = Posting {
            id: t.id,
            corrects: None,
            allow_repeat_correction: false,
            lines: &lines,
        };
        self.eval_posting(txn, k, posting, chained)
    }

    fn eval_posting(&self, txn: &mut Txn, k: usize, e: Posting<'_>, chained: bool) -> Check {
        self.check_op_id(txn, k, IdSpace::Entry, e.id, chained, self.owns(e.id))?;
        if let Some(c) = e.corrects {
            if self.owns(c) {
                let tentative = txn.ids.contains(&(IdSpace::Entry, c));
                let committed = self
                    .find_id(IdSpace::Entry, c)
                    .is_some_and(|r| r.committed());
                if !tentative && !committed {
                    let err = Error::new(ErrorCode::CorrectedEntryNotFound).with_subject(c);
                    return Err((key(k, phase::REFERENCE, 0), err));
                }
                let again = self.corrected.contains(c) || txn.corrections.contains(&c);
                if again && !e.allow_repeat_correction {
                    let err = Error::new(ErrorCode::AlreadyCorrected).with_subject(c);
                    return Err((key(k, phase::REFERENCE, 0), err));
                }
                txn.corrections.push(c);
            }
        }
        let mine = |l: &crate::entry::Line| self.owns(l.account);
        for (i, l) in e.lines.iter().enumerate().filter(|(_, l)| mine(l)) {
            let at = key(k, phase::ACCOUNT, i);
            let a = self.check_account(txn, at, Some(i), l.account, l.currency)?;
            if let Some(v) = l.expected_version {
                if v != a.version {
                    let err = Error::new(ErrorCode::VersionConflict)
                        .with_line(i)
                        .with_subject(l.account)
                        .with_version(a.version);
                    return Err((at, err));
                }
            }
            // Bring it into the transaction now: later phases find it there
            // without another index lookup.
            self.tentative(txn, l.account);
        }
        // Available balance of each touched account before this operation.
        let mut before: SmallVec<[(AccountId, i128); 4]> = SmallVec::new();
        for (i, l) in e.lines.iter().enumerate().filter(|(_, l)| mine(l)) {
            let Some(a) = self.tentative(txn, l.account) else {
                unreachable!("checked above")
            };
            if !before.iter().any(|(id, _)| *id == l.account) {
                before.push((l.account, a.available()));
            }
            let total = if l.side == Side::Debit {
                &mut a.debits_posted
            } else {
                &mut a.credits_posted
            };
            match total.checked_add(l.amount).filter(|t| *t <= MAX_AMOUNT) {
                Some(t) => *total = t,
                None => {
                    let err = Error::new(ErrorCode::AmountOverflow)
                        .with_line(i)
                        .with_subject(l.account);
                    return Err((key(k, phase::ARITHMETIC, i), err));
                }
            }
        }
        for (i, l) in e.lines.iter().enumerate().filter(|(_, l)| mine(l)) {
            let Some(a) = self.load(txn, l.account) else {
                unreachable!("touched above")
            };
            let available = a.available();
            let was = before
                .iter()
                .find(|(id, _)| *id == l.account)
                .map_or(available, |b| b.1);
            if available < was && !a.policy.permits(available) {
                let err = Error::new(ErrorCode::InsufficientFunds)
                    .with_line(i)
                    .with_subject(l.account);
                return Err((key(k, phase::POLICY, i), err));
            }
            if let Some(c) = l.condition {
                if !c.holds(a.balance(), available) {
                    let err = Error::new(ErrorCode::BalanceConditionFailed)
                        .with_line(i)
                        .with_subject(l.account);
                    return Err((key(k, phase::POLICY, i), err));
                }
            }
        }
        for (id, _) in before {
            if let Some(a) = self.tentative(txn, id) {
                a.version += 1;
            }
        }
        Ok(())
    }

    fn load_lien(&self, txn: &Txn, id: LienId) -> Option<Lien> {
        txn.liens
            .iter()
            .find(|l| l.id == id)
            .copied()
            .or_else(|| self.liens.get(&id).copied())
    }

    fn store_lien(txn: &mut Txn, lien: Lien) {
        match txn.liens.iter_mut().find(|l| l.id == lien.id) {
            Some(l) => *l = lien,
            None => txn.liens.push(lien),
        }
    }

    fn eval_create_lien(
        &self,
        txn: &mut Txn,
        k: usize,
        c: &CreateLien,
        chained: bool,
        route: &Route,
    ) -> Check {
        self.check_op_id(txn, k, IdSpace::Lien, c.id, chained, self.owns(c.id))?;
        if !self.owns(c.account) {
            return Ok(());
        }
        let mut a =
            *self.check_account(txn, key(k, phase::ACCOUNT, 0), None, c.account, c.currency)?;
        a.reserved = match a
            .reserved
            .checked_add(c.amount)
            .filter(|r| *r <= MAX_AMOUNT)
        {
            Some(r) => r,
            None => {
                return Err((
                    key(k, phase::ARITHMETIC, 0),
                    Error::new(ErrorCode::AmountOverflow).with_subject(c.account),
                ))
            }
        };
        if !a.policy.permits(a.available()) {
            return Err((
                key(k, phase::POLICY, 0),
                Error::new(ErrorCode::InsufficientFunds).with_subject(c.account),
            ));
        }
        a.version += 1;
        let Some(t) = self.tentative(txn, c.account) else {
            unreachable!("checked above")
        };
        *t = a;
        // The lien lives with its account; its id record lives at the id's
        // home, which refuses a second creation whatever account it names.
        {
            let deadline = c.expires_in_ns.map(|d| route.timestamp.saturating_add(d));
            let lien = Lien {
                id: c.id,
                account: c.account,
                currency: c.currency,
                amount: c.amount,
                captured: 0,
                status: LienStatus::Active,
                owner: c.owner,
                user_data: c.user_data,
                created_seq: route.seq,
                created_ts: route.timestamp,
                deadline,
            };
            Self::store_lien(txn, lien);
        }
        Ok(())
    }

    /// A lien this shard holds, on the given account (tentative state first).
    fn find_lien(&self, txn: &Txn, id: LienId, account: AccountId) -> Option<Lien> {
        self.load_lien(txn, id).filter(|l| l.account == account)
    }

    fn eval_capture(&self, txn: &mut Txn, k: usize, c: &CaptureLien, chained: bool) -> Check {
        self.check_op_id(
            txn,
            k,
            IdSpace::Entry,
            c.entry_id,
            chained,
            self.owns(c.entry_id),
        )?;
        let total = c.total().unwrap_or(u128::MAX);
        let mut lien = None;
        if self.owns(c.account) {
            let at = key(k, phase::REFERENCE, 0);
            let fail = |code| Err((at, Error::new(code).with_subject(c.lien)));
            let Some(l) = self.find_lien(txn, c.lien, c.account) else {
                return fail(ErrorCode::LienNotFound);
            };
            match l.status {
                LienStatus::Active => {}
                LienStatus::Expired => return fail(ErrorCode::LienExpired),
                _ => return fail(ErrorCode::LienNotActive),
            }
            if l.currency != c.currency {
                return fail(ErrorCode::CurrencyMismatch);
            }
            if total > l.amount {
                return fail(ErrorCode::CaptureExceedsLien);
            }
            // The lien's account cannot be closed (it has a reservation).
            let a = self.check_account(
                txn,
                key(k, phase::ACCOUNT, 0),
                Some(0),
                l.account,
                l.currency,
            )?;
            debug_assert!(a.reserved >= l.amount);
            lien = Some(l);
        }
        for (i, &(account, _)) in c.credits.iter().enumerate() {
            if self.owns(account) {
                self.check_account(
                    txn,
                    key(k, phase::ACCOUNT, i + 1),
                    Some(i + 1),
                    account,
                    c.currency,
                )?;
            }
        }
        let mut touched: SmallVec<[AccountId; 2]> = SmallVec::new();
        if let Some(mut l) = lien {
            let Some(a) = self.tentative(txn, l.account) else {
                unreachable!("checked above")
            };
            match a
                .debits_posted
                .checked_add(total)
                .filter(|t| *t <= MAX_AMOUNT)
            {
                Some(t) => a.debits_posted = t,
                None => {
                    let e = Error::new(ErrorCode::AmountOverflow)
                        .with_line(0)
                        .with_subject(l.account);
                    return Err((key(k, phase::ARITHMETIC, 0), e));
                }
            }
            a.reserved -= l.amount;
            touched.push(l.account);
            l.status = LienStatus::Captured;
            l.captured = total;
            Self::store_lien(txn, l);
        }
        for (i, &(account, amount)) in c.credits.iter().enumerate() {
            if !self.owns(account) {
                continue;
            }
            let Some(a) = self.tentative(txn, account) else {
                unreachable!("checked above")
            };
            match a
                .credits_posted
                .checked_add(amount)
                .filter(|t| *t <= MAX_AMOUNT)
            {
                Some(t) => a.credits_posted = t,
                None => {
                    let e = Error::new(ErrorCode::AmountOverflow)
                        .with_line(i + 1)
                        .with_subject(account);
                    return Err((key(k, phase::ARITHMETIC, i + 1), e));
                }
            }
            if !touched.contains(&account) {
                touched.push(account);
            }
        }
        for id in touched {
            if let Some(a) = self.tentative(txn, id) {
                a.version += 1;
            }
        }
        Ok(())
    }

    fn eval_release(&self, txn: &mut Txn, k: usize, r: &ReleaseLien) -> Check {
        if !self.owns(r.account) {
            return Ok(());
        }
        let fail = |code| {
            Err((
                key(k, phase::REFERENCE, 0),
                Error::new(code).with_subject(r.lien),
            ))
        };
        let Some(mut l) = self.find_lien(txn, r.lien, r.account) else {
            return fail(ErrorCode::LienNotFound);
        };
        match l.status {
            LienStatus::Released => Ok(()),
            LienStatus::Expired => fail(ErrorCode::LienExpired),
            LienStatus::Captured => fail(ErrorCode::LienNotActive),
            LienStatus::Active => {
                let Some(a) = self.tentative(txn, l.account) else {
                    unreachable!("a lien's account exists")
                };
                a.reserved -= l.amount;
                a.version += 1;
                l.status = LienStatus::Released;
                Self::store_lien(txn, l);
                Ok(())
            }
        }
    }

    /// Applies the combined verdict to this shard's part: the tentative
    /// effects on commit, and the id records (which are final either way).
    pub fn finalize(&mut self, cmd: &Command, route: &Route, verdict: &Verdict, txn: &mut Txn) {
        let rejected = match verdict {
            Verdict::Commit => {
                for (slot, a) in txn.accounts.drain(..) {
                    debug_assert!(a.debits_posted <= MAX_AMOUNT && a.credits_posted <= MAX_AMOUNT);
                    *self.accounts.at_mut(slot) = a;
                }
                for lien in txn.liens.drain(..) {
                    if let (None, Some(d)) = (self.liens.get(&lien.id), lien.deadline) {
                        self.expiry.push(Reverse((d, lien.id)));
                    }
                    self.liens.insert(lien.id, lien);
                }
                for c in txn.corrections.drain(..) {
                    self.corrected.insert(c, ());
                }
                txn.clear();
                None
            }
            // A duplicate, or a reused command id, changes nothing, not even
            // id records.
            Verdict::Duplicate(_) => return txn.clear(),
            Verdict::Reject(k, _) if key_phase(*k) == phase::COMMAND_ID => return txn.clear(),
            Verdict::Reject(_, e) => {
                txn.clear();
                Some(e)
            }
        };
        let seq = route.seq;
        if let Some((space, id)) = cmd.top_id() {
            if self.holds_top(cmd) {
                let rec = IdRecord::new(cmd.fingerprint(), seq, rejected.map(|e| e.code));
                self.record(space, id, rec, cmd.ops());
            }
        }
        if let Command::Chain(_) = cmd {
            let failed_op = rejected.and_then(|e| e.op).map(usize::from);
            for (k, op) in cmd.ops().iter().enumerate() {
                let Some((space, id)) = op.id() else { continue };
                if !self.owns(id) || self.find_id(space, id).is_some() {
                    // Taken before this command (or by an earlier op of it):
                    // an id's first outcome is final.
                    continue;
                }
                let code = rejected.map(|e| {
                    if failed_op == Some(k) {
                        e.code
                    } else {
                        ErrorCode::LinkedOperationFailed
                    }
                });
                self.record(
                    space,
                    id,
                    IdRecord::new(op_fingerprint(op), seq, code),
                    std::slice::from_ref(op),
                );
            }
        }
    }

    /// Records an id's final outcome; a lien id also remembers its account,
    /// so that a lookup by lien id alone can find the lien.
    fn record(&mut self, space: IdSpace, id: u128, rec: IdRecord, ops: &[Operation]) {
        self.ids_mut(space).insert(id, rec);
        if let Some(out) = &mut self.emitted {
            out.push((space.tag(), id, rec));
        }
        if space == IdSpace::Lien {
            if let Some(Operation::CreateLien(c)) = ops
                .iter()
                .find(|op| matches!(op, Operation::CreateLien(c) if c.id == id))
            {
                self.lien_accounts.insert(id, c.account);
            }
        }
    }

    // ---- queries -----------------------------------------------------------

    pub fn account(&self, id: AccountId) -> Option<AccountView> {
        self.accounts.get(id).map(|a| AccountView {
            account: *a,
            currency: self.currencies.by_index(a.currency),
        })
    }

    pub fn lien(&self, id: LienId) -> Option<Lien> {
        self.liens.get(&id).copied()
    }

    /// The account a lien id's creation named (asked of the id's home shard).
    pub fn lien_account(&self, id: LienId) -> Option<AccountId> {
        self.lien_accounts.get(id).copied()
    }

    /// What this shard's memory says of an id (with a cold tier, an id not
    /// found here may be there: ask it too).
    pub fn id_status(&self, space: IdSpace, id: u128) -> IdStatus {
        match self.ids(space).get(id) {
            None => IdStatus::Unknown,
            Some(r) => match r.code() {
                None => IdStatus::Committed { seq: r.seq },
                Some(code) => IdStatus::Rejected { seq: r.seq, code },
            },
        }
    }

    pub fn currency(&self, code: crate::currency::CurrencyCode) -> Option<Currency> {
        self.currencies.get(code).map(|(_, c)| c)
    }

    pub fn currencies(&self) -> &Currencies {
        &self.currencies
    }

    pub fn accounts(&self) -> &AccountTable {
        &self.accounts
    }

    pub fn liens(&self) -> impl Iterator<Item = &Lien> {
        self.liens.values()
    }

    pub fn events(&self) -> &crate::event::table::EventTable {
        &self.events
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn events_mut_for_test(&mut self) -> &mut crate::event::table::EventTable {
        &mut self.events
    }

    pub fn id_index(&self, space: IdSpace) -> &IdIndex {
        self.ids(space)
    }

    /// Sum of balances per currency code on this shard.
    pub fn balance_sums(&self) -> Vec<(crate::currency::CurrencyCode, i128)> {
        let mut sums = vec![0i128; self.currencies.len()];
        for a in self.accounts.iter() {
            sums[a.currency as usize] += a.balance();
        }
        self.currencies
            .iter()
            .zip(sums)
            .map(|(c, s)| (c.code, s))
            .collect()
    }

    /// A digest of this shard's observable state: a wrapping sum of one hash
    /// per account, lien, id record and (when asked) currency, so it does not
    /// depend on iteration order, and digests of shards add up to the same
    /// total whatever the shard count. Replicated currencies are counted
    /// once, by the caller asking only one shard for them.
    pub fn digest(&self, with_currencies: bool) -> u64 {
        use xxhash_rust::xxh3::xxh3_64;
        let mut sum = 0u64;
        let mut add = |bytes: &[u8]| sum = sum.wrapping_add(xxh3_64(bytes));
        for a in self.accounts.iter() {
            let mut b = Vec::with_capacity(160);
            b.push(1u8);
            for v in [
                a.id,
                a.debits_posted,
                a.credits_posted,
                a.reserved,
                a.user_data,
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            let (kind, limit) = match a.policy {
                BalancePolicy::NoOverdraft => (0u8, 0u128),
                BalancePolicy::OverdraftLimit(l) => (1, l),
                BalancePolicy::Unrestricted => (2, 0),
            };
            b.push(kind);
            b.extend_from_slice(&limit.to_le_bytes());
            for v in [a.version, a.created_seq, a.created_ts] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&self.currencies.by_index(a.currency).code.to_bytes());
            b.push(a.state as u8);
            add(&b);
        }
        for l in self.liens.values() {
            let mut b = Vec::with_capacity(160);
            b.push(2u8);
            for v in [l.id, l.account, l.amount, l.captured, l.owner, l.user_data] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&l.currency.to_bytes());
            b.push(l.status as u8);
            for v in [
                l.created_seq,
                l.created_ts,
                l.deadline.map_or(0, |d| d.wrapping_add(1)),
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            add(&b);
        }
        for (tag, space) in [
            (3u8, IdSpace::Entry),
            (4, IdSpace::Lien),
            (5, IdSpace::Chain),
        ] {
            if self.emitted.is_some() {
                // With a cold tier, which records are still in memory
                // depends on when the cold tier caught up: not state.
                continue;
            }
            for (id, r) in self.ids(space).iter() {
                let mut b = [0u8; 1 + 16 + 8 + 3];
                b[0] = tag;
                b[1..17].copy_from_slice(&id.to_le_bytes());
                b[17..25].copy_from_slice(&r.seq.to_le_bytes());
                b[25] = r.committed() as u8;
                b[26..28].copy_from_slice(&r.code().map_or(0, |c| c as u16).to_le_bytes());
                add(&b);
            }
        }
        for (id, ()) in self.corrected.iter() {
            let mut b = [0u8; 17];
            b[0] = 8;
            b[1..17].copy_from_slice(&id.to_le_bytes());
            add(&b);
        }
        for (id, account) in self.lien_accounts.iter() {
            let mut b = [0u8; 33];
            b[0] = 6;
            b[1..17].copy_from_slice(&id.to_le_bytes());
            b[17..33].copy_from_slice(&account.to_le_bytes());
            add(&b);
        }
        for e in self.events.iter() {
            match rkyv::to_bytes::<rkyv::rancor::Error>(e) {
                Ok(bytes) => {
                    let mut b = vec![9u8];
                    b.extend_from_slice(&bytes);
                    add(&b);
                }
                Err(_) => unreachable!("serializing an event into memory cannot fail"),
            }
        }
        if with_currencies {
            for (i, c) in self.currencies.iter().enumerate() {
                let mut b = vec![7u8, c.scale];
                b.extend_from_slice(&c.code.to_bytes());
                b.extend_from_slice(&self.currencies.created_seq(i as u16).to_le_bytes());
                add(&b);
            }
        }
        sum
    }

    /// Adds this shard's state to an image (see `Ledger::export`).
    pub(crate) fn export_into(&self, image: &mut crate::image::LedgerImage, with_currencies: bool) {
        if with_currencies {
            for (i, c) in self.currencies.iter().enumerate() {
                image
                    .currencies
                    .push((*c, self.currencies.created_seq(i as u16)));
            }
        }
        for a in self.accounts.iter() {
            image
                .accounts
                .push((*a, self.currencies.by_index(a.currency).code));
        }
        image.liens.extend(self.liens.values().copied());
        for space in IdSpace::ALL {
            for (id, r) in self.ids(space).iter() {
                let (fp_code, seq) = r.to_raw();
                image.ids.push((space.tag(), id, fp_code, seq));
            }
        }
        image
            .lien_accounts
            .extend(self.lien_accounts.iter().map(|(l, a)| (l, *a)));
        image
            .corrected
            .extend(self.corrected.iter().map(|(id, ())| id));
        image.events.extend(self.events.iter().cloned());
    }

    pub(crate) fn restore_event(&mut self, e: crate::event::Event) {
        self.events.restore(e);
    }

    pub(crate) fn restore_currency(&mut self, c: Currency, seq: u64) {
        self.currencies.insert(c, seq);
    }

    pub(crate) fn restore_account(
        &mut self,
        mut a: Account,
        code: crate::currency::CurrencyCode,
    ) -> Result<(), String> {
        let (index, _) = self
            .currencies
            .get(code)
            .ok_or_else(|| format!("account {} has unknown currency {code}", a.id))?;
        a.currency = index;
        if self.accounts.get(a.id).is_some() {
            return Err(format!("account {} appears twice", a.id));
        }
        self.accounts.insert(a);
        Ok(())
    }

    pub(crate) fn restore_lien(&mut self, l: Lien) {
        if let (LienStatus::Active, Some(d)) = (l.status, l.deadline) {
            self.expiry.push(Reverse((d, l.id)));
        }
        self.liens.insert(l.id, l);
    }

    pub(crate) fn restore_id(
        &mut self,
        space: IdSpace,
        id: u128,
        record: IdRecord,
    ) -> Result<(), String> {
        // The index inserts without looking (an id's first outcome is
        // final): an image that repeats one is refused here.
        if self.ids(space).contains(id) {
            return Err(format!(
                "id {} appears twice in {space:?} ids",
                crate::id::format_id(id)
            ));
        }
        self.ids_mut(space).insert(id, record);
        Ok(())
    }

    pub(crate) fn restore_released_through(&mut self, seq: u64) {
        for space in IdSpace::ALL {
            self.ids_mut(space).restore_released_through(seq);
        }
    }

    pub(crate) fn restore_lien_account(&mut self, lien: LienId, account: AccountId) {
        self.lien_accounts.insert(lien, account);
    }

    pub(crate) fn restore_corrected(&mut self, entry: crate::id::EntryId) {
        self.corrected.insert(entry, ());
    }

    /// The command time this shard has expired liens up to.
    pub fn last_swept(&self) -> u64 {
        self.swept_to
    }

    pub(crate) fn restore_swept(&mut self, to: u64) {
        self.swept_to = to;
    }

    /// Checks this shard's local invariants; returns what is wrong.
    pub fn check_invariants(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut reserved: HashMap<AccountId, u128> = HashMap::new();
        for l in self
            .liens
            .values()
            .filter(|l| l.status == LienStatus::Active)
        {
            *reserved.entry(l.account).or_default() += l.amount;
        }
        for a in self.accounts.iter() {
            let r = reserved.get(&a.id).copied().unwrap_or(0);
            if r != a.reserved {
                problems.push(format!(
                    "account {}: reserved {} but active liens sum to {r}",
                    a.id, a.reserved
                ));
            }
            if a.policy != BalancePolicy::Unrestricted && !a.policy.permits(a.available()) {
                problems.push(format!(
                    "account {}: available {} violates {:?}",
                    a.id,
                    a.available(),
                    a.policy
                ));
            }
            if !self.owns(a.id) {
                problems.push(format!("account {} is on the wrong shard", a.id));
            }
        }
        problems
    }

    /// Memory held by this shard's account table and id indexes, in bytes.
    pub fn memory_bytes(&self) -> (usize, usize) {
        let m = self.memory();
        (m.accounts, m.entry_ids + m.lien_ids + m.chain_ids)
    }

    /// Heap bytes held by each of this shard's tables (their allocations, not
    /// what they would need packed). O(segments): cheap enough for a scrape.
    /// The event table is not counted (its steps vary in size).
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            accounts: self.accounts.memory_bytes(),
            entry_ids: self.entry_ids.memory_bytes(),
            lien_ids: self.lien_ids.memory_bytes(),
            chain_ids: self.chain_ids.memory_bytes(),
            liens: self.liens.allocation_size(),
            lien_expiry: self.expiry.capacity() * std::mem::size_of::<Reverse<(u64, LienId)>>(),
            lien_accounts: self.lien_accounts.memory_bytes(),
            corrected: self.corrected.memory_bytes(),
        }
    }

    /// Test-only hook: mutable access to a lien.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn lien_mut_for_test(&mut self, id: LienId) -> Option<&mut Lien> {
        self.liens.get_mut(&id)
    }

    /// Test-only hook: overwrite an id's record.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn replace_id_for_test(&mut self, space: IdSpace, id: u128, record: IdRecord) {
        self.ids_mut(space).replace_for_test(id, record);
    }

    /// Test-only hook: mutable access to an account, to plant inconsistencies
    /// for the verifier's tests. Never reachable through a public API path.
    #[doc(hidden)]
    pub fn account_mut_for_test(&mut self, id: AccountId) -> Option<&mut Account> {
        self.accounts.get_mut_for_test(id)
    }
}

/// What an entry or a transfer posts, as the shard evaluates it.
struct Posting<'a> {
    id: crate::id::EntryId,
    corrects: Option<crate::id::EntryId>,
    allow_repeat_correction: bool,
    lines: &'a [crate::entry::Line],
}

fn reject(route: &Route, error: Error) -> Outcome {
    Outcome::Rejected {
        seq: Some(route.seq),
        error,
    }
}
