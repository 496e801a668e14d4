//! Chained transaction events on the deterministic ledger: each executor's
//! happy path and errors, failure at every step with compensation, timeouts,
//! idempotency, snapshots, and a property test against a reference model.

use proptest::prelude::*;
use serde_json::{json, Value};
use tally_engine::event::StepStatus;
use tally_engine::event::{
    run_ledger, EventCommand, EventConfig, EventState, Executor, NewEvent, Plan, Registry,
    StepContext,
};
use tally_engine::{
    BalancePolicy, Command, Currency, CurrencyCode, Entry, ErrorCode, Ledger, LienStatus,
    NewAccount, Operation,
};

const SETTLE_USD: u128 = 9000;
const SETTLE_EUR: u128 = 9001;
const FX_USD: u128 = 9100;
const FX_EUR: u128 = 9101;
const FEES: u128 = 9200;
const FEES_EUR: u128 = 9201;
const MS: u64 = 1_000_000;

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

struct World {
    ledger: Ledger,
    registry: Registry,
    config: EventConfig,
    now: u64,
}

impl World {
    fn new(shards: usize) -> World {
        let mut w = World {
            ledger: Ledger::new(shards),
            registry: Registry::with_builtins(),
            config: EventConfig::default(),
            now: 1_000 * MS,
        };
        w.config.settlement.insert("USD".into(), SETTLE_USD);
        w.config.settlement.insert("EUR".into(), SETTLE_EUR);
        w.config.fx_position.insert("USD".into(), FX_USD);
        w.config.fx_position.insert("EUR".into(), FX_EUR);
        for (c, s) in [("USD", 2), ("EUR", 2)] {
            assert!(w
                .exec(Command::CreateCurrency(Currency::new(c, s).unwrap()))
                .is_ok());
        }
        for (id, c) in [
            (SETTLE_USD, "USD"),
            (SETTLE_EUR, "EUR"),
            (FX_USD, "USD"),
            (FX_EUR, "EUR"),
            (FEES, "USD"),
            (FEES_EUR, "EUR"),
        ] {
            w.account(id, c, BalancePolicy::Unrestricted);
        }
        w
    }

    fn exec(&mut self, c: Command) -> tally_engine::Outcome {
        self.now += 1_000;
        self.ledger.execute(&c, self.now)
    }

    fn account(&mut self, id: u128, c: &str, policy: BalancePolicy) {
        let o = self.exec(Command::CreateAccount(NewAccount {
            id,
            currency: CurrencyCode::parse(c).unwrap(),
            policy,
            user_data: 0,
        }));
        assert!(o.is_ok(), "{o:?}");
    }

    fn wallet(&mut self, id: u128, c: &str, funds: u128) {
        self.account(id, c, BalancePolicy::NoOverdraft);
        if funds > 0 {
            let src = if c == "USD" { SETTLE_USD } else { SETTLE_EUR };
            let o = self.exec(
                Entry::transfer(
                    id * 1_000_003,
                    src,
                    id,
                    funds,
                    CurrencyCode::parse(c).unwrap(),
                )
                .into(),
            );
            assert!(o.is_ok(), "{o:?}");
        }
    }

    fn balance(&mut self, id: u128) -> i128 {
        self.ledger.account(id).unwrap().balance()
    }

    fn available(&mut self, id: u128) -> i128 {
        self.ledger.account(id).unwrap().available()
    }

    fn event(
        &mut self,
        id: u128,
        retries: u8,
        timeout_ms: Option<u64>,
        steps: &[(&str, &str, u32, Value)],
    ) {
        let mut spec = NewEvent::new(id, "test");
        spec.retries = retries;
        spec.timeout_ns = timeout_ms.map(|t| t * MS);
        spec.retry_delay_ns = MS;
        assert!(self
            .exec(Command::Event(EventCommand::Create(spec)))
            .is_ok());
        for (name, kind, order, payload) in steps {
            let step = tally_engine::event::Step {
                name: (*name).into(),
                description: "".into(),
                kind: (*kind).into(),
                order: *order,
                payload: payload.to_string().into(),
            };
            self.registry.validate_step(&step).unwrap_or_else(|e| {
                if self.registry.get(kind).is_some() {
                    panic!("{name}: {e}")
                }
            });
            let o = self.exec(Command::Event(EventCommand::AddStep { event: id, step }));
            assert!(o.is_ok(), "{o:?}");
        }
    }

    fn start(&mut self, id: u128) -> tally_engine::Outcome {
        self.exec(Command::Event(EventCommand::Start { event: id }))
    }

    fn run(&mut self) -> usize {
        self.now += 1_000;
        run_ledger(&mut self.ledger, &self.registry, &self.config, self.now)
    }

    fn state(&self, id: u128) -> EventState {
        self.ledger.event(id).unwrap().state
    }

    fn conserved(&self) {
        for (c, sum) in self.ledger.balance_sums() {
            assert_eq!(sum, 0, "{c} not conserved");
        }
        for s in self.ledger.shards() {
            assert!(
                s.check_invariants().is_empty(),
                "{:?}",
                s.check_invariants()
            );
            for e in s.events().iter() {
                assert!(e.check().is_empty(), "{:?}", e.check());
            }
        }
    }

