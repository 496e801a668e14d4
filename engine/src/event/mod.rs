//! Chained transaction events (CTE): multi-step workflows inside the ledger.
//!
//! An event is a list of steps `{name, description, type, order, payload}`.
//! Steps of equal `order` form a group, applied atomically as one chain;
//! groups run in ascending order. A step's `type` names an [`Executor`] that
//! turns its payload into ledger operations (and, on failure, into the
//! operations that undo it).
//!
//! Everything here is sans-IO and deterministic:
//! - [`Event`] is the event's state; it changes only by commands
//!   ([`EventCommand`]) that are sequenced and logged like every other
//!   command, so replaying the log rebuilds every event bit for bit.
//! - [`Event::next_action`] says what should happen next (execute a group,
//!   capture a confirmed step, undo a group, time out, finish...).
//! - [`drive::prepare`] turns that action into the chain to submit and, once
//!   its outcome is known, the [`Fact`] to record. The runtime's event driver
//!   (`runtime::events`) and [`drive::run_ledger`] (tests, simulation) are the
//!   loops around it.
//!
//! The chain an action submits has an id derived from (event, action,
//! attempt), so after a crash the driver asks for that id's outcome before
//! doing anything: each group is applied, and each compensation posted,
//! exactly once. Derived ids lie in a namespace clients may not use
//! ([`ids`]), and an outcome counts only if the content logged under the id
//! is the chain prepared again ([`Prepared::known_outcome`]).

pub mod batch;
pub mod drive;
pub mod exchange;
pub mod executor;
pub mod ids;
pub mod payload;
pub mod state;
pub mod table;
pub mod wallet;

pub use drive::{prepare, run_ledger, run_ledger_with, Prepared};
pub use executor::{EventConfig, Executor, Lookup, Plan, Registry, StepContext};
pub use ids::{first_reserved_id, is_derived};
pub use state::{Action, Event, StepRecord};

use crate::amount::Amount;
use crate::chain::Operation;
use crate::error::{Error, ErrorCode};
use crate::limits::*;

/// An event id (the idempotency key of its creation).
pub type EventId = u128;

/// Lifecycle states. `created -> running -> completed`, or `running ->
/// compensating -> compensated | failed | timed_out`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[repr(u8)]
pub enum EventState {
    Created = 0,
    Running = 1,
    Compensating = 2,
    /// Every group applied (and every confirmation captured).
    Completed = 3,
    /// A group failed (after its retries) or a client failed a step; every
    /// applied group was undone and the event's liens released.
    Compensated = 4,
    /// Compensation itself could not be completed: an operator must look
    /// (the event's `compensation_error` says why).
    Failed = 5,
    /// The timeout passed before completion; undone like `compensated`.
    TimedOut = 6,
}

impl EventState {
    pub const ALL: [EventState; 7] = [
        EventState::Created,
        EventState::Running,
        EventState::Compensating,
        EventState::Completed,
        EventState::Compensated,
        EventState::Failed,
        EventState::TimedOut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventState::Created => "created",
            EventState::Running => "running",
            EventState::Compensating => "compensating",
            EventState::Completed => "completed",
            EventState::Compensated => "compensated",
            EventState::Failed => "failed",
            EventState::TimedOut => "timed_out",
        }
    }

    pub fn from_name(name: &str) -> Option<EventState> {
        EventState::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventState::Completed
                | EventState::Compensated
                | EventState::Failed
                | EventState::TimedOut
        )
    }

    /// Running or compensating: the driver has work to do.
    pub fn is_active(self) -> bool {
        matches!(self, EventState::Running | EventState::Compensating)
    }
}

/// What happened to one step.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[repr(u8)]
pub enum StepStatus {
    Pending = 0,
    Applied = 1,
    /// Applied, waiting for `event confirm` or `event fail` (a withdrawal's lien).
    Awaiting = 2,
    /// Confirmed by a client; the capture is being posted.
    Confirming = 3,
    /// Undone by compensation.
    Compensated = 4,
    /// Its group was refused (after retries).
    Failed = 5,
}

impl StepStatus {
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Applied => "applied",
            StepStatus::Awaiting => "awaiting_confirmation",
            StepStatus::Confirming => "confirming",
            StepStatus::Compensated => "compensated",
            StepStatus::Failed => "failed",
        }
    }

    /// Its operations are in the ledger and would have to be undone.
    pub fn has_effects(self) -> bool {
        matches!(
            self,
            StepStatus::Applied | StepStatus::Awaiting | StepStatus::Confirming
        )
    }
}

