//! Many producer threads against a few accounts (one of them hot), on 1, 2
//! and 4 shards. Checks, while the load runs, that every consistent cut
//! conserves money and violates no policy; and afterwards that every
//! submission has exactly one outcome, that retries are idempotent, and that
//! replaying every sequenced command in sequence order through the
//! single-threaded `Ledger` reproduces every outcome and the final state.

mod common;

use common::usd;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tally_engine::runtime::{Runtime, RuntimeConfig};
use tally_engine::*;

const WALLETS: u128 = 8;
const PRODUCERS: u128 = 6;
const BATCHES: usize = 150;

/// Small deterministic generator (xorshift), one per producer.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn hammer(shards: usize) {
    let config = RuntimeConfig {
        shards,
        ..RuntimeConfig::default()
    };
    let rt = Arc::new(Runtime::start(config).unwrap());
    let mut setup = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
    setup.push(Command::CreateAccount(NewAccount {
        id: 1,
        currency: usd(),
        policy: BalancePolicy::Unrestricted,
        user_data: 0,
    }));
    for w in 2..2 + WALLETS {
        let policy = if w == 3 {
            BalancePolicy::OverdraftLimit(500)
        } else {
            BalancePolicy::NoOverdraft
        };
        setup.push(Command::CreateAccount(NewAccount {
            id: w,
            currency: usd(),
            policy,
            user_data: 0,
        }));
        setup.push(Entry::transfer(10_000 + w, 1, w, 1_000, usd()).into());
    }
    let log: Arc<Mutex<Vec<(Command, Outcome)>>> = Arc::new(Mutex::new(Vec::new()));
    for (c, o) in setup.iter().zip(rt.submit(setup.clone()).unwrap().wait()) {
        assert!(o.is_ok(), "{o:?}");
        log.lock().unwrap().push((c.clone(), o));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (rt, stop) = (rt.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut cuts = 0;
            while !stop.load(Ordering::Relaxed) || cuts < 3 {
                let sums = rt.balance_sums();
                assert!(
                    sums.iter().all(|(_, s)| *s == 0),
                    "conservation broken at a cut: {sums:?}"
                );
                let (_, problems) = rt.cut(|s| s.check_invariants());
                assert!(problems.iter().all(|p| p.is_empty()), "{problems:?}");
                cuts += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            cuts
        })
    };

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (rt, log) = (rt.clone(), log.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 ^ ((p as u64 + 1) * 0x1000_0001));
                let mut mine: Vec<Command> = Vec::new();
                let mut next_id = (p + 1) << 64;
                for _ in 0..BATCHES {
                    let n = 1 + rng.below(12) as usize;
                    let mut batch = Vec::with_capacity(n);
                    for _ in 0..n {
                        next_id += 1;
                        let wallet = |rng: &mut Rng| 2 + rng.below(WALLETS as u64) as u128;
                        let cmd: Command = match rng.below(10) {
                            // Half of all transfers touch the hot wallet 2.
                            0..=3 => Entry::transfer(
                                next_id,
                                2,
                                wallet(&mut rng),
                                1 + rng.below(150) as u128,
                                usd(),
                            )
                            .into(),
                            4..=6 => Entry::transfer(
                                next_id,
                                wallet(&mut rng),
                                2,
                                1 + rng.below(150) as u128,
                                usd(),
                            )
                            .into(),
                            7 => {
                                let (from, to) = (wallet(&mut rng), wallet(&mut rng));
                                let mut e = Entry::transfer(
                                    next_id,
                                    from,
                                    to,
                                    1 + rng.below(100) as u128,
                                    usd(),
                                );
                                e.lines[0].expected_version = Some(rng.below(40));
                                e.into()
                            }
                            8 => {
                                let account = wallet(&mut rng);
                                let lien = next_id;
                                next_id += 1;
                                let ops = vec![
                                    Operation::CreateLien(CreateLien {
                                        id: lien,
                                        account,
                                        currency: usd(),
                                        amount: 1 + rng.below(80) as u128,
                                        expires_in_ns: Some(1 + rng.below(5_000_000)),
                                        owner: 0,
                                        user_data: 0,
                                    }),
                                    if rng.below(2) == 0 {
                                        Operation::ReleaseLien(ReleaseLien { lien, account })
                                    } else {
                                        Operation::CaptureLien(Box::new(CaptureLien {
                                            lien,
                                            account,
                                            entry_id: next_id,
                                            currency: usd(),
                                            credits: smallvec::smallvec![(1, 1)],
                                            reference: None,
                                        }))
                                    },
                                ];
                                next_id += 1;
                                Command::Chain(Chain { id: next_id, ops })
                            }
                            _ if !mine.is_empty() => {
                                mine[rng.below(mine.len() as u64) as usize].clone()
                            }
                            _ => Command::Tick,
                        };
                        batch.push(cmd);
                    }
                    let outcomes = rt.submit(batch.clone()).unwrap().wait();
                    assert_eq!(outcomes.len(), batch.len());
                    let mut log = log.lock().unwrap();
                    for (c, o) in batch.into_iter().zip(outcomes) {
                        if matches!(c, Command::Op(_) | Command::Chain(_)) {
                            mine.push(c.clone());
                        }
                        log.push((c, o));
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let cuts = checker.join().unwrap();
    assert!(cuts >= 3);

    // Every id: one first outcome, and every later submission of the same
    // content returns it as a duplicate.
    let log = std::mem::take(&mut *log.lock().unwrap());
    let mut first: BTreeMap<(IdSpace, u128), Outcome> = BTreeMap::new();
    for (c, o) in &log {
        let Some(key) = c.top_id() else { continue };
        match &first.get(&key) {
            None => {
                assert!(
                    !matches!(o, Outcome::Duplicate { .. }),
                    "first sighting of {key:?} is a duplicate"
                );
                first.insert(key, o.clone());
            }
            Some(orig) => {
                let Outcome::Duplicate { seq, code } = o else {
                    panic!("resubmission of {key:?} got {o:?}, original {orig:?}")
                };
                // The original may still be in flight when the retry is
                // sequenced only if they were in one batch; ours never are.
                assert_eq!(Some(*seq), orig.seq());
                assert_eq!(*code, orig.code());
            }
        }
        let status = rt.status(key.0, key.1);
        let orig = &first[&key];
        match status {
            IdStatus::Committed { seq } => assert!(orig.is_ok() && orig.seq() == Some(seq)),
            IdStatus::Rejected { seq, code } => {
                assert!(orig.seq() == Some(seq) && orig.code() == Some(code))
            }
            IdStatus::Unknown => panic!("{key:?} has an outcome but no status"),
        }
    }
    let committed = first.values().filter(|o| o.is_ok()).count();
    let rejected = first.values().filter(|o| !o.is_ok()).count();
    assert!(
        committed > 300 && rejected > 20,
        "the load should both commit and reject: {committed}/{rejected}"
    );

    // Replay the global order through the sans-IO ledger: same outcomes.
    let mut sequenced: Vec<(u64, u64, &Command, &Outcome)> = log
        .iter()
        .filter_map(|(c, o)| {
            let seq = match o {
                Outcome::Committed { seq, .. } => *seq,
                Outcome::Rejected { seq: Some(seq), .. } => *seq,
                Outcome::Rejected { seq: None, .. } => return None,
                // A duplicate is sequenced too but its seq is the original's;
                // its own position is unknown to the client, so skip it.
                Outcome::Duplicate { .. } => return None,
            };
            let ts = match o {
                Outcome::Committed { timestamp, .. } => *timestamp,
                _ => 0,
            };
            Some((seq, ts, c, o))
        })
        .collect();
    sequenced.sort_by_key(|s| s.0);
    let mut ledger = Ledger::new(1);
    let mut replayed = 0;
    // Duplicates and rejections leave gaps in what we know of the order;
    // they change no state, so replay by sequence order with the same
    // timestamps is still exact for everything that did.
    let mut last_ts = 0;
    for (seq, ts, c, o) in sequenced {
        let ts = if ts == 0 { last_ts + 1 } else { ts };
        last_ts = last_ts.max(ts);
        let got = ledger.execute(c, ts);
        let same = match (&got, o) {
            (Outcome::Committed { .. }, Outcome::Committed { .. }) => true,
            (a, b) => a.code() == b.code(),
        };
        assert!(same, "seq {seq}: replay {got:?} vs runtime {o:?} for {c:?}");
        replayed += 1;
    }
    assert!(replayed > 300);
    for id in 1..2 + WALLETS {
        let a = rt.account(id).unwrap();
        let b = ledger.account(id).unwrap();
        assert_eq!(
            (a.account.balance(), a.account.reserved),
            (b.account.balance(), b.account.reserved),
            "account {id}"
        );
        if id != 1 {
            assert!(
                a.account.policy.permits(a.account.available()),
                "account {id} violates its policy"
            );
        }
    }
    assert!(rt.balance_sums().iter().all(|(_, s)| *s == 0));
}

#[test]
fn one_shard() {
    hammer(1);
}

#[test]
fn two_shards() {
    hammer(2);
}

#[test]
fn four_shards() {
    hammer(4);
}