    fn active_liens_of(&self, event: u128) -> usize {
        self.ledger
            .shards()
            .iter()
            .flat_map(|s| s.liens())
            .filter(|l| l.owner == event && l.status == LienStatus::Active)
            .count()
    }
}

fn transfer(from: u128, to: u128, amount: &str) -> Value {
    json!({"source_account_id": from.to_string(), "destination_account_id": to.to_string(),
           "amount": amount, "currency": "USD", "reference": "t"})
}

#[test]
fn transfer_deposit_and_a_three_step_event_complete() {
    let mut w = World::new(4);
    w.wallet(1, "USD", 0);
    w.wallet(2, "USD", 0);
    w.event(
        10,
        0,
        None,
        &[
            (
                "deposit",
                "wallet.deposit",
                1,
                json!({"account_id": "1", "amount": "100.00", "currency": "USD"}),
            ),
            ("pay", "wallet.transfer", 2, transfer(1, 2, "40.00")),
            ("fee", "wallet.transfer", 2, transfer(1, FEES, "0.50")),
        ],
    );
    assert!(w.start(10).is_ok());
    assert!(w.run() >= 3);
    assert_eq!(w.state(10), EventState::Completed);
    assert_eq!(w.balance(1), 5950);
    assert_eq!(w.balance(2), 4000);
    assert_eq!(w.balance(FEES), 50);
    let e = w.ledger.event(10).unwrap();
    let r: Value = serde_json::from_str(&e.steps[1].result).unwrap();
    assert!(r["entry_id"].is_string(), "{r}");
    w.conserved();
    // Starting again is harmless; adding a step after start is refused.
    assert!(matches!(
        w.start(10),
        tally_engine::Outcome::Duplicate { .. }
    ));
    let o = w.exec(Command::Event(EventCommand::AddStep {
        event: 10,
        step: tally_engine::event::Step {
            name: "late".into(),
            description: "".into(),
            kind: "wallet.transfer".into(),
            order: 9,
            payload: transfer(1, 2, "1").to_string().into(),
        },
    }));
    assert_eq!(o.code(), Some(ErrorCode::InvalidEventState));
}

#[test]
fn create_and_add_are_idempotent_and_conflicts_are_refused() {
    let mut w = World::new(2);
    w.event(
        20,
        0,
        None,
        &[("a", "wallet.transfer", 1, transfer(1, 2, "1"))],
    );
    let spec = NewEvent::new(20, "test");
    let mut same = spec.clone();
    same.retry_delay_ns = MS;
    assert!(matches!(
        w.exec(Command::Event(EventCommand::Create(same))),
        tally_engine::Outcome::Duplicate { code: None, .. }
    ));
    let mut other = spec;
    other.name = "other".into();
    assert_eq!(
        w.exec(Command::Event(EventCommand::Create(other))).code(),
        Some(ErrorCode::IdReusedWithDifferentContent)
    );
    let step = |amount: &str| tally_engine::event::Step {
        name: "a".into(),
        description: "".into(),
        kind: "wallet.transfer".into(),
        order: 1,
        payload: transfer(1, 2, amount).to_string().into(),
    };
    assert!(matches!(
        w.exec(Command::Event(EventCommand::AddStep {
            event: 20,
            step: step("1")
        })),
        tally_engine::Outcome::Duplicate { .. }
    ));
    assert_eq!(
        w.exec(Command::Event(EventCommand::AddStep {
            event: 20,
            step: step("2")
        }))
        .code(),
        Some(ErrorCode::IdReusedWithDifferentContent)
    );
    assert_eq!(w.start(21).code(), Some(ErrorCode::EventNotFound));
    assert!(w
        .exec(Command::Event(EventCommand::Create(NewEvent::new(
            22, "empty"
        ))))
        .is_ok());
    assert_eq!(w.start(22).code(), Some(ErrorCode::EventHasNoSteps));
    // Clients cannot skip the driver's checks: a fact that does not fit is refused.
    let o = w.exec(Command::Event(EventCommand::Record {
        event: 20,
        fact: tally_engine::event::Fact::Concluded,
    }));
    assert_eq!(o.code(), Some(ErrorCode::InvalidEventState));
}

