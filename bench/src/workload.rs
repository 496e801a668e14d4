//! What a benchmark submits: a ledger set up with one currency, an
//! unrestricted bank account and N funded wallets, then operations among the
//! wallets in a chosen shape. Deterministic for a seed. (Floating point here
//! only draws random choices; amounts are integers.)

use tally_engine::chain::Operation;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::id::shard_of;
use tally_engine::lien::{CaptureLien, CreateLien, ReleaseLien};
use tally_engine::{BalancePolicy, Command, Entry, Line, NewAccount, Transfer};

/// The bank account that funds the wallets.
pub const BANK: u128 = 1;
/// Wallet ids start here.
pub const FIRST_WALLET: u128 = 1_000;
/// Each wallet starts with this many minor units.
pub const FUNDING: u128 = 1 << 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Two-line transfers, both sides drawn uniformly from all wallets.
    Uniform,
    /// Transfers with both sides drawn from a Zipf distribution (`--zipf-s`).
    Zipf,
    /// One hot wallet on one side of every transfer.
    Hot,
    /// Four-line entries (two debits, two credits).
    MultiLine,
    /// Liens: create, then capture (half) or release (half) later.
    Liens,
    /// Chained transaction events: a 3-step transfer with fee (pay, fee,
    /// forward; three groups). One operation = one event (5 commands:
    /// create, 3 steps, start); it counts when the event completes.
    Events,
    /// Events of one `batch.operation` step with 100 transfers.
    BatchEvents,
}

/// Transfers in each `batch-events` event.
pub const BATCH_EVENT_ITEMS: usize = 100;

fn transfer_payload(from: u128, to: u128, amount: &str) -> String {
    format!(
        r#"{{"source_account_id":"{from}","destination_account_id":"{to}","amount":"{amount}","currency":"USD"}}"#
    )
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
        all.push(Transfer::new((1u128 << 100) + i, BANK, FIRST_WALLET + i, FUNDING, usd()).into());
    }
    all.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
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
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How to draw operations; shared by all streams.
#[derive(Clone)]
pub struct Spec {
    pub shape: Shape,
    pub accounts: usize,
    pub seed: u64,
    /// Share of transfers whose two wallets are on different shards (None:
    /// whatever the draw gives).
    pub cross_shard: Option<f64>,
    pub shards: usize,
    /// Zipf CDF over wallet ranks (for `Shape::Zipf`).
    zipf: Vec<f64>,
    /// Wallet indices by shard (for `cross_shard`).
    by_shard: Vec<Vec<u64>>,
    /// For `Shape::Hot`: how many hot wallets (the first ones).
    pub hot: usize,
}

impl Spec {
    pub fn new(
        shape: Shape,
        accounts: usize,
        seed: u64,
        zipf_s: f64,
        cross_shard: Option<f64>,
        shards: usize,
    ) -> Spec {
        let accounts = accounts.max(2);
        let zipf = if shape == Shape::Zipf {
            let weights: Vec<f64> = (1..=accounts)
                .map(|k| 1.0 / (k as f64).powf(zipf_s))
                .collect();
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect()
        } else {
            Vec::new()
        };
        let shards = shards.max(1);
        let mut by_shard = vec![Vec::new(); shards];
        if cross_shard.is_some() {
            for i in 0..accounts as u64 {
                by_shard[shard_of(FIRST_WALLET + i as u128, shards)].push(i);
            }
        }
        Spec {
            shape,
            accounts,
            seed,
            cross_shard,
            shards,
            zipf,
            by_shard,
            hot: 1,
        }
    }

    fn wallet(i: u64) -> u128 {
        FIRST_WALLET + i as u128
    }
}

/// Generates operations for one stream: ids are unique across streams
/// (stream number in the high bits).
pub struct Generator {
    spec: std::sync::Arc<Spec>,
    rng: Rng,
    stream: u128,
    n: u128,
    /// Liens created and not yet captured or released: (lien, account).
    open_liens: std::collections::VecDeque<(u128, u128)>,
}

