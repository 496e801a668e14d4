//! The verifier against a running durable ledger: clean under concurrent
//! load, and each kind of planted inconsistency (planted through the engine's
//! test-only hook, never through an API) found and named precisely.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Arc as Shared;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::id::shard_of;
use tally_engine::idindex::IdRecord;
use tally_engine::lien::CreateLien;
use tally_engine::{BalancePolicy, Command, Entry, ErrorCode, IdSpace, LienStatus, NewAccount};
use tally_wal::history::{History, PageLimits};
use tally_wal::verify::{verify, VerifyReport};
use tally_wal::{Durable, DurableConfig};

const SHARDS: usize = 2;

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

struct Fixture {
    durable: Durable,
    history: Shared<History>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DurableConfig::default();
        config.runtime.shards = SHARDS;
        config.history = Some(PageLimits::default());
        let (durable, _) = Durable::open(dir.path(), config).unwrap();
        let history = durable.history().expect("asked for").clone();
        let f = Fixture {
            durable,
            history,
            _dir: dir,
        };
        let mut cmds = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
        cmds.push(Command::CreateAccount(NewAccount {
            id: 1,
            currency: usd(),
            policy: BalancePolicy::Unrestricted,
            user_data: 0,
        }));
        for a in 2..=9 {
            cmds.push(Command::CreateAccount(NewAccount {
                id: a,
                currency: usd(),
                policy: BalancePolicy::NoOverdraft,
                user_data: 0,
            }));
        }
        for a in 2..=9u128 {
            cmds.push(Entry::transfer(100 + a, 1, a, 10_000, usd()).into());
        }
        cmds.push(
            CreateLien {
                id: 500,
                account: 2,
                currency: usd(),
                amount: 300,
                expires_in_ns: None,
                owner: 0,
                user_data: 0,
            }
            .into(),
        );
        f.submit(cmds);
        f
    }

    fn submit(&self, cmds: Vec<Command>) {
        let outcomes = self.durable.runtime().submit(cmds).unwrap().wait();
        assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    }

    fn verify(&self, full: bool) -> VerifyReport {
        verify(
            self.durable.runtime(),
            &self.history,
            &self.durable.stats,
            full,
        )
    }

    fn plant(&self, id: u128, f: impl FnOnce(&mut tally_engine::ShardState) + Send + 'static) {
        self.durable
            .runtime()
            .tamper_for_test(shard_of(id, SHARDS), f);
    }
}

fn kinds(r: &VerifyReport) -> Vec<(&str, &str)> {
    r.errors
        .iter()
        .map(|e| (e.kind.as_str(), e.subject.as_str()))
        .collect()
}

#[test]
fn clean_ledgers_verify_clean_even_under_concurrent_load() {
    let f = Arc::new(Fixture::new());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u128)
        .map(|w| {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u128;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (from, to) = (2 + (i + w) % 8, 2 + (i * 3 + w + 1) % 8);
                    if from != to {
                        let id = (w + 1) << 64 | i;
                        let _ = f
                            .durable
                            .runtime()
                            .submit(vec![Entry::transfer(id, from, to, 1 + i % 50, usd()).into()])
                            .unwrap()
                            .wait();
                    }
                }
            })
        })
        .collect();
    for full in [false, true, false, true] {
        let r = f.verify(full);
        assert!(r.clean, "{:?}", r.errors);
        assert_eq!(r.accounts, 9);
        assert_eq!(r.accounts_checked_against_log, 9);
        assert!(r.records_checked_against_index > 0);
        assert_eq!(r.currencies[0].sum, "0.00");
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(f.verify(true).clean);
}

#[test]
fn a_changed_balance_breaks_conservation_and_disagrees_with_the_log() {
    let f = Fixture::new();
    f.plant(3, |s| {
        s.account_mut_for_test(3).unwrap().credits_posted += 7
    });
    let r = f.verify(true);
    assert!(!r.clean);
    let k = kinds(&r);
    assert!(k.contains(&("conservation", "USD")), "{k:?}");
    assert!(k.contains(&("balance_mismatch", "3")), "{k:?}");
    assert_eq!(k.len(), 2, "exactly these two: {:?}", r.errors);
    let m = &r
        .errors
        .iter()
        .find(|e| e.kind == "balance_mismatch")
        .unwrap()
        .message;
    assert!(m.contains("100.07") && m.contains("100.00"), "{m}");
}

#[test]
fn reserved_that_does_not_match_the_liens_is_found() {
    let f = Fixture::new();
    f.plant(4, |s| s.account_mut_for_test(4).unwrap().reserved = 55);
    let r = f.verify(false);
    let k = kinds(&r);
    assert_eq!(k.len(), 1, "{:?}", r.errors);
    assert_eq!(k[0].0, "invariant");
    assert!(
        r.errors[0]
            .message
            .contains("account 4: reserved 55 but active liens sum to 0"),
        "{}",
        r.errors[0].message
    );
}

