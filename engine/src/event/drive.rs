//! From an event's next action to the chain that performs it and the fact
//! that records it: the part of driving events that is pure. The runtime's
//! driver thread and [`run_ledger`] are loops around [`prepare`].

use super::executor::{Lookup, StepContext};
use super::ids::{derive, Purpose};
use super::{
    Action, AppliedStep, Event, EventCommand, EventConfig, EventId, Fact, Failure, Registry,
};
use crate::chain::{Chain, Operation};
use crate::command::{Command, Outcome};
use crate::error::{Error, ErrorCode};
use crate::lien::{LienStatus, ReleaseLien};
use crate::limits::MAX_CHAIN_OPERATIONS;
use crate::view::IdStatus;
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

    /// The chain's outcome as the id index knows it (after a restart, before
    /// submitting anything): `None` when the chain was never sequenced.
    pub fn known_outcome(status: IdStatus) -> Option<Outcome> {
        match status {
            IdStatus::Unknown => None,
            IdStatus::Committed { seq } => Some(Outcome::Duplicate { seq, code: None }),
            IdStatus::Rejected { seq, code } => Some(Outcome::Duplicate {
                seq,
                code: Some(code),
            }),
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
    now: u64,
) -> Option<Prepared> {
    let id = event.id();
    let deadline = event.deadline;
    macro_rules! cx {
        ($step:expr, $attempt:expr, $purpose:expr) => {
            StepContext::new(
                id,
                $step,
                $attempt,
                now,
                deadline,
                config,
                registry,
                &mut *lookup,
                $purpose,
            )
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
                id: derive(id, Purpose::ExecuteChain, group, attempt.into(), 0),
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
                id: derive(id, Purpose::CaptureChain, step.into(), attempt.into(), 0),
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
                id: derive(id, Purpose::UndoChain, group, attempt.into(), 0),
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
                .liens()
                .into_iter()
                .filter(|&(l, _)| {
                    lookup
                        .lien(l)
                        .is_some_and(|l| l.status == LienStatus::Active)
                })
                .map(|(lien, account)| Operation::ReleaseLien(ReleaseLien { lien, account }))
                .collect();
            // The id names the set released, so a retry after a lien expired
            // meanwhile is a different chain.
            let set = ops.iter().fold(0u32, |h, op| match op {
                Operation::ReleaseLien(r) => h ^ (crate::id::mix(r.lien) as u32),
                _ => h,
            });
            let chain = (!ops.is_empty()).then(|| Chain {
                id: derive(id, Purpose::FinishChain, set, ops.len() as u32, 0),
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
    Some(p)
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
    let mut recorded = 0;
    loop {
        let mut progressed = false;
        for id in ledger.active_events() {
            let Some(e) = ledger.event(id) else { continue };
            let t = now.max(ledger.now() + 1);
            let action = e.next_action(t);
            let Some(p) = prepare(&e, action, registry, config, ledger, t) else {
                continue;
            };
            let outcome = p
                .chain
                .clone()
                .map(|c| ledger.execute(&Command::Chain(c), now));
            let Some(fact) = p.fact(outcome.as_ref()) else {
                continue;
            };
            let o = ledger.execute(
                &Command::Event(EventCommand::Record { event: id, fact }),
                now,
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
