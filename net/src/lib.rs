//! # tally-net
//!
//! Tally over QUIC: the wire protocol (`PROTOCOL.md`), the `tallyd` server,
//! the async client library, and the `tally` CLI. TLS 1.3 with mutual
//! authentication; development certificates are generated on first start.

#![forbid(unsafe_code)]

pub mod client;
pub mod hotspot;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub use protocol::{frame, message};
pub mod private;
pub mod server;
pub mod tls;
/// The history index and the verifier live beside the log.
pub use tally_wal::{history, verify};
