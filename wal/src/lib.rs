//! # tally-wal
//!
//! The write-ahead log of committed operations: preallocated segment files
//! of checksummed, hash-chained records (byte layout in `FORMAT.md`), mapped
//! by the writer and read by readers with ordinary file reads; group commit;
//! recovery by replay through the engine; and the offline audit behind
//! `tally-audit`.
//!
//! `unsafe` is denied everywhere but in the one function that maps a segment
//! for the writer (`segment::map_for_writer`, which states why it is sound).
#![deny(unsafe_code)]

pub mod audit;
pub mod backup;
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
pub mod verify;

pub use durable::{recover, ArchivePolicy, Durable, DurableConfig, OpenError, Recovery};
pub use journal::Durability;
pub use problem::Problem;