#[test]
fn a_lien_released_behind_the_ledgers_back_is_found() {
    let f = Fixture::new();
    f.plant(2, |s| {
        s.lien_mut_for_test(500).unwrap().status = LienStatus::Released
    });
    let r = f.verify(false);
    assert!(
        r.errors.iter().any(|e| e.kind == "invariant"
            && e.message
                .contains("account 2: reserved 300 but active liens sum to 0")),
        "{:?}",
        r.errors
    );
}

#[test]
fn a_broken_balance_policy_is_found() {
    let f = Fixture::new();
    // Moves money between two accounts behind the ledger's back (conserving
    // the sum): account 5 ends below zero although it may not overdraw.
    f.plant(5, |s| {
        s.account_mut_for_test(5).unwrap().debits_posted += 20_000
    });
    f.plant(6, |s| {
        s.account_mut_for_test(6).unwrap().credits_posted += 20_000
    });
    let r = f.verify(true);
    let k = kinds(&r);
    assert!(!k.iter().any(|(kind, _)| *kind == "conservation"), "{k:?}");
    assert!(
        r.errors.iter().any(|e| e.kind == "invariant"
            && e.message
                .contains("account 5: available -10000 violates NoOverdraft")),
        "{:?}",
        r.errors
    );
    assert!(
        k.contains(&("balance_mismatch", "5")) && k.contains(&("balance_mismatch", "6")),
        "{k:?}"
    );
}

#[test]
fn an_idempotency_record_that_disagrees_with_the_log_is_found() {
    let f = Fixture::new();
    let entry = 104u128;
    let seq = match f.durable.runtime().status(IdSpace::Entry, entry) {
        tally_engine::IdStatus::Committed { seq } => seq,
        s => panic!("{s:?}"),
    };
    f.plant(entry, move |s| {
        s.replace_id_for_test(
            IdSpace::Entry,
            entry,
            IdRecord::new(0, seq, Some(ErrorCode::InsufficientFunds)),
        )
    });
    let r = f.verify(true);
    assert_eq!(
        kinds(&r),
        vec![("id_index_mismatch", "104")],
        "{:?}",
        r.errors
    );
    // The sampled mode reads a spread of records; this log is small enough
    // that the sample is all of it.
    assert!(!f.verify(false).clean);
}

#[test]
fn warnings_for_frozen_accounts_with_liens() {
    let f = Fixture::new();
    f.submit(vec![Command::SetAccountState {
        account: 2,
        state: tally_engine::AccountState::Frozen,
    }]);
    let r = f.verify(false);
    assert!(r.clean);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.kind == "frozen_with_liens" && w.subject == "2"),
        "{:?}",
        r.warnings
    );
}

/// Runs a withdrawal event through the runtime's event driver until it waits
/// for confirmation (its lien active).
fn waiting_withdrawal(f: &Fixture, event: u128) {
    use tally_engine::event::{EventCommand, EventConfig, NewEvent, Registry, Step};
    let mut spec = NewEvent::new(event, "withdraw");
    spec.timeout_ns = Some(3_600_000_000_000);
    let step = Step {
        name: "w".into(),
        description: "".into(),
        kind: "wallet.withdrawal".into(),
        order: 1,
        payload: r#"{"account_id": "3", "amount": "5.00", "currency": "USD", "settlement_account_id": "1"}"#.into(),
    };
    f.submit(vec![
        Command::Event(EventCommand::Create(spec)),
        Command::Event(EventCommand::AddStep { event, step }),
        Command::Event(EventCommand::Start { event }),
    ]);
    let mut driver = tally_engine::runtime::events::EventDriver::new(
        Registry::with_builtins(),
        EventConfig::default(),
    );
    for _ in 0..10 {
        driver.round(f.durable.runtime());
    }
    let rt = f.durable.runtime();
    assert_eq!(
        rt.account(3).unwrap().account.reserved,
        500,
        "the withdrawal's lien holds 5.00"
    );
}

#[test]
fn event_states_incoherent_with_their_steps_and_liens_are_found() {
    let f = Fixture::new();
    waiting_withdrawal(&f, 700);
    let r = f.verify(true);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // The event claims to be completed while its step still awaits and its
    // lien is still active.
    f.plant(700, |s| {
        let e = s.events_mut_for_test().get_mut_for_test(700).unwrap();
        e.state = tally_engine::event::EventState::Completed;
    });
    let r = f.verify(false);
    let k = kinds(&r);
    assert!(k.contains(&("event_state", "700")), "{:?}", r.errors);
    assert!(
        r.errors
            .iter()
            .any(|e| e.kind == "event_lien"
                && e.message.contains("event 700 is completed but its lien")),
        "{:?}",
        r.errors
    );
}

#[test]
fn events_past_their_timeout_are_warned_about() {
    let f = Fixture::new();
    waiting_withdrawal(&f, 701);
    f.plant(701, |s| {
        let e = s.events_mut_for_test().get_mut_for_test(701).unwrap();
        e.deadline = Some(1);
    });
    let r = f.verify(false);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.kind == "event_past_timeout" && w.subject == "701"),
        "{:?}",
        r.warnings
    );
}
