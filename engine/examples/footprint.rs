//! Measures the state machine alone (no threads) and its memory per account
//! and per remembered entry id. Run:
//! `cargo run --release -p tally-engine --example footprint -- [ACCOUNTS] [ENTRIES]`

use std::time::Instant;
use tally_engine::*;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap_or(0));
    let accounts = args.next().unwrap_or(1_000_000).max(2);
    let entries = args.next().unwrap_or(2_000_000);
    // Third argument 1: pre-size the tables, as a deployment configures them.
    let presize = args.next() == Some(1);
    let usd = CurrencyCode::parse("USD").unwrap();
    let mut l = Ledger::new(1);
    if presize {
        l.reserve(accounts + 1, entries + accounts);
    }
    l.execute(
        &Command::CreateCurrency(Currency {
            code: usd,
            scale: 2,
        }),
        1,
    );
    let system = u128::MAX;
    l.execute(
        &Command::CreateAccount(NewAccount {
            id: system,
            currency: usd,
            policy: BalancePolicy::Unrestricted,
            user_data: 0,
        }),
        1,
    );
    let ids: Vec<u128> = (1..=accounts as u128)
        .map(|i| (id::mix(i) as u128) | (i << 64))
        .collect();
    let t = Instant::now();
    for (n, &id) in ids.iter().enumerate() {
        l.execute(
            &Command::CreateAccount(NewAccount {
                id,
                currency: usd,
                policy: BalancePolicy::NoOverdraft,
                user_data: 0,
            }),
            1,
        );
        l.execute(
            &Entry::transfer((1u128 << 127) | n as u128, system, id, 1_000_000_000, usd).into(),
            1,
        );
    }
    let setup = t.elapsed();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let commands: Vec<Command> = (0..entries)
        .map(|n| {
            let from = ids[(next() % accounts as u64) as usize];
            let to = ids[(next() % accounts as u64) as usize];
            Entry::transfer(n as u128 + 1, from, to, 1 + (next() % 1000) as u128, usd).into()
        })
        .collect();
    let t = Instant::now();
    let mut ok = 0usize;
    for c in &commands {
        ok += l.execute(c, 1).is_ok() as usize;
    }
    let run = t.elapsed();
    let (account_bytes, id_bytes) = l.shards()[0].memory_bytes();
    let remembered = entries + accounts; // fundings are entries too
    println!(
        "accounts: {accounts}, pre-sized: {presize}, setup {:.2}s",
        setup.as_secs_f64()
    );
    println!(
        "transfers: {entries} ({ok} committed) in {:.3}s = {:.2} M/s (Ledger::execute, one thread, no runtime)",
        run.as_secs_f64(),
        entries as f64 / run.as_secs_f64() / 1e6
    );
    println!(
        "account table: {:.0} bytes/account (index + chunked slots)",
        account_bytes as f64 / accounts as f64
    );
    println!(
        "id index: {:.1} bytes/remembered id ({remembered} ids)",
        id_bytes as f64 / remembered as f64
    );
}
