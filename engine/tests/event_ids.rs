//! The ids the event driver derives, and what it believes about them after
//! a restart: derived ids lie in a namespace clients may not use, an id
//! taken by other content is a refusal (never `applied`), and an action
//! prepared again after a restart (replayed from the log) is the same chain,
//! lien lifetimes included, so that its logged outcome is recognised.
//!
//! Restarts are real: the first runtime's log (every sequenced command, from
//! a journal) is replayed into a fresh ledger, a second runtime starts from
//! it with a fresh driver, and at the end both logs replay to the state the
//! second runtime holds.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tally_engine::event::drive::prepare_in;
use tally_engine::event::ids::{derive, derive_in, Purpose, Scheme};
use tally_engine::event::{
    first_reserved_id, is_derived, prepare, Action, Event, EventCommand, EventConfig, EventState,
    Lookup, NewEvent, Prepared, Registry, Step, StepStatus,
};
use tally_engine::id::shard_of;
use tally_engine::runtime::events::EventDriver;
use tally_engine::runtime::{Batch, Journal, Runtime, RuntimeConfig};
use tally_engine::{
    BalancePolicy, Chain, Command, Currency, CurrencyCode, Entry, ErrorCode, Ledger, Lien,
    LienStatus, NewAccount, Operation, ReleaseLien,
};

const SHARDS: usize = 3;
const SETTLE: u128 = 9000;
const ALICE: u128 = 1;
const BOB: u128 = 2;
const EVENT: u128 = 77;
const S: u64 = 1_000_000_000;
/// Alice's funds, in cents.
const FUNDS: i128 = 10_000;

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

/// Every sequenced command with its position: the log.
#[derive(Default)]
struct Log(Mutex<Vec<Arc<Batch>>>);

impl Journal for Log {
    fn append(&self, batch: Arc<Batch>) {
        batch.mark_durable();
        self.0.lock().unwrap().push(batch);
    }
}

impl Log {
    fn replay_into(&self, ledger: &mut Ledger) {
        for b in self.0.lock().unwrap().iter() {
            for (cmd, route) in b.commands().iter().zip(b.routes()) {
                if let Some(r) = route {
                    ledger.replay(cmd, r.seq, r.timestamp);
                }
            }
        }
    }
}

/// A runtime on a test clock, logging to `log`.
struct Node {
    rt: Runtime,
    log: Arc<Log>,
    clock: Arc<AtomicU64>,
}

impl Node {
    fn start(ledger: Ledger, at: u64) -> Node {
        let log = Arc::new(Log::default());
        let clock = Arc::new(AtomicU64::new(at));
        let c = clock.clone();
        let config = RuntimeConfig {
            shards: SHARDS,
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
            tick_interval: None,
            journal: Some(log.clone()),
            ..RuntimeConfig::default()
        };
        let rt = Runtime::start_with(config, ledger).unwrap();
        Node { rt, log, clock }
    }

    /// A fresh ledger with USD, a settlement account, and Alice (funded)
    /// and Bob.
    fn new() -> Node {
        let n = Node::start(Ledger::new(SHARDS), S);
        n.ok(Command::CreateCurrency(Currency::new("USD", 2).unwrap()));
        n.account(SETTLE, BalancePolicy::Unrestricted);
        n.account(ALICE, BalancePolicy::NoOverdraft);
        n.account(BOB, BalancePolicy::NoOverdraft);
        n.ok(Entry::transfer(500, SETTLE, ALICE, FUNDS as u128, usd()).into());
        n
    }

    /// Stops (a crash after everything so far became durable), replays the
    /// log into a fresh ledger and starts from it `later` nanoseconds on.
    fn restart(self, later: u64) -> (Node, Arc<Log>) {
        let at = self.clock.load(Ordering::SeqCst) + later;
        let log = self.log.clone();
        self.rt.shutdown();
        let mut ledger = Ledger::new(SHARDS);
        log.replay_into(&mut ledger);
        (Node::start(ledger, at), log)
    }

    fn exec(&self, c: Command) -> tally_engine::Outcome {
        self.clock.fetch_add(1_000, Ordering::SeqCst);
        self.rt.execute(c)
    }

    fn ok(&self, c: Command) {
        let o = self.exec(c.clone());
        assert!(o.is_ok(), "{c:?}: {o:?}");
    }

