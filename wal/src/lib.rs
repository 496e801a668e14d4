//! # tally-wal
//!
//! The write-ahead log of committed operations: preallocated segment files
//! of checksummed, hash-chained records (byte layout in `FORMAT.md`), written
//! and read with positioned I/O through the storage seam ([`storage`]: the
//! real disk, or the simulator's); group commit; recovery by replay through
//! the engine; and the offline audit behind `tally-audit`. No `unsafe`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod background;
pub mod backup;
pub mod blockfile;
pub mod cold;
pub mod durable;
pub mod follow;
pub mod format;
pub mod history;
pub mod journal;
pub mod log;
pub mod problem;
pub mod record;
pub mod scan;
pub mod segment;
pub mod snapshot;
pub mod storage;
pub mod verify;

pub use durable::{recover, ArchivePolicy, ColdTier, Durable, DurableConfig, OpenError, Recovery};
pub use journal::Durability;
pub use problem::Problem;