#[test]
fn executor_payload_errors_are_clear() {
    let r = Registry::with_builtins();
    let check = |kind: &str, payload: Value, code: ErrorCode, needle: &str| {
        let step = tally_engine::event::Step {
            name: "s".into(),
            description: "".into(),
            kind: kind.into(),
            order: 1,
            payload: payload.to_string().into(),
        };
        let e = r.validate_step(&step).expect_err(kind);
        assert_eq!(e.code, code, "{kind}: {e}");
        assert!(e.to_string().contains(needle), "{kind}: {e} lacks {needle}");
    };
    check(
        "wallet.transfer",
        json!({"source_account_id": "1", "amount": "1", "currency": "USD"}),
        ErrorCode::InvalidPayload,
        "destination_account_id",
    );
    check(
        "wallet.transfer",
        json!({"source_account_id": "1", "destination_account_id": "1", "amount": "1", "currency": "USD"}),
        ErrorCode::InvalidPayload,
        "must differ",
    );
    check(
        "wallet.transfer",
        json!({"source_account_id": "1", "destination_account_id": "2", "amount": "-1", "currency": "USD"}),
        ErrorCode::InvalidPayload,
        "amount",
    );
    check(
        "wallet.transfer",
        json!({"source_account_id": "1", "destination_account_id": "2", "amount": "1", "currency": "USD", "ammount": 1}),
        ErrorCode::InvalidPayload,
        "unknown field `ammount`",
    );
    check(
        "wallet.deposit",
        json!({"amount": "1", "currency": "USD"}),
        ErrorCode::InvalidPayload,
        "account_id",
    );
    check(
        "wallet.deposit",
        json!({"account_id": "1", "amount": "1", "currency": "usd"}),
        ErrorCode::InvalidPayload,
        "currency",
    );
    check(
        "wallet.withdrawal",
        json!([1, 2]),
        ErrorCode::InvalidPayload,
        "JSON object",
    );
    check(
        "wallet.withdrawal",
        json!({"account_id": "1", "amount": "abc", "currency": "USD"}),
        ErrorCode::InvalidPayload,
        "amount",
    );
    check(
        "wallet.exchange",
        json!({"source_account_id": "1", "source_currency": "USD", "source_amount": "1", "destination_account_id": "2", "destination_currency": "USD", "exchange_rate": "1"}),
        ErrorCode::InvalidPayload,
        "must differ",
    );
    check(
        "wallet.exchange",
        json!({"source_account_id": "1", "source_currency": "USD", "source_amount": "1", "destination_account_id": "2", "destination_currency": "EUR", "exchange_rate": "0"}),
        ErrorCode::InvalidPayload,
        "greater than zero",
    );
    check(
        "wallet.exchange",
        json!({"source_account_id": "1", "source_currency": "USD", "source_amount": "1", "destination_account_id": "2", "destination_currency": "EUR", "exchange_rate": "0.9", "fee_amount": "1"}),
        ErrorCode::InvalidPayload,
        "go together",
    );
    check(
        "batch.operation",
        json!({"batch_id": "b", "transactions": []}),
        ErrorCode::InvalidPayload,
        "empty",
    );
    check(
        "batch.operation",
        json!({"batch_id": "b", "transactions": [{"id": "x", "type": "wallet.withdrawal", "payload": {}}]}),
        ErrorCode::InvalidPayload,
        "cannot be part of a batch",
    );
    check(
        "batch.operation",
        json!({"batch_id": "b", "transactions": [{"id": "x", "type": "wallet.transfer", "payload": transfer(1, 2, "1")}, {"id": "x", "type": "wallet.transfer", "payload": transfer(1, 2, "1")}]}),
        ErrorCode::InvalidPayload,
        "appears twice",
    );
    check(
        "batch.operation",
        json!({"batch_id": "b", "transactions": [{"id": "x", "type": "wallet.transfer", "payload": {"amount": "1"}}]}),
        ErrorCode::InvalidPayload,
        "item 0 (id x)",
    );
    check("no.such", json!({}), ErrorCode::UnknownStepType, "no.such");
}

#[test]
fn execution_errors_fail_the_event_with_their_code() {
    let mut w = World::new(2);
    w.wallet(1, "USD", 1000);
    // Unknown currency at execution time; missing settlement account; an
    // unknown account; an unknown step type (registered nowhere).
    let cases: Vec<(u128, &str, Value, ErrorCode)> = vec![
        (
            30,
            "wallet.transfer",
            json!({"source_account_id": "1", "destination_account_id": "2", "amount": "1", "currency": "GBP"}),
            ErrorCode::CurrencyNotFound,
        ),
        (
            31,
            "wallet.deposit",
            json!({"account_id": "1", "amount": "1", "currency": "EUR", "settlement_account_id": null}),
            ErrorCode::CurrencyMismatch,
        ),
        (
            32,
            "wallet.transfer",
            transfer(1, 77, "1"),
            ErrorCode::AccountNotFound,
        ),
        (33, "custom.gone", json!({}), ErrorCode::UnknownStepType),
        (
            34,
            "wallet.transfer",
            transfer(1, 2, "1.001"),
            ErrorCode::InvalidPayload,
        ),
    ];
    w.wallet(2, "USD", 0);
    for (id, kind, payload, code) in cases {
        w.event(id, 2, None, &[("s", kind, 1, payload)]);
        assert!(w.start(id).is_ok());
        w.run();
        let e = w.ledger.event(id).unwrap();
        assert_eq!(e.state, EventState::Compensated, "{id}");
        assert_eq!(
            e.failure.as_ref().unwrap().code,
            code as u16,
            "{id}: {:?}",
            e.failure
        );
        assert_eq!(e.steps[0].status, StepStatus::Failed);
    }
    // Not configured: a deposit in a currency without a settlement account.
    w.config.settlement.remove("EUR");
    w.wallet(3, "EUR", 0);
    w.event(
        35,
        0,
        None,
        &[(
            "s",
            "wallet.deposit",
            1,
            json!({"account_id": "3", "amount": "1", "currency": "EUR"}),
        )],
    );
    assert!(w.start(35).is_ok());
    w.run();
    assert_eq!(
        w.ledger.event(35).unwrap().failure.unwrap().code,
        ErrorCode::NotConfigured as u16
    );
    assert_eq!(w.balance(1), 1000);
    w.conserved();
}

