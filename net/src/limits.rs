//! Every bound of the protocol and the server, named once (and listed in
//! `PROTOCOL.md`).

use std::time::Duration;

/// The ALPN protocol id: a client that does not offer it is refused.
pub const ALPN: &[u8] = b"tally/2";
/// Bytes before a frame's body: length (u32), version (u8), kind (u8),
/// reserved (u16), request id (u64).
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest frame body. A longer frame closes its stream with `frame_too_large`.
pub const MAX_FRAME_BYTES: usize = 8 << 20;
/// Most memory one request may take once decoded (its commands in their
/// in-memory form, estimated from the types' sizes); it is charged to the
/// connection's request budget while the request is worked on.
pub const MAX_DECODED_REQUEST_BYTES: usize = MAX_FRAME_BYTES;
/// Most operations (commands) in one `Submit` request.
pub const MAX_BATCH_OPERATIONS: usize = tally_engine::limits::MAX_BATCH_COMMANDS;
/// Requests in progress on one stream (error answers not yet sent among
/// them) before the server answers `busy`.
pub const MAX_INFLIGHT_PER_STREAM: usize = 4_096;
/// Bidirectional streams a client may have open on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Bytes QUIC buffers for one stream before the reader takes them (its
/// flow-control window): what a connection can park in the transport is
/// `MAX_STREAMS_PER_CONNECTION` times this.
pub const MAX_STREAM_WINDOW_BYTES: usize = 256 << 10;
/// Connections served at once, handshakes included; more are refused.
pub const MAX_CONNECTIONS: usize = 4_096;
/// Connections one client certificate may hold at once; more are closed
/// at once after the handshake.
pub const MAX_CONNECTIONS_PER_IDENTITY: usize = 128;
/// Bytes one connection may hold in memory at once: request frames being
/// read (their declared length is reserved before the body is read) and
/// responses not yet written. When it is used up, the connection's streams
/// stop reading until responses drain (QUIC flow control then holds the
/// client back). One frame of `MAX_FRAME_BYTES` always fits.
pub const MAX_CONNECTION_BUFFER_BYTES: usize = 2 * (MAX_FRAME_BYTES + FRAME_HEADER_BYTES);
/// Heavy requests (verify, event listings) one connection may run at once;
/// more wait.
pub const MAX_HEAVY_PER_CONNECTION: usize = 1;
/// Heavy requests the whole server runs at once; more wait.
pub const MAX_HEAVY_AT_ONCE: usize = 2;
/// Subscriptions one connection may hold open; more are answered `busy`.
pub const MAX_FEEDS_PER_CONNECTION: usize = 8;
/// A handshake not finished in this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once, server-wide (part of `MAX_CONNECTIONS`):
/// the rest of the connection slots are kept for clients that finished one.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one source address.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// The metrics page is rendered at most this often; scrapes in between get
/// the last rendering (a scrape never waits on the ledger).
pub const METRICS_MAX_AGE: Duration = Duration::from_millis(200);
/// How long a read waits for the log to cover the state it saw before it
/// answers `unavailable`.
pub const DURABLE_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapers served at once on the metrics address; more are closed.
pub const MAX_METRICS_CONNECTIONS: usize = 64;
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Keep-alive the client sends so an idle but live connection stays open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most lines or records in one page of a statement or a query.
pub const MAX_PAGE: u32 = 1_000;
/// Most bytes of records in one page of a statement, a lookup or the feed
/// (counted as record bodies plus [`RECORD_WIRE_OVERHEAD`] each). A page
/// always holds at least one record, and every record fits: a record body is
/// at most `MAX_COMMAND_BYTES` (1 MiB; 4 MiB in logs written before that
/// bound), below `MAX_FRAME_BYTES` with room for the page.
pub const MAX_PAGE_BYTES: usize = 4 << 20;
/// What a record adds on the wire to its log body, counted generously.
pub const RECORD_WIRE_OVERHEAD: usize = 256;
// A page holds at most MAX_PAGE_BYTES, or one record alone: both fit a frame.
const _: () = assert!(MAX_PAGE_BYTES + 4 * RECORD_WIRE_OVERHEAD < MAX_FRAME_BYTES);
const _: () =
    assert!(tally_wal::format::MAX_READ_RECORD_BODY + 4 * RECORD_WIRE_OVERHEAD < MAX_FRAME_BYTES);
/// Most records pushed in one subscription frame.
pub const MAX_FEED_RECORDS: usize = 512;
/// Longest reference text accepted in a query (as in entries).
pub const MAX_QUERY_REFERENCE_BYTES: usize = tally_engine::limits::MAX_REFERENCE_BYTES;
/// How long a graceful shutdown waits for requests in progress.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Most events one `event list` answers.
pub const MAX_EVENTS_LISTED: usize = 1_000;

/// The most bytes one `BackupRead` answers.
pub const MAX_BACKUP_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(MAX_BACKUP_CHUNK_BYTES + 64 < MAX_FRAME_BYTES);

/// Backups in progress at once (each holds its plan, a few hundred bytes).
pub const MAX_BACKUPS_AT_ONCE: usize = 2;

/// A backup with no read for this long is forgotten (`backup_not_found`).
pub const BACKUP_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
