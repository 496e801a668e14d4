//! From an event's next action to the chain that performs it and the fact
//! that records it: the part of driving events that is pure. The runtime's
//! driver thread and [`run_ledger`] are loops around [`prepare`].
//!
//! Preparing is a function of the event's log and of ledger state that the
//! chain itself does not change (currencies; liens, counted so that their
//! release by the chain leaves the answer the same), never of a clock: an
//! action prepared again, after a restart, gives the same chain under the
//! same id, and the chain's outcome is believed only when the content
//! logged under that id is the same ([`Prepared::known_outcome`]).

use super::executor::{to_release, Lookup, StepContext};
use super::ids::{derive_in, Purpose, Scheme};
use super::{
    Action, AppliedStep, Event, EventCommand, EventConfig, EventId, Fact, Failure, Registry,
};
use crate::chain::{Chain, Operation};
use crate::command::{Command, Outcome};
use crate::error::{Error, ErrorCode};
use crate::id::format_id;
use crate::idindex::IdRecord;
use crate::lien::ReleaseLien;
use crate::limits::MAX_CHAIN_OPERATIONS;
use serde_json::Value;

/// An action made concrete.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub event: EventId,
    pub action: Action,
    /// The chain to submit; `None`: record the fact at once.
    pub chain: Option<Chain>,
    /// The fact to record when the chain commits (or at once, without one).
    on_commit: Fact,
    /// For each operation of the chain: its step and its index there.
    owners: Vec<(u16, usize)>,
    /// Each step's result (to name a failing batch item).
    results: Vec<(u16, Value)>,
}

impl Prepared {
    fn immediate(event: EventId, action: Action, fact: Fact) -> Prepared {
        Prepared {
            event,
            action,
            chain: None,
            on_commit: fact,
            owners: Vec::new(),
            results: Vec::new(),
        }
    }

    /// The fact to record, given the chain's outcome (`None` when it has
    /// none yet). `None`: nothing to record now (the runtime was busy or
    /// stopping; try again later).
    pub fn fact(&self, outcome: Option<&Outcome>) -> Option<Fact> {
        if self.chain.is_none() {
            return Some(self.on_commit.clone());
        }
        match outcome? {
            Outcome::Committed { .. } | Outcome::Duplicate { code: None, .. } => {
                Some(self.on_commit.clone())
            }
            Outcome::Duplicate {
                code: Some(code), ..
            } => self.refused(&Error::new(*code)),
            Outcome::Rejected { seq: None, error }
                if matches!(error.code, ErrorCode::Busy | ErrorCode::ShuttingDown) =>
            {
                None
            }
            Outcome::Rejected { error, .. } => self.refused(error),
        }
    }

    /// The chain's outcome as the id index records it (`record`: what is
    /// logged under the chain's id, looked up after a restart before
    /// submitting anything). `None`: the id is free, submit the chain.
    ///
    /// A committed record counts only if its content is this chain's
    /// (fingerprints match): otherwise the operations prepared never ran,
    /// and the outcome is a refusal, `id_reused_with_different_content`. A
    /// refused record is a refusal whatever its content (nothing ran under
    /// the id; a lien that expired since may have changed the chain).
    pub fn known_outcome(&self, record: Option<IdRecord>) -> Option<Outcome> {
        let rec = record?;
        let chain = self.chain.as_ref()?;
        match rec.code() {
            Some(code) => Some(Outcome::Duplicate {
                seq: rec.seq,
                code: Some(code),
            }),
            None if self.matches(&rec) => Some(Outcome::Duplicate {
                seq: rec.seq,
                code: None,
            }),
            None => Some(Outcome::Rejected {
                seq: Some(rec.seq),
                error: taken(chain.id, rec.seq),
            }),
        }
    }

    /// Whether `record` is of this chain's content.
    pub fn matches(&self, record: &IdRecord) -> bool {
        self.chain
            .as_ref()
            .is_some_and(|c| record.matches(Command::Chain(c.clone()).fingerprint()))
    }