#[test]
fn retryable_errors_are_retried_then_succeed_or_compensate() {
    let mut w = World::new(2);
    w.wallet(1, "USD", 100);
    w.wallet(2, "USD", 0);
    w.event(
        40,
        3,
        None,
        &[("pay", "wallet.transfer", 1, transfer(1, 2, "5.00"))],
    );
    assert!(w.start(40).is_ok());
    w.run();
    let e = w.ledger.event(40).unwrap();
    assert_eq!(
        (e.state, e.attempt),
        (EventState::Running, 1),
        "insufficient funds is retried"
    );
    // Funds arrive before the retry: it succeeds.
    assert!(w
        .exec(Entry::transfer(41, SETTLE_USD, 1, 1000, usd()).into())
        .is_ok());
    w.now += 10 * MS;
    w.run();
    assert_eq!(w.state(40), EventState::Completed);
    assert_eq!(w.balance(2), 500);
    // Without funds, retries run out and the event compensates.
    w.event(
        42,
        2,
        None,
        &[("pay", "wallet.transfer", 1, transfer(1, 2, "500.00"))],
    );
    assert!(w.start(42).is_ok());
    for _ in 0..4 {
        w.now += 100 * MS;
        w.run();
    }
    let e = w.ledger.event(42).unwrap();
    assert_eq!(e.state, EventState::Compensated);
    assert_eq!(e.failure.unwrap().code, ErrorCode::InsufficientFunds as u16);
    w.conserved();
}

#[test]
fn withdrawal_confirmed_in_part_failed_or_timed_out() {
    let mut w = World::new(4);
    w.wallet(1, "USD", 10_000);
    let wd = |amount: &str| json!({"account_id": "1", "amount": amount, "currency": "USD", "reference": "wd"});
    // Confirmed in part: 30.00 reserved, 25.00 captured, the rest released.
    w.event(
        50,
        0,
        Some(60_000),
        &[("withdraw", "wallet.withdrawal", 1, wd("30.00"))],
    );
    assert!(w.start(50).is_ok());
    w.run();
    let e = w.ledger.event(50).unwrap();
    assert_eq!(e.state, EventState::Running);
    assert_eq!(e.steps[0].status, StepStatus::Awaiting);
    assert_eq!(w.available(1), 7000, "the lien holds 30.00");
    assert_eq!(w.active_liens_of(50), 1);
    let confirm = Command::Event(EventCommand::Confirm {
        event: 50,
        step: "withdraw".into(),
        amount: Some(2500),
    });
    assert!(w.exec(confirm.clone()).is_ok());
    assert!(
        matches!(w.exec(confirm), tally_engine::Outcome::Duplicate { .. }),
        "confirming twice is harmless"
    );
    w.run();
    assert_eq!(w.state(50), EventState::Completed);
    assert_eq!((w.balance(1), w.available(1)), (7500, 7500));
    assert_eq!(w.active_liens_of(50), 0);

    // Failed by the client: the lien is released, nothing moves.
    w.event(
        51,
        0,
        None,
        &[("withdraw", "wallet.withdrawal", 1, wd("10.00"))],
    );
    assert!(w.start(51).is_ok());
    w.run();
    assert_eq!(w.available(1), 6500);
    let fail = Command::Event(EventCommand::Fail {
        event: 51,
        step: "withdraw".into(),
        reason: "bank declined".into(),
    });
    assert!(w.exec(fail.clone()).is_ok());
    assert!(matches!(
        w.exec(fail),
        tally_engine::Outcome::Duplicate { .. }
    ));
    w.run();
    let e = w.ledger.event(51).unwrap();
    assert_eq!(e.state, EventState::Compensated);
    assert_eq!(&*e.failure.unwrap().message, "bank declined");
    assert_eq!((w.balance(1), w.available(1)), (7500, 7500));
    assert_eq!(w.active_liens_of(51), 0);
    // Confirming a step that is not awaiting is refused with a clear code.
    let o = w.exec(Command::Event(EventCommand::Confirm {
        event: 51,
        step: "withdraw".into(),
        amount: None,
    }));
    assert_eq!(o.code(), Some(ErrorCode::InvalidEventState));
    let o = w.exec(Command::Event(EventCommand::Confirm {
        event: 51,
        step: "nope".into(),
        amount: None,
    }));
    assert_eq!(o.code(), Some(ErrorCode::StepNotFound));

    // Timed out (in log time): the lien is released, the event says so.
    w.event(
        52,
        0,
        Some(50),
        &[("withdraw", "wallet.withdrawal", 1, wd("20.00"))],
    );
    assert!(w.start(52).is_ok());
    w.run();
    assert_eq!(w.available(1), 5500);
    w.now += 49 * MS;
    w.run();
    assert_eq!(w.state(52), EventState::Running, "not yet");
    w.now += 2 * MS;
    w.run();
    let e = w.ledger.event(52).unwrap();
    assert_eq!(e.state, EventState::TimedOut);
    assert_eq!(e.failure.unwrap().code, ErrorCode::EventTimedOut as u16);
    assert_eq!((w.balance(1), w.available(1)), (7500, 7500));
    assert_eq!(w.active_liens_of(52), 0);
    w.conserved();
}

