//! Property test: random command sequences (accounts, entries, liens, chains,
//! expiry, reused ids, stale versions) give identical outcomes and identical
//! final state on the runtime with 1, 2 and 4 shards, on the single-threaded
//! `Ledger`, and on the reference model.
//!
//! CI runs 1,000 cases. Long mode:
//! `PROPTEST_CASES=50000 cargo test --release -p tally-engine --test model`.

mod common;

use common::model::Model;
use common::{eur, runtime, usd};
use proptest::prelude::*;
use smallvec::smallvec;
use std::sync::atomic::Ordering;
use tally_engine::*;

const ACCOUNTS: u128 = 6;
const TIME_UNIT: u64 = 1_000;

fn currency() -> impl Strategy<Value = CurrencyCode> {
    prop_oneof![4 => Just(usd()), 1 => Just(eur())]
}

fn account() -> impl Strategy<Value = u128> {
    // 7 is never created: account_not_found.
    1..=ACCOUNTS + 1
}

fn line(side: Side) -> impl Strategy<Value = Line> {
    (
        account(),
        1..60u128,
        currency(),
        prop::option::weighted(0.15, 0..4u64),
        prop::option::weighted(0.1, -20..40i128),
    )
        .prop_map(move |(account, amount, currency, v, cond)| {
            let mut l = Line {
                account,
                side,
                amount,
                currency,
                expected_version: v,
                condition: None,
            };
            if let Some(c) = cond {
                l.condition = Some(if c % 2 == 0 {
                    Condition::AvailableAtLeast(c)
                } else {
                    Condition::BalanceAtMost(c * 3)
                });
            }
            l
        })
}

fn entry() -> impl Strategy<Value = Entry> {
    let two = (line(Side::Debit), line(Side::Credit)).prop_map(|(d, mut c)| {
        c.amount = d.amount; // mostly balanced
        c.currency = d.currency;
        vec![d, c]
    });
    let three = (line(Side::Debit), line(Side::Credit), line(Side::Credit)).prop_map(
        |(mut d, c1, mut c2)| {
            c2.currency = c1.currency;
            d.currency = c1.currency;
            d.amount = c1.amount + c2.amount;
            vec![d, c1, c2]
        },
    );
    (
        1..=14u128,
        prop_oneof![4 => two, 1 => three],
        prop::option::weighted(0.1, 1..=14u128),
        any::<bool>(),
    )
        .prop_map(|(id, lines, corrects, unbalance)| {
            let mut e = Entry::new(id, lines);
            e.corrects = corrects;
            e.allow_repeat_correction = corrects.is_some_and(|c| c % 3 == 0);
            if unbalance && id % 7 == 0 {
                e.lines[0].amount += 1; // malformed: refused before sequencing
            }
            e
        })
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        // An entry of a transfer's shape mostly travels as the fixed-form
        // transfer, sometimes as the general entry: both must mean the same.
        3 => entry().prop_map(Operation::entry),
        2 => entry().prop_map(|e| Operation::Entry(Box::new(e))),
        2 => (1..=5u128, account(), currency(), 1..50u128, prop::option::weighted(0.5, 1..6u64)).prop_map(
            |(id, account, currency, amount, exp)| Operation::CreateLien(CreateLien {
                id: 100 + id,
                account,
                currency,
                amount,
                expires_in_ns: exp.map(|e| e * TIME_UNIT),
                owner: 0,
                user_data: 0,
            })
        ),
        2 => (1..=5u128, account(), 1..=14u128, account(), 1..50u128, currency(), prop::option::weighted(0.2, (account(), 1..10u128))).prop_map(
            |(lien, account, entry_id, to, amount, currency, second)| {
                let mut credits = smallvec![(to, amount)];
                if let Some(s) = second {
                    credits.push(s);
                }
                Operation::CaptureLien(Box::new(CaptureLien { lien: 100 + lien, account, entry_id, currency, credits, reference: None }))
            }
        ),
        1 => (1..=5u128, account()).prop_map(|(lien, account)| Operation::ReleaseLien(ReleaseLien { lien: 100 + lien, account })),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        12 => operation().prop_map(Command::Op),
        3 => (1..=4u128, prop::collection::vec(operation(), 1..=4)).prop_map(|(id, ops)| Command::Chain(Chain { id, ops })),
        1 => (1..=ACCOUNTS + 1, 0..3u8).prop_map(|(account, s)| Command::SetAccountState {
            account,
            state: [AccountState::Active, AccountState::Frozen, AccountState::Closed][s as usize],
        }),
        1 => (1..=ACCOUNTS + 1, currency(), 0..3u8).prop_map(|(id, currency, p)| Command::CreateAccount(NewAccount {
            id,
            currency,
            policy: [BalancePolicy::NoOverdraft, BalancePolicy::OverdraftLimit(25), BalancePolicy::Unrestricted][p as usize],
            user_data: 0,
        })),
        1 => Just(Command::Tick),
        1 => (0..2u8).prop_map(|s| Command::CreateCurrency(Currency { code: usd(), scale: 2 + s })),
    ]
}

