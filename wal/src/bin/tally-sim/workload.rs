//! The simulated clients: batches of commands of every kind, drawn from the
//! seed. Ids come from small ranges and earlier commands are sent again,
//! as they are or with other content, so duplicates, id conflicts, stale
//! versions, failed conditions, overdrafts and missing accounts all happen.

use smallvec::smallvec;
use tally_engine::event::{EventCommand, NewEvent, Step};
use tally_engine::*;
use tally_wal::storage::sim::Rng;

/// Wallets (1..=8 USD, 9..=10 EUR), the funding account, and the
/// settlement accounts the event executors pay through.
pub const FUNDING: u128 = 1;
pub const WALLETS: u128 = 10;
pub const SETTLE_USD: u128 = 20;
pub const SETTLE_EUR: u128 = 21;
/// An account never created (`account_not_found`).
const MISSING: u128 = 99;
/// Commands kept to be sent again.
const HISTORY: usize = 512;
/// Simulated nanoseconds.
pub const MS: u64 = 1_000_000;

pub fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap_or_else(|_| unreachable!("a valid code"))
}

pub fn eur() -> CurrencyCode {
    CurrencyCode::parse("EUR").unwrap_or_else(|_| unreachable!("a valid code"))
}

/// The event executors' configuration.
pub fn event_config() -> tally_engine::event::EventConfig {
    let mut c = tally_engine::event::EventConfig::default();
    c.settlement.insert("USD".into(), SETTLE_USD);
    c.settlement.insert("EUR".into(), SETTLE_EUR);
    c
}