/// Creates an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NewEvent {
    pub id: EventId,
    pub name: Box<str>,
    pub description: Box<str>,
    /// From start to timeout, in nanoseconds of log time (`None`: never).
    pub timeout_ns: Option<u64>,
    /// Free JSON text (`{}` when none).
    pub metadata: Box<str>,
    /// Retries of a group refused with a retryable error.
    pub retries: u8,
    /// Delay before the first retry; it doubles on each further retry.
    pub retry_delay_ns: u64,
}

impl NewEvent {
    pub fn new(id: EventId, name: &str) -> NewEvent {
        NewEvent {
            id,
            name: name.into(),
            description: "".into(),
            timeout_ns: None,
            metadata: "{}".into(),
            retries: 0,
            retry_delay_ns: DEFAULT_RETRY_DELAY_NS,
        }
    }
}

/// The default delay before a retry: 50 ms.
pub const DEFAULT_RETRY_DELAY_NS: u64 = 50_000_000;

/// One step of an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Step {
    /// Unique within the event.
    pub name: Box<str>,
    pub description: Box<str>,
    /// The executor's type name, e.g. `wallet.transfer`.
    pub kind: Box<str>,
    pub order: u32,
    /// JSON text, read by the executor.
    pub payload: Box<str>,
}

/// Commands about events, all applied on the event id's shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum EventCommand {
    Create(NewEvent),
    AddStep {
        event: EventId,
        step: Step,
    },
    Start {
        event: EventId,
    },
    /// A client confirms a step awaiting confirmation; `amount` captures part
    /// of it (the rest is released), `None` all of it.
    Confirm {
        event: EventId,
        step: Box<str>,
        amount: Option<Amount>,
    },
    /// A client reports a step awaiting confirmation as failed: the event
    /// compensates.
    Fail {
        event: EventId,
        step: Box<str>,
        reason: Box<str>,
    },
    /// The event driver records what happened (see [`Fact`]). Not accepted
    /// from clients.
    Record {
        event: EventId,
        fact: Fact,
    },
}

impl EventCommand {
    pub fn event(&self) -> EventId {
        match self {
            EventCommand::Create(e) => e.id,
            EventCommand::AddStep { event, .. }
            | EventCommand::Start { event }
            | EventCommand::Confirm { event, .. }
            | EventCommand::Fail { event, .. }
            | EventCommand::Record { event, .. } => *event,
        }
    }

    /// Stateless checks (limits, well-formed text), as `Command::validate`.
    pub fn validate(&self) -> Result<(), Error> {
        let id = self.event();
        if id == 0 {
            return Err(Error::new(ErrorCode::InvalidId).with_text("id 0 is reserved"));
        }
        match self {
            EventCommand::Create(e) => {
                text("name", &e.name, MAX_EVENT_NAME_BYTES, true)?;
                text("description", &e.description, MAX_EVENT_TEXT_BYTES, false)?;
                text("metadata", &e.metadata, MAX_EVENT_METADATA_BYTES, false)?;
                json("metadata", &e.metadata)?;
                if e.timeout_ns == Some(0) || e.timeout_ns.is_some_and(|t| t > MAX_EVENT_TIMEOUT_NS)
                {
                    return Err(Error::new(ErrorCode::InvalidCommand)
                        .with_text("timeout must be positive and at most a year"));
                }
                if e.retries > MAX_EVENT_RETRIES {
                    return Err(Error::new(ErrorCode::InvalidCommand)
                        .with_text(format!("at most {MAX_EVENT_RETRIES} retries")));
                }
                if e.retry_delay_ns > MAX_EVENT_TIMEOUT_NS {
                    return Err(
                        Error::new(ErrorCode::InvalidCommand).with_text("retry delay above a year")
                    );
                }
                Ok(())
            }
            EventCommand::AddStep { step, .. } => {
                text("step name", &step.name, MAX_EVENT_NAME_BYTES, true)?;
                text(
                    "step description",
                    &step.description,
                    MAX_EVENT_TEXT_BYTES,
                    false,
                )?;
                text("step type", &step.kind, MAX_EVENT_NAME_BYTES, true)?;
                if step.payload.len() > MAX_STEP_PAYLOAD_BYTES {
                    return Err(Error::new(ErrorCode::InvalidPayload)
                        .with_text(format!("payload above {MAX_STEP_PAYLOAD_BYTES} bytes")));
                }
                json("payload", &step.payload)
            }
            EventCommand::Start { .. } => Ok(()),
            EventCommand::Confirm { step, amount, .. } => {
                text("step name", step, MAX_EVENT_NAME_BYTES, true)?;
                match amount {
                    Some(a) if *a == 0 || *a > MAX_AMOUNT => {
                        Err(Error::new(ErrorCode::InvalidAmount).with_text("capture amount"))
                    }
                    _ => Ok(()),
                }
            }
            EventCommand::Fail { step, reason, .. } => {
                text("step name", step, MAX_EVENT_NAME_BYTES, true)?;
                text("reason", reason, MAX_EVENT_TEXT_BYTES, false)
            }
            EventCommand::Record { fact, .. } => {
                if fact.ops().count() > MAX_CHAIN_OPERATIONS * 2 {
                    return Err(Error::new(ErrorCode::TooManyOperations));
                }
                Ok(())
            }
        }
    }
}

