//! Every error code, produced the way a client would hit it, with the state
//! unchanged afterwards. The last test checks no code was left out.

mod common;

use common::{eur, usd};
use std::collections::BTreeSet;
use std::sync::Mutex;
use tally_engine::amount::parse_amount;
use tally_engine::id::parse_id;
use tally_engine::limits::*;
use tally_engine::runtime::{Batch, Journal, Runtime, RuntimeConfig};
use tally_engine::*;

static SEEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn saw(code: ErrorCode) {
    SEEN.lock().unwrap().insert(code as u16);
}

/// Runs a command, expects `code`, and checks that no balance moved.
fn expect(l: &mut Ledger, cmd: impl Into<Command>, code: ErrorCode) -> Error {
    let before: Vec<_> = (1..=5).map(|i| l.account(i)).collect();
    let o = l.execute(&cmd.into(), 0);
    let Outcome::Rejected { error, .. } = o else {
        panic!("expected {code}, got {o:?}")
    };
    assert_eq!(error.code, code, "{}", error.message());
    assert!(!error.message().is_empty());
    let after: Vec<_> = (1..=5).map(|i| l.account(i)).collect();
    assert_eq!(before, after, "a rejection changed state");
    saw(code);
    error
}

fn ok(l: &mut Ledger, cmd: impl Into<Command>) {
    let o = l.execute(&cmd.into(), 0);
    assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
}

/// USD(2), EUR(0); 1 unrestricted system, 2 and 3 wallets with 100.00, 4 empty, 5 EUR.
fn ledger() -> Ledger {
    let mut l = Ledger::new(1);
    ok(
        &mut l,
        Command::CreateCurrency(Currency::new("USD", 2).unwrap()),
    );
    ok(
        &mut l,
        Command::CreateCurrency(Currency::new("EUR", 0).unwrap()),
    );
    let acct = |id, currency, policy| {
        Command::CreateAccount(NewAccount {
            id,
            currency,
            policy,
            user_data: 0,
        })
    };
    ok(&mut l, acct(1, usd(), BalancePolicy::Unrestricted));
    for id in 2..=4 {
        ok(&mut l, acct(id, usd(), BalancePolicy::NoOverdraft));
    }
    ok(&mut l, acct(5, eur(), BalancePolicy::NoOverdraft));
    ok(&mut l, Entry::transfer(900, 1, 2, 10_000, usd()));
    ok(&mut l, Entry::transfer(901, 1, 3, 10_000, usd()));
    l
}

fn lien(id: u128, account: u128, amount: u128, expires_in_ns: Option<u64>) -> CreateLien {
    CreateLien {
        id,
        account,
        currency: usd(),
        amount,
        expires_in_ns,
        owner: 0,
        user_data: 0,
    }
}

fn capture(lien: u128, account: u128, entry_id: u128, to: u128, amount: u128) -> CaptureLien {
    CaptureLien {
        lien,
        account,
        entry_id,
        currency: usd(),
        credits: smallvec::smallvec![(to, amount)],
        reference: None,
    }
}