#[test]
fn exchange_with_fee_rounds_toward_zero_and_conserves_each_currency() {
    let mut w = World::new(4);
    w.wallet(1, "USD", 10_000);
    w.wallet(2, "EUR", 0);
    let ex = json!({
        "source_account_id": "1", "source_currency": "USD", "source_amount": "10.00",
        "destination_account_id": "2", "destination_currency": "EUR", "exchange_rate": "0.923456",
        "fee_account_id": FEES.to_string(), "fee_amount": "0.25", "fee_currency": "USD", "reference": "fx"
    });
    w.event(60, 0, None, &[("fx", "wallet.exchange", 1, ex.clone())]);
    assert!(w.start(60).is_ok());
    w.run();
    assert_eq!(w.state(60), EventState::Completed);
    assert_eq!(w.balance(1), 10_000 - 1000 - 25);
    assert_eq!(w.balance(2), 923);
    assert_eq!(w.balance(FEES), 25);
    assert_eq!(w.balance(FX_USD), 1000);
    assert_eq!(w.balance(FX_EUR), -923);
    let e = w.ledger.event(60).unwrap();
    assert_eq!(e.steps[0].ops.len(), 1, "one multi-currency entry");
    let r: Value = serde_json::from_str(&e.steps[0].result).unwrap();
    assert_eq!(r["destination_amount"], "9.23");
    assert_eq!(r["remainder"], "0.00456");
    assert_eq!(r["rounding"], "toward_zero");

    // Fee in the destination currency, held with a lien until confirmed.
    let mut held = ex.clone();
    held["fee_currency"] = json!("EUR");
    held["fee_account_id"] = json!(FEES_EUR.to_string());
    held["fee_amount"] = json!("0.23");
    held["hold"] = json!(true);
    w.event(61, 0, None, &[("fx", "wallet.exchange", 1, held)]);
    assert!(w.start(61).is_ok());
    w.run();
    assert_eq!(w.available(1), 8975 - 1000);
    assert!(w
        .exec(Command::Event(EventCommand::Confirm {
            event: 61,
            step: "fx".into(),
            amount: None
        }))
        .is_ok());
    w.run();
    assert_eq!(w.state(61), EventState::Completed);
    assert_eq!((w.balance(1), w.available(1)), (7975, 7975));
    assert_eq!(w.balance(2), 923 + 900);
    assert_eq!(w.balance(FEES_EUR), 23);
    assert_eq!(w.active_liens_of(61), 0);
    w.conserved();
}

#[test]
fn batch_operation_applies_all_items_or_none_and_names_the_failing_item() {
    let mut w = World::new(4);
    for a in 1..=10 {
        w.wallet(a, "USD", 1_000);
    }
    let items: Vec<Value> = (0..100)
        .map(|k| {
            let from = 1 + (k % 10) as u128;
            let to = 1 + ((k + 3) % 10) as u128;
            json!({"id": format!("t{k}"), "type": "wallet.transfer", "payload": transfer(from, to, "0.01")})
        })
        .collect();
    w.event(
        70,
        0,
        None,
        &[(
            "batch",
            "batch.operation",
            1,
            json!({"batch_id": "b1", "transactions": items}),
        )],
    );
    assert!(w.start(70).is_ok());
    w.run();
    assert_eq!(w.state(70), EventState::Completed);
    let e = w.ledger.event(70).unwrap();
    let r: Value = serde_json::from_str(&e.steps[0].result).unwrap();
    assert_eq!(
        (r["items"].as_u64(), r["applied"].as_u64()),
        (Some(100), Some(100))
    );
    assert_eq!(r["results"][99]["status"], "applied");
    assert_eq!(e.steps[0].ops.len(), 100);
    // One item overdraws: nothing of the batch applies, the failure names it.
    let before: Vec<i128> = (1..=10).map(|a| w.balance(a)).collect();
    let mut items: Vec<Value> = (0..5)
        .map(|k| json!({"id": format!("u{k}"), "type": "wallet.transfer", "payload": transfer(1, 2, "1.00")}))
        .collect();
    items
        .push(json!({"id": "big", "type": "wallet.transfer", "payload": transfer(3, 4, "999.00")}));
    w.event(
        71,
        0,
        None,
        &[(
            "batch",
            "batch.operation",
            1,
            json!({"batch_id": "b2", "transactions": items}),
        )],
    );
    assert!(w.start(71).is_ok());
    w.run();
    let e = w.ledger.event(71).unwrap();
    assert_eq!(e.state, EventState::Compensated);
    let f = e.failure.unwrap();
    assert_eq!(f.code, ErrorCode::InsufficientFunds as u16);
    assert!(f.message.contains("item 5 (id big)"), "{}", f.message);
    let after: Vec<i128> = (1..=10).map(|a| w.balance(a)).collect();
    assert_eq!(before, after);
    w.conserved();
}