    fn account(&self, id: u128, policy: BalancePolicy) {
        self.ok(Command::CreateAccount(NewAccount {
            id,
            currency: usd(),
            policy,
            user_data: 0,
        }));
    }

    /// Creates and starts `EVENT` with `steps` (name, type, order, payload).
    fn event(&self, timeout_s: Option<u64>, steps: &[(&str, &str, u32, Value)]) {
        let mut spec = NewEvent::new(EVENT, "test");
        spec.timeout_ns = timeout_s.map(|t| t * S);
        self.ok(Command::Event(EventCommand::Create(spec)));
        for (name, kind, order, payload) in steps {
            let step = Step {
                name: (*name).into(),
                description: "".into(),
                kind: (*kind).into(),
                order: *order,
                payload: payload.to_string().into(),
            };
            registry().validate_step(&step).unwrap();
            self.ok(Command::Event(EventCommand::AddStep { event: EVENT, step }));
        }
        self.ok(Command::Event(EventCommand::Start { event: EVENT }));
    }

    fn get(&self) -> Event {
        self.rt
            .query(shard_of(EVENT, SHARDS), |s| s.events().get(EVENT).cloned())
            .flatten()
            .unwrap()
    }

    fn balance(&self, id: u128) -> i128 {
        self.rt.account(id).unwrap().balance()
    }

    fn available(&self, id: u128) -> i128 {
        self.rt.account(id).unwrap().available()
    }

    fn liens(&self, status: LienStatus) -> Vec<Lien> {
        let (_, parts) = self.rt.cut(|s| s.liens().copied().collect::<Vec<_>>());
        parts
            .into_iter()
            .flatten()
            .filter(|l| l.owner == EVENT && l.status == status)
            .collect()
    }

    /// What the driver would submit for the event's next action now.
    fn prepare(&self) -> Prepared {
        let e = self.get();
        prepare(
            &e,
            e.next_action(self.rt.now()),
            &registry(),
            &config(),
            &mut Rt(&self.rt),
        )
        .unwrap()
    }

    /// Half of a driver's step: the chain is submitted (and commits), then
    /// the process dies before the fact that records it.
    fn submit_chain_only(&self, chain: &Chain) {
        self.ok(Command::Chain(chain.clone()));
    }

    /// Runs a fresh driver (as after a start) until nothing is left to do.
    fn drive(&self) {
        let mut d = EventDriver::new(registry(), config());
        self.drive_with(&mut d);
    }

    fn drive_with(&self, d: &mut EventDriver) {
        for _ in 0..50 {
            self.clock.fetch_add(1_000, Ordering::SeqCst);
            if d.round(&self.rt).actions == 0 {
                return;
            }
        }
        panic!("the driver did not settle: {:?}", self.get());
    }

    /// Replays `logs` into a fresh ledger: it holds what this node holds.
    fn replays_to_the_same(&self, logs: &[&Arc<Log>]) {
        let mut ledger = Ledger::new(SHARDS);
        for l in logs {
            l.replay_into(&mut ledger);
        }
        assert_eq!(ledger.event(EVENT), Some(self.get()));
        assert_eq!(ledger.digest(), self.rt.digest());
    }
}

/// The runtime as executors see the ledger.
struct Rt<'a>(&'a Runtime);

impl Lookup for Rt<'_> {
    fn currency(&mut self, code: CurrencyCode) -> Option<Currency> {
        self.0.query(0, move |s| s.currency(code)).flatten()
    }
    fn lien(&mut self, id: u128) -> Option<Lien> {
        self.0.lien(id)
    }
}

fn registry() -> Registry {
    Registry::with_builtins()
}

fn config() -> EventConfig {
    let mut c = EventConfig::default();
    c.settlement.insert("USD".into(), SETTLE);
    // As for a data directory an earlier version wrote: look legacy ids up.
    c.legacy_ids_before = u64::MAX;
    c
}

fn transfer(amount: &str) -> Value {
    json!({"source_account_id": ALICE.to_string(), "destination_account_id": BOB.to_string(),
           "amount": amount, "currency": "USD", "reference": "t"})
}

fn withdrawal(amount: &str) -> Value {
    json!({"account_id": ALICE.to_string(), "amount": amount, "currency": "USD"})
}