    /// Gives the liens the chain creates the lifetimes the ledger holds for
    /// liens of the same ids, for a chain an earlier version logged: it
    /// computed lifetimes from a clock, so only with them can the content
    /// compare equal. Changes nothing else: any other difference still shows.
    pub fn adopt_lien_lifetimes(&mut self, lookup: &mut dyn Lookup) {
        let mut adopt = |op: &mut Operation| {
            if let Operation::CreateLien(c) = op {
                if let Some(l) = lookup.lien(c.id) {
                    c.expires_in_ns = l.deadline.map(|d| d.saturating_sub(l.created_ts));
                }
            }
        };
        if let Some(c) = &mut self.chain {
            c.ops.iter_mut().for_each(&mut adopt);
        }
        match &mut self.on_commit {
            Fact::Applied { steps, .. } => steps
                .iter_mut()
                .flat_map(|s| s.ops.iter_mut())
                .for_each(&mut adopt),
            Fact::Captured { ops, .. } => ops.iter_mut().for_each(&mut adopt),
            _ => {}
        }
    }

    fn refused(&self, error: &Error) -> Option<Fact> {
        let owner = error
            .op
            .and_then(|op| self.owners.get(usize::from(op)).copied());
        let mut failure = Failure::from_error(error, owner.map(|(s, _)| s));
        if let Some((step, k)) = owner {
            let item = self
                .results
                .iter()
                .find(|(s, _)| *s == step)
                .and_then(|(_, r)| super::batch::locate(r, k));
            if let Some(item) = item {
                failure.message = format!("{item}: {}", failure.message).into();
            }
        }
        match self.action {
            Action::Execute { group, attempt } => Some(Fact::Refused {
                group,
                attempt,
                failure,
            }),
            Action::Capture { step, attempt } => Some(Fact::CaptureRefused {
                step,
                attempt,
                failure,
            }),
            Action::Undo { group, attempt } => {
                // A lien that expired or changed since the undo was built:
                // building it again (from fresh lien states) will do.
                if matches!(
                    error.code,
                    ErrorCode::LienExpired | ErrorCode::LienNotActive
                ) {
                    failure.retryable = true;
                }
                Some(Fact::UndoRefused {
                    group,
                    attempt,
                    failure,
                })
            }
            // Releasing liens at the end: a lien that expired meanwhile is
            // the only way to fail; the next try sees it and skips it.
            _ => None,
        }
    }
}

/// The refusal of a chain whose id holds other content.
fn taken(chain: u128, seq: u64) -> Error {
    Error::new(ErrorCode::IdReusedWithDifferentContent).with_text(format!(
        "chain {} was taken at seq {seq} by different content: nothing prepared under it was applied",
        format_id(chain)
    ))
}

fn payload(kind: &str, text: &str) -> Result<Value, Error> {
    super::payload::parse(kind, text)
}

/// Makes `action` concrete for `event`. `None` for `Wait`.
pub fn prepare(
    event: &Event,
    action: Action,
    registry: &Registry,
    config: &EventConfig,
    lookup: &mut dyn Lookup,
) -> Option<Prepared> {
    prepare_in(Scheme::Reserved, event, action, registry, config, lookup)
}

