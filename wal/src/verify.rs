//! The online consistency verifier. It takes a consistent cut of every shard
//! (each shard copies what is needed at one point of the global order; the
//! time each shard spends is measured: writers wait no longer than that), then
//! checks, away from the shards:
//!
//! - conservation: per currency, the balances sum to zero;
//! - each shard's invariants: reserved = sum of its active liens, every
//!   balance policy holds, every account on its home shard;
//! - balances against the log: each account's posted balance equals the fold
//!   of the log's records up to the cut (from the history index; all accounts
//!   with `full`, a sample otherwise);
//! - the idempotency index against the log: the status of each logged id
//!   (all records with `full`, a sample otherwise) is the logged outcome.
//!
//! Warnings: liens that expire within a minute of the cut, frozen accounts
//! holding active liens. (Event-state checks join when events exist.)

use crate::format::{OUTCOME_COMMITTED, OUTCOME_REJECTED};
use crate::history::History;
use crate::journal::LogStats;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tally_engine::amount::format_balance;
use tally_engine::event::EventState;
use tally_engine::id::{format_id, shard_of};
use tally_engine::runtime::Runtime;
use tally_engine::{AccountState, Command, IdSpace, IdStatus, LienStatus};

/// Accounts (and logged records) checked against the log when not `full`.
pub const SAMPLE: usize = 1_000;
/// A lien expiring this soon after the cut is worth a warning.
const NEAR_EXPIRY_NS: u64 = 60_000_000_000;
/// How long to wait for the cut's records to become durable and indexed.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// A stable name: `conservation`, `invariant`, `balance_mismatch`,
    /// `id_index_mismatch`, `log_unreadable`, `lien_near_expiry`,
    /// `frozen_with_liens`.
    pub kind: String,
    /// The account, lien or id concerned ("" when none).
    pub subject: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CurrencyTotal {
    pub code: String,
    pub sum: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub clean: bool,
    pub full: bool,
    /// The cut follows this sequence number.
    pub cut_sequence: u64,
    pub accounts: u64,
    pub accounts_checked_against_log: u64,
    pub records_checked_against_index: u64,
    /// The longest time one shard spent in the cut (its writers waited).
    pub max_shard_pause_us: u64,
    pub duration_ms: u64,
    pub currencies: Vec<CurrencyTotal>,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

fn finding(kind: &str, subject: String, message: String) -> Finding {
    Finding {
        kind: kind.into(),
        subject,
        message,
    }
}

/// What one shard hands over at the cut: kept small, since the shard's
/// writers wait while it is gathered.
struct ShardCopy {
    /// (code, scale, sum of balances) per currency.
    sums: Vec<(String, u8, i128)>,
    accounts: usize,
    /// Accounts to check against the log: (id, posted balance, scale).
    picked: Vec<(u128, i128, u8)>,
    /// Active liens expiring soon after the cut: (lien, account).
    expiring: Vec<(u128, u128)>,
    /// Frozen accounts holding active liens: (account, lien).
    frozen: Vec<(u128, u128)>,
    problems: Vec<String>,
    /// Events: (id, state, deadline, own liens (id, account), problems).
    events: Vec<EventCopy>,
    /// Active liens owned by an event: (lien, account, owner).
    owned_liens: Vec<(u128, u128, u128)>,
    pause_us: u64,
}

struct EventCopy {
    id: u128,
    state: EventState,
    deadline: Option<u64>,
    liens: Vec<(u128, u128)>,
    problems: Vec<String>,
}

/// Picks up to `n` of `0..len` spread evenly (deterministic).
fn sample(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    (0..n).map(|i| i * len / n).collect()
}

/// Runs the verifier against a running ledger and its history.
pub fn verify(rt: &Runtime, history: &History, stats: &LogStats, full: bool) -> VerifyReport {
    let started = Instant::now();
    let per_shard = SAMPLE.div_ceil(rt.shards());
    let stride_of = move |len: usize| if full { 1 } else { (len / per_shard).max(1) };
    let (cut, copies) = rt.cut(move |s| copy_shard(s, stride_of));
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let currencies = check_copies(&copies, &mut errors, &mut warnings);
    check_events(&copies, rt.now(), &mut errors, &mut warnings);
    // The log side: wait until the cut is durable and indexed.
    let deadline = Instant::now() + DURABLE_WAIT;
    let indexed = stats.wait_durable(cut, deadline) && history.wait_indexed(cut, deadline);
    let (mut checked_accounts, mut checked_records) = (0u64, 0u64);
    if indexed {
        checked_accounts = check_balances(&copies, history, cut, &mut errors);
        match check_ids(rt, history, history.first_seq(), cut, full) {
            Ok((n, mut found)) => {
                checked_records = n;
                errors.append(&mut found);
            }
            Err(p) => errors.push(finding("log_unreadable", p.file.clone(), p.to_string())),
        }
    } else {
        errors.push(finding(
            "log_unreadable",
            String::new(),
            format!("the log did not reach sequence {cut} within {DURABLE_WAIT:?}"),
        ));
    }
    VerifyReport {
        clean: errors.is_empty(),
        full,
        cut_sequence: cut,
        accounts: copies.iter().map(|c| c.accounts as u64).sum(),
        accounts_checked_against_log: checked_accounts,
        records_checked_against_index: checked_records,
        max_shard_pause_us: copies.iter().map(|c| c.pause_us).max().unwrap_or(0),
        duration_ms: started.elapsed().as_millis() as u64,
        currencies,
        errors,
        warnings,
    }
}

/// One shard's part of the cut: sums, the accounts to check against the
/// log (every `stride`-th), liens near expiry or on frozen accounts, its
/// invariants and its events. The shard waits while this runs.
fn copy_shard(
    s: &tally_engine::shard::ShardState,
    stride_of: impl Fn(usize) -> usize,
) -> ShardCopy {
    let t = Instant::now();
    let now = s.last_swept();
    let currencies = s.currencies();
    let mut sums = vec![0i128; currencies.len()];
    let table = s.accounts();
    let stride = stride_of(table.len());
    let mut picked = Vec::with_capacity(table.len() / stride + 1);
    for (i, a) in table.iter().enumerate() {
        if let Some(sum) = sums.get_mut(a.currency as usize) {
            *sum = sum.wrapping_add(a.balance());
        }
        if i % stride == 0 {
            picked.push((a.id, a.balance(), currencies.by_index(a.currency).scale));
        }
    }
    let (mut expiring, mut frozen) = (Vec::new(), Vec::new());
    for l in s.liens().filter(|l| l.status == LienStatus::Active) {
        if l.deadline
            .is_some_and(|d| d.saturating_sub(now) < NEAR_EXPIRY_NS)
        {
            expiring.push((l.id, l.account));
        }
        if table
            .get(l.account)
            .is_some_and(|a| a.state == AccountState::Frozen)
        {
            frozen.push((l.account, l.id));
        }
    }
    let problems = s.check_invariants();
    let events = s
        .events()
        .iter()
        .map(|e| EventCopy {
            id: e.id(),
            state: e.state,
            deadline: e.deadline,
            liens: e.liens(),
            problems: e.check(),
        })
        .collect();
    let owned_liens = s
        .liens()
        .filter(|l| l.status == LienStatus::Active && l.owner != 0)
        .map(|l| (l.id, l.account, l.owner))
        .collect();
    let sums = sums
        .into_iter()
        .enumerate()
        .map(|(i, sum)| {
            let c = currencies.by_index(i as u16);
            (c.code.to_string(), c.scale, sum)
        })
        .collect();
    ShardCopy {
        sums,
        accounts: table.len(),
        picked,
        expiring,
        frozen,
        problems,
        events,
        owned_liens,
        pause_us: t.elapsed().as_micros() as u64,
    }
}

/// Each shard's invariants, the warnings about liens, and money conserved
/// per currency across shards; returns the currency totals.
fn check_copies(
    copies: &[ShardCopy],
    errors: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) -> Vec<CurrencyTotal> {
    let mut sums: BTreeMap<String, (i128, u8)> = BTreeMap::new();
    for c in copies {
        for p in &c.problems {
            errors.push(finding("invariant", String::new(), p.clone()));
        }
        for (code, scale, sum) in &c.sums {
            let e = sums.entry(code.clone()).or_insert((0, *scale));
            e.0 = e.0.wrapping_add(*sum);
        }
        for &(lien, account) in &c.expiring {
            warnings.push(finding(
                "lien_near_expiry",
                format_id(lien),
                format!(
                    "lien {} on account {} expires within a minute",
                    format_id(lien),
                    format_id(account)
                ),
            ));
        }
        for &(account, lien) in &c.frozen {
            warnings.push(finding(
                "frozen_with_liens",
                format_id(account),
                format!(
                    "frozen account {} holds active lien {}",
                    format_id(account),
                    format_id(lien)
                ),
            ));
        }
    }
    let mut currencies = Vec::new();
    for (code, (sum, scale)) in &sums {
        if *sum != 0 {
            errors.push(finding(
                "conservation",
                code.clone(),
                format!(
                    "{code} balances sum to {} instead of zero",
                    format_balance(*sum, *scale)
                ),
            ));
        }
        currencies.push(CurrencyTotal {
            code: code.clone(),
            sum: format_balance(*sum, *scale),
        });
    }
    currencies
}

/// The picked accounts' balances against the history's fold of the log up
/// to the cut; returns how many were checked.
fn check_balances(
    copies: &[ShardCopy],
    history: &History,
    cut: u64,
    errors: &mut Vec<Finding>,
) -> u64 {
    let mut checked_accounts = 0;
    for c in copies {
        for &(id, balance, scale) in &c.picked {
            let expected = match history.balance_at(id, cut) {
                Ok(b) => b,
                Err(p) => {
                    errors.push(finding("history_unreadable", format_id(id), p.to_string()));
                    continue;
                }
            };
            checked_accounts += 1;
            if expected != balance {
                errors.push(finding(
                    "balance_mismatch",
                    format_id(id),
                    format!(
                        "account {}: the ledger says {} but its log records up to sequence {cut} fold to {}",
                        format_id(id),
                        format_balance(balance, scale),
                        format_balance(expected, scale)
                    ),
                ));
            }
        }
    }
    checked_accounts
}

/// Ids that a logged record decided, with the status the index must hold.
fn expected_ids(cmd: &Command, seq: u64, outcome: u8, code: u16) -> Vec<(IdSpace, u128, IdStatus)> {
    let status = |c: u16| match tally_engine::ErrorCode::from_u16(c) {
        Some(code) if outcome == OUTCOME_REJECTED => IdStatus::Rejected { seq, code },
        _ => IdStatus::Committed { seq },
    };
    let mut out = Vec::new();
    if code == tally_engine::ErrorCode::IdReusedWithDifferentContent as u16 {
        // Refused for its id: the index keeps the id's first outcome.
        return out;
    }
    if let Some((space, id)) = cmd.top_id() {
        out.push((space, id, status(code)));
    }
    if outcome == OUTCOME_COMMITTED {
        if let Command::Chain(_) = cmd {
            for op in cmd.ops() {
                if let Some((space, id)) = op.id() {
                    out.push((space, id, IdStatus::Committed { seq }));
                }
            }
        }
    }
    out
}

/// Adds what a record says its ids' statuses are; returns 1 if it counted
/// (duplicates decide nothing).
fn expect(r: &crate::follow::OwnedRecord, wanted: &mut Vec<(IdSpace, u128, IdStatus)>) -> u64 {
    let h = &r.header;
    if h.outcome == crate::format::OUTCOME_DUPLICATE {
        return 0;
    }
    wanted.extend(expected_ids(&r.command, h.seq, h.outcome, h.code));
    1
}

/// The history is indexed from the writer's memory, not from the file: the
/// record read back from the log must move each account by what the index
/// posted for it at that sequence (`balance_mismatch` otherwise).
fn check_postings(history: &History, r: &crate::follow::OwnedRecord, found: &mut Vec<Finding>) {
    let seq = r.header.seq;
    if r.header.outcome != OUTCOME_COMMITTED || seq < history.first_seq() {
        return;
    }
    for (account, debit, credit) in crate::history::movements(&r.command) {
        let logged = (credit as i128).saturating_sub(debit as i128);
        let indexed = match history.posting_delta(account, seq) {
            Ok(d) => d,
            Err(p) => {
                found.push(finding(
                    "history_unreadable",
                    format_id(account),
                    p.to_string(),
                ));
                continue;
            }
        };
        if indexed != Some(logged) {
            found.push(finding(
                "balance_mismatch",
                format_id(account),
                format!(
                    "account {}: the log's record {seq} moves it by {logged}, the history index by {indexed:?}",
                    format_id(account)
                ),
            ));
        }
    }
}

/// Compares the index's status of every logged id (or a sample) with the log.
fn check_ids(
    rt: &Runtime,
    history: &History,
    first: u64,
    cut: u64,
    full: bool,
) -> Result<(u64, Vec<crate::verify::Finding>), crate::Problem> {
    let mut wanted: Vec<(IdSpace, u128, IdStatus)> = Vec::new();
    let mut records = 0u64;
    let mut found = Vec::new();
    if full {
        let mut next = first;
        while next <= cut {
            let chunk = history.records(next, 4_096)?;
            let Some(last) = chunk.last() else { break };
            next = last.header.seq + 1;
            for r in chunk.iter().filter(|r| r.header.seq <= cut) {
                records += expect(r, &mut wanted);
                check_postings(history, r, &mut found);
            }
        }
    } else if cut >= first {
        let span = (cut - first + 1) as usize;
        for i in sample(span, SAMPLE) {
            if let Some(r) = history.record(first + i as u64)? {
                records += expect(&r, &mut wanted);
                check_postings(history, &r, &mut found);
            }
        }
    }
    let shards = rt.shards();
    let mut per_shard: Vec<Vec<(IdSpace, u128, IdStatus)>> = vec![Vec::new(); shards];
    for w in wanted {
        per_shard[shard_of(w.1, shards)].push(w);
    }
    for (shard, list) in per_shard.into_iter().enumerate() {
        let bad = rt
            .query(shard, move |s| {
                list.into_iter()
                    .filter_map(|(space, id, want)| {
                        let got = s.id_status(space, id);
                        (got != want).then_some((space, id, want, got))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (space, id, want, got) in bad {
            if got == IdStatus::Unknown {
                // Not in the shard's memory: the cold tier may hold it.
                let cold = rt
                    .cold_record(space, id)
                    .ok()
                    .flatten()
                    .map(|r| match r.code() {
                        None => IdStatus::Committed { seq: r.seq },
                        Some(code) => IdStatus::Rejected { seq: r.seq, code },
                    });
                if cold.as_ref() == Some(&want) {
                    continue;
                }
            }
            found.push(finding(
                "id_index_mismatch",
                format_id(id),
                format!(
                    "id {}: the log says {want:?}, the idempotency index says {got:?}",
                    format_id(id)
                ),
            ));
        }
    }
    Ok((records, found))
}

/// Event states against their steps and liens: each event's own invariants
/// (`Event::check`), every active lien owned by an event belongs to an event
/// that is still running (an ended event released or captured all its
/// liens), and warnings for events past their timeout or needing an operator.
fn check_events(
    copies: &[ShardCopy],
    now: u64,
    errors: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) {
    let events: std::collections::HashMap<u128, &EventCopy> = copies
        .iter()
        .flat_map(|c| c.events.iter().map(|e| (e.id, e)))
        .collect();
    for e in events.values() {
        for p in &e.problems {
            errors.push(finding("event_state", format_id(e.id), p.clone()));
        }
        if e.state.is_active() && e.deadline.is_some_and(|d| d < now) {
            warnings.push(finding(
                "event_past_timeout",
                format_id(e.id),
                format!(
                    "event {} is {} past its timeout",
                    format_id(e.id),
                    e.state.name()
                ),
            ));
        }
        if e.state == EventState::Failed {
            warnings.push(finding(
                "event_compensation_failed",
                format_id(e.id),
                format!(
                    "event {} could not be compensated: see `tally event get {}`",
                    format_id(e.id),
                    format_id(e.id)
                ),
            ));
        }
    }
    for c in copies {
        for &(lien, account, owner) in &c.owned_liens {
            let message = match events.get(&owner) {
                None => format!(
                    "active lien {} on account {} names event {} as owner, which does not exist",
                    format_id(lien),
                    format_id(account),
                    format_id(owner)
                ),
                Some(e) if !e.liens.iter().any(|&(l, _)| l == lien) => format!(
                    "active lien {} names event {} as owner, but no step of that event created it",
                    format_id(lien),
                    format_id(owner)
                ),
                Some(e) if e.state.is_terminal() && e.state != EventState::Failed => format!(
                    "event {} is {} but its lien {} on account {} is still active",
                    format_id(owner),
                    e.state.name(),
                    format_id(lien),
                    format_id(account)
                ),
                Some(_) => continue,
            };
            // Liens any client may create with an owner it chose are not the
            // ledger's inconsistency; only the event's own liens are.
            let own = events
                .get(&owner)
                .is_some_and(|e| e.liens.iter().any(|&(l, _)| l == lien));
            let list = if own { &mut *errors } else { &mut *warnings };
            list.push(finding("event_lien", format_id(lien), message));
        }
    }
}