impl Generator {
    pub fn new(spec: std::sync::Arc<Spec>, stream: u64) -> Generator {
        let rng = Rng::new(spec.seed ^ (stream + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        Generator {
            spec,
            rng,
            stream: stream as u128,
            n: 0,
            open_liens: Default::default(),
        }
    }

    fn next_id(&mut self) -> u128 {
        self.n += 1;
        (self.stream + 1) << 64 | self.n
    }

    /// An id whose record lives on `shard`.
    fn id_on(&mut self, shard: usize) -> u128 {
        loop {
            let id = self.next_id();
            if shard_of(id, self.spec.shards) == shard {
                return id;
            }
        }
    }

    fn draw(&mut self) -> u64 {
        let n = self.spec.accounts as u64;
        if self.spec.shape == Shape::Zipf {
            let u = self.rng.unit();
            (self.spec.zipf.partition_point(|c| *c < u) as u64).min(n - 1)
        } else {
            self.rng.below(n)
        }
    }

    /// Two different wallets (and the id for the entry), honouring the
    /// cross-shard share when one is set.
    fn pair(&mut self) -> (u128, u128, u128) {
        let n = self.spec.accounts as u64;
        let a = self.draw();
        let mut b = self.draw();
        if b == a {
            b = (a + 1 + self.rng.below(n - 1)) % n;
        }
        match self.spec.cross_shard {
            Some(p) if self.spec.shards > 1 => {
                let sa = shard_of(Spec::wallet(a), self.spec.shards);
                let cross = self.rng.unit() < p;
                let choices: Vec<usize> = (0..self.spec.shards)
                    .filter(|s| (*s != sa) == cross)
                    .collect();
                let sb = choices[self.rng.below(choices.len() as u64) as usize];
                let list = &self.spec.by_shard[sb];
                let mut pick = list[self.rng.below(list.len() as u64) as usize];
                if pick == a {
                    pick = list[(list.iter().position(|x| *x == a).unwrap_or(0) + 1) % list.len()];
                }
                let id = self.id_on(sa);
                (Spec::wallet(a), Spec::wallet(pick), id)
            }
            _ => {
                let id = self.next_id();
                (Spec::wallet(a), Spec::wallet(b), id)
            }
        }
    }

    /// The commands of one event (`Shape::Events` or `Shape::BatchEvents`):
    /// create, its steps, start. Returns the event id too.
    pub fn event(&mut self) -> (u128, Vec<Command>) {
        use tally_engine::event::{EventCommand as E, NewEvent, Step};
        let id = self.next_id() | (1u128 << 120);
        let step = |name: &str, order: u32, kind: &str, payload: String| {
            Command::Event(E::AddStep {
                event: id,
                step: Step {
                    name: name.into(),
                    description: "".into(),
                    kind: kind.into(),
                    order,
                    payload: payload.into(),
                },
            })
        };
        let mut cmds = vec![Command::Event(E::Create(NewEvent::new(id, "bench")))];
        if self.spec.shape == Shape::BatchEvents {
            let items: Vec<String> = (0..BATCH_EVENT_ITEMS)
                .map(|k| {
                    let (a, b, _) = self.pair();
                    format!(
                        r#"{{"id":"{k}","type":"wallet.transfer","payload":{}}}"#,
                        transfer_payload(a, b, "0.01")
                    )
                })
                .collect();
            let payload = format!(
                r#"{{"batch_id":"{id}","transactions":[{}]}}"#,
                items.join(",")
            );
            cmds.push(step("batch", 1, "batch.operation", payload));
        } else {
            let (a, b, _) = self.pair();
            let (_, c, _) = self.pair();
            cmds.push(step(
                "pay",
                1,
                "wallet.transfer",
                transfer_payload(a, b, "0.10"),
            ));
            cmds.push(step(
                "fee",
                2,
                "wallet.transfer",
                transfer_payload(a, BANK, "0.01"),
            ));
            let to = if c == b { a } else { c };
            cmds.push(step(
                "forward",
                3,
                "wallet.transfer",
                transfer_payload(b, to, "0.05"),
            ));
        }
        cmds.push(Command::Event(E::Start { event: id }));
        (id, cmds)
    }

    pub fn next_command(&mut self) -> Command {
        match self.spec.shape {
            Shape::Uniform | Shape::Zipf => {
                let (from, to, id) = self.pair();
                Transfer::new(id, from, to, 1, usd()).into()
            }
            Shape::Hot => {
                let n = self.spec.accounts as u64;
                let h = (self.spec.hot as u64).clamp(1, n - 1);
                let hot = Spec::wallet(self.rng.below(h));
                let other = Spec::wallet(h + self.rng.below(n - h));
                let id = self.next_id();
                let (from, to) = if id % 2 == 0 {
                    (hot, other)
                } else {
                    (other, hot)
                };
                Transfer::new(id, from, to, 1, usd()).into()
            }
            Shape::MultiLine => {
                let (a, b, id) = self.pair();
                let (c, d, _) = self.pair();
                Entry::new(
                    id,
                    [
                        Line::debit(a, 2, usd()),
                        Line::debit(c, 1, usd()),
                        Line::credit(b, 1, usd()),
                        Line::credit(d, 2, usd()),
                    ],
                )
                .into()
            }
            Shape::Events | Shape::BatchEvents => {
                // Not a single command: `event` gives the commands of one.
                let (from, to, id) = self.pair();
                Transfer::new(id, from, to, 1, usd()).into()
            }
            Shape::Liens => {
                if self.open_liens.len() >= 64
                    || (self.open_liens.len() > 8 && self.rng.below(2) == 0)
                {
                    if let Some((lien, account)) = self.open_liens.pop_front() {
                        let id = self.next_id();
                        if id % 2 == 0 {
                            let (_, to, _) = self.pair();
                            let mut credits = smallvec::SmallVec::new();
                            credits.push((to, 1));
                            return Command::Op(Operation::CaptureLien(Box::new(CaptureLien {
                                lien,
                                account,
                                entry_id: id,
                                currency: usd(),
                                credits,
                                reference: None,
                            })));
                        }
                        return ReleaseLien { lien, account }.into();
                    }
                }
                let (account, _, _) = self.pair();
                let id = self.next_id();
                self.open_liens.push_back((id, account));
                CreateLien {
                    id,
                    account,
                    currency: usd(),
                    amount: 2,
                    expires_in_ns: None,
                    owner: 0,
                    user_data: 0,
                }
                .into()
            }
        }
    }

    pub fn batch(&mut self, n: usize) -> Vec<Command> {
        (0..n).map(|_| self.next_command()).collect()
    }
}

/// The entry ids a command commits (for `--verify`).
pub fn entry_ids(cmd: &Command) -> impl Iterator<Item = u128> + '_ {
    cmd.ops().iter().filter_map(|op| match op {
        Operation::Entry(e) => Some(e.id),
        Operation::Transfer(t) => Some(t.id),
        Operation::CaptureLien(c) => Some(c.entry_id),
        Operation::CreateLien(_) | Operation::ReleaseLien(_) => None,
    })
}

/// A wallet drawn uniformly (for reads).
pub fn random_wallet(rng: &mut Rng, accounts: usize) -> u128 {
    Spec::wallet(rng.below(accounts.max(1) as u64))
}
