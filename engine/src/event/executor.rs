//! Executors: what turns a step's payload into ledger operations, and what
//! undoes them. They are plain deterministic functions of the payload, the
//! configuration and a little ledger state (currencies, liens): the
//! operations they produce are logged inside the chain that applies them, so
//! replay and audit never run an executor again.
//!
//! A registry maps step types to executors; the server is built with one.
//! Adding an executor is a struct, `impl Executor`, and `register`
//! (see `net/examples/fee_executor.rs`).

use super::ids::{derive_in, Purpose, Scheme};
use super::payload::payload_error;
use super::{EventId, Step};
use crate::amount::Amount;
use crate::chain::Operation;
use crate::currency::{Currency, CurrencyCode};
use crate::entry::{Entry, Line, Side};
use crate::error::{Error, ErrorCode};
use crate::id::{format_id, AccountId, LienId};
use crate::lien::{Lien, LienStatus, ReleaseLien};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ledger state executors may read.
pub trait Lookup {
    fn currency(&mut self, code: CurrencyCode) -> Option<Currency>;
    fn lien(&mut self, id: LienId) -> Option<Lien>;
}

impl Lookup for crate::ledger::Ledger {
    fn currency(&mut self, code: CurrencyCode) -> Option<Currency> {
        crate::ledger::Ledger::currency(self, code)
    }
    fn lien(&mut self, id: LienId) -> Option<Lien> {
        crate::ledger::Ledger::lien(self, id)
    }
}

/// Accounts the built-in executors move money through, per currency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventConfig {
    /// The external/settlement account deposits come from and withdrawals go to.
    pub settlement: BTreeMap<String, AccountId>,
    /// The FX position account exchanges convert through.
    pub fx_position: BTreeMap<String, AccountId>,
    /// Chains logged before this sequence number may have been derived by a
    /// version without the reserved namespace ([`super::ids::Scheme::Legacy`]):
    /// the driver looks such a chain up once after a start. Later chains
    /// under legacy ids are clients' own (legacy ids are open to them) and
    /// are never taken for the event's. 0 (the default): never look.
    pub legacy_ids_before: u64,
}

impl EventConfig {
    fn pick(
        map: &BTreeMap<String, AccountId>,
        what: &str,
        code: CurrencyCode,
        given: Option<AccountId>,
    ) -> Result<AccountId, Error> {
        given
            .or_else(|| map.get(code.as_str()).copied())
            .ok_or_else(|| {
                Error::new(ErrorCode::NotConfigured).with_text(format!(
                    "no {what} account for {code}: start tallyd with --{what}-account {code}=ID or name one in the payload"
                ))
            })
    }

    pub fn settlement_account(
        &self,
        code: CurrencyCode,
        given: Option<AccountId>,
    ) -> Result<AccountId, Error> {
        Self::pick(&self.settlement, "settlement", code, given)
    }

    pub fn fx_account(
        &self,
        code: CurrencyCode,
        given: Option<AccountId>,
    ) -> Result<AccountId, Error> {
        Self::pick(&self.fx_position, "fx", code, given)
    }
}

/// What an executor needs besides the payload: who is asking, fresh ids,
/// currencies, liens and the configuration.
pub struct StepContext<'a> {
    pub event: EventId,
    /// The step's index in its event.
    pub step: u16,
    pub attempt: u16,
    /// Log time from which the action counts (for lien lifetimes): when it
    /// became due, as the event's log says ([`super::Event::due_since`]).
    /// Not a clock: preparing the action again (after a restart) must give
    /// the same operations, whose fingerprint is checked against the chain
    /// logged under the same id. Never later than the chain's log time.
    pub now: u64,
    /// The event's timeout, in log time.
    pub deadline: Option<u64>,
    pub config: &'a EventConfig,
    pub registry: &'a Registry,
    lookup: &'a mut dyn Lookup,
    purpose: Purpose,
    scheme: Scheme,
    /// Distinguishes sub-steps (items of a batch) in derived ids.
    pub(crate) scope: u32,
    next: u32,
}

