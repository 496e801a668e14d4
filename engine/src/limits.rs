//! Every bound in the engine, named once. Inputs beyond these are rejected with
//! a stable error code before they are sequenced.

/// Most shards a runtime may run (shard sets are `u64` bitmasks).
pub const MAX_SHARDS: usize = 64;
/// Most commands in one submitted batch.
pub const MAX_BATCH_COMMANDS: usize = 8_192;
/// Most lines in one entry.
pub const MAX_LINES_PER_ENTRY: usize = 128;
/// Most operations in one chain (an event group, e.g. a `batch.operation`
/// of `MAX_BATCH_ITEMS` transfers, runs as one chain).
pub const MAX_CHAIN_OPERATIONS: usize = 1_024;
/// Largest encoded size of one command, in bytes: the size of its log record
/// body. Checked before a command is sequenced (`command_too_large`), so the
/// log writer never meets a command it cannot write; the log's record limit is
/// this same number.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;
/// Longest reference text, in bytes (UTF-8).
pub const MAX_REFERENCE_BYTES: usize = 256;
/// Longest currency code, in ASCII characters.
pub const MAX_CURRENCY_CODE_LEN: usize = 8;
/// Largest currency scale (digits after the point).
pub const MAX_CURRENCY_SCALE: u8 = 18;
/// Most currencies a ledger can hold (indices are `u16`).
pub const MAX_CURRENCIES: usize = 4_096;
/// Largest amount or posted total in minor units: totals stay below `i128::MAX`
/// so that a balance (credits - debits) is always representable.
pub const MAX_AMOUNT: u128 = i128::MAX as u128;
/// Longest lien lifetime, in nanoseconds (one year).
pub const MAX_LIEN_LIFETIME_NS: u64 = 366 * 24 * 3_600 * 1_000_000_000;
/// Commands in flight in a runtime (submitted, not completed) before
/// `try_submit` answers `busy`. This is what bounds the shard queues (each
/// queued sub-batch holds at least one command in flight).
pub const MAX_INFLIGHT_COMMANDS: usize = 1 << 20;
/// Most steps in one event.
pub const MAX_EVENT_STEPS: usize = 64;
/// Longest event or step name, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 128;
/// Longest event or step description, failure reason or step type, in bytes.
pub const MAX_EVENT_TEXT_BYTES: usize = 1_024;
/// Longest event metadata (JSON text), in bytes.
pub const MAX_EVENT_METADATA_BYTES: usize = 4_096;
/// Longest step payload (JSON text), in bytes.
pub const MAX_STEP_PAYLOAD_BYTES: usize = 256 * 1_024;
/// Most items in one `batch.operation` step.
pub const MAX_BATCH_ITEMS: usize = 500;
/// Most retries of a failing event group (after the first attempt).
pub const MAX_EVENT_RETRIES: u8 = 16;
/// Longest event timeout and retry delay, in nanoseconds (one year).
pub const MAX_EVENT_TIMEOUT_NS: u64 = MAX_LIEN_LIFETIME_NS;
/// Longest step result (JSON text) an executor may record, in bytes.
pub const MAX_STEP_RESULT_BYTES: usize = 64 * 1_024;