/// Fails its `k`-th use: a custom executor (as a user would write one).
struct FailOn {
    fail: bool,
}

impl Executor for FailOn {
    fn validate(&self, _: &Value) -> Result<(), tally_engine::Error> {
        Ok(())
    }
    fn execute(
        &self,
        cx: &mut StepContext<'_>,
        payload: &Value,
    ) -> Result<Plan, tally_engine::Error> {
        if self.fail {
            return Err(
                tally_engine::Error::new(ErrorCode::AccountFrozen).with_text("planted failure")
            );
        }
        let from: u128 = payload["from"].as_str().unwrap().parse().unwrap();
        let to: u128 = payload["to"].as_str().unwrap().parse().unwrap();
        let id = cx.new_id();
        Ok(Plan {
            ops: vec![Operation::Entry(Box::new(Entry::transfer(
                id,
                from,
                to,
                100,
                usd(),
            )))],
            result: json!({"entry_id": id.to_string()}),
            awaiting: false,
        })
    }
}

#[test]
fn failing_at_step_k_compensates_exactly_the_completed_groups() {
    const STEPS: usize = 5;
    for k in 0..STEPS {
        let mut w = World::new(3);
        w.registry.register("test.move", FailOn { fail: false });
        w.registry.register("test.fail", FailOn { fail: true });
        for a in 1..=6 {
            w.wallet(a, "USD", 1_000);
        }
        w.wallet(7, "USD", 0);
        let before: Vec<i128> = (1..=7).map(|a| w.balance(a)).collect();
        let mut steps = Vec::new();
        let names: Vec<String> = (0..STEPS).map(|i| format!("s{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let kind = if i == k { "test.fail" } else { "test.move" };
            let payload = json!({"from": (i + 1).to_string(), "to": (i + 2).to_string()});
            steps.push((name.as_str(), kind, i as u32 + 1, payload));
        }
        // A withdrawal lien in the first group too: it must be released.
        steps.push((
            "hold",
            "wallet.withdrawal",
            1,
            json!({"account_id": "6", "amount": "1.00", "currency": "USD"}),
        ));
        w.event(100 + k as u128, 1, None, &steps);
        assert!(w.start(100 + k as u128).is_ok());
        // The lien makes group 1 wait: confirm it so the event goes on.
        w.run();
        if k > 0 {
            assert!(w
                .exec(Command::Event(EventCommand::Confirm {
                    event: 100 + k as u128,
                    step: "hold".into(),
                    amount: None
                }))
                .is_ok());
        }
        for _ in 0..5 {
            w.now += 100 * MS;
            w.run();
        }
        let e = w.ledger.event(100 + k as u128).unwrap();
        assert_eq!(e.state, EventState::Compensated, "k={k}");
        for (i, s) in e.steps.iter().take(STEPS).enumerate() {
            let want = if i < k {
                StepStatus::Compensated
            } else if i == k {
                StepStatus::Failed
            } else {
                StepStatus::Pending
            };
            assert_eq!(s.status, want, "k={k} step {i}");
            if i < k {
                assert_eq!(s.undo.len(), 1, "one reversal entry");
                let Operation::Entry(r) = &s.undo[0] else {
                    panic!()
                };
                let Operation::Entry(o) = &s.ops[0] else {
                    panic!()
                };
                assert_eq!(
                    r.corrects,
                    Some(o.id),
                    "the reversal points at what it reverses"
                );
            }
        }
        let after: Vec<i128> = (1..=7).map(|a| w.balance(a)).collect();
        assert_eq!(before, after, "k={k}: balances back where they were");
        assert_eq!(w.active_liens_of(100 + k as u128), 0);
        w.conserved();
    }
}

#[test]
fn events_survive_export_and_import_bit_for_bit() {
    let mut w = World::new(4);
    w.wallet(1, "USD", 10_000);
    w.event(
        80,
        0,
        Some(60_000),
        &[(
            "withdraw",
            "wallet.withdrawal",
            1,
            json!({"account_id": "1", "amount": "3.00", "currency": "USD"}),
        )],
    );
    assert!(w.start(80).is_ok());
    w.run();
    let image = w.ledger.export();
    assert_eq!(image.events.len(), 1);
    let digest = w.ledger.digest();
    for shards in [1, 3, 7] {
        let mut copy = Ledger::import(&image, shards).unwrap();
        assert_eq!(copy.digest(), digest);
        assert_eq!(copy.event(80), w.ledger.event(80));
        assert_eq!(copy.active_events(), vec![80]);
    }
}

// ---- property test against a reference model ------------------------------

#[derive(Clone, Debug)]
struct Spec {
    groups: Vec<Vec<(u8, u8, u16)>>, // per group: transfers (from, to, amount)
    retries: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(
            prop::collection::vec((0u8..6, 0u8..6, 1u16..400), 1..3),
            1..4,
        ),
        0u8..2,
    )
        .prop_map(|(groups, retries)| Spec { groups, retries })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Events run one after another against a model where an event moves
    /// money only if every group of it could apply in order (each transfer
    /// under no-overdraft), and otherwise moves nothing.
    #[test]
    fn events_match_the_reference_model(events in prop::collection::vec(spec(), 1..8), shards in 1usize..4) {
        let mut w = World::new(shards);
        let mut model = [0i128; 6];
        for (a, m) in model.iter_mut().enumerate() {
            w.wallet(a as u128 + 1, "USD", 500);
            *m = 500;
        }
        for (n, ev) in events.iter().enumerate() {
            let id = 1_000 + n as u128;
            let mut steps = Vec::new();
            let mut names = Vec::new();
            for (g, group) in ev.groups.iter().enumerate() {
                for (i, &(from, to, amount)) in group.iter().enumerate() {
                    if from == to { continue; }
                    names.push(format!("g{g}s{i}"));
                    steps.push((g as u32, json!({"source_account_id": (from as u128 + 1).to_string(), "destination_account_id": (to as u128 + 1).to_string(), "amount": format!("{}.{:02}", amount / 100, amount % 100), "currency": "USD"})));
                }
            }
            if steps.is_empty() { continue; }
            let st: Vec<(&str, &str, u32, Value)> = steps.iter().zip(&names).map(|((g, p), name)| (name.as_str(), "wallet.transfer", *g, p.clone())).collect();
            w.event(id, ev.retries, None, &st);
            prop_assert!(w.start(id).is_ok());
            for _ in 0..3 { w.now += 100 * MS; w.run(); }
            // The model.
            let mut trial = model;
            let mut ok = true;
            for group in &ev.groups {
                for &(from, to, amount) in group {
                    if from == to { continue; }
                    trial[from as usize] -= amount as i128;
                    trial[to as usize] += amount as i128;
                    if trial[from as usize] < 0 { ok = false; }
                }
                if !ok { break; }
            }
            let state = w.state(id);
            if ok {
                prop_assert_eq!(state, EventState::Completed);
                model = trial;
            } else {
                prop_assert_eq!(state, EventState::Compensated);
            }
            for (a, m) in model.iter().enumerate() {
                prop_assert_eq!(w.balance(a as u128 + 1), *m, "account {} after event {}", a + 1, n);
            }
        }
        w.conserved();
    }

    /// Many events interleaved (started together, driven together), some
    /// failed by clients midway: every one ends terminal, money is conserved,
    /// no event lien stays active, and no wallet is overdrawn.
    #[test]
    fn interleaved_events_end_terminal_and_conserve(events in prop::collection::vec(spec(), 1..10), fail_mask in 0u16..1024) {
        let mut w = World::new(3);
        for a in 1..=6u128 { w.wallet(a, "USD", 300); }
        let mut ids = Vec::new();
        for (n, ev) in events.iter().enumerate() {
            let id = 2_000 + n as u128;
            let mut st = Vec::new();
            for (g, group) in ev.groups.iter().enumerate() {
                for (i, &(from, to, amount)) in group.iter().enumerate() {
                    if from == to { continue; }
                    st.push((format!("g{g}s{i}"), "wallet.transfer", g as u32 + 1, json!({"source_account_id": (from as u128 + 1).to_string(), "destination_account_id": (to as u128 + 1).to_string(), "amount": format!("{}.{:02}", amount / 100, amount % 100), "currency": "USD"})));
                }
            }
            st.push(("hold".into(), "wallet.withdrawal", 0, json!({"account_id": "1", "amount": "0.01", "currency": "USD"})));
            let st: Vec<(&str, &str, u32, Value)> = st.iter().map(|(a, b, c, d)| (a.as_str(), *b, *c, d.clone())).collect();
            w.event(id, ev.retries, Some(10_000), &st);
            prop_assert!(w.start(id).is_ok());
            ids.push(id);
        }
        w.run();
        for (n, id) in ids.iter().enumerate() {
            let cmd = if fail_mask & (1 << (n % 10)) != 0 {
                EventCommand::Fail { event: *id, step: "hold".into(), reason: "".into() }
            } else {
                EventCommand::Confirm { event: *id, step: "hold".into(), amount: None }
            };
            let _ = w.exec(Command::Event(cmd));
        }
        for _ in 0..6 { w.now += 200 * MS; w.run(); }
        w.now += 20_000 * MS;
        w.run();
        for id in &ids {
            let s = w.state(*id);
            prop_assert!(s.is_terminal(), "event {} is {:?}", id, s);
            prop_assert_eq!(w.active_liens_of(*id), 0);
        }
        for a in 1..=6u128 { prop_assert!(w.balance(a) >= 0); }
        w.conserved();
    }
}