#[test]
fn malformed_input_is_refused_before_sequencing() {
    let mut l = ledger();
    let next = l.sequencer().next_seq();
    let cases: Vec<(Command, ErrorCode)> = vec![
        (
            Entry::new(1, [Line::debit(2, 5, usd())]).into(),
            ErrorCode::TooFewLines,
        ),
        (
            Entry::new(
                1,
                (0..=MAX_LINES_PER_ENTRY).map(|i| Line::debit(i as u128 + 1, 1, usd())),
            )
            .into(),
            ErrorCode::TooManyLines,
        ),
        (
            Entry::new(1, [Line::debit(2, 5, usd()), Line::credit(3, 4, usd())]).into(),
            ErrorCode::UnbalancedEntry,
        ),
        (
            Entry::transfer(1, 2, 3, 5, usd())
                .with_reference("r".repeat(MAX_REFERENCE_BYTES + 1))
                .into(),
            ErrorCode::ReferenceTooLong,
        ),
        (Chain { id: 1, ops: vec![] }.into(), ErrorCode::EmptyChain),
        (
            // Inside every count limit, but over the byte limit for one command.
            Chain {
                id: 1,
                ops: (0..MAX_CHAIN_OPERATIONS as u128)
                    .map(|i| {
                        Operation::CaptureLien(Box::new(CaptureLien {
                            lien: i + 10,
                            account: 2,
                            entry_id: i + 5_000,
                            currency: usd(),
                            credits: (0..MAX_LINES_PER_ENTRY as u128 - 1)
                                .map(|a| (a + 100, 1))
                                .collect(),
                            reference: Some("r".repeat(MAX_REFERENCE_BYTES).into()),
                        }))
                    })
                    .collect(),
            }
            .into(),
            ErrorCode::CommandTooLarge,
        ),
        (
            Chain {
                id: 1,
                ops: vec![
                    Operation::ReleaseLien(ReleaseLien {
                        lien: 1,
                        account: 2
                    });
                    MAX_CHAIN_OPERATIONS + 1
                ],
            }
            .into(),
            ErrorCode::TooManyOperations,
        ),
        (lien(1, 2, 5, Some(0)).into(), ErrorCode::InvalidExpiry),
        (
            Entry::transfer(0, 2, 3, 5, usd()).into(),
            ErrorCode::InvalidId,
        ),
        (
            Entry::transfer(1, 2, 3, 0, usd()).into(),
            ErrorCode::InvalidAmount,
        ),
        (
            Entry::transfer(1, 2, 3, 5, CurrencyCode::default()).into(),
            ErrorCode::InvalidCurrency,
        ),
    ];
    for (cmd, code) in cases {
        let o = l.execute(&cmd, 0);
        assert_eq!(
            o,
            Outcome::Rejected {
                seq: None,
                error: o.clone().code().map(Error::new).unwrap().clone_details(&o)
            },
            "{code}"
        );
        assert_eq!(o.code(), Some(code));
        saw(code);
    }
    assert_eq!(
        l.sequencer().next_seq(),
        next,
        "malformed commands are not sequenced"
    );
    assert_eq!(parse_id("nope").unwrap_err().code, ErrorCode::InvalidId);
    assert_eq!(
        parse_amount("1.001", 2).unwrap_err().code,
        ErrorCode::InvalidAmount
    );
    assert_eq!(
        CurrencyCode::parse("usd").unwrap_err().code,
        ErrorCode::InvalidCurrency
    );
    // A malformed command leaves its id free.
    ok(&mut l, Entry::transfer(1, 2, 3, 5, usd()));
}

trait CloneDetails {
    fn clone_details(self, o: &Outcome) -> Error;
}
impl CloneDetails for Error {
    fn clone_details(self, o: &Outcome) -> Error {
        match o {
            Outcome::Rejected { error, .. } => error.clone(),
            _ => self,
        }
    }
}

