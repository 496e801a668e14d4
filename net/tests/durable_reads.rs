//! Reads answer only from durable state: a read that saw a command which is
//! executed but not yet durable waits until the log covers it
//! (`tally_net::server::durable_after`, what every ledger read in `tallyd`
//! goes through).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_engine::runtime::{Batch, Journal, Runtime, RuntimeConfig};
use tally_engine::*;
use tally_net::server::durable_after;

/// Polls `durable` (the server waits on the log's condition variable).
fn until(durable: &AtomicU64) -> impl Fn(u64, Instant) -> bool + '_ {
    move |seq, deadline| loop {
        if durable.load(Ordering::SeqCst) >= seq {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Holds every batch until the test marks it durable.
struct HeldJournal {
    tx: crossbeam_channel::Sender<Arc<Batch>>,
}

impl Journal for HeldJournal {
    fn append(&self, batch: Arc<Batch>) {
        let _ = self.tx.send(batch);
    }
}

fn last_seq(b: &Batch) -> u64 {
    b.routes()
        .iter()
        .flatten()
        .map(|r| r.seq)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_read_of_executed_state_waits_until_it_is_durable() {
    let (tx, rx) = crossbeam_channel::unbounded::<Arc<Batch>>();
    let rt = Arc::new(
        Runtime::start(RuntimeConfig {
            shards: 2,
            journal: Some(Arc::new(HeldJournal { tx })),
            ..RuntimeConfig::default()
        })
        .unwrap(),
    );
    let durable = Arc::new(AtomicU64::new(0));
    let usd = CurrencyCode::parse("USD").unwrap();
    let mut setup = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
    for (id, policy) in [
        (1, BalancePolicy::Unrestricted),
        (2, BalancePolicy::NoOverdraft),
    ] {
        setup.push(Command::CreateAccount(NewAccount {
            id,
            currency: usd,
            policy,
            user_data: 0,
        }));
    }
    let t = rt.submit(setup).unwrap();
    let b = rx.recv().unwrap();
    durable.store(last_seq(&b), Ordering::SeqCst);
    b.mark_durable();
    assert!(t.wait().iter().all(|o| o.is_ok()));

    // A transfer that executes on its shard but is not durable.
    let pending = rt
        .submit(vec![Entry::transfer(10, 1, 2, 700, usd).into()])
        .unwrap();
    let held = rx.recv().unwrap();
    let reader = {
        let (rt, durable) = (rt.clone(), durable.clone());
        std::thread::spawn(move || {
            let seen = rt.account(2).map(|v| v.account.balance());
            durable_after(&rt, until(&durable), Duration::from_secs(30)).map(|()| seen)
        })
    };
    // The shard has applied it, so the read saw 7.00; it must not answer.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !reader.is_finished(),
        "a read answered before the state it saw was durable"
    );
    durable.store(last_seq(&held), Ordering::SeqCst);
    held.mark_durable();
    assert_eq!(reader.join().unwrap(), Ok(Some(700)));
    assert!(pending.wait()[0].is_ok());

    // Nothing pending: a read answers at once.
    assert_eq!(
        durable_after(&rt, until(&durable), Duration::from_secs(1)),
        Ok(())
    );

    // A log that never catches up: the read gives up, naming the sequence.
    let _stuck = rt
        .submit(vec![Entry::transfer(11, 1, 2, 1, usd).into()])
        .unwrap();
    let never = rx.recv().unwrap();
    let err = durable_after(&rt, until(&durable), Duration::from_millis(50)).unwrap_err();
    assert_eq!(err, last_seq(&never));
    never.mark_durable();
}