/// Moves 1.00 and reports a large result (within the per-step limit).
struct Verbose;

impl Executor for Verbose {
    fn validate(&self, _: &Value) -> Result<(), tally_engine::Error> {
        Ok(())
    }
    fn execute(
        &self,
        cx: &mut StepContext<'_>,
        _payload: &Value,
    ) -> Result<Plan, tally_engine::Error> {
        let id = cx.new_id();
        Ok(Plan {
            ops: vec![Operation::Entry(Box::new(Entry::transfer(
                id,
                1,
                2,
                100,
                usd(),
            )))],
            result: json!({ "log": "x".repeat(60_000) }),
            awaiting: false,
        })
    }
}

#[test]
fn a_group_whose_record_would_be_too_large_fails_instead_of_sticking() {
    // 20 steps in one group with 60 KB results each: their fact would be
    // about 1.2 MB, over the limit of one command. It is refused before the
    // chain is submitted (nothing applied), and the event ends.
    let mut w = World::new(2);
    w.registry.register("test.verbose", Verbose);
    w.wallet(1, "USD", 100_000);
    w.wallet(2, "USD", 0);
    let names: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    let steps: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), "test.verbose", 1, json!({})))
        .collect();
    w.event(900, 0, None, &steps);
    assert!(w.start(900).is_ok());
    for _ in 0..5 {
        w.run();
    }
    let e = w.ledger.event(900).unwrap();
    assert!(e.state.is_terminal(), "{:?}", e.state);
    let f = e.failure.unwrap();
    assert_eq!(f.code, ErrorCode::CommandTooLarge as u16, "{}", f.message);
    assert_eq!(w.balance(2), 0, "nothing of the group was applied");
    w.conserved();
}