#[test]
fn accounts_and_currencies() {
    let mut l = ledger();
    let acct = |id, currency| {
        Command::CreateAccount(NewAccount {
            id,
            currency,
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        })
    };
    expect(
        &mut l,
        acct(9, CurrencyCode::parse("JPY").unwrap()),
        ErrorCode::CurrencyNotFound,
    );
    expect(
        &mut l,
        acct(2, eur()),
        ErrorCode::IdReusedWithDifferentContent,
    );
    assert!(matches!(
        l.execute(&acct(2, usd()), 0),
        Outcome::Duplicate { code: None, .. }
    ));
    expect(
        &mut l,
        Command::CreateCurrency(Currency::new("USD", 3).unwrap()),
        ErrorCode::IdReusedWithDifferentContent,
    );
    expect(
        &mut l,
        Entry::transfer(1, 2, 99, 5, usd()),
        ErrorCode::AccountNotFound,
    );
    let e = expect(
        &mut l,
        Entry::new(11, [Line::debit(5, 5, usd()), Line::credit(3, 5, usd())]),
        ErrorCode::CurrencyMismatch,
    );
    assert_eq!((e.line, e.subject), (Some(0), 5));
    ok(
        &mut l,
        Command::SetAccountState {
            account: 3,
            state: AccountState::Frozen,
        },
    );
    expect(
        &mut l,
        Entry::transfer(2, 2, 3, 5, usd()),
        ErrorCode::AccountFrozen,
    );
    expect(&mut l, lien(1, 3, 5, None), ErrorCode::AccountFrozen);
    expect(
        &mut l,
        Command::SetAccountState {
            account: 2,
            state: AccountState::Closed,
        },
        ErrorCode::AccountNotEmpty,
    );
    ok(
        &mut l,
        Command::SetAccountState {
            account: 4,
            state: AccountState::Closed,
        },
    );
    expect(
        &mut l,
        Entry::transfer(3, 2, 4, 5, usd()),
        ErrorCode::AccountClosed,
    );
    expect(
        &mut l,
        Command::SetAccountState {
            account: 4,
            state: AccountState::Active,
        },
        ErrorCode::InvalidStateTransition,
    );
    expect(
        &mut l,
        Command::SetAccountState {
            account: 77,
            state: AccountState::Frozen,
        },
        ErrorCode::AccountNotFound,
    );
}

#[test]
fn entries() {
    let mut l = ledger();
    let v = l.account(2).unwrap().account.version;
    let stale = Entry::new(
        1,
        [
            Line::debit(2, 5, usd()).expect_version(v + 3),
            Line::credit(3, 5, usd()),
        ],
    );
    let e = expect(&mut l, stale, ErrorCode::VersionConflict);
    assert_eq!((e.current_version, e.line), (Some(v), Some(0)));
    // The rejection is final for id 1, even with the right version now.
    let fixed = Entry::new(
        1,
        [
            Line::debit(2, 5, usd()).expect_version(v),
            Line::credit(3, 5, usd()),
        ],
    );
    expect(&mut l, fixed, ErrorCode::IdReusedWithDifferentContent);
    let e = expect(
        &mut l,
        Entry::transfer(2, 2, 3, 10_001, usd()),
        ErrorCode::InsufficientFunds,
    );
    assert_eq!((e.line, e.subject), (Some(0), 2));
    // Retrying the same content returns the original rejection, changes nothing.
    assert_eq!(
        l.execute(&Entry::transfer(2, 2, 3, 10_001, usd()).into(), 0)
            .code(),
        Some(ErrorCode::InsufficientFunds)
    );
    let capped = Entry::new(
        3,
        [
            Line::debit(2, 5, usd()),
            Line::credit(3, 5, usd()).with_condition(Condition::BalanceAtMost(10_000)),
        ],
    );
    expect(&mut l, capped, ErrorCode::BalanceConditionFailed);
    // The system account has debits of 20,000 (two fundings): take it to the maximum.
    ok(&mut l, Entry::transfer(4, 1, 2, MAX_AMOUNT - 20_000, usd()));
    let e = expect(
        &mut l,
        Entry::transfer(5, 1, 2, 1, usd()),
        ErrorCode::AmountOverflow,
    );
    assert_eq!((e.subject, e.line), (1, Some(0)));
    expect(
        &mut l,
        Entry::transfer(6, 2, 3, 5, usd()).correcting(12345),
        ErrorCode::CorrectedEntryNotFound,
    );
    // A rejected entry cannot be corrected either: only committed ones.
    expect(
        &mut l,
        Entry::transfer(7, 3, 2, 5, usd()).correcting(2),
        ErrorCode::CorrectedEntryNotFound,
    );
    ok(&mut l, Entry::transfer(8, 3, 2, 5, usd()).correcting(4));
    // A second correction of the same entry needs explicit permission.
    let e = expect(
        &mut l,
        Entry::transfer(9, 3, 2, 5, usd()).correcting(4),
        ErrorCode::AlreadyCorrected,
    );
    assert_eq!(e.subject, 4);
    ok(
        &mut l,
        Entry::transfer(10, 3, 2, 5, usd())
            .correcting(4)
            .allowing_repeat_correction(),
    );
}

