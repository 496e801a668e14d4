#![allow(dead_code)]
//! A mixed workload for log tests: currencies, accounts, transfers (some
//! failing), liens with expiry, captures, chains, duplicates.

use std::path::Path;
use tally_engine::runtime::RuntimeConfig;
use tally_engine::*;
use tally_wal::{Durability, Durable, DurableConfig};

pub const WALLETS: u128 = 6;

pub fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

pub fn config(shards: usize, segment_size: u64) -> DurableConfig {
    DurableConfig {
        runtime: RuntimeConfig {
            shards,
            tick_interval: None,
            ..RuntimeConfig::default()
        },
        durability: Durability::Fsync,
        segment_size,
        ..DurableConfig::default()
    }
}

pub fn open(dir: &Path, shards: usize) -> Durable {
    Durable::open(dir, config(shards, 64 << 10)).unwrap().0
}

pub fn setup() -> Vec<Command> {
    let mut v = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
    v.push(Command::CreateAccount(NewAccount {
        id: 1,
        currency: usd(),
        policy: BalancePolicy::Unrestricted,
        user_data: 0,
    }));
    for w in 2..2 + WALLETS {
        v.push(Command::CreateAccount(NewAccount {
            id: w,
            currency: usd(),
            policy: BalancePolicy::NoOverdraft,
            user_data: w,
        }));
        v.push(Entry::transfer(1_000_000 + w, 1, w, 10_000, usd()).into());
    }
    v
}

/// Commands of round `r`, item `i`: deterministic, ids unique per (r, i).
/// Submits [`setup`] and requires every outcome to be a success.
pub fn set_up(d: &Durable) {
    assert!(d
        .runtime()
        .submit(setup())
        .unwrap()
        .wait()
        .iter()
        .all(|o| o.is_ok()));
}

pub fn command(r: u128, i: u128) -> Command {
    let id = ((r + 1) << 32) | (i << 4);
    let from = 2 + (i * 7 + r) % WALLETS;
    let to = 2 + (i * 3 + 1 + r) % WALLETS;
    match i % 6 {
        0..=2 => Entry::transfer(id, from, to, 1 + (i * 37 % 900), usd()).into(),
        3 => Command::Chain(Chain {
            id: id | 1,
            ops: vec![
                Operation::CreateLien(CreateLien {
                    id: id | 2,
                    account: from,
                    currency: usd(),
                    amount: 50,
                    expires_in_ns: Some(1_000_000),
                    owner: 0,
                    user_data: 0,
                }),
                Operation::CaptureLien(Box::new(CaptureLien {
                    lien: id | 2,
                    account: from,
                    entry_id: id | 3,
                    currency: usd(),
                    credits: smallvec::smallvec![(to, 20)],
                    reference: None,
                })),
            ],
        }),
        4 => CreateLien {
            id: id | 4,
            account: from,
            currency: usd(),
            amount: 30,
            expires_in_ns: Some(1 + i as u64 * 1_000),
            owner: 0,
            user_data: 0,
        }
        .into(),
        _ => Entry::transfer(id, from, to, 50_000, usd()).into(), // insufficient funds
    }
}
