//! How long the verifier's consistent cut holds each shard, and how long a
//! sampled and a full verification take, for a ledger of N accounts (and one
//! transfer per account in the log).
//!
//! `cargo run --release -p tally-wal --example verify_pause -- 1000000 2`

use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{BalancePolicy, Command, Entry, NewAccount};
use tally_wal::history::PageLimits;
use tally_wal::{Durability, Durable, DurableConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u128 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let shards: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir = tempfile::tempdir_in(".").expect("temp dir");
    let mut config = DurableConfig {
        durability: Durability::None,
        history: Some(PageLimits::default()),
        ..DurableConfig::default()
    };
    config.runtime.shards = shards;
    config.runtime.reserve_accounts = n as usize / shards + 16;
    let (durable, _) = Durable::open(dir.path(), config).expect("open");
    let rt = durable.runtime();
    let usd = CurrencyCode::parse("USD").expect("code");
    let mut cmds = vec![Command::CreateCurrency(
        Currency::new("USD", 2).expect("currency"),
    )];
    cmds.push(Command::CreateAccount(NewAccount {
        id: 1,
        currency: usd,
        policy: BalancePolicy::Unrestricted,
        user_data: 0,
    }));
    let mut tickets = Vec::new();
    for a in 2..n + 2 {
        cmds.push(Command::CreateAccount(NewAccount {
            id: a,
            currency: usd,
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }));
        cmds.push(Entry::transfer(a << 20, 1, a, 100, usd).into());
        if cmds.len() >= 4_096 {
            tickets.push(rt.submit(std::mem::take(&mut cmds)).expect("submit"));
        }
    }
    tickets.push(rt.submit(cmds).expect("submit"));
    for t in tickets {
        t.wait();
    }
    let history = durable.history().expect("asked for").clone();
    println!("{n} accounts on {shards} shard(s)");
    for full in [false, false, true] {
        let r = tally_wal::verify::verify(rt, &history, &durable.stats, full);
        println!(
            "{}: clean {}, longest shard pause {} µs, total {} ms ({} accounts checked against the log, {} records against the index)",
            if full { "full" } else { "sampled" },
            r.clean,
            r.max_shard_pause_us,
            r.duration_ms,
            r.accounts_checked_against_log,
            r.records_checked_against_index
        );
    }
    durable.shutdown();
}