/// Fail early: each built-in names what the server must be configured with
/// (`Executor::configured`), unless its payload names the account; a batch
/// checks its items. Nothing here reads ledger state.
#[test]
fn steps_needing_unconfigured_accounts_are_refused_before_they_run() {
    let r = Registry::with_builtins();
    let mut config = tally_engine::event::EventConfig::default();
    let step = |kind: &str, payload: Value| tally_engine::event::Step {
        name: "s".into(),
        description: "".into(),
        kind: kind.into(),
        order: 1,
        payload: payload.to_string().into(),
    };
    let withdrawal = step(
        "wallet.withdrawal",
        json!({"account_id": "2", "amount": "1", "currency": "USD"}),
    );
    let exchange = step(
        "wallet.exchange",
        json!({"source_account_id": "2", "destination_account_id": "3",
               "source_currency": "USD", "destination_currency": "EUR",
               "source_amount": "1", "exchange_rate": "0.9"}),
    );
    let batch = step(
        "batch.operation",
        json!({"batch_id": "b", "transactions": [
            {"id": "t", "type": "wallet.transfer", "payload": {"source_account_id": "1",
             "destination_account_id": "2", "amount": "1", "currency": "USD"}},
            {"id": "w", "type": "wallet.deposit", "payload":
             {"account_id": "2", "amount": "1", "currency": "USD"}}]}),
    );
    let transfer = step(
        "wallet.transfer",
        json!({"source_account_id": "1", "destination_account_id": "2", "amount": "1", "currency": "USD"}),
    );
    let refused = |s: &tally_engine::event::Step, c: &tally_engine::event::EventConfig| {
        r.validate_configured(s, c)
            .err()
            .map(|e| (e.code, e.to_string()))
    };
    for s in [&withdrawal, &exchange, &batch] {
        let (code, text) = refused(s, &config).unwrap_or_else(|| panic!("{} accepted", s.kind));
        assert_eq!(code, ErrorCode::NotConfigured, "{text}");
        assert!(text.contains("\"s\""), "names the step: {text}");
    }
    assert!(refused(&batch, &config)
        .unwrap()
        .1
        .contains("item 1 (id w)"));
    assert_eq!(
        refused(&transfer, &config),
        None,
        "a transfer needs nothing"
    );
    config.settlement.insert("USD".into(), 9);
    assert_eq!(refused(&withdrawal, &config), None);
    assert_eq!(refused(&batch, &config), None);
    let (_, text) = refused(&exchange, &config).unwrap();
    assert!(text.contains("fx") && text.contains("USD"), "{text}");
    config.fx_position.insert("USD".into(), 10);
    assert!(refused(&exchange, &config).unwrap().1.contains("EUR"));
    config.fx_position.insert("EUR".into(), 11);
    assert_eq!(refused(&exchange, &config), None);
    // Named in the payload: nothing configured is needed.
    let named = step(
        "wallet.deposit",
        json!({"account_id": "2", "amount": "1", "currency": "GBP", "settlement_account_id": "5"}),
    );
    assert_eq!(refused(&named, &Default::default()), None);
}
