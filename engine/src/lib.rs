//! # tally-engine
//!
//! The ledger's state machine and its sharded runtime.
//!
//! - The state machine ([`Ledger`], built from [`ShardState`]s and a
//!   [`Sequencer`]) is *sans-IO*: no threads, clock, files or sockets. It takes
//!   commands in a global order, each stamped with a sequence number and a
//!   timestamp, and returns outcomes. Replay, audit and simulation drive it.
//! - The runtime ([`runtime::Runtime`]) runs one thread per shard, each the
//!   single writer of its accounts, fed by bounded lock-free queues; commands
//!   that cross shards run as ordered shard-crossing batches (see
//!   `ARCHITECTURE.md`).
//!
//! Money is integer minor units (`u128`/`i128`) inside, decimal text at the
//! edges ([`amount`]), never floats.
#![forbid(unsafe_code)]

pub mod account;
pub mod amount;
pub mod chain;
pub mod codec;
pub mod command;
pub mod currency;
pub mod entry;
pub mod error;
pub mod essential;
pub mod event;
pub mod id;
pub mod idindex;
pub mod image;
pub mod ledger;
pub mod lien;
pub mod limits;
pub mod runtime;
pub mod sequencer;
pub mod shard;
pub mod table;
pub mod transfer;
pub mod view;

pub use account::{Account, AccountState, BalancePolicy, NewAccount};
pub use chain::{Chain, Operation};
pub use command::{Command, IdSpace, Outcome};
pub use currency::{Currency, CurrencyCode};
pub use entry::{Condition, Entry, Line, Side};
pub use error::{Error, ErrorCode};
pub use ledger::Ledger;
pub use lien::{CaptureLien, CreateLien, Lien, LienStatus, ReleaseLien};
pub use sequencer::{Route, Sequencer};
pub use shard::{MemoryUse, ShardState};
pub use transfer::Transfer;
pub use view::{AccountView, IdStatus};