/// One group: a transfer of 1.00 and a withdrawal of 3.00 (a lien, then
/// waiting for confirmation).
fn pay_and_hold() -> Vec<(&'static str, &'static str, u32, Value)> {
    vec![
        ("pay", "wallet.transfer", 1, transfer("1.00")),
        ("hold", "wallet.withdrawal", 1, withdrawal("3.00")),
    ]
}

/// The id derivation before the driver had a namespace (what a writer could
/// compute from an event's id).
fn old_style_id(event: u128, purpose: u8, a: u32, b: u32, n: u32) -> u128 {
    let mut bytes = [0u8; 34];
    bytes[..16].copy_from_slice(&event.to_le_bytes());
    bytes[16] = purpose;
    bytes[17..21].copy_from_slice(&a.to_le_bytes());
    bytes[21..25].copy_from_slice(&b.to_le_bytes());
    bytes[25..29].copy_from_slice(&n.to_le_bytes());
    bytes[29..].copy_from_slice(b"tally");
    xxhash_rust::xxh3::xxh3_128(&bytes).max(1)
}

fn ids_of(ops: &[Operation]) -> Vec<u128> {
    ops.iter()
        .filter_map(|op| op.id().map(|(_, id)| id))
        .collect()
}

// ---- (a) derived ids are in the namespace ---------------------------------

/// Every id the driver derives (chains, entries, liens, reversals) is in the
/// namespace, and a client command naming one, as its own id or as the lien
/// or entry it acts on, is found by `first_reserved_id` (the server refuses
/// it as `reserved_id`).
#[test]
fn every_derived_id_is_reserved_and_client_commands_naming_one_are_found() {
    let n = Node::new();
    n.event(Some(60), &pay_and_hold());
    let p = n.prepare();
    let chain = p.chain.clone().unwrap();
    assert!(is_derived(chain.id));
    let ids = ids_of(&chain.ops);
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|&id| is_derived(id)), "{ids:x?}");
    assert_eq!(
        first_reserved_id(&Command::Chain(chain.clone())),
        Some(chain.id)
    );
    n.drive();
    let e = n.get();
    let (entry, lien) = (ids[0], ids[1]);
    assert_eq!(e.steps[1].status, StepStatus::Awaiting);
    // What a client might send about the event's operations.
    let client: [(Command, u128); 4] = [
        (Entry::transfer(entry, ALICE, BOB, 1, usd()).into(), entry),
        (
            Entry::transfer(600, BOB, ALICE, 100, usd())
                .correcting(entry)
                .into(),
            entry,
        ),
        (
            ReleaseLien {
                lien,
                account: ALICE,
            }
            .into(),
            lien,
        ),
        (
            Command::Chain(Chain {
                id: 601,
                ops: vec![Operation::ReleaseLien(ReleaseLien {
                    lien,
                    account: ALICE,
                })],
            }),
            lien,
        ),
    ];
    for (c, id) in &client {
        assert_eq!(first_reserved_id(c), Some(*id), "{c:?}");
    }
    // Compensation's reversals too.
    n.ok(Command::Event(EventCommand::Fail {
        event: EVENT,
        step: "hold".into(),
        reason: "".into(),
    }));
    let undo = n.prepare().chain.unwrap();
    assert!(is_derived(undo.id));
    assert!(ids_of(&undo.ops).iter().all(|&id| is_derived(id)));
    n.drive();
    assert_eq!(n.get().state, EventState::Compensated);
    assert_eq!(n.balance(ALICE), FUNDS);
}

