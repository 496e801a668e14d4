//! `Ticket::settle`: a batch whose commands all committed is answered
//! without collecting outcomes, and the summary says exactly what
//! `Ticket::wait` would have; any other batch gives every outcome.

mod common;

use common::usd;
use tally_engine::runtime::{Runtime, RuntimeConfig, Settled};
use tally_engine::*;

fn account(id: u128, policy: BalancePolicy) -> Command {
    Command::CreateAccount(NewAccount {
        id,
        currency: usd(),
        policy,
        user_data: 0,
    })
}

#[test]
fn settle_summarises_only_batches_that_all_committed() {
    for shards in [1, 2, 4] {
        let rt = Runtime::start(RuntimeConfig {
            shards,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let mut setup = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
        setup.push(account(1, BalancePolicy::Unrestricted));
        setup.extend((2..10).map(|a| account(a, BalancePolicy::NoOverdraft)));
        rt.submit(setup).unwrap().wait();
        let transfers = |base: u128, amount: u128| -> Vec<Command> {
            (0..100)
                .map(|i| Entry::transfer(base + i, 1 + i % 3, 2 + i % 7, amount, usd()).into())
                .collect()
        };
        let first = rt.next_seq();
        // From the unrestricted account 1 and between funded wallets: all commit.
        rt.submit(
            (2..10)
                .map(|a| Entry::transfer(5_000 + a, 1, a, 1_000_000, usd()).into())
                .collect(),
        )
        .unwrap()
        .wait();
        let start = rt.next_seq();
        let settled = rt.submit(transfers(10_000, 1)).unwrap().settle();
        match settled {
            Settled::AllCommitted {
                count,
                first_seq,
                first_timestamp,
            } => {
                assert_eq!((count, first_seq), (100, start), "{shards} shard(s)");
                assert!(first_timestamp > 0 && first > 0);
            }
            other => panic!("{other:?}"),
        }
        // The same ids again: duplicates, so every outcome is given.
        let again = rt.submit(transfers(10_000, 1)).unwrap().settle();
        let Settled::Outcomes(o) = again else {
            panic!("duplicates are not all committed")
        };
        assert!(o.iter().all(|o| matches!(o, Outcome::Duplicate { .. })));
        // One rejection (more than the wallet holds) among commits.
        let mut mixed = transfers(20_000, 1);
        mixed[50] = Entry::transfer(30_000, 2, 3, 1 << 60, usd()).into();
        let Settled::Outcomes(o) = rt.submit(mixed).unwrap().settle() else {
            panic!("a rejection is not all committed")
        };
        assert_eq!(o[50].code(), Some(ErrorCode::InsufficientFunds));
        assert_eq!(o.iter().filter(|o| o.is_ok()).count(), 99);
        // One refused before sequencing (invalid): not dense, outcomes given.
        let mut early = transfers(40_000, 1);
        early[7] = Entry::transfer(40_007, 2, 3, 0, usd()).into();
        let Settled::Outcomes(o) = rt.submit(early).unwrap().settle() else {
            panic!("an early refusal is not all committed")
        };
        assert!(!o[7].is_ok() && o[7].seq().is_none());
        rt.shutdown();
    }
}