#[test]
fn liens() {
    let mut l = ledger();
    expect(
        &mut l,
        lien(1, 2, 10_001, None),
        ErrorCode::InsufficientFunds,
    );
    ok(&mut l, lien(2, 2, 6_000, Some(1_000)));
    assert_eq!(l.account(2).unwrap().available(), 4_000);
    // The reservation is respected by entries.
    expect(
        &mut l,
        Entry::transfer(3, 2, 3, 4_001, usd()),
        ErrorCode::InsufficientFunds,
    );
    expect(
        &mut l,
        capture(2, 2, 4, 3, 6_001),
        ErrorCode::CaptureExceedsLien,
    );
    expect(&mut l, capture(2, 3, 40, 3, 10), ErrorCode::LienNotFound);
    expect(&mut l, capture(77, 2, 41, 3, 10), ErrorCode::LienNotFound);
    ok(&mut l, capture(2, 2, 5, 3, 2_000));
    let lien_2 = l.lien(2).unwrap();
    assert_eq!(
        (lien_2.status, lien_2.captured),
        (LienStatus::Captured, 2_000)
    );
    assert_eq!(l.account(2).unwrap().account.reserved, 0);
    assert_eq!(l.account(2).unwrap().balance(), 8_000);
    expect(&mut l, capture(2, 2, 6, 3, 1), ErrorCode::LienNotActive);
    expect(
        &mut l,
        ReleaseLien {
            lien: 2,
            account: 2,
        },
        ErrorCode::LienNotActive,
    );
    // Expiry: deadline 1,000 ns after creation; a later command passes it.
    ok(&mut l, lien(7, 3, 500, Some(1_000)));
    let created = l.lien(7).unwrap().created_ts;
    let o = l.execute(&capture(7, 3, 8, 2, 500).into(), created + 1_000);
    assert_eq!(o.code(), Some(ErrorCode::LienExpired));
    saw(ErrorCode::LienExpired);
    assert_eq!(l.lien(7).unwrap().status, LienStatus::Expired);
    assert_eq!(l.account(3).unwrap().account.reserved, 0);
    expect(
        &mut l,
        ReleaseLien {
            lien: 7,
            account: 3,
        },
        ErrorCode::LienExpired,
    );
    // Release is idempotent.
    ok(&mut l, lien(9, 3, 10, None));
    ok(
        &mut l,
        ReleaseLien {
            lien: 9,
            account: 3,
        },
    );
    ok(
        &mut l,
        ReleaseLien {
            lien: 9,
            account: 3,
        },
    );
    expect(
        &mut l,
        lien(9, 3, 11, None),
        ErrorCode::IdReusedWithDifferentContent,
    );
}

#[test]
fn chains() {
    let mut l = ledger();
    ok(&mut l, Entry::transfer(1, 2, 3, 5, usd()));
    let failing = Chain {
        id: 50,
        ops: vec![
            Operation::Entry(Box::new(Entry::transfer(2, 2, 3, 5, usd()))),
            Operation::Entry(Box::new(Entry::transfer(3, 2, 3, 50_000, usd()))),
            Operation::Entry(Box::new(Entry::transfer(4, 3, 2, 5, usd()))),
        ],
    };
    let e = expect(&mut l, failing, ErrorCode::InsufficientFunds);
    assert_eq!(e.op, Some(1));
    saw(ErrorCode::LinkedOperationFailed);
    assert_eq!(
        l.status(IdSpace::Entry, 2),
        IdStatus::Rejected {
            seq: l.sequencer().next_seq() - 1,
            code: ErrorCode::LinkedOperationFailed
        }
    );
    assert!(matches!(
        l.status(IdSpace::Entry, 3),
        IdStatus::Rejected {
            code: ErrorCode::InsufficientFunds,
            ..
        }
    ));
    let reused = Chain {
        id: 51,
        ops: vec![Operation::Entry(Box::new(Entry::transfer(
            1,
            2,
            3,
            5,
            usd(),
        )))],
    };
    let e = expect(&mut l, reused, ErrorCode::IdAlreadyUsed);
    assert_eq!((e.op, e.subject), (Some(0), 1));
    // Each operation sees the ones before it: lien then capture in one chain.
    let ok_chain = Chain {
        id: 52,
        ops: vec![
            Operation::CreateLien(lien(60, 2, 100, None)),
            Operation::CaptureLien(Box::new(capture(60, 2, 61, 3, 40))),
            Operation::Entry(Box::new(
                Entry::transfer(62, 3, 2, 40, usd()).correcting(61),
            )),
        ],
    };
    ok(&mut l, ok_chain);
}