/// The attack as it was: a writer computes the next derived ids from the
/// event's id and takes them first (a chain under the chain's id, an entry
/// under the transfer's). They are no longer the ids the driver uses, so the
/// event completes, on a fresh driver (first sight after a start) as well as
/// on the deterministic ledger.
#[test]
fn ids_precomputed_the_old_way_no_longer_collide() {
    let chain_id = old_style_id(EVENT, 1, 1, 0, 0);
    let entry_id = old_style_id(EVENT, 5, 0, 0, 1);
    assert_eq!(
        chain_id,
        derive_in(Scheme::Legacy, EVENT, Purpose::ExecuteChain, 1, 0, 0)
    );
    assert_ne!(chain_id, derive(EVENT, Purpose::ExecuteChain, 1, 0, 0));
    assert!(!is_derived(chain_id) && !is_derived(entry_id));
    let steps = [("pay", "wallet.transfer", 1, transfer("1.00"))];
    let attack = |exec: &mut dyn FnMut(Command)| {
        exec(Command::Chain(Chain {
            id: chain_id,
            ops: vec![Operation::Entry(Box::new(Entry::transfer(
                700,
                ALICE,
                BOB,
                1,
                usd(),
            )))],
        }));
        exec(Entry::transfer(entry_id, ALICE, BOB, 1, usd()).into());
    };
    // The runtime's driver.
    let n = Node::new();
    n.event(None, &steps);
    attack(&mut |c| n.ok(c));
    let (n, _) = n.restart(S);
    n.drive();
    assert_eq!(n.get().state, EventState::Completed);
    assert_eq!(n.balance(BOB), 100 + 2);
    // The deterministic ledger.
    let mut l = Ledger::new(SHARDS);
    let mut now = S;
    let mut exec = |l: &mut Ledger, c: Command| {
        now += 1_000;
        let o = l.execute(&c, now);
        assert!(o.is_ok(), "{c:?}: {o:?}");
    };
    exec(
        &mut l,
        Command::CreateCurrency(Currency::new("USD", 2).unwrap()),
    );
    for id in [SETTLE, ALICE, BOB] {
        let policy = if id == SETTLE {
            BalancePolicy::Unrestricted
        } else {
            BalancePolicy::NoOverdraft
        };
        exec(
            &mut l,
            Command::CreateAccount(NewAccount {
                id,
                currency: usd(),
                policy,
                user_data: 0,
            }),
        );
    }
    exec(
        &mut l,
        Entry::transfer(500, SETTLE, ALICE, FUNDS as u128, usd()).into(),
    );
    exec(
        &mut l,
        Command::Event(EventCommand::Create(NewEvent::new(EVENT, "t"))),
    );
    let step = Step {
        name: "pay".into(),
        description: "".into(),
        kind: "wallet.transfer".into(),
        order: 1,
        payload: transfer("1.00").to_string().into(),
    };
    exec(
        &mut l,
        Command::Event(EventCommand::AddStep { event: EVENT, step }),
    );
    exec(&mut l, Command::Event(EventCommand::Start { event: EVENT }));
    attack(&mut |c| exec(&mut l, c));
    tally_engine::event::run_ledger(&mut l, &registry(), &config(), now + S);
    assert_eq!(l.event(EVENT).unwrap().state, EventState::Completed);
}

// ---- (b) an id taken by other content is never "applied" ------------------

/// A chain of other content committed under the driver's next chain id
/// (submitted straight to the runtime, past the server's refusal): after a
/// restart, the driver's first look finds the id committed, compares
/// fingerprints, and records the group as refused, not applied: nothing it
/// prepared ran, and nothing is later "undone" that never was. The facts
/// replay to the same state.
#[test]
fn a_derived_id_taken_by_other_content_is_refused_after_a_restart() {
    let n = Node::new();
    n.event(None, &[("pay", "wallet.transfer", 1, transfer("1.00"))]);
    let id = derive(EVENT, Purpose::ExecuteChain, 1, 0, 0);
    let foreign = Command::Chain(Chain {
        id,
        ops: vec![Operation::Entry(Box::new(Entry::transfer(
            700,
            ALICE,
            BOB,
            1,
            usd(),
        )))],
    });
    assert_eq!(first_reserved_id(&foreign), Some(id));
    n.ok(foreign);
    let (n, first) = n.restart(S);
    n.drive();
    let e = n.get();
    assert_eq!(e.state, EventState::Compensated, "{e:?}");
    assert_eq!(e.steps[0].status, StepStatus::Failed);
    assert!(e.steps[0].ops.is_empty());
    let failure = e.steps[0].error.clone().unwrap();
    assert_eq!(
        failure.error_code(),
        Some(ErrorCode::IdReusedWithDifferentContent)
    );
    assert!(failure.message.contains("taken"), "{}", failure.message);
    // Only the foreign cent moved; the event's 1.00 never did.
    assert_eq!(n.balance(BOB), 1);
    assert_eq!(n.balance(ALICE), FUNDS - 1);
    n.replays_to_the_same(&[&first, &n.log]);
}

