//! A first look at Tally's engine on its embedded defaults: a sharded runtime
//! in this process, a currency, three accounts, a transfer, a lien that is
//! captured, a chain that fails atomically, and the ledger's totals.
//! Run: `cargo run --release -p tally-engine --example quickstart`

use tally_engine::amount::{format_balance, parse_amount};
use tally_engine::runtime::{Runtime, RuntimeConfig};
use tally_engine::*;

fn main() -> Result<(), Error> {
    let rt = Runtime::start(RuntimeConfig {
        shards: 2,
        ..RuntimeConfig::default()
    })?;
    let usd = CurrencyCode::parse("USD")?;
    let dollars = |text: &str| parse_amount(text, 2);
    let show = |rt: &Runtime, id: u128, name: &str| {
        if let Some(a) = rt.account(id) {
            println!(
                "  {name:<9} balance {:>8}  available {:>8}  version {}",
                format_balance(a.balance(), 2),
                format_balance(a.available(), 2),
                a.account.version
            );
        }
    };
    let (bank, alice, bob) = (1, 2, 3);
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
        Entry::transfer(100, bank, alice, dollars("250.00")?, usd)
            .with_reference("deposit")
            .into(),
    ];
    for (cmd, outcome) in setup.iter().zip(rt.submit(setup.clone())?.wait()) {
        println!(
            "{:<60} -> {outcome:?}",
            format!("{cmd:?}").chars().take(60).collect::<String>()
        );
    }
    println!("transfer 40.10 alice -> bob:");
    println!(
        "  {:?}",
        rt.execute(Entry::transfer(101, alice, bob, dollars("40.10")?, usd).into())
    );
    println!("the same transfer again (idempotent retry):");
    println!(
        "  {:?}",
        rt.execute(Entry::transfer(101, alice, bob, dollars("40.10")?, usd).into())
    );
    println!("reserve 100.00 of alice's funds, capture 60.00 to bob:");
    let lien = CreateLien {
        id: 7,
        account: alice,
        currency: usd,
        amount: dollars("100")?,
        expires_in_ns: Some(60_000_000_000),
        owner: 0,
        user_data: 0,
    };
    println!("  {:?}", rt.execute(lien.into()));
    show(&rt, alice, "alice");
    let capture = CaptureLien {
        lien: 7,
        account: alice,
        entry_id: 102,
        currency: usd,
        credits: smallvec::smallvec![(bob, dollars("60")?)],
        reference: None,
    };
    println!("  {:?}", rt.execute(capture.into()));
    println!("a chain whose second step overdraws bob: nothing applies");
    let chain = Chain {
        id: 500,
        ops: vec![
            Operation::Entry(Box::new(Entry::transfer(
                103,
                bob,
                alice,
                dollars("10")?,
                usd,
            ))),
            Operation::Entry(Box::new(Entry::transfer(
                104,
                bob,
                bank,
                dollars("1000")?,
                usd,
            ))),
        ],
    };
    match rt.execute(chain.into()) {
        Outcome::Rejected { error, .. } => println!("  error: {error}"),
        other => println!("  {other:?}"),
    }
    println!("entry 103: {:?}", rt.status(IdSpace::Entry, 103));
    show(&rt, bank, "bank");
    show(&rt, alice, "alice");
    show(&rt, bob, "bob");
    for (code, sum) in rt.balance_sums() {
        println!(
            "sum of all {code} balances: {} (conservation)",
            format_balance(sum, 2)
        );
    }
    rt.shutdown();
    Ok(())
}
