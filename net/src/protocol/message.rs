//! Requests and responses: what a frame's body holds (`PROTOCOL.md`,
//! "Requests" and "Responses"). These are the in-memory forms; `codec`
//! writes and reads their byte layouts.

use tally_engine::account::Account;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{Command, Error, ErrorCode, Lien, Outcome};

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Begins an online backup: the server takes a snapshot and answers the
    /// files (and bytes of each) consistent at its durable sequence, held
    /// for this backup under an id (writers only).
    Backup,
    /// `len` bytes (at most `MAX_BACKUP_CHUNK_BYTES`) of file `file` of
    /// backup `backup` from `offset`; fewer at the end of its copied part.
    BackupRead {
        backup: u64,
        file: u32,
        offset: u64,
        len: u32,
    },
    /// The backup is done (fetched, or given up): its plan is forgotten.
    /// Answered with an empty `BackupChunk`.
    BackupEnd {
        backup: u64,
    },
}

/// What `Find` searches by (the history's own key).
pub use tally_wal::history::FindKey;

/// What the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// What became of each submitted command (only those that did not
    /// commit are listed).
    Outcomes(Outcomes),
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
    Backup(BackupManifest),
    /// Bytes of a backup's file.
    BackupChunk(Vec<u8>),
    /// The request as a whole was refused (nothing was applied).
    Error(WireError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireAccount {
    pub account: Account,
    pub currency: Currency,
}

/// Entry statuses on the wire.
pub const STATUS_UNKNOWN: u8 = 0;
pub const STATUS_COMMITTED: u8 = 1;
pub const STATUS_REJECTED: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub status: u8,
    pub seq: u64,
    pub code: u16,
    /// The logged record that decided the entry (absent when unknown).
    pub record: Option<WireRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLien {
    pub lien: Lien,
    pub scale: u8,
}

/// A logged record: a sequenced command and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub account: u128,
    pub currency: Option<Currency>,
    pub lines: Vec<StatementLine>,
    /// Where the next page starts (`None`: this is the last one so far).
    pub next_from_seq: Option<u64>,
}

/// A posting to the account: what the record moved and the posted balance
/// (credits - debits) after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    pub record: WireRecord,
    pub debit: u128,
    pub credit: u128,
    pub balance: i128,
}

/// Top accounts by writes and by `version_conflict` rejections in a window
/// (counts from a bounded summary: exact below its capacity, otherwise low by
/// at most total / (capacity + 1)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotspotReport {
    pub window_s: u64,
    pub writes: Vec<(u128, u64)>,
    pub conflicts: Vec<(u128, u64)>,
    pub total_writes: u64,
    pub total_conflicts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

/// An event as `event get` shows it, with what is needed to print amounts.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// The answer to a `Submit`, as it travels: the commands that were sequenced
/// took consecutive sequence numbers and timestamps from `first_seq` and
/// `first_timestamp`; every command not in `exceptions` committed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Outcomes {
    pub count: u32,
    pub first_seq: u64,
    pub first_timestamp: u64,
    /// In increasing `index`.
    pub exceptions: Vec<(u32, WireOutcome)>,
}

impl Outcomes {
    /// The answer when `count` commands all committed, the first at
    /// `first_seq` and `first_timestamp` (no exceptions: built in constant
    /// time, whatever the count).
    pub fn all_committed(count: usize, first_seq: u64, first_timestamp: u64) -> Outcomes {
        Outcomes {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            first_seq,
            first_timestamp,
            ..Outcomes::default()
        }
    }

    /// The sparse form of one batch's outcomes. A committed outcome whose
    /// sequence is not the one the rule gives (never, while the runtime
    /// sequences a batch at once) is listed as an exception of its own.
    pub fn from_outcomes(outcomes: &[Outcome]) -> Outcomes {
        let mut out = Outcomes {
            count: u32::try_from(outcomes.len()).unwrap_or(u32::MAX),
            ..Outcomes::default()
        };
        let mut k = 0u64;
        let mut base: Option<(u64, u64)> = None;
        for (i, o) in outcomes.iter().enumerate() {
            match o {
                Outcome::Committed { seq, timestamp } => {
                    let (s0, t0) =
                        *base.get_or_insert((seq.saturating_sub(k), timestamp.saturating_sub(k)));
                    if *seq != s0.wrapping_add(k) || *timestamp != t0.wrapping_add(k) {
                        out.exceptions.push((i as u32, WireOutcome::from(o)));
                    }
                    k += 1;
                }
                Outcome::Duplicate { .. } => {
                    out.exceptions.push((i as u32, WireOutcome::from(o)));
                    k += 1;
                }
                Outcome::Rejected { seq, .. } => {
                    out.exceptions.push((i as u32, WireOutcome::from(o)));
                    k += seq.is_some() as u64;
                }
            }
        }
        if let Some((s, t)) = base {
            (out.first_seq, out.first_timestamp) = (s, t);
        }
        out
    }

    /// Every command's outcome, in request order.
    pub fn expand(&self) -> Result<Vec<Outcome>, String> {
        if self.count as usize > crate::limits::MAX_BATCH_OPERATIONS {
            return Err(format!("{} outcomes is over the batch limit", self.count));
        }
        let mut out = Vec::with_capacity(self.count as usize);
        let mut exceptions = self.exceptions.iter().peekable();
        let mut k = 0u64;
        for i in 0..self.count {
            match exceptions.next_if(|(at, _)| *at == i) {
                Some((_, w)) => {
                    let o = w.to_outcome()?;
                    if !matches!(o, Outcome::Rejected { seq: None, .. }) {
                        k += 1;
                    }
                    out.push(o);
                }
                None => {
                    let (Some(seq), Some(timestamp)) = (
                        self.first_seq.checked_add(k),
                        self.first_timestamp.checked_add(k),
                    ) else {
                        return Err("sequence numbers overflow".into());
                    };
                    out.push(Outcome::Committed { seq, timestamp });
                    k += 1;
                }
            }
        }
        if exceptions.next().is_some() {
            return Err("an exception's index is out of order or beyond the count".into());
        }
        Ok(out)
    }
}

/// An online backup's files (`Request::Backup`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupManifest {
    /// Names the backup in `BackupRead`.
    pub backup: u64,
    /// The copy is the ledger as of this sequence: everything acknowledged
    /// before the backup began, and possibly more.
    pub durable_seq: u64,
    /// The snapshot included (0: none).
    pub snapshot_seq: u64,
    pub files: Vec<BackupFileInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFileInfo {
    pub name: String,
    /// The copy's length.
    pub size: u64,
    /// Bytes to fetch from the start; the rest of the copy is zeros.
    pub copy: u64,
}