struct Never;
impl Journal for Never {
    fn append(&self, _: std::sync::Arc<Batch>) {}
}

#[test]
fn runtime_refusals() {
    saw(Runtime::start(RuntimeConfig {
        shards: 0,
        ..RuntimeConfig::default()
    })
    .err()
    .unwrap()
    .code);
    assert!(SEEN
        .lock()
        .unwrap()
        .contains(&(ErrorCode::InvalidCommand as u16)));
    let config = RuntimeConfig {
        max_inflight: 2,
        journal: Some(std::sync::Arc::new(Never)),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(config).unwrap();
    let too_many = vec![Command::Tick; MAX_BATCH_COMMANDS + 1];
    saw(rt.try_submit(too_many).err().unwrap().code);
    // Never durable: two commands stay in flight, the third is refused.
    let held = rt.try_submit(vec![Command::Tick, Command::Tick]).unwrap();
    let busy = rt.try_submit(vec![Command::Tick]).err().unwrap();
    assert_eq!(busy.code, ErrorCode::Busy);
    saw(busy.code);
    assert!(!held.is_done());
    rt.stop_accepting();
    saw(rt.try_submit(vec![Command::Tick]).err().unwrap().code);
    held.batch().mark_durable();
    assert_eq!(held.wait().len(), 2);
}

#[test]
fn events() {
    use tally_engine::event::{
        run_ledger, EventCommand as E, EventConfig, NewEvent, Registry, Step,
    };
    let mut l = ledger();
    let registry = Registry::with_builtins();
    let config = EventConfig::default();
    let step = |name: &str, kind: &str, payload: &str| Step {
        name: name.into(),
        description: "".into(),
        kind: kind.into(),
        order: 1,
        payload: payload.into(),
    };
    let bad = step("s", "wallet.transfer", r#"{"amount": "1"}"#);
    saw(registry.validate_step(&bad).unwrap_err().code);
    saw(registry
        .validate_step(&step("s", "no.such", "{}"))
        .unwrap_err()
        .code);
    expect(
        &mut l,
        Command::Event(E::Start { event: 77 }),
        ErrorCode::EventNotFound,
    );
    ok(
        &mut l,
        Command::Event(E::Create(NewEvent::new(70, "empty"))),
    );
    expect(
        &mut l,
        Command::Event(E::Start { event: 70 }),
        ErrorCode::EventHasNoSteps,
    );
    for i in 0..MAX_EVENT_STEPS {
        let s = step(&format!("s{i}"), "wallet.transfer", "{}");
        ok(&mut l, Command::Event(E::AddStep { event: 70, step: s }));
    }
    let s = step("one too many", "wallet.transfer", "{}");
    expect(
        &mut l,
        Command::Event(E::AddStep { event: 70, step: s }),
        ErrorCode::TooManySteps,
    );
    let record = E::Record {
        event: 70,
        fact: tally_engine::event::Fact::Concluded,
    };
    expect(&mut l, Command::Event(record), ErrorCode::InvalidEventState);
    // A withdrawal failed by the client, one timed out, and one with no
    // settlement account configured: each failure code is recorded.
    let wd =
        r#"{"account_id": "2", "amount": "1.00", "currency": "USD", "settlement_account_id": "1"}"#;
    for (id, timeout) in [(71u128, None), (72, Some(1_000u64))] {
        let mut spec = NewEvent::new(id, "withdraw");
        spec.timeout_ns = timeout;
        ok(&mut l, Command::Event(E::Create(spec)));
        ok(
            &mut l,
            Command::Event(E::AddStep {
                event: id,
                step: step("w", "wallet.withdrawal", wd),
            }),
        );
        ok(&mut l, Command::Event(E::Start { event: id }));
    }
    run_ledger(&mut l, &registry, &config, 0);
    expect(
        &mut l,
        Command::Event(E::Confirm {
            event: 71,
            step: "x".into(),
            amount: None,
        }),
        ErrorCode::StepNotFound,
    );
    ok(
        &mut l,
        Command::Event(E::Fail {
            event: 71,
            step: "w".into(),
            reason: "".into(),
        }),
    );
    let now = l.now() + 10_000;
    run_ledger(&mut l, &registry, &config, now);
    ok(
        &mut l,
        Command::Event(E::Create(NewEvent::new(73, "deposit"))),
    );
    let dep = r#"{"account_id": "2", "amount": "1.00", "currency": "USD"}"#;
    ok(
        &mut l,
        Command::Event(E::AddStep {
            event: 73,
            step: step("d", "wallet.deposit", dep),
        }),
    );
    ok(&mut l, Command::Event(E::Start { event: 73 }));
    run_ledger(&mut l, &registry, &config, now);
    for id in [71, 72, 73] {
        let e = l.event(id).unwrap();
        assert!(e.state.is_terminal(), "{id}: {:?}", e.state);
        let code = ErrorCode::from_u16(e.failure.unwrap().code).unwrap();
        saw(code);
    }
}

#[test]
fn clients_may_not_use_the_event_drivers_ids() {
    let derived =
        tally_engine::event::ids::derive(9, tally_engine::event::ids::Purpose::StepOp, 0, 0, 0);
    let cases: Vec<Command> = vec![
        Entry::transfer(derived, 2, 3, 5, usd()).into(),
        Entry::transfer(1, 2, 3, 5, usd())
            .correcting(derived)
            .into(),
        Chain {
            id: derived,
            ops: vec![Operation::Entry(Box::new(Entry::transfer(
                1,
                2,
                3,
                5,
                usd(),
            )))],
        }
        .into(),
        Chain {
            id: 1,
            ops: vec![Operation::ReleaseLien(ReleaseLien {
                lien: derived,
                account: 2,
            })],
        }
        .into(),
    ];
    for c in cases {
        let e = c.validate_client().unwrap_err();
        assert_eq!(e.code, ErrorCode::ReservedId, "{c:?}");
        assert_eq!(e.subject, derived);
        // The driver itself may post them (validate is what the ledger runs).
        assert_ne!(
            c.validate().err().map(|e| e.code),
            Some(ErrorCode::ReservedId)
        );
        saw(ErrorCode::ReservedId);
    }
    assert!(Command::from(Entry::transfer(1, 2, 3, 5, usd()))
        .validate_client()
        .is_ok());
}

#[test]
fn every_code_is_covered() {
    // Runs every scenario itself, so it holds however tests are scheduled.
    malformed_input_is_refused_before_sequencing();
    accounts_and_currencies();
    entries();
    liens();
    chains();
    runtime_refusals();
    events();
    clients_may_not_use_the_event_drivers_ids();
    let seen = SEEN.lock().unwrap().clone();
    // Codes from 202 on belong to the network layer; tally-net's tests cover them.
    let missing: Vec<_> = ErrorCode::ALL
        .iter()
        .filter(|c| (**c as u16) < 202 && !seen.contains(&(**c as u16)))
        .collect();
    assert!(missing.is_empty(), "codes without a test: {missing:?}");
}
