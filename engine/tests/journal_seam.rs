//! The seam the write-ahead log plugs into: batches reach the journal in
//! sequence order with no gaps, and no outcome is released before the journal
//! marks its batch durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tally_engine::runtime::{Batch, Journal, Runtime, RuntimeConfig};
use tally_engine::*;

struct SlowJournal {
    tx: crossbeam_channel::Sender<Arc<Batch>>,
}

impl Journal for SlowJournal {
    fn append(&self, batch: Arc<Batch>) {
        let _ = self.tx.send(batch);
    }
}

#[test]
fn outcomes_wait_for_durability_and_batches_arrive_in_order() {
    let (tx, rx) = crossbeam_channel::unbounded::<Arc<Batch>>();
    let durable_upto = Arc::new(AtomicU64::new(0));
    let writer = {
        let durable_upto = durable_upto.clone();
        std::thread::spawn(move || {
            let mut expected = 1u64;
            let mut batches = 0;
            for batch in rx {
                for r in batch.routes().iter().flatten() {
                    assert_eq!(r.seq, expected, "journal must see a gap-free sequence");
                    expected += 1;
                }
                // Executed but not yet durable: hold it a little.
                std::thread::sleep(Duration::from_millis(2));
                durable_upto.store(expected - 1, Ordering::SeqCst);
                batch.mark_durable();
                batches += 1;
            }
            batches
        })
    };
    let config = RuntimeConfig {
        shards: 2,
        journal: Some(Arc::new(SlowJournal { tx })),
        ..RuntimeConfig::default()
    };
    let rt = Arc::new(Runtime::start(config).unwrap());
    let usd = CurrencyCode::parse("USD").unwrap();
    let mut setup = vec![Command::CreateCurrency(Currency {
        code: usd,
        scale: 2,
    })];
    for id in 1..=4 {
        let policy = if id == 1 {
            BalancePolicy::Unrestricted
        } else {
            BalancePolicy::NoOverdraft
        };
        setup.push(Command::CreateAccount(NewAccount {
            id,
            currency: usd,
            policy,
            user_data: 0,
        }));
    }
    assert!(rt.submit(setup).unwrap().wait().iter().all(|o| o.is_ok()));
    let clients: Vec<_> = (0..3u128)
        .map(|c| {
            let (rt, durable_upto) = (rt.clone(), durable_upto.clone());
            std::thread::spawn(move || {
                for i in 0..40u128 {
                    let id = (c + 1) * 1_000 + i;
                    let t = rt
                        .submit(vec![Entry::transfer(id, 1, 2 + i % 3, 7, usd).into()])
                        .unwrap();
                    let outcomes = t.wait();
                    let seq = outcomes[0].seq().unwrap();
                    assert!(
                        durable_upto.load(Ordering::SeqCst) >= seq,
                        "outcome {seq} released before it was durable"
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // A rejected-before-sequencing batch never reaches the journal.
    let t = rt
        .submit(vec![Entry::transfer(0, 1, 2, 7, usd).into()])
        .unwrap();
    assert_eq!(t.wait()[0].code(), Some(ErrorCode::InvalidId));
    drop(Arc::try_unwrap(rt).ok().expect("clients are done"));
    assert!(writer.join().unwrap() >= 121);
}

#[test]
fn on_done_fires_once_the_batch_is_durable_or_at_once_if_it_is() {
    let (tx, rx) = crossbeam_channel::unbounded::<Arc<Batch>>();
    let config = RuntimeConfig {
        shards: 1,
        journal: Some(Arc::new(SlowJournal { tx })),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(config).unwrap();
    let usd = CurrencyCode::parse("USD").unwrap();
    let ticket = rt
        .submit(vec![Command::CreateCurrency(Currency {
            code: usd,
            scale: 2,
        })])
        .unwrap();
    let (fired_tx, fired) = crossbeam_channel::unbounded::<()>();
    let f = fired_tx.clone();
    ticket.batch().on_done(move || {
        let _ = f.send(());
    });
    let held = rx.recv().unwrap();
    held.wait_executed();
    assert!(
        fired.recv_timeout(Duration::from_millis(50)).is_err(),
        "not before the journal says durable"
    );
    held.mark_durable();
    fired
        .recv_timeout(Duration::from_secs(5))
        .expect("fires on completion");
    // Registered after completion: runs at once, on the caller's thread.
    ticket.batch().on_done(move || {
        let _ = fired_tx.send(());
    });
    fired.try_recv().expect("runs at once");
    assert!(ticket.wait()[0].is_ok());
}