impl<'a> StepContext<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        event: EventId,
        step: u16,
        attempt: u16,
        now: u64,
        deadline: Option<u64>,
        config: &'a EventConfig,
        registry: &'a Registry,
        lookup: &'a mut dyn Lookup,
        purpose: Purpose,
    ) -> StepContext<'a> {
        StepContext {
            event,
            step,
            attempt,
            now,
            deadline,
            config,
            registry,
            lookup,
            purpose,
            scheme: Scheme::Reserved,
            scope: 0,
            next: 0,
        }
    }

    /// The same context deriving ids under `scheme`.
    pub(crate) fn in_scheme(mut self, scheme: Scheme) -> StepContext<'a> {
        self.scheme = scheme;
        self
    }

    /// A fresh id for an entry or lien this step posts; the same on every
    /// run of the same attempt, different on another attempt.
    pub fn new_id(&mut self) -> u128 {
        self.next += 1;
        derive_in(
            self.scheme,
            self.event,
            self.purpose,
            u32::from(self.step) | (self.scope << 16),
            u32::from(self.attempt),
            self.next,
        )
    }

    pub fn currency(&mut self, code: CurrencyCode) -> Result<Currency, Error> {
        self.lookup
            .currency(code)
            .ok_or_else(|| Error::new(ErrorCode::CurrencyNotFound).with_text(code.as_str()))
    }

    pub fn lien(&mut self, id: LienId) -> Option<Lien> {
        self.lookup.lien(id)
    }

    /// Lifetime for a lien the event owns: at least until the event's
    /// timeout. It counts from the chain's log time, which is not known when
    /// the chain is prepared, so it is the time from [`Self::now`] to the
    /// timeout: the lien may outlive the timeout by as long as the action
    /// waited, and compensation releases it then. `None` without a timeout.
    pub fn lien_lifetime(&self) -> Option<u64> {
        self.deadline
            .map(|d| d.saturating_sub(self.now).max(1_000_000))
            .map(|t| t.min(crate::limits::MAX_LIEN_LIFETIME_NS))
    }
}

/// What an executor asks to apply for a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub ops: Vec<Operation>,
    /// Shown in `event get` (ids posted, amounts, quotes...).
    pub result: Value,
    /// The step then waits for a client's `confirm` or `fail`.
    pub awaiting: bool,
}

/// A step type. Implementations must be deterministic: the same payload,
/// context and ledger state give the same plan.
pub trait Executor: Send + Sync {
    /// Checks a payload when the step is added (no ledger state): bad
    /// payloads are refused then, before anything is logged.
    fn validate(&self, payload: &Value) -> Result<(), Error>;

    /// Checks that the server provides what the step will need (the
    /// settlement or FX accounts its payload does not name): called when
    /// the step is added and when its event starts, so that a step that
    /// cannot run is refused (`not_configured`) before anything is logged,
    /// not compensated after the event has begun. No ledger state is read.
    fn configured(&self, _payload: &Value, _config: &EventConfig) -> Result<(), Error> {
        Ok(())
    }

