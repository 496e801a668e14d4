//! Writes a small durable ledger into a data directory, so `tally-audit` has
//! something real to read:
//! `cargo run --release -p tally-wal --example demo -- ./tally-data`
//! then `cargo run --release -p tally-wal --bin tally-audit -- ./tally-data --account 2`.
//! Running it again on the same directory recovers and appends more.

use std::path::PathBuf;
use tally_engine::amount::{format_balance, parse_amount};
use tally_engine::*;
use tally_wal::{Durable, DurableConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "./tally-data".into()),
    );
    let (ledger, recovery) = Durable::open(&dir, DurableConfig::default())?;
    println!("{}: {}", dir.display(), recovery.describe());
    let rt = ledger.runtime();
    let usd = CurrencyCode::parse("USD")?;
    let (bank, alice, bob) = (1u128, 2u128, 3u128);
    // Idempotent setup: a second run gets duplicates, nothing changes.
    let setup = vec![
        Command::CreateCurrency(Currency::new("USD", 2)?),
        Command::CreateAccount(NewAccount {
            id: bank,
            currency: usd,
            policy: BalancePolicy::Unrestricted,
            user_data: 0,
        }),
        Command::CreateAccount(NewAccount {
            id: alice,
            currency: usd,
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }),
        Command::CreateAccount(NewAccount {
            id: bob,
            currency: usd,
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }),
        Entry::transfer(100, bank, alice, parse_amount("500.00", 2)?, usd)
            .with_reference("deposit")
            .into(),
    ];
    rt.submit(setup)?.wait();
    // New transfers each run (ids after the last sequence), one of them refused.
    let base = 1_000 + rt.next_seq() as u128 * 10;
    let batch: Vec<Command> = vec![
        Entry::transfer(base, alice, bob, parse_amount("12.34", 2)?, usd).into(),
        Entry::transfer(base + 1, bob, alice, parse_amount("2.00", 2)?, usd).into(),
        Entry::transfer(base + 2, bob, bank, parse_amount("1000000", 2)?, usd).into(),
        Entry::transfer(base + 3, alice, bob, parse_amount("1.00", 2)?, usd)
            .correcting(base + 1)
            .into(),
    ];
    for (cmd, outcome) in batch.iter().zip(rt.submit(batch.clone())?.wait()) {
        let (_, id) = cmd.top_id().unwrap_or((IdSpace::Entry, 0));
        println!(
            "entry {id}: {}",
            outcome
                .code()
                .map_or("committed".to_string(), |c| c.to_string())
        );
    }
    for (id, name) in [(bank, "bank"), (alice, "alice"), (bob, "bob")] {
        if let Some(a) = rt.account(id) {
            println!("{name:<6} balance {:>12}", format_balance(a.balance(), 2));
        }
    }
    if let Some(s) = ledger.take_snapshot()? {
        println!("snapshot at sequence {} ({} bytes)", s.last_seq, s.bytes);
    }
    ledger.shutdown();
    Ok(())
}