fn text(what: &str, t: &str, max: usize, required: bool) -> Result<(), Error> {
    if required && t.trim().is_empty() {
        return Err(Error::new(ErrorCode::InvalidCommand).with_text(format!("{what} is empty")));
    }
    if t.len() > max {
        return Err(Error::new(ErrorCode::InvalidCommand)
            .with_text(format!("{what} longer than {max} bytes")));
    }
    Ok(())
}

fn json(what: &str, t: &str) -> Result<(), Error> {
    serde_json::from_str::<serde_json::Value>(t)
        .map(|_| ())
        .map_err(|e| Error::new(ErrorCode::InvalidPayload).with_text(format!("{what}: {e}")))
}

/// Something the driver observed, recorded in the log so that replay (and a
/// restarted driver) knows it. Each is checked against the event's state
/// when applied; one that does not fit is refused and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Fact {
    /// The group's chain committed: what each step applied.
    Applied {
        group: u32,
        attempt: u16,
        steps: Vec<AppliedStep>,
    },
    /// The group's chain was refused (or its executor could not build it).
    Refused {
        group: u32,
        attempt: u16,
        failure: Failure,
    },
    /// A confirmed step's capture committed.
    Captured {
        step: u16,
        attempt: u16,
        ops: Vec<Operation>,
        result: Box<str>,
    },
    CaptureRefused {
        step: u16,
        attempt: u16,
        failure: Failure,
    },
    /// A group's compensation committed: what undid each step.
    Undone {
        group: u32,
        attempt: u16,
        steps: Vec<(u16, Vec<Operation>)>,
    },
    UndoRefused {
        group: u32,
        attempt: u16,
        failure: Failure,
    },
    /// The deadline passed (checked against the record's log time).
    TimedOut,
    /// Every group applied; `ops` released the event's remaining liens.
    Finished { ops: Vec<Operation> },
    /// Compensation is complete.
    Concluded,
}

impl Fact {
    /// The ledger operations the fact reports.
    pub fn ops(&self) -> Box<dyn Iterator<Item = &Operation> + '_> {
        match self {
            Fact::Applied { steps, .. } => Box::new(steps.iter().flat_map(|s| s.ops.iter())),
            Fact::Undone { steps, .. } => Box::new(steps.iter().flat_map(|(_, ops)| ops.iter())),
            Fact::Captured { ops, .. } | Fact::Finished { ops } => Box::new(ops.iter()),
            _ => Box::new(std::iter::empty()),
        }
    }
}

/// What one step of a committed group applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AppliedStep {
    pub step: u16,
    pub ops: Vec<Operation>,
    /// The executor's result (JSON text).
    pub result: Box<str>,
    /// The step waits for a client's confirm or fail.
    pub awaiting: bool,
}

/// Why an action failed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Failure {
    /// An [`ErrorCode`] number.
    pub code: u16,
    pub message: Box<str>,
    /// The step that failed, when known.
    pub step: Option<u16>,
    pub retryable: bool,
}

impl Failure {
    pub fn from_error(e: &Error, step: Option<u16>) -> Failure {
        Failure {
            code: e.code as u16,
            message: e.message().into(),
            step,
            retryable: is_retryable(e.code),
        }
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }
}

/// Errors worth retrying: the ledger's state may change so that the same
/// operations succeed (funds arrive, an account is unfrozen, a version moves
/// on), or the runtime was momentarily unable. Everything else (not found,
/// wrong currency, bad payload, id conflicts...) fails at once.
pub fn is_retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InsufficientFunds
            | ErrorCode::BalanceConditionFailed
            | ErrorCode::VersionConflict
            | ErrorCode::AccountFrozen
            | ErrorCode::Busy
            | ErrorCode::ShuttingDown
            | ErrorCode::Timeout
            | ErrorCode::Unavailable
    )
}