/// [`prepare`] with ids derived under `scheme` (the driver looks up the
/// [`Scheme::Legacy`] chain after a start, see `runtime::events`).
pub fn prepare_in(
    scheme: Scheme,
    event: &Event,
    action: Action,
    registry: &Registry,
    config: &EventConfig,
    lookup: &mut dyn Lookup,
) -> Option<Prepared> {
    let id = event.id();
    let deadline = event.deadline;
    let since = event.due_since();
    let derive = |purpose, a, b, n| derive_in(scheme, id, purpose, a, b, n);
    macro_rules! cx {
        ($step:expr, $attempt:expr, $purpose:expr) => {
            StepContext::new(
                id,
                $step,
                $attempt,
                since,
                deadline,
                config,
                registry,
                &mut *lookup,
                $purpose,
            )
            .in_scheme(scheme)
        };
    }
    let p = match action {
        Action::Wait { .. } => return None,
        Action::TimeOut => Prepared::immediate(id, action, Fact::TimedOut),
        Action::Conclude => Prepared::immediate(id, action, Fact::Concluded),
        Action::Execute { group, attempt } => {
            let refuse = |e: &Error, step| {
                Prepared::immediate(
                    id,
                    action,
                    Fact::Refused {
                        group,
                        attempt,
                        failure: Failure::from_error(e, Some(step)),
                    },
                )
            };
            let mut steps = Vec::new();
            let mut results = Vec::new();
            for i in event.group(group).collect::<Vec<_>>() {
                let s = &event.steps[i as usize].step;
                let plan = registry.executor(&s.kind).and_then(|exec| {
                    let v = payload(&s.kind, &s.payload)?;
                    exec.execute(&mut cx!(i, attempt, Purpose::StepOp), &v)
                });
                let plan = match plan {
                    Ok(p) => p,
                    Err(e) => return Some(refuse(&e, i)),
                };
                results.push((i, plan.result.clone()));
                let result = plan.result.to_string();
                if result.len() > crate::limits::MAX_STEP_RESULT_BYTES {
                    let e = Error::new(ErrorCode::InvalidPayload)
                        .with_text("the executor's result is too large");
                    return Some(refuse(&e, i));
                }
                steps.push(AppliedStep {
                    step: i,
                    ops: plan.ops,
                    result: result.into(),
                    awaiting: plan.awaiting,
                });
            }
            let owners: Vec<(u16, usize)> = steps
                .iter()
                .flat_map(|s| (0..s.ops.len()).map(move |k| (s.step, k)))
                .collect();
            if owners.len() > MAX_CHAIN_OPERATIONS {
                let e = Error::new(ErrorCode::TooManyOperations).with_text(format!(
                    "group {group} has {} operations, at most {MAX_CHAIN_OPERATIONS}",
                    owners.len()
                ));
                return Some(Prepared::immediate(
                    id,
                    action,
                    Fact::Refused {
                        group,
                        attempt,
                        failure: Failure::from_error(&e, None),
                    },
                ));
            }
            let ops: Vec<Operation> = steps.iter().flat_map(|s| s.ops.iter().cloned()).collect();
            let chain = (!ops.is_empty()).then(|| Chain {
                id: derive(Purpose::ExecuteChain, group, attempt.into(), 0),
                ops,
            });
            Prepared {
                event: id,
                action,
                chain,
                on_commit: Fact::Applied {
                    group,
                    attempt,
                    steps,
                },
                owners,
                results,
            }
        }
        Action::Capture { step, attempt } => {
            let rec = &event.steps[step as usize];
            let s = &rec.step;
            let plan = registry.executor(&s.kind).and_then(|exec| {
                let v = payload(&s.kind, &s.payload)?;
                exec.confirm(
                    &mut cx!(step, attempt, Purpose::CaptureOp),
                    &v,
                    &rec.ops,
                    rec.confirm_amount,
                )
            });
            let plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    return Some(Prepared::immediate(
                        id,
                        action,
                        Fact::CaptureRefused {
                            step,
                            attempt,
                            failure: Failure::from_error(&e, Some(step)),
                        },
                    ))
                }
            };
            let owners = (0..plan.ops.len()).map(|k| (step, k)).collect();
            let chain = (!plan.ops.is_empty()).then(|| Chain {
                id: derive(Purpose::CaptureChain, step.into(), attempt.into(), 0),
                ops: plan.ops.clone(),
            });
            Prepared {
                event: id,
                action,
                chain,
                on_commit: Fact::Captured {
                    step,
                    attempt,
                    ops: plan.ops,
                    result: plan.result.to_string().into(),
                },
                owners,
                results: Vec::new(),
            }
        }
        Action::Undo { group, attempt } => {
            let mut ops = Vec::new();
            let mut owners = Vec::new();
            let mut per_step = Vec::new();
            let members: Vec<u16> = event.group(group).collect();
            // Later steps of the group first, each step's operations last first.
            for &i in members.iter().rev() {
                let rec = &event.steps[i as usize];
                if !rec.status.has_effects() {
                    continue;
                }
                let mut c = cx!(i, attempt, Purpose::UndoOp);
                let undo = match registry.get(&rec.step.kind) {
                    Some(exec) => payload(&rec.step.kind, &rec.step.payload)
                        .and_then(|v| exec.compensate(&mut c, &v, &rec.ops)),
                    // The executor is gone (not registered any more): undo
                    // what the log says the step applied.
                    None => Ok(super::executor::reverse(&mut c, &rec.ops)),
                };
                match undo {
                    Ok(u) => {
                        owners.extend((0..u.len()).map(|k| (i, k)));
                        ops.extend(u.iter().cloned());
                        per_step.push((i, u));
                    }
                    Err(e) => {
                        return Some(Prepared::immediate(
                            id,
                            action,
                            Fact::UndoRefused {
                                group,
                                attempt,
                                failure: Failure::from_error(&e, Some(i)),
                            },
                        ))
                    }
                }
            }
            let chain = (!ops.is_empty()).then(|| Chain {
                id: derive(Purpose::UndoChain, group, attempt.into(), 0),
                ops: ops.clone(),
            });
            Prepared {
                event: id,
                action,
                chain,
                on_commit: Fact::Undone {
                    group,
                    attempt,
                    steps: per_step,
                },
                owners,
                results: Vec::new(),
            }
        }
        Action::Finish => {
            let ops: Vec<Operation> = event
                .open_liens()
                .into_iter()
                .filter(|&(l, _)| to_release(lookup.lien(l)))
                .map(|(lien, account)| Operation::ReleaseLien(ReleaseLien { lien, account }))
                .collect();
            // The id names the set released, so a retry after a lien expired
            // meanwhile is a different chain.
            let set = ops.iter().fold(0u32, |h, op| match op {
                Operation::ReleaseLien(r) => h ^ (crate::id::mix(r.lien) as u32),
                _ => h,
            });
            let chain = (!ops.is_empty()).then(|| Chain {
                id: derive(Purpose::FinishChain, set, ops.len() as u32, 0),
                ops: ops.clone(),
            });
            Prepared {
                event: id,
                action,
                chain,
                on_commit: Fact::Finished { ops },
                owners: Vec::new(),
                results: Vec::new(),
            }
        }
    };
    Some(within_command_limit(p))
}