/// A step: a batch of commands (some repeats of earlier ones) sent at one time.
#[derive(Debug, Clone)]
struct Step {
    advance: u64,
    commands: Vec<Result<Command, usize>>,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let cmd = prop_oneof![5 => command().prop_map(Ok), 1 => any::<usize>().prop_map(Err)];
    let step = (0..4u64, prop::collection::vec(cmd, 1..=6))
        .prop_map(|(advance, commands)| Step { advance, commands });
    prop::collection::vec(step, 1..=30)
}

fn setup() -> Vec<Command> {
    let mut v = vec![
        Command::CreateCurrency(Currency {
            code: usd(),
            scale: 2,
        }),
        Command::CreateCurrency(Currency {
            code: eur(),
            scale: 0,
        }),
    ];
    let policies = [
        BalancePolicy::Unrestricted,
        BalancePolicy::NoOverdraft,
        BalancePolicy::NoOverdraft,
        BalancePolicy::OverdraftLimit(30),
        BalancePolicy::NoOverdraft,
        BalancePolicy::NoOverdraft,
    ];
    for id in 1..=ACCOUNTS {
        let currency = if id == 6 { eur() } else { usd() };
        v.push(Command::CreateAccount(NewAccount {
            id,
            currency,
            policy: policies[id as usize - 1],
            user_data: id,
        }));
    }
    for id in 2..=5u128 {
        v.push(Entry::transfer(1_000 + id, 1, id, 100, usd()).into());
    }
    v
}

/// A step's command: a new one, or a repeat of an earlier one (a tick when
/// there is none yet); appended to `history`.
fn resolve(c: &Result<Command, usize>, history: &mut Vec<Command>) -> Command {
    let cmd = match c {
        Ok(c) => c.clone(),
        Err(i) if !history.is_empty() => history[i % history.len()].clone(),
        Err(_) => Command::Tick,
    };
    history.push(cmd.clone());
    cmd
}