/// The same without a restart: the id of a later group is taken while the
/// driver runs (it submits, the shard compares fingerprints). The group is
/// refused and the applied group is undone.
#[test]
fn a_derived_id_taken_while_the_driver_runs_is_refused() {
    let n = Node::new();
    n.event(
        None,
        &[
            ("one", "wallet.transfer", 1, transfer("1.00")),
            ("two", "wallet.transfer", 2, transfer("2.00")),
        ],
    );
    let mut d = EventDriver::new(registry(), config());
    assert_eq!(d.round(&n.rt).actions, 1);
    assert_eq!(n.get().steps[0].status, StepStatus::Applied);
    n.ok(Command::Chain(Chain {
        id: derive(EVENT, Purpose::ExecuteChain, 2, 0, 0),
        ops: vec![Operation::Entry(Box::new(Entry::transfer(
            700,
            ALICE,
            BOB,
            1,
            usd(),
        )))],
    }));
    n.drive_with(&mut d);
    let e = n.get();
    assert_eq!(e.state, EventState::Compensated);
    assert_eq!(e.steps[0].status, StepStatus::Compensated);
    assert_eq!(e.steps[1].status, StepStatus::Failed);
    assert_eq!(
        e.steps[1].error.as_ref().and_then(|f| f.error_code()),
        Some(ErrorCode::IdReusedWithDifferentContent)
    );
    assert_eq!(n.balance(BOB), 1);
}

// ---- (c) an action prepared again after a restart is the same chain -------

/// A restart in the middle of a lien-holding step: its chain committed, the
/// fact recording it did not. Prepared again five seconds later (from the
/// replayed log), the chain is the same, lien lifetime included; the driver
/// records it as applied (it does not apply it again, nor refuse it), and
/// the lien lives at least until the event's timeout.
#[test]
fn a_lien_step_prepared_again_after_a_restart_is_the_same_chain() {
    let n = Node::new();
    n.event(Some(60), &pay_and_hold());
    let before = n.prepare();
    let chain = before.chain.clone().unwrap();
    n.submit_chain_only(&chain);
    let (n, first) = n.restart(5 * S);
    let again = n.prepare();
    let fp = |c: &Chain| Command::Chain(c.clone()).fingerprint();
    assert_eq!(again.chain.as_ref().map(fp), Some(fp(&chain)));
    assert_eq!(again.chain.as_ref(), Some(&chain));
    n.drive();
    let e = n.get();
    assert_eq!(e.steps[0].status, StepStatus::Applied);
    assert_eq!(e.steps[1].status, StepStatus::Awaiting);
    let recorded: Vec<Operation> = e.steps.iter().flat_map(|s| s.ops.clone()).collect();
    assert_eq!(recorded, chain.ops);
    let held = n.liens(LienStatus::Active);
    assert_eq!(held.len(), 1);
    assert!(held[0].deadline.unwrap() >= e.deadline.unwrap());
    assert_eq!(n.balance(ALICE), FUNDS - 100);
    assert_eq!(n.available(ALICE), FUNDS - 100 - 300);
    n.ok(Command::Event(EventCommand::Confirm {
        event: EVENT,
        step: "hold".into(),
        amount: None,
    }));
    n.drive();
    assert_eq!(n.get().state, EventState::Completed);
    assert_eq!(n.balance(ALICE), FUNDS - 400);
    n.replays_to_the_same(&[&first, &n.log]);
}

/// A restart after a compensation that released a lien committed: prepared
/// again, the compensation still releases it (a no-op now), so it is the
/// chain logged under its id, and the event ends compensated, not failed.
#[test]
fn a_compensation_prepared_again_after_it_committed_is_the_same_chain() {
    let n = Node::new();
    n.event(Some(60), &pay_and_hold());
    n.drive();
    n.ok(Command::Event(EventCommand::Fail {
        event: EVENT,
        step: "hold".into(),
        reason: "no".into(),
    }));
    let undo = n.prepare();
    assert!(matches!(undo.action, Action::Undo { group: 1, .. }));
    let chain = undo.chain.clone().unwrap();
    assert!(chain
        .ops
        .iter()
        .any(|op| matches!(op, Operation::ReleaseLien(_))));
    n.submit_chain_only(&chain);
    let (n, first) = n.restart(5 * S);
    assert_eq!(n.liens(LienStatus::Released).len(), 1);
    assert_eq!(n.prepare().chain.as_ref(), Some(&chain));
    n.drive();
    let e = n.get();
    assert_eq!(e.state, EventState::Compensated, "{e:?}");
    assert!(e.steps.iter().all(|s| s.status == StepStatus::Compensated));
    assert_eq!(n.balance(ALICE), FUNDS);
    assert_eq!(n.available(ALICE), FUNDS);
    n.replays_to_the_same(&[&first, &n.log]);
}

