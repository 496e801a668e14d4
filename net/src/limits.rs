//! Every bound of the protocol and the server, named once (and listed in
//! `PROTOCOL.md`).

use std::time::Duration;

/// The ALPN protocol id: a client that does not offer it is refused.
pub const ALPN: &[u8] = b"tally/1";
/// Bytes before a frame's body: length (u32), kind (u8), request id (u64).
pub const FRAME_HEADER_BYTES: usize = 13;
/// Largest frame body. A longer frame closes its stream with `frame_too_large`.
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// Most operations (commands) in one `Submit` request.
pub const MAX_BATCH_OPERATIONS: usize = tally_engine::limits::MAX_BATCH_COMMANDS;
/// Requests in progress on one stream before the server answers `busy`.
pub const MAX_INFLIGHT_PER_STREAM: usize = 4_096;
/// Bidirectional streams a client may have open on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 4_096;
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Keep-alive the client sends so an idle but live connection stays open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most lines or records in one page of a statement or a query.
pub const MAX_PAGE: u32 = 1_000;
/// Most records pushed in one subscription frame.
pub const MAX_FEED_RECORDS: usize = 512;
/// Longest reference text accepted in a query (as in entries).
pub const MAX_QUERY_REFERENCE_BYTES: usize = tally_engine::limits::MAX_REFERENCE_BYTES;
/// How long a graceful shutdown waits for requests in progress.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Most events one `event list` answers.
pub const MAX_EVENTS_LISTED: usize = 1_000;