fn run_case(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::new();
    let mut ledgers: Vec<Ledger> = [1, 2, 4].iter().map(|&n| Ledger::new(n)).collect();
    let mut runtimes: Vec<_> = [1, 2, 4].iter().map(|&n| runtime(n)).collect();
    // With a cold tier: one record per generation (every id but the newest
    // leaves memory), the watermark published at once or every third batch.
    runtimes.push(common::cold_runtime(1, 1, 1));
    runtimes.push(common::cold_runtime(2, 2, 3));
    let mut history: Vec<Command> = Vec::new();
    let mut now = 0u64;
    let mut batches: Vec<(u64, Vec<Command>)> = vec![(0, setup())];
    for s in steps {
        now += s.advance * TIME_UNIT;
        let mut batch = Vec::new();
        for c in &s.commands {
            batch.push(resolve(c, &mut history));
        }
        batches.push((now, batch));
    }
    for (now, batch) in batches {
        let expected: Vec<Outcome> = batch.iter().map(|c| model.execute(c, now)).collect();
        for l in &mut ledgers {
            let got: Vec<Outcome> = batch.iter().map(|c| l.execute(c, now)).collect();
            prop_assert_eq!(&got, &expected, "ledger with {} shards", l.shards().len());
        }
        for (rt, clock) in &runtimes {
            clock.store(now, Ordering::SeqCst);
            let got = rt.submit(batch.clone()).unwrap().wait();
            prop_assert_eq!(
                &got,
                &expected,
                "runtime with {} shards, batch {:?}",
                rt.shards(),
                batch
            );
        }
    }
    // Final state, read back through every implementation's query path.
    for (rt, _) in &runtimes {
        for id in 1..=ACCOUNTS + 1 {
            let got = rt.account(id);
            match (got, model.account(id)) {
                (None, None) => {}
                (Some(v), Some(m)) => {
                    let a = v.account;
                    prop_assert_eq!(
                        (
                            a.debits_posted,
                            a.credits_posted,
                            a.reserved,
                            a.version,
                            a.state,
                            a.policy,
                            v.currency.code
                        ),
                        (
                            m.debits, m.credits, m.reserved, m.version, m.state, m.policy,
                            m.currency
                        ),
                        "account {} on {} shards",
                        id,
                        rt.shards()
                    );
                }
                (g, m) => prop_assert!(false, "account {id}: runtime {g:?} vs model {m:?}"),
            }
        }
        for id in 101..=105u128 {
            let got = rt
                .lien(id)
                .map(|l| (l.account, l.amount, l.captured, l.status, l.deadline));
            let want = model
                .lien(id)
                .map(|l| (l.account, l.amount, l.captured, l.status, l.deadline));
            prop_assert_eq!(got, want, "lien {} on {} shards", id, rt.shards());
            prop_assert_eq!(
                rt.status(IdSpace::Lien, id),
                model.status(IdSpace::Lien, id)
            );
        }
        for id in 1..=14u128 {
            prop_assert_eq!(
                rt.status(IdSpace::Entry, id),
                model.status(IdSpace::Entry, id),
                "entry {}",
                id
            );
        }
        for id in 1..=4u128 {
            prop_assert_eq!(
                rt.status(IdSpace::Chain, id),
                model.status(IdSpace::Chain, id),
                "chain {}",
                id
            );
        }
        let sums: std::collections::BTreeMap<_, _> = rt.balance_sums().into_iter().collect();
        prop_assert_eq!(&sums, &model.sums());
        prop_assert!(sums.values().all(|s| *s == 0), "conservation: {sums:?}");
        let (_, problems) = rt.cut(|s| s.check_invariants());
        prop_assert!(problems.iter().all(|p| p.is_empty()), "{problems:?}");
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn runtime_and_ledger_match_the_reference_model(steps in steps()) {
        run_case(&steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 4, ..ProptestConfig::default() })]

    /// A ledger rebuilt from its exported image (with any shard count) has
    /// the same state and gives the same outcomes for what follows.
    #[test]
    fn export_import_round_trips(first in steps(), second in steps()) {
        let mut original = Ledger::new(2);
        let mut now = 0;
        let feed = |l: &mut Ledger, steps: &[Step], now: &mut u64| -> Vec<Outcome> {
            let mut out = Vec::new();
            for s in steps {
                *now += s.advance * TIME_UNIT;
                for c in s.commands.iter().filter_map(|c| c.as_ref().ok()) {
                    out.push(l.execute(c, *now));
                }
            }
            out
        };
        for c in setup() {
            original.execute(&c, 0);
        }
        feed(&mut original, &first, &mut now);
        let image = original.export();
        for shards in [1, 3] {
            let mut copy = Ledger::import(&image, shards).unwrap();
            prop_assert_eq!(copy.digest(), original.digest());
            prop_assert_eq!(copy.export(), image.clone());
        }
        let mut copy = Ledger::import(&image, 4).unwrap();
        let mut t = now;
        let a = feed(&mut original, &second, &mut now);
        let b = feed(&mut copy, &second, &mut t);
        prop_assert_eq!(a, b);
        prop_assert_eq!(copy.digest(), original.digest());
    }
}

/// `c` with every entry of a transfer's shape in one form: the fixed-form
/// transfer (`fixed`) or the general two-line entry.
fn in_form(c: &Command, fixed: bool) -> Command {
    let op = |op: &Operation| match op {
        Operation::Transfer(t) if !fixed => Operation::Entry(Box::new(t.to_entry())),
        Operation::Entry(e) if fixed => Operation::entry((**e).clone()),
        op => op.clone(),
    };
    match c {
        Command::Op(o) => Command::Op(op(o)),
        Command::Chain(ch) => Command::Chain(Chain {
            id: ch.id,
            ops: ch.ops.iter().map(op).collect(),
        }),
        c => c.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 4, ..ProptestConfig::default() })]

    /// A transfer means exactly its two-line entry: the same history sent
    /// all as transfers, all as general entries, or alternating (so a retry
    /// arrives in the other form) gives the same outcomes and state.
    #[test]
    fn transfers_and_their_entries_are_one_path(steps in steps()) {
        let mut results = Vec::new();
        // 0: every transfer fixed, 1: every one general, 2: alternating.
        for form in 0..3 {
            let fixed = |k: usize| match form {
                0 => true,
                1 => false,
                _ => k % 2 == 0,
            };
            let mut l = Ledger::new(2);
            let mut history: Vec<Command> = Vec::new();
            let mut out = Vec::new();
            let mut now = 0;
            for c in setup() {
                l.execute(&c, 0);
            }
            for s in &steps {
                now += s.advance * TIME_UNIT;
                for c in &s.commands {
                    let cmd = resolve(c, &mut history);
                    let k = history.len();
                    out.push(l.execute(&in_form(&cmd, fixed(k)), now));
                }
            }
            results.push((out, l.digest()));
        }
        prop_assert_eq!(&results[0], &results[1]);
        prop_assert_eq!(&results[0], &results[2]);
    }
}
