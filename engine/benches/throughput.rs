//! In-process throughput of the sharded runtime: 2-line transfers through
//! the sequencer, the shard queues and the shard threads (no log, no network).
//!
//! Shapes: `uniform` (random wallets) and `hot` (one hot wallet on one side of
//! every transfer); cross-shard share 0/50/100% (the share of transfers whose
//! two accounts live on different shards; the entry id always lives with the
//! debited account). Run: `cargo bench -p tally-engine --bench throughput`.

use divan::counter::ItemsCount;
use divan::Bencher;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tally_engine::id::shard_of;
use tally_engine::runtime::{Runtime, RuntimeConfig};
use tally_engine::*;

fn main() {
    divan::main();
}

const BATCH: usize = 1_000;
const BATCHES_PER_SAMPLE: usize = 64;
const IN_FLIGHT: usize = 8;

#[derive(Clone, Copy)]
struct Case {
    shards: usize,
    accounts: u64,
    hot: bool,
    cross_pct: u64,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let accounts = if self.accounts >= 1_000_000 {
            format!("{}M", self.accounts / 1_000_000)
        } else {
            format!("{}k", self.accounts / 1_000)
        };
        let shape = if self.hot { "hot" } else { "uniform" };
        write!(
            f,
            "{}sh/{accounts}/{shape}/x{}%",
            self.shards, self.cross_pct
        )
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for accounts in [1_000_000, 10_000] {
        for shards in [1, 2, 4] {
            for hot in [false, true] {
                let crosses: &[u64] = if shards == 1 {
                    &[0]
                } else if accounts == 10_000 {
                    &[0, 100]
                } else {
                    &[0, 50, 100]
                };
                for &cross_pct in crosses {
                    v.push(Case {
                        shards,
                        accounts,
                        hot,
                        cross_pct,
                    });
                }
            }
        }
    }
    v
}

const CASES: &[&str] = &[
    "1sh/1M/uniform/x0%",
    "1sh/1M/hot/x0%",
    "2sh/1M/uniform/x0%",
    "2sh/1M/uniform/x50%",
    "2sh/1M/uniform/x100%",
    "2sh/1M/hot/x0%",
    "2sh/1M/hot/x100%",
    "4sh/1M/uniform/x0%",
    "4sh/1M/uniform/x50%",
    "4sh/1M/uniform/x100%",
    "4sh/1M/hot/x0%",
    "4sh/1M/hot/x100%",
    "1sh/10k/uniform/x0%",
    "1sh/10k/hot/x0%",
    "2sh/10k/uniform/x0%",
    "2sh/10k/uniform/x100%",
    "4sh/10k/uniform/x0%",
    "4sh/10k/uniform/x100%",
];

struct Fixture {
    rt: Runtime,
    /// Wallet ids grouped by shard.
    by_shard: Vec<Vec<u128>>,
    next_id: AtomicU64,
}

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

/// The one fixture kept alive (1M-account ledgers are large), by (shards, accounts).
type Cached = Option<((usize, u64), Arc<Fixture>)>;

fn fixture(shards: usize, accounts: u64) -> Arc<Fixture> {
    static CACHE: Mutex<Cached> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap();
    if let Some((key, f)) = cache.as_ref() {
        if *key == (shards, accounts) {
            return f.clone();
        }
    }
    *cache = None;
    // Pre-sized as a deployment would be (static allocation, no rehash pauses).
    let config = RuntimeConfig {
        shards,
        reserve_accounts: accounts as usize / shards + 1024,
        reserve_entry_ids: 4_000_000 / shards,
        tick_interval: None,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(config).unwrap();
    let system: u128 = u128::MAX;
    let mut setup = vec![
        Command::CreateCurrency(Currency {
            code: usd(),
            scale: 2,
        }),
        Command::CreateAccount(NewAccount {
            id: system,
            currency: usd(),
            policy: BalancePolicy::Unrestricted,
            user_data: 0,
        }),
    ];
    let mut by_shard = vec![Vec::new(); shards];
    let mut tickets = Vec::new();
    for i in 1..=accounts as u128 {
        let id = tally_engine::id::mix(i) as u128 | (i << 64);
        by_shard[shard_of(id, shards)].push(id);
        setup.push(Command::CreateAccount(NewAccount {
            id,
            currency: usd(),
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }));
        setup.push(Transfer::new((1u128 << 127) | i, system, id, 1_000_000_000_000, usd()).into());
        if setup.len() >= 4_000 {
            tickets.push(rt.submit(std::mem::take(&mut setup)).unwrap());
        }
    }
    tickets.push(rt.submit(setup).unwrap());
    for t in tickets {
        assert!(t.wait().iter().all(|o| o.is_ok()));
    }
    let f = Arc::new(Fixture {
        rt,
        by_shard,
        next_id: AtomicU64::new(1),
    });
    *cache = Some(((shards, accounts), f.clone()));
    f
}

/// xorshift: deterministic, cheap.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn batches(f: &Fixture, case: &Case, seed: &mut u64) -> Vec<Vec<Command>> {
    let n = f.by_shard.len();
    let hot = f.by_shard[0][0];
    let pick = |shard: usize, s: &mut u64| {
        let list = &f.by_shard[shard];
        list[(rng(s) % list.len() as u64) as usize]
    };
    (0..BATCHES_PER_SAMPLE)
        .map(|_| {
            (0..BATCH)
                .map(|k| {
                    let cross = n > 1 && rng(seed) % 100 < case.cross_pct;
                    let (from, to) = if case.hot {
                        let other = if cross {
                            pick(1 + (rng(seed) as usize % (n - 1)), seed)
                        } else {
                            pick(0, seed)
                        };
                        if k % 2 == 0 {
                            (hot, other)
                        } else {
                            (other, hot)
                        }
                    } else {
                        let s = rng(seed) as usize % n;
                        let t = if cross {
                            (s + 1 + rng(seed) as usize % (n - 1)) % n
                        } else {
                            s
                        };
                        (pick(s, seed), pick(t, seed))
                    };
                    // An entry id that lives with the debited account.
                    let home = shard_of(from, n);
                    let id = loop {
                        let id = (f.next_id.fetch_add(1, Ordering::Relaxed) as u128) << 1;
                        if shard_of(id, n) == home {
                            break id;
                        }
                    };
                    Transfer::new(id, from, to, 1 + (rng(seed) % 1_000) as u128, usd()).into()
                })
                .collect()
        })
        .collect()
}

#[divan::bench(args = CASES, sample_count = 10, sample_size = 1)]
fn transfers(bencher: Bencher, name: &str) {
    let case = *cases().iter().find(|c| c.to_string() == name).unwrap();
    let f = fixture(case.shards, case.accounts);
    let mut seed = 0x2545_f491_4f6c_dd1d;
    bencher
        .counter(ItemsCount::new(BATCH * BATCHES_PER_SAMPLE))
        .with_inputs(|| batches(&f, &case, &mut seed))
        .bench_local_values(|batches| {
            let mut pending = std::collections::VecDeque::new();
            for b in batches {
                if pending.len() == IN_FLIGHT {
                    let t: tally_engine::runtime::Ticket = pending.pop_front().unwrap();
                    divan::black_box(t.wait());
                }
                pending.push_back(f.rt.submit(b).unwrap());
            }
            for t in pending {
                let outcomes = t.wait();
                debug_assert!(outcomes.iter().all(|o| o.is_ok()));
                divan::black_box(outcomes);
            }
        });
}
