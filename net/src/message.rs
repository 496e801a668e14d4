//! Requests and responses: what a frame's body holds, serialized with rkyv and
//! validated (bytecheck) before anything reads it. Engine types that are plain
//! data travel as they are; outcomes, errors and statuses have wire forms here.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use tally_engine::account::Account;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{Command, Error, ErrorCode, Lien, Outcome};

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Request {
    /// Operations, each applied (or refused) on its own, in order.
    Submit(Vec<Command>),
    Account(u128),
    /// An entry's status and, when it was sequenced, its logged record.
    Entry(u128),
    Lien(u128),
    Currency(CurrencyCode),
    /// An account's postings with the balance after each, from `from_seq`.
    Statement {
        account: u128,
        from_seq: u64,
        limit: u32,
    },
    /// Records by reference or user data, within a time range (ns, inclusive).
    Find {
        key: FindKey,
        from_ts: u64,
        to_ts: u64,
        limit: u32,
    },
    /// Turns the stream into a feed of every sequenced record from `from_seq`.
    Subscribe {
        from_seq: u64,
    },
    Status,
    /// Runs the consistency verifier (all accounts and records with `full`,
    /// samples otherwise).
    Verify {
        full: bool,
    },
    /// The most written accounts and the most version conflicts over the
    /// last `window_s` seconds.
    Hotspots {
        window_s: u64,
        top: u32,
    },
    /// One event: state, steps with results, liens.
    Event(u128),
    /// Events in a state (all states when `None`), optionally only those
    /// running (started) longer than `older_than_s` seconds: stuck events.
    Events {
        state: Option<u8>,
        older_than_s: u64,
        limit: u32,
    },
}

/// What `Find` searches by.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FindKey {
    /// Entries (and captures) with this reference text.
    Reference(String),
    /// Entries with this user data.
    EntryUserData(u128),
    /// Account creations with this user data.
    AccountUserData(u128),
}

/// What the server answers.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Response {
    /// One per submitted operation, in order.
    Outcomes(Vec<WireOutcome>),
    Account(Option<WireAccount>),
    Entry(EntryInfo),
    Lien(Option<WireLien>),
    Currency(Option<Currency>),
    Statement(Statement),
    /// `Find` results, and each push of a subscription.
    Records(Vec<WireRecord>),
    Status(ServerStatus),
    Verification(crate::verify::VerifyReport),
    Hotspots(HotspotReport),
    Event(Option<WireEvent>),
    Events(Vec<EventSummary>),
    /// The request as a whole was refused (nothing was applied).
    Error(WireError),
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WireError {
    pub code: u16,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> WireError {
        let detail = detail.into();
        let message = if detail.is_empty() {
            code.description().to_string()
        } else {
            format!("{}: {detail}", code.description())
        };
        WireError {
            code: code as u16,
            message,
        }
    }
}

/// Outcome kinds on the wire.
pub const COMMITTED: u8 = 0;
pub const DUPLICATE: u8 = 1;
pub const REJECTED: u8 = 2;

/// An [`Outcome`] on the wire (`seq` and `code` are 0 when absent).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WireOutcome {
    pub kind: u8,
    pub seq: u64,
    pub timestamp: u64,
    pub code: u16,
    pub op: Option<u16>,
    pub line: Option<u16>,
    pub subject: u128,
    pub current_version: Option<u64>,
    pub text: Option<String>,
}

impl From<&Outcome> for WireOutcome {
    fn from(o: &Outcome) -> WireOutcome {
        let mut w = WireOutcome {
            kind: COMMITTED,
            seq: 0,
            timestamp: 0,
            code: 0,
            op: None,
            line: None,
            subject: 0,
            current_version: None,
            text: None,
        };
        match o {
            Outcome::Committed { seq, timestamp } => (w.seq, w.timestamp) = (*seq, *timestamp),
            Outcome::Duplicate { seq, code } => {
                (w.kind, w.seq, w.code) = (DUPLICATE, *seq, code.map_or(0, |c| c as u16))
            }
            Outcome::Rejected { seq, error } => {
                w.kind = REJECTED;
                w.seq = seq.unwrap_or(0);
                w.code = error.code as u16;
                w.op = error.op;
                w.line = error.line;
                w.subject = error.subject;
                w.current_version = error.current_version;
                w.text = error.text.as_deref().map(str::to_string);
            }
        }
        w
    }
}