/// What the clients remember between batches.
pub struct Workload {
    rng: Rng,
    next_entry: u128,
    next_lien: u128,
    next_chain: u128,
    next_event: u128,
    history: Vec<Command>,
    /// Events started with a step that waits for confirmation.
    awaiting: Vec<u128>,
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng::new(seed ^ 0x776f_726b),
            next_entry: 1_000,
            next_lien: 1_000,
            next_chain: 1_000,
            next_event: 1_000,
            history: Vec::new(),
            awaiting: Vec::new(),
        }
    }

    /// Currencies, accounts and opening balances.
    pub fn setup() -> Vec<Command> {
        let mut v = vec![
            Command::CreateCurrency(Currency {
                code: usd(),
                scale: 2,
            }),
            Command::CreateCurrency(Currency {
                code: eur(),
                scale: 2,
            }),
        ];
        let account = |id, currency, policy| {
            Command::CreateAccount(NewAccount {
                id,
                currency,
                policy,
                user_data: id,
            })
        };
        v.push(account(FUNDING, usd(), BalancePolicy::Unrestricted));
        for id in 2..=WALLETS {
            let currency = if id > 8 { eur() } else { usd() };
            let policy = match id % 3 {
                0 => BalancePolicy::OverdraftLimit(500),
                _ => BalancePolicy::NoOverdraft,
            };
            v.push(account(id, currency, policy));
        }
        v.push(account(SETTLE_USD, usd(), BalancePolicy::Unrestricted));
        v.push(account(SETTLE_EUR, eur(), BalancePolicy::Unrestricted));
        for id in 2..=8 {
            v.push(Transfer::new(id, FUNDING, id, 10_000, usd()).into());
        }
        for id in 9..=WALLETS {
            v.push(Transfer::new(id, SETTLE_EUR, id, 10_000, eur()).into());
        }
        v
    }

    /// One client batch: 1 to 8 commands.
    pub fn batch(&mut self) -> Vec<Command> {
        let n = 1 + self.rng.below(8) as usize;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let mut cmds = self.command();
            v.append(&mut cmds);
        }
        for c in &v {
            if self.history.len() == HISTORY {
                let at = self.rng.below(HISTORY as u64) as usize;
                self.history[at] = c.clone();
            } else {
                self.history.push(c.clone());
            }
        }
        v
    }

    fn pick(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    fn account(&mut self) -> u128 {
        match self.pick(40) {
            0 => MISSING,
            1 => SETTLE_USD,
            _ => 1 + u128::from(self.pick(WALLETS as u64)),
        }
    }

    fn currency_of(account: u128) -> CurrencyCode {
        if account == SETTLE_EUR || (9..=WALLETS).contains(&account) {
            eur()
        } else {
            usd()
        }
    }

    fn amount(&mut self) -> u128 {
        let most = if self.pick(10) == 0 { 20_000 } else { 300 };
        1 + u128::from(self.pick(most))
    }

    fn entry_id(&mut self) -> u128 {
        self.next_entry += 1;
        self.next_entry
    }

    fn line(&mut self, side: Side, account: u128, amount: u128) -> Line {
        let mut l = Line {
            account,
            side,
            amount,
            currency: Self::currency_of(account),
            expected_version: None,
            condition: None,
        };
        if self.pick(8) == 0 {
            l.expected_version = Some(self.pick(30));
        }
        if self.pick(8) == 0 {
            let c = self.pick(2_000) as i128;
            l.condition = Some(if c % 2 == 0 {
                Condition::AvailableAtLeast(c)
            } else {
                Condition::BalanceAtMost(c * 20)
            });
        }
        l
    }

    fn entry(&mut self) -> Entry {
        let id = self.entry_id();
        let (a, b) = (self.account(), self.account());
        let amount = self.amount();
        let lines = if self.pick(3) == 0 {
            // Three lines in one currency.
            let c = self.account();
            let (x, y) = (amount, self.amount());
            vec![
                self.line(Side::Debit, a, x + y),
                self.line(Side::Credit, b, x),
                self.line(Side::Credit, c, y),
            ]
        } else {
            vec![
                self.line(Side::Debit, a, amount),
                self.line(Side::Credit, b, amount),
            ]
        };
        let mut e = Entry::new(id, lines);
        if self.pick(12) == 0 {
            // A correction of a recent entry (sometimes of one corrected
            // already, sometimes of one that never committed).
            e.corrects = Some(id - 1 - u128::from(self.pick(20)));
            e.allow_repeat_correction = self.pick(3) == 0;
        }
        if self.pick(10) == 0 {
            e.reference = Some(format!("ref-{}", self.pick(50)).into());
        }
        e
    }

    fn operation(&mut self) -> Operation {
        match self.pick(10) {
            0..=3 => Operation::entry(self.entry()),
            4 => Operation::Entry(Box::new(self.entry())),
            5 | 6 => {
                self.next_lien += 1;
                let account = self.account();
                Operation::CreateLien(CreateLien {
                    id: self.next_lien,
                    account,
                    currency: Self::currency_of(account),
                    amount: self.amount(),
                    expires_in_ns: (self.pick(2) == 0).then(|| (1 + self.pick(20)) * MS),
                    owner: 0,
                    user_data: 0,
                })
            }
            7 | 8 => {
                let lien = self.next_lien - u128::from(self.pick(6));
                let account = self.account();
                let to = self.account();
                let entry_id = self.entry_id();
                Operation::CaptureLien(Box::new(CaptureLien {
                    lien,
                    account,
                    entry_id,
                    currency: Self::currency_of(account),
                    credits: smallvec![(to, self.amount())],
                    reference: None,
                }))
            }
            _ => Operation::ReleaseLien(ReleaseLien {
                lien: self.next_lien - u128::from(self.pick(6)),
                account: self.account(),
            }),
        }
    }

    /// One command, or the few that make an event.
    fn command(&mut self) -> Vec<Command> {
        match self.pick(40) {
            0..=19 => vec![Command::Op(self.operation())],
            20..=24 => {
                let id = if self.pick(6) == 0 {
                    self.next_chain - u128::from(self.pick(4))
                } else {
                    self.next_chain += 1;
                    self.next_chain
                };
                let ops = (0..1 + self.pick(4)).map(|_| self.operation()).collect();
                vec![Command::Chain(Chain { id, ops })]
            }
            25..=29 if !self.history.is_empty() => {
                // The same command again: its first outcome comes back.
                let at = self.pick(self.history.len() as u64) as usize;
                vec![self.history[at].clone()]
            }
            30 | 31 if !self.history.is_empty() => {
                // An earlier id with other content: refused as a conflict.
                let at = self.pick(self.history.len() as u64) as usize;
                match self.history[at].clone() {
                    Command::Op(Operation::Transfer(mut t)) => {
                        t.amount += 1;
                        vec![t.into()]
                    }
                    other => vec![other],
                }
            }
            32 => vec![Command::Tick],
            33 => {
                let account = 2 + u128::from(self.pick(WALLETS as u64 - 1));
                let state = if self.pick(3) == 0 {
                    AccountState::Frozen
                } else {
                    AccountState::Active
                };
                vec![Command::SetAccountState { account, state }]
            }
            34..=36 => self.event(),
            37 | 38 if !self.awaiting.is_empty() => {
                let at = self.pick(self.awaiting.len() as u64) as usize;
                let event = self.awaiting.swap_remove(at);
                let c = if self.pick(3) == 0 {
                    EventCommand::Fail {
                        event,
                        step: "withdraw".into(),
                        reason: "declined".into(),
                    }
                } else {
                    EventCommand::Confirm {
                        event,
                        step: "withdraw".into(),
                        amount: (self.pick(2) == 0).then(|| 1 + u128::from(self.pick(50))),
                    }
                };
                vec![Command::Event(c)]
            }
            _ => vec![Command::Tick],
        }
    }

    /// An event with two or three steps, started (mostly): a transfer, a
    /// deposit, a withdrawal that waits for confirmation; a timeout and
    /// retries sometimes. Failing steps compensate the ones before.
    fn event(&mut self) -> Vec<Command> {
        self.next_event += 1;
        let id = self.next_event;
        let mut spec = NewEvent::new(id, "sim");
        if self.pick(3) == 0 {
            spec.timeout_ns = Some((5 + self.pick(40)) * MS);
        }
        spec.retries = self.pick(3) as u8;
        spec.retry_delay_ns = MS;
        let mut v = vec![Command::Event(EventCommand::Create(spec))];
        let wallet = |w: &mut Workload| 2 + u128::from(w.pick(7));
        let (a, b, c) = (wallet(self), wallet(self), wallet(self));
        let cents = |w: &mut Workload| format!("{}.{:02}", w.pick(60), w.pick(100));
        let mut steps = vec![(
            "pay",
            "wallet.transfer",
            1,
            format!(
                r#"{{"source_account_id":"{a}","destination_account_id":"{b}","amount":"{}","currency":"USD","reference":"sim"}}"#,
                cents(self)
            ),
        )];
        if self.pick(2) == 0 {
            steps.push((
                "top-up",
                "wallet.deposit",
                1,
                format!(
                    r#"{{"account_id":"{c}","amount":"{}","currency":"USD"}}"#,
                    cents(self)
                ),
            ));
        }
        let withdraws = self.pick(2) == 0;
        if withdraws {
            steps.push((
                "withdraw",
                "wallet.withdrawal",
                2,
                format!(
                    r#"{{"account_id":"{b}","amount":"{}","currency":"USD"}}"#,
                    cents(self)
                ),
            ));
        }
        for (name, kind, order, payload) in steps {
            v.push(Command::Event(EventCommand::AddStep {
                event: id,
                step: Step {
                    name: name.into(),
                    description: "".into(),
                    kind: kind.into(),
                    order,
                    payload: payload.into(),
                },
            }));
        }
        if self.pick(8) != 0 {
            v.push(Command::Event(EventCommand::Start { event: id }));
            if withdraws {
                self.awaiting.push(id);
            }
        }
        v
    }
}