/// The chain a version before the namespace would post for `EVENT`'s next
/// action (ids derived the old way).
fn legacy_chain(n: &Node) -> Chain {
    let e = n.get();
    prepare_in(
        Scheme::Legacy,
        &e,
        e.next_action(n.rt.now()),
        &registry(),
        &config(),
        &mut Rt(&n.rt),
    )
    .unwrap()
    .chain
    .unwrap()
}

/// An upgrade in the middle of a step: a version before the namespace
/// committed the chain under its old ids (lien lifetime from its clock) and
/// stopped before the fact. The new driver finds it under the old id, with
/// the same content, and records it rather than applying the group again.
#[test]
fn a_chain_an_earlier_version_logged_is_recorded_not_applied_twice() {
    let n = Node::new();
    n.event(Some(60), &pay_and_hold());
    let mut old = legacy_chain(&n);
    for op in &mut old.ops {
        if let Operation::CreateLien(c) = op {
            c.expires_in_ns = Some(59 * S + 987_654_321);
        }
    }
    assert_eq!(old.id, old_style_id(EVENT, 1, 1, 0, 0));
    n.submit_chain_only(&old);
    let (n, first) = n.restart(S);
    n.drive();
    let e = n.get();
    assert_eq!(e.steps[1].status, StepStatus::Awaiting, "{e:?}");
    let recorded: Vec<Operation> = e.steps.iter().flat_map(|s| s.ops.clone()).collect();
    assert_eq!(recorded, old.ops);
    assert_eq!(n.balance(ALICE), FUNDS - 100);
    assert_eq!(n.liens(LienStatus::Active).len(), 1);
    n.ok(Command::Event(EventCommand::Fail {
        event: EVENT,
        step: "hold".into(),
        reason: "".into(),
    }));
    n.drive();
    assert_eq!(n.get().state, EventState::Compensated);
    assert_eq!(n.balance(ALICE), FUNDS);
    assert_eq!(n.available(ALICE), FUNDS);
    n.replays_to_the_same(&[&first, &n.log]);
}

/// Legacy ids are open to clients: a chain under one that was logged after
/// the data directory moved to the namespace is a client's, not the event's,
/// and is never recorded as the event's work.
#[test]
fn a_legacy_chain_logged_after_the_upgrade_is_not_taken_for_the_events() {
    let n = Node::new();
    n.event(Some(60), &pay_and_hold());
    let upgraded_at = n.rt.next_seq();
    let old = legacy_chain(&n);
    // A writer submits exactly what the old driver would have.
    n.submit_chain_only(&old);
    let (n, _first) = n.restart(S);
    let mut cfg = config();
    cfg.legacy_ids_before = upgraded_at;
    let mut d = EventDriver::new(registry(), cfg);
    n.drive_with(&mut d);
    let e = n.get();
    let recorded: Vec<Operation> = e.steps.iter().flat_map(|s| s.ops.clone()).collect();
    assert_ne!(
        recorded, old.ops,
        "a client's chain was recorded as the event's"
    );
    assert!(recorded.iter().all(|op| op
        .id()
        .is_some_and(|(_, id)| tally_engine::event::is_derived(id))));
}

/// A group's chain commits, the process dies before its fact, and the
/// restart comes after the event's deadline: the chain's outcome is recorded
/// first, so the timeout's compensation undoes it (it once stayed in place,
/// the group still `Pending`).
#[test]
fn a_chain_committed_before_a_crash_is_undone_when_the_restart_is_past_the_deadline() {
    let n = Node::new();
    n.event(Some(60), &[("pay", "wallet.transfer", 1, transfer("1.00"))]);
    let chain = n.prepare().chain.unwrap();
    n.submit_chain_only(&chain);
    assert_eq!(n.balance(BOB), 100);
    let (n, first) = n.restart(61 * S);
    n.drive();
    let e = n.get();
    assert_eq!(e.state, EventState::TimedOut, "{e:?}");
    assert_eq!(e.steps[0].status, StepStatus::Compensated, "{e:?}");
    assert_eq!(n.balance(BOB), 0, "the group's 1.00 was undone");
    assert_eq!(n.balance(ALICE), FUNDS);
    n.replays_to_the_same(&[&first, &n.log]);
}
