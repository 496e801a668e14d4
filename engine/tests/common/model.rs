//! A deliberately simple reference ledger: one thread, BTreeMaps, the whole
//! state cloned for every command. Written from the rules in SPEC.md and the
//! engine's documented check order, not from the engine's code. It shares only
//! the command types, stateless validation and content fingerprints.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use tally_engine::chain::Operation;
use tally_engine::limits::MAX_AMOUNT;
use tally_engine::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MAccount {
    pub currency: CurrencyCode,
    pub policy: BalancePolicy,
    pub user_data: u128,
    pub state: AccountState,
    pub debits: u128,
    pub credits: u128,
    pub reserved: u128,
    pub version: u64,
    pub created_seq: u64,
}

impl MAccount {
    pub fn balance(&self) -> i128 {
        self.credits as i128 - self.debits as i128
    }
    pub fn available(&self) -> i128 {
        self.balance().saturating_sub(self.reserved as i128)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MLien {
    pub account: u128,
    pub currency: CurrencyCode,
    pub amount: u128,
    pub captured: u128,
    pub status: LienStatus,
    pub deadline: Option<u64>,
}

#[derive(Clone, Default)]
struct State {
    accounts: BTreeMap<u128, MAccount>,
    liens: BTreeMap<u128, MLien>,
    /// (space, id) -> (fingerprint, seq, code)
    ids: BTreeMap<(IdSpace, u128), (u64, u64, Option<ErrorCode>)>,
    /// Entries that a committed entry corrects.
    corrected: BTreeSet<u128>,
}

#[derive(Default)]
pub struct Model {
    currencies: BTreeMap<CurrencyCode, (u8, u64)>,
    s: State,
    next_seq: u64,
    last_ts: u64,
}

fn err(code: ErrorCode, subject: u128) -> Error {
    Error::new(code).with_subject(subject)
}

impl Model {
    pub fn new() -> Model {
        Model {
            next_seq: 1,
            ..Model::default()
        }
    }

    pub fn account(&self, id: u128) -> Option<&MAccount> {
        self.s.accounts.get(&id)
    }
    pub fn lien(&self, id: u128) -> Option<&MLien> {
        self.s.liens.get(&id)
    }
    pub fn status(&self, space: IdSpace, id: u128) -> IdStatus {
        match self.s.ids.get(&(space, id)) {
            None => IdStatus::Unknown,
            Some((_, seq, None)) => IdStatus::Committed { seq: *seq },
            Some((_, seq, Some(code))) => IdStatus::Rejected {
                seq: *seq,
                code: *code,
            },
        }
    }
    pub fn sums(&self) -> BTreeMap<CurrencyCode, i128> {
        let mut m = BTreeMap::new();
        for a in self.s.accounts.values() {
            *m.entry(a.currency).or_insert(0) += a.balance();
        }
        m
    }

    pub fn execute(&mut self, cmd: &Command, now: u64) -> Outcome {
        if let Err(e) = cmd.validate() {
            return Outcome::rejected_early(e);
        }
        let ts = now.max(self.last_ts + 1);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_ts = ts;
        // Expire everything due, before the command.
        for l in self.s.liens.values_mut() {
            if l.status == LienStatus::Active && l.deadline.is_some_and(|d| d <= ts) {
                l.status = LienStatus::Expired;
                let a = self.s.accounts.get_mut(&l.account).unwrap();
                a.reserved -= l.amount;
                a.version += 1;
            }
        }
        let ok = Outcome::Committed { seq, timestamp: ts };
        let rejected = |e: Error| Outcome::Rejected {
            seq: Some(seq),
            error: e,
        };
        match cmd {
            Command::Tick => ok,
            // Events are modelled in tests/events.rs (they run on top of
            // the ledger operations this model checks).
            Command::Event(_) => unreachable!("the ledger model does not generate events"),
            Command::CreateCurrency(c) => match self.currencies.get(&c.code) {
                Some(&(scale, s)) if scale == c.scale => Outcome::Duplicate { seq: s, code: None },
                Some(_) => rejected(
                    Error::new(ErrorCode::IdReusedWithDifferentContent).with_text(c.code.as_str()),
                ),
                None => {
                    self.currencies.insert(c.code, (c.scale, seq));
                    ok
                }
            },
            Command::CreateAccount(n) => {
                if !self.currencies.contains_key(&n.currency) {
                    return rejected(
                        Error::new(ErrorCode::CurrencyNotFound).with_text(n.currency.as_str()),
                    );
                }
                if let Some(a) = self.s.accounts.get(&n.id) {
                    return if a.currency == n.currency
                        && a.policy == n.policy
                        && a.user_data == n.user_data
                    {
                        Outcome::Duplicate {
                            seq: a.created_seq,
                            code: None,
                        }
                    } else {
                        rejected(err(ErrorCode::IdReusedWithDifferentContent, n.id))
                    };
                }
                self.s.accounts.insert(
                    n.id,
                    MAccount {
                        currency: n.currency,
                        policy: n.policy,
                        user_data: n.user_data,
                        state: AccountState::Active,
                        debits: 0,
                        credits: 0,
                        reserved: 0,
                        version: 0,
                        created_seq: seq,
                    },
                );
                ok
            }
            Command::SetAccountState { account, state } => {
                let Some(a) = self.s.accounts.get_mut(account) else {
                    return rejected(err(ErrorCode::AccountNotFound, *account));
                };
                if a.state == *state {
                    return ok;
                }
                if a.state == AccountState::Closed {
                    return rejected(err(ErrorCode::InvalidStateTransition, *account));
                }
                if *state == AccountState::Closed && (a.balance() != 0 || a.reserved != 0) {
                    return rejected(err(ErrorCode::AccountNotEmpty, *account));
                }
                a.state = *state;
                a.version += 1;
                ok
            }
            Command::Op(_) | Command::Chain(_) => self.operations(cmd, seq, ts),
        }
    }

    fn operations(&mut self, cmd: &Command, seq: u64, ts: u64) -> Outcome {
        let top = cmd.top_id();
        let chained = matches!(cmd, Command::Chain(_));
        if let Some((space, id)) = top {
            if let Some(&(fp, s, code)) = self.s.ids.get(&(space, id)) {
                if fp >> 16 == cmd.fingerprint() >> 16 {
                    return Outcome::Duplicate { seq: s, code };
                }
                return Outcome::Rejected {
                    seq: Some(seq),
                    error: err(ErrorCode::IdReusedWithDifferentContent, id),
                };
            }
        }
        let mut t = self.s.clone();
        let mut taken: BTreeSet<(IdSpace, u128)> = BTreeSet::new();
        let mut failure = None;
        for (k, op) in cmd.ops().iter().enumerate() {
            if let Err(mut e) = apply_op(&mut t, &mut taken, op, chained, ts, seq) {
                if chained {
                    e.op = Some(k as u16);
                }
                failure = Some((k, e));
                break;
            }
        }
        let fp_of = |op: &Operation| Command::Op(op.clone()).fingerprint();
        match failure {
            None => {
                self.s = t;
                if let Some(key) = top {
                    self.s.ids.insert(key, (cmd.fingerprint(), seq, None));
                }
                if chained {
                    for op in cmd.ops() {
                        if let Some(key) = op.id() {
                            self.s.ids.insert(key, (fp_of(op), seq, None));
                        }
                    }
                }
                Outcome::Committed { seq, timestamp: ts }
            }
            Some((k, e)) => {
                if let Some(key) = top {
                    self.s
                        .ids
                        .insert(key, (cmd.fingerprint(), seq, Some(e.code)));
                }
                if chained {
                    for (j, op) in cmd.ops().iter().enumerate() {
                        if let Some(key) = op.id() {
                            let code = if j == k {
                                e.code
                            } else {
                                ErrorCode::LinkedOperationFailed
                            };
                            // An id taken before (or earlier in this chain) keeps its outcome.
                            self.s
                                .ids
                                .entry(key)
                                .or_insert((fp_of(op), seq, Some(code)));
                        }
                    }
                }
                Outcome::Rejected {
                    seq: Some(seq),
                    error: e,
                }
            }
        }
    }
}

fn taken(t: &State, taken: &BTreeSet<(IdSpace, u128)>, key: (IdSpace, u128)) -> bool {
    t.ids.contains_key(&key) || taken.contains(&key)
}

fn usable(t: &State, id: u128, currency: CurrencyCode, line: Option<usize>) -> Result<(), Error> {
    let with = |e: Error| {
        if let Some(l) = line {
            e.with_line(l)
        } else {
            e
        }
    };
    let Some(a) = t.accounts.get(&id) else {
        return Err(with(err(ErrorCode::AccountNotFound, id)));
    };
    if a.currency != currency {
        return Err(with(err(ErrorCode::CurrencyMismatch, id)));
    }
    match a.state {
        AccountState::Active => Ok(()),
        AccountState::Frozen => Err(with(err(ErrorCode::AccountFrozen, id))),
        AccountState::Closed => Err(with(err(ErrorCode::AccountClosed, id))),
    }
}

fn add(total: u128, amount: u128) -> Option<u128> {
    total.checked_add(amount).filter(|t| *t <= MAX_AMOUNT)
}

fn apply_op(
    t: &mut State,
    tk: &mut BTreeSet<(IdSpace, u128)>,
    op: &Operation,
    chained: bool,
    ts: u64,
    seq: u64,
) -> Result<(), Error> {
    if chained {
        if let Some(key) = op.id() {
            if taken(t, tk, key) {
                return Err(err(ErrorCode::IdAlreadyUsed, key.1));
            }
            tk.insert(key);
        }
    }
    // A transfer means exactly its two-line entry (`tally_engine::transfer`).
    let general;
    let op = match op {
        Operation::Transfer(tr) => {
            // Built from the fields, not with `Transfer::to_entry`: the model
            // stays independent of the code it checks.
            let mut e = Entry::transfer(
                tr.id,
                tr.debit_account,
                tr.credit_account,
                tr.amount,
                tr.currency,
            );
            e.user_data = tr.user_data;
            general = Operation::Entry(Box::new(e));
            &general
        }
        op => op,
    };
    match op {
        Operation::Transfer(_) => unreachable!("turned into its entry above"),
        Operation::Entry(e) => {
            if let Some(c) = e.corrects {
                let ok = tk.contains(&(IdSpace::Entry, c))
                    || matches!(t.ids.get(&(IdSpace::Entry, c)), Some((_, _, None)));
                if !ok {
                    return Err(err(ErrorCode::CorrectedEntryNotFound, c));
                }
                if !e.allow_repeat_correction && t.corrected.contains(&c) {
                    return Err(err(ErrorCode::AlreadyCorrected, c));
                }
                t.corrected.insert(c);
            }
            for (i, l) in e.lines.iter().enumerate() {
                usable(t, l.account, l.currency, Some(i))?;
                let a = &t.accounts[&l.account];
                if let Some(v) = l.expected_version {
                    if v != a.version {
                        return Err(err(ErrorCode::VersionConflict, l.account)
                            .with_line(i)
                            .with_version(a.version));
                    }
                }
            }
            let before: BTreeMap<u128, i128> = e
                .lines
                .iter()
                .map(|l| (l.account, t.accounts[&l.account].available()))
                .collect();
            for (i, l) in e.lines.iter().enumerate() {
                let a = t.accounts.get_mut(&l.account).unwrap();
                let total = if l.side == Side::Debit {
                    &mut a.debits
                } else {
                    &mut a.credits
                };
                *total = add(*total, l.amount)
                    .ok_or_else(|| err(ErrorCode::AmountOverflow, l.account).with_line(i))?;
            }
            for (i, l) in e.lines.iter().enumerate() {
                let a = &t.accounts[&l.account];
                let avail = a.available();
                if avail < before[&l.account] && !a.policy.permits(avail) {
                    return Err(err(ErrorCode::InsufficientFunds, l.account).with_line(i));
                }
                if let Some(c) = l.condition {
                    let holds = match c {
                        Condition::AvailableAtLeast(v) => avail >= v,
                        Condition::BalanceAtMost(v) => a.balance() <= v,
                    };
                    if !holds {
                        return Err(err(ErrorCode::BalanceConditionFailed, l.account).with_line(i));
                    }
                }
            }
            for id in before.keys() {
                t.accounts.get_mut(id).unwrap().version += 1;
            }
            Ok(())
        }
        Operation::CreateLien(c) => {
            usable(t, c.account, c.currency, None)?;
            let a = t.accounts.get_mut(&c.account).unwrap();
            a.reserved = add(a.reserved, c.amount)
                .ok_or_else(|| err(ErrorCode::AmountOverflow, c.account))?;
            if !a.policy.permits(a.available()) {
                return Err(err(ErrorCode::InsufficientFunds, c.account));
            }
            a.version += 1;
            let _ = seq;
            t.liens.insert(
                c.id,
                MLien {
                    account: c.account,
                    currency: c.currency,
                    amount: c.amount,
                    captured: 0,
                    status: LienStatus::Active,
                    deadline: c.expires_in_ns.map(|d| ts.saturating_add(d)),
                },
            );
            Ok(())
        }
        Operation::CaptureLien(c) => {
            let total = c.total().unwrap();
            let Some(l) = t
                .liens
                .get(&c.lien)
                .filter(|l| l.account == c.account)
                .cloned()
            else {
                return Err(err(ErrorCode::LienNotFound, c.lien));
            };
            match l.status {
                LienStatus::Active => {}
                LienStatus::Expired => return Err(err(ErrorCode::LienExpired, c.lien)),
                _ => return Err(err(ErrorCode::LienNotActive, c.lien)),
            }
            if l.currency != c.currency {
                return Err(err(ErrorCode::CurrencyMismatch, c.lien));
            }
            if total > l.amount {
                return Err(err(ErrorCode::CaptureExceedsLien, c.lien));
            }
            usable(t, l.account, l.currency, Some(0))?;
            for (i, &(to, _)) in c.credits.iter().enumerate() {
                usable(t, to, c.currency, Some(i + 1))?;
            }
            let a = t.accounts.get_mut(&l.account).unwrap();
            a.debits = add(a.debits, total)
                .ok_or_else(|| err(ErrorCode::AmountOverflow, l.account).with_line(0))?;
            a.reserved -= l.amount;
            let mut touched = BTreeSet::from([l.account]);
            for (i, &(to, amount)) in c.credits.iter().enumerate() {
                let a = t.accounts.get_mut(&to).unwrap();
                a.credits = add(a.credits, amount)
                    .ok_or_else(|| err(ErrorCode::AmountOverflow, to).with_line(i + 1))?;
                touched.insert(to);
            }
            for id in touched {
                t.accounts.get_mut(&id).unwrap().version += 1;
            }
            let l = t.liens.get_mut(&c.lien).unwrap();
            l.status = LienStatus::Captured;
            l.captured = total;
            Ok(())
        }
        Operation::ReleaseLien(r) => {
            let Some(l) = t
                .liens
                .get(&r.lien)
                .filter(|l| l.account == r.account)
                .cloned()
            else {
                return Err(err(ErrorCode::LienNotFound, r.lien));
            };
            match l.status {
                LienStatus::Released => Ok(()),
                LienStatus::Expired => Err(err(ErrorCode::LienExpired, r.lien)),
                LienStatus::Captured => Err(err(ErrorCode::LienNotActive, r.lien)),
                LienStatus::Active => {
                    let a = t.accounts.get_mut(&l.account).unwrap();
                    a.reserved -= l.amount;
                    a.version += 1;
                    t.liens.get_mut(&r.lien).unwrap().status = LienStatus::Released;
                    Ok(())
                }
            }
        }
    }
}