/// A prepared action whose fact would not fit one command
/// (`MAX_COMMAND_BYTES`: facts are logged like any command) is refused
/// instead, `command_too_large`, before its chain is submitted: the chain's
/// operations are part of the fact, so a fact that fits means a chain that
/// fits. Without this the fact would be refused forever after its chain
/// committed.
fn within_command_limit(p: Prepared) -> Prepared {
    let fact = Command::Event(EventCommand::Record {
        event: p.event,
        fact: p.on_commit.clone(),
    });
    let size = match fact.validate_size() {
        Ok(()) => return p,
        Err(e) => e,
    };
    let error = Error::new(ErrorCode::CommandTooLarge).with_text(format!(
        "the record of this action would be too large: {}",
        size.text.as_deref().unwrap_or("")
    ));
    match p.refused(&error) {
        Some(refusal) => Prepared::immediate(p.event, p.action, refusal),
        None => p,
    }
}

/// Drives every active event of a single-threaded ledger as far as it can go
/// at log time `now`; returns the facts recorded. Deterministic: used by
/// tests, the reference model and simulations.
pub fn run_ledger(
    ledger: &mut crate::ledger::Ledger,
    registry: &Registry,
    config: &EventConfig,
    now: u64,
) -> usize {
    run_ledger_with(ledger, registry, config, now, |l, c| l.execute(c, now))
}

/// [`run_ledger`], executing each command through `exec` (the simulator
/// logs what it executes).
pub fn run_ledger_with(
    ledger: &mut crate::ledger::Ledger,
    registry: &Registry,
    config: &EventConfig,
    now: u64,
    mut exec: impl FnMut(&mut crate::ledger::Ledger, &Command) -> Outcome,
) -> usize {
    let mut recorded = 0;
    loop {
        let mut progressed = false;
        for id in ledger.active_events() {
            let Some(e) = ledger.event(id) else { continue };
            let t = now.max(ledger.now() + 1);
            let action = e.next_action(t);
            let Some(p) = prepare(&e, action, registry, config, ledger) else {
                continue;
            };
            let outcome = p.chain.clone().map(|c| exec(ledger, &Command::Chain(c)));
            let Some(fact) = p.fact(outcome.as_ref()) else {
                continue;
            };
            let o = exec(
                ledger,
                &Command::Event(EventCommand::Record { event: id, fact }),
            );
            debug_assert!(o.is_ok(), "a prepared fact was refused: {o:?}");
            if o.is_ok() {
                progressed = true;
                recorded += 1;
            }
        }
        if !progressed {
            return recorded;
        }
    }
}
