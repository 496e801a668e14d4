//! Rejections: one enum of stable codes, each with a message, plus the details
//! that say where (chain operation, line, account or lien, current version).

use std::fmt;

macro_rules! codes {
    ($( $variant:ident = $num:literal, $code:literal, $msg:literal; )*) => {
        /// Every way a command can be refused. The snake_case code and the
        /// number are stable: clients, the log and the wire depend on them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ErrorCode { $( $variant = $num, )* }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The stable snake_case code.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// A one-line explanation for people.
            pub fn description(self) -> &'static str {
                match self { $( ErrorCode::$variant => $msg, )* }
            }

            /// The code with this stable number, if any.
            pub fn from_u16(n: u16) -> Option<ErrorCode> {
                match n { $( $num => Some(ErrorCode::$variant), )* _ => None }
            }

            /// The code with this snake_case name, if any.
            pub fn from_name(name: &str) -> Option<ErrorCode> {
                match name { $( $code => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

codes! {
    // Malformed input: refused before sequencing, leaves no trace.
    InvalidId = 1, "invalid_id", "an id must be a non-zero decimal, 0x-hex or UUID 128-bit value";
    InvalidAmount = 2, "invalid_amount", "an amount must be positive, within range, and have no more decimals than its currency's scale";
    InvalidCurrency = 3, "invalid_currency", "a currency code is 1 to 8 characters A-Z/0-9 with a scale of 0 to 18";
    TooFewLines = 4, "too_few_lines", "an entry needs at least two lines";
    TooManyLines = 5, "too_many_lines", "an entry has more lines than the limit";
    UnbalancedEntry = 6, "unbalanced_entry", "debits and credits of an entry must be equal in every currency";
    ReferenceTooLong = 7, "reference_too_long", "the reference text is longer than the limit";
    EmptyChain = 8, "empty_chain", "a chain needs at least one operation";
    TooManyOperations = 9, "too_many_operations", "a chain has more operations than the limit";
    InvalidExpiry = 10, "invalid_expiry", "a lien's lifetime must be positive and at most the limit";
    BatchTooLarge = 11, "batch_too_large", "a batch has more commands than the limit";
    InvalidCommand = 12, "invalid_command", "the command is not well formed";
    InvalidPayload = 13, "invalid_payload", "an event step's payload is not valid for its executor";
    UnknownStepType = 14, "unknown_step_type", "no executor is registered under the step's type";
    CommandTooLarge = 15, "command_too_large", "the command's encoded size is over the limit for one command (MAX_COMMAND_BYTES)";
    ReservedId = 16, "reserved_id", "the id lies in the range reserved for ids the server's event driver derives; choose another id";
    // Refused by the ledger's state: sequenced, logged, final for the id.
    CurrencyNotFound = 100, "currency_not_found", "no currency with this code exists";
    AccountNotFound = 101, "account_not_found", "no account with this id exists";
    CurrencyMismatch = 102, "currency_mismatch", "the line's currency is not the account's currency";
    AccountFrozen = 103, "account_frozen", "the account is frozen";
    AccountClosed = 104, "account_closed", "the account is closed";
    AccountNotEmpty = 105, "account_not_empty", "an account must have zero balance and nothing reserved to close";
    InvalidStateTransition = 106, "invalid_state_transition", "a closed account cannot change state";
    VersionConflict = 107, "version_conflict", "the account's version is not the expected one";
    InsufficientFunds = 108, "insufficient_funds", "the account's balance policy does not allow this debit or reservation";
    BalanceConditionFailed = 109, "balance_condition_failed", "the line's balance condition does not hold after applying the entry";
    AmountOverflow = 110, "amount_overflow", "the account's totals would exceed the representable range";
    IdReusedWithDifferentContent = 111, "id_reused_with_different_content", "this id was already used for a different command";
    IdAlreadyUsed = 112, "id_already_used", "an operation inside the chain uses an id that is already taken";
    CorrectedEntryNotFound = 113, "corrected_entry_not_found", "the entry named by `corrects` does not exist or was not committed";
    LienNotFound = 114, "lien_not_found", "no lien with this id exists";
    LienNotActive = 115, "lien_not_active", "the lien was already captured, released or expired";
    LienExpired = 116, "lien_expired", "the lien passed its deadline and its funds were released";
    CaptureExceedsLien = 117, "capture_exceeds_lien", "a capture cannot take more than the lien reserved";
    LinkedOperationFailed = 118, "linked_operation_failed", "another operation of the same chain failed, so this one was not applied";
    AlreadyCorrected = 119, "already_corrected", "the entry was already corrected; another correction must be explicitly allowed";
    EventNotFound = 120, "event_not_found", "no event with this id exists";
    StepNotFound = 121, "step_not_found", "the event has no step with this name";
    InvalidEventState = 122, "invalid_event_state", "the event's or step's state does not allow this (e.g. adding a step after start, confirming a step that is not awaiting confirmation)";
    EventHasNoSteps = 123, "event_has_no_steps", "an event needs at least one step to start";
    TooManySteps = 124, "too_many_steps", "the event has as many steps as the limit";
    StepFailedByClient = 125, "step_failed_by_client", "a client reported the step as failed (`event fail`)";
    EventTimedOut = 126, "event_timed_out", "the event ran past its timeout (measured in log time)";
    NotConfigured = 127, "not_configured", "the executor needs an account that is not configured (settlement or FX position account)";
    // The runtime: nothing was sequenced, the command may be retried.
    Busy = 200, "busy", "the ledger is at capacity; retry later (nothing was applied)";
    ShuttingDown = 201, "shutting_down", "the ledger is stopping; nothing was applied";
    // The network layer (tally-net): about a request or a connection, not the ledger.
    PermissionDenied = 202, "permission_denied", "this client's certificate is read-only: it may query but not write";
    MalformedRequest = 203, "malformed_request", "the request could not be decoded";
    FrameTooLarge = 204, "frame_too_large", "the frame is larger than the limit";
    HistoryUnavailable = 205, "history_unavailable", "the log before this sequence number was archived; it cannot be served";
    Timeout = 206, "timeout", "no answer within the timeout; retrying with the same ids is safe";
    Unavailable = 207, "unavailable", "the server could not be reached or the connection was lost";
    BackupNotFound = 208, "backup_not_found", "no backup in progress has this id (it was never begun, expired after 10 minutes without a read, or the server restarted); begin a new one";
    ColdTierUnreadable = 209, "cold_tier_unreadable", "the server could not read its index of older ids (the cold tier); nothing was applied: the operator must check the data directory";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: a stable code and where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    /// Index of the failing operation inside a chain.
    pub op: Option<u16>,
    /// Index of the failing line inside an entry.
    pub line: Option<u16>,
    /// The account, lien or entry concerned (0 when none: 0 is never a valid id).
    pub subject: u128,
    /// The current version, for `version_conflict`.
    pub current_version: Option<u64>,
    /// Free text for malformed input (what was wrong with it).
    pub text: Option<Box<str>>,
}

impl Error {
    pub fn new(code: ErrorCode) -> Error {
        Error {
            code,
            op: None,
            line: None,
            subject: 0,
            current_version: None,
            text: None,
        }
    }
    pub fn with_line(mut self, line: usize) -> Error {
        self.line = Some(line as u16);
        self
    }
    pub fn with_op(mut self, op: usize) -> Error {
        self.op = Some(op as u16);
        self
    }
    pub fn with_subject(mut self, subject: u128) -> Error {
        self.subject = subject;
        self
    }
    pub fn with_version(mut self, current: u64) -> Error {
        self.current_version = Some(current);
        self
    }
    pub fn with_text(mut self, text: impl Into<String>) -> Error {
        self.text = Some(text.into().into_boxed_str());
        self
    }

    /// The full human message: the code's description and the details.
    pub fn message(&self) -> String {
        let mut m = self.code.description().to_string();
        if let Some(op) = self.op {
            m.push_str(&format!(" (chain operation {op})"));
        }
        if let Some(line) = self.line {
            m.push_str(&format!(" (line {line})"));
        }
        if self.subject != 0 {
            m.push_str(&format!(" (id {})", crate::id::format_id(self.subject)));
        }
        if let Some(v) = self.current_version {
            m.push_str(&format!(" (current version {v})"));
        }
        if let Some(t) = &self.text {
            m.push_str(": ");
            m.push_str(t);
        }
        m
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Error {
        Error::new(code)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_unique_and_snake_case() {
        let mut names = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(names.insert(c.as_str()), "duplicate {c}");
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(ErrorCode::from_u16(c as u16), Some(c));
            assert_eq!(ErrorCode::from_name(c.as_str()), Some(c));
            assert!(!c.description().is_empty());
        }
        // Pinned numbers: these are on disk and on the wire.
        assert_eq!(ErrorCode::VersionConflict as u16, 107);
        assert_eq!(ErrorCode::InsufficientFunds.as_str(), "insufficient_funds");
    }

    #[test]
    fn message_names_details() {
        let e = Error::new(ErrorCode::VersionConflict)
            .with_line(1)
            .with_subject(42)
            .with_version(7);
        let m = e.to_string();
        let big = Error::new(ErrorCode::AccountNotFound)
            .with_subject(u128::MAX)
            .to_string();
        assert!(
            big.contains("(id ffffffff-ffff-ffff-ffff-ffffffffffff)"),
            "{big}"
        );
        assert!(m.starts_with("version_conflict: "), "{m}");
        assert!(
            m.contains("line 1") && m.contains("current version 7") && m.contains("(id 42)"),
            "{m}"
        );
    }
}