    /// The operations that perform the step.
    fn execute(&self, cx: &mut StepContext<'_>, payload: &Value) -> Result<Plan, Error>;

    /// For a step that awaited confirmation: the operations that complete it
    /// (`amount`: a partial capture). `applied` is what `execute` applied.
    fn confirm(
        &self,
        _cx: &mut StepContext<'_>,
        _payload: &Value,
        _applied: &[Operation],
        _amount: Option<Amount>,
    ) -> Result<Plan, Error> {
        Err(Error::new(ErrorCode::InvalidEventState)
            .with_text("this step type does not wait for confirmation"))
    }

    /// The operations that undo a completed step. The default reverses what
    /// it applied: a reversal entry (`corrects` = the original) per entry and
    /// capture, a release per lien it left open (see [`reverse`]). Like
    /// `execute`, it must give the same operations when asked again for the
    /// same attempt, including after they committed.
    fn compensate(
        &self,
        cx: &mut StepContext<'_>,
        _payload: &Value,
        applied: &[Operation],
    ) -> Result<Vec<Operation>, Error> {
        Ok(reverse(cx, applied))
    }
}

/// Reversal of `applied`, last operation first. A lien `applied` created
/// and did not capture or release is released unless it expired or was
/// captured meanwhile.
pub fn reverse(cx: &mut StepContext<'_>, applied: &[Operation]) -> Vec<Operation> {
    let mut out = Vec::new();
    for op in applied.iter().rev() {
        match op {
            Operation::Entry(_) | Operation::Transfer(_) => {
                let Some(e) = op.as_entry() else { continue };
                let lines = e.lines.iter().map(|l| Line {
                    account: l.account,
                    side: match l.side {
                        Side::Debit => Side::Credit,
                        Side::Credit => Side::Debit,
                    },
                    amount: l.amount,
                    currency: l.currency,
                    expected_version: None,
                    condition: None,
                });
                let id = cx.new_id();
                out.push(Operation::Entry(Box::new(
                    Entry::new(id, lines)
                        .correcting(e.id)
                        .with_reference(reversal_reference(cx.event, e.id)),
                )));
            }
            Operation::CaptureLien(c) => {
                let total: Amount = c.credits.iter().map(|&(_, a)| a).sum();
                let mut lines: Vec<Line> = c
                    .credits
                    .iter()
                    .map(|&(a, amount)| Line::debit(a, amount, c.currency))
                    .collect();
                lines.push(Line::credit(c.account, total, c.currency));
                let id = cx.new_id();
                out.push(Operation::Entry(Box::new(
                    Entry::new(id, lines)
                        .correcting(c.entry_id)
                        .with_reference(reversal_reference(cx.event, c.entry_id)),
                )));
            }
            Operation::CreateLien(c) => {
                if !closes(applied, c.id) && to_release(cx.lien(c.id)) {
                    out.push(Operation::ReleaseLien(ReleaseLien {
                        lien: c.id,
                        account: c.account,
                    }));
                }
            }
            Operation::ReleaseLien(_) => {}
        }
    }
    out
}

/// Whether `ops` capture or release `lien` (so it is not open any more).
pub(crate) fn closes(ops: &[Operation], lien: LienId) -> bool {
    ops.iter().any(|op| match op {
        Operation::CaptureLien(c) => c.lien == lien,
        Operation::ReleaseLien(r) => r.lien == lien,
        _ => false,
    })
}

/// Whether a lien the event left open is to be released (at compensation or
/// at the end): it is active, or already released. A released one counts so
/// that preparing the release again once it committed (after a restart)
/// gives the same chain as the one logged; releasing it again is a no-op.
/// Expired and captured liens cannot be released.
pub(crate) fn to_release(lien: Option<Lien>) -> bool {
    matches!(
        lien.map(|l| l.status),
        Some(LienStatus::Active | LienStatus::Released)
    )
}

fn reversal_reference(event: EventId, entry: u128) -> String {
    format!(
        "event {} compensation of {}",
        format_id(event),
        format_id(entry)
    )
}

/// Executors by step type.
#[derive(Clone, Default)]
pub struct Registry {
    map: BTreeMap<String, Arc<dyn Executor>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The built-ins: `wallet.transfer`, `wallet.deposit`,
    /// `wallet.withdrawal`, `wallet.exchange`, `batch.operation`.
    pub fn with_builtins() -> Registry {
        let mut r = Registry::new();
        r.register("wallet.transfer", super::wallet::Transfer)
            .register("wallet.deposit", super::wallet::Deposit)
            .register("wallet.withdrawal", super::wallet::Withdrawal)
            .register("wallet.exchange", super::exchange::Exchange)
            .register("batch.operation", super::batch::BatchOperation);
        r
    }

    pub fn register(&mut self, kind: &str, executor: impl Executor + 'static) -> &mut Registry {
        self.map.insert(kind.to_string(), Arc::new(executor));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Executor>> {
        self.map.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(|k| k.as_str())
    }

    pub fn executor(&self, kind: &str) -> Result<&Arc<dyn Executor>, Error> {
        self.get(kind).ok_or_else(|| {
            Error::new(ErrorCode::UnknownStepType).with_text(format!(
                "{kind:?} (registered: {})",
                self.kinds().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Checks a step before it is added: a known type and a payload its
    /// executor accepts.
    pub fn validate_step(&self, step: &Step) -> Result<(), Error> {
        let exec = self.executor(&step.kind)?;
        let v: Value = serde_json::from_str(&step.payload)
            .map_err(|e| payload_error(&step.kind, &e.to_string()))?;
        exec.validate(&v)
    }

    /// [`Registry::validate_step`], and then that the server is configured
    /// for it ([`Executor::configured`]).
    pub fn validate_configured(&self, step: &Step, config: &EventConfig) -> Result<(), Error> {
        self.validate_step(step)?;
        self.step_configured(step, config)
    }

    /// [`Executor::configured`] for a step already validated (an event's
    /// steps, checked again when it starts: the configuration may have
    /// changed since they were added).
    pub fn step_configured(&self, step: &Step, config: &EventConfig) -> Result<(), Error> {
        let exec = self.executor(&step.kind)?;
        let v: Value = serde_json::from_str(&step.payload)
            .map_err(|e| payload_error(&step.kind, &e.to_string()))?;
        exec.configured(&v, config).map_err(|mut e| {
            let detail = e.text.as_deref().unwrap_or("");
            let text = format!("step {:?} ({}): {detail}", step.name, step.kind);
            e.text = Some(text.into_boxed_str());
            e
        })
    }
}