impl WireOutcome {
    /// Back to an engine outcome; an unknown code is a protocol error.
    pub fn to_outcome(&self) -> Result<Outcome, String> {
        let code = |n: u16| ErrorCode::from_u16(n).ok_or_else(|| format!("unknown error code {n}"));
        match self.kind {
            COMMITTED => Ok(Outcome::Committed {
                seq: self.seq,
                timestamp: self.timestamp,
            }),
            DUPLICATE => Ok(Outcome::Duplicate {
                seq: self.seq,
                code: if self.code == 0 {
                    None
                } else {
                    Some(code(self.code)?)
                },
            }),
            REJECTED => Ok(Outcome::Rejected {
                seq: (self.seq != 0).then_some(self.seq),
                error: Error {
                    code: code(self.code)?,
                    op: self.op,
                    line: self.line,
                    subject: self.subject,
                    current_version: self.current_version,
                    text: self.text.as_deref().map(Into::into),
                },
            }),
            k => Err(format!("unknown outcome kind {k}")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WireAccount {
    pub account: Account,
    pub currency: Currency,
}

/// Entry statuses on the wire.
pub const STATUS_UNKNOWN: u8 = 0;
pub const STATUS_COMMITTED: u8 = 1;
pub const STATUS_REJECTED: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EntryInfo {
    pub status: u8,
    pub seq: u64,
    pub code: u16,
    /// The logged record that decided the entry (absent when unknown).
    pub record: Option<WireRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WireLien {
    pub lien: Lien,
    pub scale: u8,
}

/// A logged record: a sequenced command and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WireRecord {
    pub seq: u64,
    pub timestamp: u64,
    /// `COMMITTED`, `DUPLICATE` or `REJECTED` (as in the log).
    pub outcome: u8,
    pub code: u16,
    /// For a duplicate: the sequence of the original.
    pub original_seq: u64,
    pub command: Command,
}

/// One page of an account's statement.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Statement {
    pub account: u128,
    pub currency: Option<Currency>,
    pub lines: Vec<StatementLine>,
    /// Where the next page starts (`None`: this is the last one so far).
    pub next_from_seq: Option<u64>,
}

/// A posting to the account: what the record moved and the posted balance
/// (credits - debits) after it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StatementLine {
    pub record: WireRecord,
    pub debit: u128,
    pub credit: u128,
    pub balance: i128,
}

/// Top accounts by writes and by `version_conflict` rejections in a window
/// (counts from a bounded summary: exact below its capacity, otherwise low by
/// at most total / (capacity + 1)).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HotspotReport {
    pub window_s: u64,
    pub writes: Vec<(u128, u64)>,
    pub conflicts: Vec<(u128, u64)>,
    pub total_writes: u64,
    pub total_conflicts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ServerStatus {
    pub version: String,
    pub shards: u32,
    /// The next sequence number to be assigned.
    pub next_seq: u64,
    /// The last sequence number on stable storage.
    pub durable_seq: u64,
    /// The first sequence number the history (statements, feed) can serve.
    pub history_from: u64,
    /// Whether the asking client is read-only.
    pub read_only: bool,
}

fn encode<T>(value: &T) -> Result<AlignedVec, String>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value).map_err(|e| format!("serializing: {e}"))
}

pub fn encode_request(r: &Request) -> Result<AlignedVec, String> {
    encode(r)
}

pub fn encode_response(r: &Response) -> Result<AlignedVec, String> {
    encode(r)
}

/// Validates and decodes a request body (untrusted bytes; `body` must be
/// 16-byte aligned, as frame buffers are).
pub fn decode_request(body: &[u8]) -> Result<Request, String> {
    rkyv::from_bytes::<Request, rancor::Error>(body).map_err(|e| format!("invalid request: {e}"))
}

pub fn decode_response(body: &[u8]) -> Result<Response, String> {
    rkyv::from_bytes::<Response, rancor::Error>(body).map_err(|e| format!("invalid response: {e}"))
}

/// An event as `event get` shows it, with what is needed to print amounts.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WireEvent {
    pub event: tally_engine::event::Event,
    /// The event's liens as they are now.
    pub liens: Vec<Lien>,
    /// Every currency (for scales).
    pub currencies: Vec<Currency>,
    /// The server's log time when it answered.
    pub now: u64,
}

/// One line of `event list`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EventSummary {
    pub id: u128,
    pub name: String,
    pub state: u8,
    pub steps: u32,
    pub created_ts: u64,
    pub started_ts: u64,
    pub ended_ts: u64,
    pub deadline: Option<u64>,
    /// The failure's code, when it failed or is compensating.
    pub failure: Option<u16>,
}
