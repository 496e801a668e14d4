//! Events end to end: many concurrent events in a real `tallyd`, killed
//! with SIGKILL at different moments; after each restart every event ends in
//! a terminal state, no event lien stays active, money is conserved, and the
//! verifier (balances against the log) is clean.

use std::time::{Duration, Instant};
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::event::{EventState, NewEvent, Step};
use tally_engine::{BalancePolicy, Command, Entry, NewAccount};
use tally_net::client::Client;
#[path = "../support.rs"]
mod support;
use support::Tallyd;

const BANK: u128 = 1;
const FEES: u128 = 2;
const WALLETS: std::ops::Range<u128> = 10..20;

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

async fn setup(c: &Client) {
    let mut cmds = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
    for (id, policy) in [
        (BANK, BalancePolicy::Unrestricted),
        (FEES, BalancePolicy::NoOverdraft),
    ] {
        cmds.push(Command::CreateAccount(NewAccount {
            id,
            currency: usd(),
            policy,
            user_data: 0,
        }));
    }
    for w in WALLETS {
        cmds.push(Command::CreateAccount(NewAccount {
            id: w,
            currency: usd(),
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }));
        cmds.push(Entry::transfer(1_000 + w, BANK, w, 5_000, usd()).into());
    }
    for o in c.submit_batch(cmds).await.unwrap() {
        assert!(o.is_ok(), "{o:?}");
    }
}

fn step(name: &str, kind: &str, order: u32, payload: String) -> Step {
    Step {
        name: name.into(),
        description: "".into(),
        kind: kind.into(),
        order,
        payload: payload.into(),
    }
}

fn transfer(from: u128, to: u128, amount: &str) -> String {
    format!(
        r#"{{"source_account_id": "{from}", "destination_account_id": "{to}", "amount": "{amount}", "currency": "USD"}}"#
    )
}

/// Event `id`: a 3-step transfer with fee (some overdraw and compensate), or
/// a withdrawal nobody confirms (times out after 1 s).
fn event(id: u128) -> Vec<Command> {
    use tally_engine::event::EventCommand as E;
    let n = id % 10;
    let (a, b) = (WALLETS.start + n, WALLETS.start + (n + 3) % 10);
    let mut spec = NewEvent::new(id, "crash test");
    spec.retries = 1;
    spec.retry_delay_ns = 10_000_000;
    let steps = if id % 7 == 0 {
        spec.timeout_ns = Some(1_000_000_000);
        let wd = format!(
            r#"{{"account_id": "{a}", "amount": "1.00", "currency": "USD", "settlement_account_id": "{BANK}"}}"#
        );
        vec![step("withdraw", "wallet.withdrawal", 1, wd)]
    } else {
        // Every fifth overdraws at its last group: the first two are undone.
        let big = if id % 5 == 0 { "900.00" } else { "0.10" };
        vec![
            step("debit", "wallet.transfer", 1, transfer(a, b, "1.00")),
            step("fee", "wallet.transfer", 2, transfer(a, FEES, "0.05")),
            step("last", "wallet.transfer", 3, transfer(b, a, big)),
        ]
    };
    let mut cmds = vec![Command::Event(E::Create(spec))];
    for s in steps {
        cmds.push(Command::Event(E::AddStep { event: id, step: s }));
    }
    cmds.push(Command::Event(E::Start { event: id }));
    cmds
}

async fn sum_and_reserved(c: &Client) -> (i128, u128) {
    let mut sum = 0i128;
    let mut reserved = 0u128;
    for a in [BANK, FEES].into_iter().chain(WALLETS) {
        let acc = c.account(a).await.unwrap().unwrap().account;
        sum += acc.balance();
        reserved += acc.reserved;
    }
    (sum, reserved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_end_terminal_and_consistent_after_kill_9_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--shards", "2"];
    let mut server = Tallyd::start(dir.path(), &args);
    setup(&server.client().await).await;
    let mut ids = Vec::new();
    // Kill at a different moment each round: while events are being
    // submitted, just after, and mid-compensation.
    for (round, delay_ms) in [(0u128, 0u64), (1, 15), (2, 60), (3, 150)] {
        let c = server.client().await;
        let mut submits = Vec::new();
        for k in 0..40u128 {
            let id = 10_000 * (round + 1) + k;
            ids.push(id);
            let c = c.clone();
            submits.push(tokio::spawn(async move { c.submit_batch(event(id)).await }));
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill();
        for s in submits {
            let _ = s.await; // acknowledged or cut off by the kill
        }
        server = Tallyd::start(dir.path(), &args);
    }
    let c = server.client().await;
    // Every event the log knows ends terminal (timeouts take about 1 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut states = Vec::new();
    loop {
        states.clear();
        let mut pending = 0;
        for id in &ids {
            if let Some(w) = c.event(*id).await.unwrap() {
                let e = w.event;
                if e.state == EventState::Created {
                    // Created but its start never reached the log: start it now
                    // (a client retrying after the crash).
                    let _ = c.start_event(*id).await;
                    let _ = c.submit_batch(event(*id)).await;
                }
                if !e.state.is_terminal() {
                    pending += 1;
                }
                states.push((*id, e.state));
            }
        }
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!states.is_empty());
    for (id, s) in &states {
        assert!(s.is_terminal(), "event {id} is {s:?} after restarts");
        assert_ne!(*s, EventState::Failed, "event {id}: compensation failed");
    }
    let count = |want: EventState| states.iter().filter(|(_, s)| *s == want).count();
    assert!(
        count(EventState::Completed) > 0 && count(EventState::Compensated) > 0,
        "{states:?}"
    );
    assert!(count(EventState::TimedOut) > 0, "{states:?}");
    let (sum, reserved) = sum_and_reserved(&c).await;
    assert_eq!(sum, 0, "conservation");
    assert_eq!(reserved, 0, "no event lien stays active");
    // Completed transfer-with-fee events moved exactly their fee; compensated
    // ones nothing: the fee account holds 0.05 per completed 3-step event.
    let completed_3 = states
        .iter()
        .filter(|(id, s)| *s == EventState::Completed && id % 7 != 0)
        .count() as i128;
    let fees = c.account(FEES).await.unwrap().unwrap().account.balance();
    assert_eq!(fees, 5 * completed_3);
    // Balances agree with the log, the id index with the records, events
    // with their liens.
    let report = c.verify(true).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // And once more after a clean restart: the same states (replay).
    drop(c);
    server.kill();
    let server = Tallyd::start(dir.path(), &args);
    let c = server.client().await;
    for (id, s) in &states {
        assert_eq!(
            c.event(*id).await.unwrap().unwrap().event.state,
            *s,
            "event {id} after replay"
        );
    }
}
