//! What a benchmark submits: a ledger set up with one currency, an
//! unrestricted bank account and N funded wallets, then transfers among the
//! wallets in a chosen shape. Deterministic for a seed.

use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{BalancePolicy, Command, Entry, NewAccount};

/// The bank account that funds the wallets.
pub const BANK: u128 = 1;
/// Wallet ids start here.
pub const FIRST_WALLET: u128 = 1_000;
/// Each wallet starts with this many minor units.
pub const FUNDING: u128 = 1 << 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Both sides drawn uniformly from all wallets.
    Uniform,
    /// One hot wallet on one side of every transfer.
    Hot,
}

pub fn usd() -> CurrencyCode {
    // "USD" is a valid code; parse cannot fail on it.
    CurrencyCode::parse("USD").unwrap_or_default()
}

/// The commands that create the ledger, in batches of at most `batch`.
pub fn setup(accounts: usize, batch: usize) -> Vec<Vec<Command>> {
    let mut all = Vec::with_capacity(2 + accounts * 2);
    if let Ok(c) = Currency::new("USD", 2) {
        all.push(Command::CreateCurrency(c));
    }
    all.push(Command::CreateAccount(NewAccount {
        id: BANK,
        currency: usd(),
        policy: BalancePolicy::Unrestricted,
        user_data: 0,
    }));
    for i in 0..accounts as u128 {
        all.push(Command::CreateAccount(NewAccount {
            id: FIRST_WALLET + i,
            currency: usd(),
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }));
    }
    for i in 0..accounts as u128 {
        all.push(Entry::transfer(setup_entry(i), BANK, FIRST_WALLET + i, FUNDING, usd()).into());
    }
    all.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
}

fn setup_entry(i: u128) -> u128 {
    (1u128 << 100) + i
}

/// A small fast generator (xorshift*), seeded per stream.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Generates transfers for one stream: ids are unique across streams
/// (stream number in the high bits).
pub struct Transfers {
    shape: Shape,
    accounts: u64,
    rng: Rng,
    stream: u128,
    n: u128,
}

impl Transfers {
    pub fn new(shape: Shape, accounts: usize, seed: u64, stream: u64) -> Transfers {
        Transfers {
            shape,
            accounts: accounts.max(2) as u64,
            rng: Rng::new(seed ^ (stream + 1).wrapping_mul(0xA24B_AED4_963E_E407)),
            stream: stream as u128,
            n: 0,
        }
    }

    pub fn next_transfer(&mut self) -> Command {
        self.n += 1;
        let id = (self.stream + 1) << 64 | self.n;
        let a = self.rng.below(self.accounts);
        let mut b = self.rng.below(self.accounts - 1);
        if b >= a {
            b += 1;
        }
        let (from, to) = match self.shape {
            Shape::Uniform => (a, b),
            Shape::Hot => {
                let other = 1 + self.rng.below(self.accounts - 1);
                if self.n % 2 == 0 {
                    (0, other)
                } else {
                    (other, 0)
                }
            }
        };
        Entry::transfer(
            id,
            FIRST_WALLET + from as u128,
            FIRST_WALLET + to as u128,
            1,
            usd(),
        )
        .into()
    }

    pub fn batch(&mut self, n: usize) -> Vec<Command> {
        (0..n).map(|_| self.next_transfer()).collect()
    }
}
