//! One event's state and its transitions: pure functions of the commands and
//! facts applied, in log order, at log time.

use super::{AppliedStep, EventState, Fact, Failure, NewEvent, Step, StepStatus};
use crate::amount::Amount;
use crate::chain::Operation;
use crate::error::{Error, ErrorCode};
use crate::id::LienId;

/// Longest delay between retries, however many there were: 10 s.
pub const MAX_RETRY_DELAY_NS: u64 = 10_000_000_000;

/// Compensation is retried at least this often on a retryable error,
/// whatever the event's own retry policy: giving up on an undo leaves money
/// where it should not be.
pub const MIN_UNDO_RETRIES: u8 = 3;

/// A step and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub status: StepStatus,
    pub added_seq: u64,
    /// Operations it applied (including a confirmation's capture).
    pub ops: Vec<Operation>,
    /// Operations that undid it.
    pub undo: Vec<Operation>,
    /// The executor's result (JSON text; `null` before it ran).
    pub result: Box<str>,
    /// For a confirmed step: the capture amount asked for (`None`: all).
    pub confirm_amount: Option<Amount>,
    pub confirmed_seq: u64,
    pub error: Option<Failure>,
}

/// An event as its shard stores it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Event {
    pub spec: NewEvent,
    /// Content fingerprint of `spec` (idempotent creation).
    pub fingerprint: u64,
    pub steps: Vec<StepRecord>,
    pub state: EventState,
    /// Increases by one on every change.
    pub version: u64,
    pub created_seq: u64,
    pub created_ts: u64,
    pub started_seq: u64,
    pub started_ts: u64,
    /// Log time at which it ended (0 while not terminal).
    pub ended_ts: u64,
    /// Log time of its timeout (set at start).
    pub deadline: Option<u64>,
    /// Failed attempts of the action now due.
    pub attempt: u16,
    /// The next attempt should not start before this log time.
    pub retry_at: u64,
    pub timed_out: bool,
    /// Why it is compensating (the group's error, a client's fail, the timeout).
    pub failure: Option<Failure>,
    /// Why compensation could not complete (state `failed`).
    pub compensation_error: Option<Failure>,
    /// The client's `event fail` (step, seq), for idempotent repeats.
    pub failed_by: Option<(u16, u64)>,
    /// Liens released when it finished.
    pub finish_ops: Vec<Operation>,
}

/// What the driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing now; look again at `until` (log time) if given.
    Wait {
        until: Option<u64>,
    },
    Execute {
        group: u32,
        attempt: u16,
    },
    Capture {
        step: u16,
        attempt: u16,
    },
    Undo {
        group: u32,
        attempt: u16,
    },
    TimeOut,
    Finish,
    Conclude,
}

impl Event {
    pub fn new(spec: NewEvent, fingerprint: u64, seq: u64, ts: u64) -> Event {
        Event {
            spec,
            fingerprint,
            steps: Vec::new(),
            state: EventState::Created,
            version: 1,
            created_seq: seq,
            created_ts: ts,
            started_seq: 0,
            started_ts: 0,
            ended_ts: 0,
            deadline: None,
            attempt: 0,
            retry_at: 0,
            timed_out: false,
            failure: None,
            compensation_error: None,
            failed_by: None,
            finish_ops: Vec::new(),
        }
    }

    pub fn id(&self) -> u128 {
        self.spec.id
    }

    pub fn step_index(&self, name: &str) -> Option<u16> {
        self.steps
            .iter()
            .position(|s| &*s.step.name == name)
            .map(|i| i as u16)
    }

    /// Indices of the steps of group `order`, in the order they were added.
    pub fn group(&self, order: u32) -> impl Iterator<Item = u16> + '_ {
        self.steps
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.step.order == order)
            .map(|(i, _)| i as u16)
    }

    /// The groups' orders, ascending, without repeats.
    pub fn orders(&self) -> Vec<u32> {
        let mut o: Vec<u32> = self.steps.iter().map(|s| s.step.order).collect();
        o.sort_unstable();
        o.dedup();
        o
    }

    /// Liens created by the event's steps (its own liens), with accounts.
    pub fn liens(&self) -> Vec<(LienId, u128)> {
        self.steps
            .iter()
            .flat_map(|s| s.ops.iter())
            .filter_map(|op| match op {
                Operation::CreateLien(c) => Some((c.id, c.account)),
                _ => None,
            })
            .collect()
    }

    /// Log time from which the event counts as running too long.
    pub fn running_since(&self) -> u64 {
        self.started_ts
    }

    /// Liens created by the event's steps that the steps' own operations did
    /// not capture or release (a confirmation's capture, an exchange's
    /// release), with accounts: what may still hold funds.
    pub fn open_liens(&self) -> Vec<(LienId, u128)> {
        self.steps
            .iter()
            .flat_map(|s| {
                s.ops.iter().filter_map(|op| match op {
                    Operation::CreateLien(c) if !super::executor::closes(&s.ops, c.id) => {
                        Some((c.id, c.account))
                    }
                    _ => None,
                })
            })
            .collect()
    }

    /// Log time from which the action now due counts: the start, or the
    /// time a retried attempt was due. Only logged data, so preparing the
    /// action again (after a restart) sees the same time; never later than
    /// the log time of the chain that performs it, which is sequenced once
    /// the action is due.
    pub fn due_since(&self) -> u64 {
        self.started_ts.max(self.retry_at)
    }

    fn pending_group(&self) -> Option<u32> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Pending)
            .map(|s| s.step.order)
            .min()
    }

    fn undo_group(&self) -> Option<u32> {
        self.steps
            .iter()
            .filter(|s| s.status.has_effects())
            .map(|s| s.step.order)
            .max()
    }

    /// What should happen next, at log time `now`.
    pub fn next_action(&self, now: u64) -> Action {
        match self.state {
            EventState::Running => {
                if let Some(d) = self.deadline {
                    if now >= d {
                        return Action::TimeOut;
                    }
                }
                if now < self.retry_at {
                    return Action::Wait {
                        until: Some(self.retry_at),
                    };
                }
                if let Some(i) = self
                    .steps
                    .iter()
                    .position(|s| s.status == StepStatus::Confirming)
                {
                    return Action::Capture {
                        step: i as u16,
                        attempt: self.attempt,
                    };
                }
                if self.steps.iter().any(|s| s.status == StepStatus::Awaiting) {
                    return Action::Wait {
                        until: self.deadline,
                    };
                }
                match self.pending_group() {
                    Some(group) => Action::Execute {
                        group,
                        attempt: self.attempt,
                    },
                    None => Action::Finish,
                }
            }
            EventState::Compensating => {
                if now < self.retry_at {
                    return Action::Wait {
                        until: Some(self.retry_at),
                    };
                }
                match self.undo_group() {
                    Some(group) => Action::Undo {
                        group,
                        attempt: self.attempt,
                    },
                    None => Action::Conclude,
                }
            }
            _ => Action::Wait { until: None },
        }
    }

    fn changed(&mut self) {
        self.version += 1;
    }

    fn end(&mut self, state: EventState, ts: u64) {
        debug_assert!(state.is_terminal());
        self.state = state;
        self.ended_ts = ts;
        self.retry_at = 0;
    }

    fn compensate(&mut self, failure: Failure) {
        self.state = EventState::Compensating;
        self.failure = Some(failure);
        self.attempt = 0;
        self.retry_at = 0;
    }

    /// A retry (returns true) or not, after a refused attempt at `ts`.
    fn retry(&mut self, failure: &Failure, attempt: u16, ts: u64, at_least: u8) -> bool {
        if failure.retryable && attempt < u16::from(self.spec.retries.max(at_least)) {
            self.attempt = attempt + 1;
            let delay = self
                .spec
                .retry_delay_ns
                .saturating_mul(1u64 << attempt.min(30))
                .min(MAX_RETRY_DELAY_NS);
            self.retry_at = ts.saturating_add(delay);
            true
        } else {
            false
        }
    }

    fn check_group_pending(&self, group: u32, attempt: u16) -> Result<(), Error> {
        let mut any = false;
        for i in self.group(group) {
            any = true;
            if self.steps[i as usize].status != StepStatus::Pending {
                return Err(state_error("the group was already applied"));
            }
        }
        if !any {
            return Err(state_error("no such group"));
        }
        if attempt != self.attempt {
            return Err(state_error("not the current attempt"));
        }
        Ok(())
    }

    /// Applies a fact recorded at log time `ts`.
    pub fn apply_fact(&mut self, fact: &Fact, ts: u64) -> Result<(), Error> {
        if self.state.is_terminal() || self.state == EventState::Created {
            return Err(state_error(self.state.name()));
        }
        let running = self.state == EventState::Running;
        match fact {
            Fact::Applied {
                group,
                attempt,
                steps,
            } => {
                // Also while compensating: a group whose chain committed as a
                // client failed the event is recorded, then undone.
                self.check_group_pending(*group, *attempt)?;
                let expected: Vec<u16> = self.group(*group).collect();
                if steps.iter().map(|s| s.step).collect::<Vec<_>>() != expected {
                    return Err(state_error("the steps do not match the group"));
                }
                for AppliedStep {
                    step,
                    ops,
                    result,
                    awaiting,
                } in steps
                {
                    let s = &mut self.steps[*step as usize];
                    s.status = if *awaiting {
                        StepStatus::Awaiting
                    } else {
                        StepStatus::Applied
                    };
                    s.ops = ops.clone();
                    s.result = result.clone();
                }
                if running {
                    self.attempt = 0;
                    self.retry_at = 0;
                }
            }
            Fact::Refused {
                group,
                attempt,
                failure,
            } => {
                if !running {
                    return Err(state_error(self.state.name()));
                }
                self.check_group_pending(*group, *attempt)?;
                if !self.retry(failure, *attempt, ts, 0) {
                    let steps: Vec<u16> = self.group(*group).collect();
                    for i in steps {
                        let s = &mut self.steps[i as usize];
                        if failure.step.is_none() || failure.step == Some(i) {
                            s.status = StepStatus::Failed;
                            s.error = Some(failure.clone());
                        }
                    }
                    self.compensate(failure.clone());
                }
            }
            Fact::Captured {
                step,
                attempt,
                ops,
                result,
            } => {
                let s = self.confirming(*step, *attempt)?;
                s.status = StepStatus::Applied;
                s.ops.extend(ops.iter().cloned());
                s.result = result.clone();
                self.attempt = 0;
                self.retry_at = 0;
            }
            Fact::CaptureRefused {
                step,
                attempt,
                failure,
            } => {
                if !running {
                    return Err(state_error(self.state.name()));
                }
                self.confirming(*step, *attempt)?;
                if !self.retry(failure, *attempt, ts, 0) {
                    let s = &mut self.steps[*step as usize];
                    s.error = Some(failure.clone());
                    // Its lien is still active: compensation releases it.
                    s.status = StepStatus::Awaiting;
                    self.compensate(failure.clone());
                }
            }
            Fact::Undone {
                group,
                attempt,
                steps: undone,
            } => {
                self.check_undo(*group, *attempt)?;
                let steps: Vec<u16> = self.group(*group).collect();
                for i in steps {
                    let s = &mut self.steps[i as usize];
                    if s.status.has_effects() {
                        s.status = StepStatus::Compensated;
                        if let Some((_, ops)) = undone.iter().find(|(k, _)| *k == i) {
                            s.undo = ops.clone();
                        }
                    }
                }
                self.attempt = 0;
                self.retry_at = 0;
            }
            Fact::UndoRefused {
                group,
                attempt,
                failure,
            } => {
                self.check_undo(*group, *attempt)?;
                if !self.retry(failure, *attempt, ts, MIN_UNDO_RETRIES) {
                    self.compensation_error = Some(failure.clone());
                    self.end(EventState::Failed, ts);
                }
            }
            Fact::TimedOut => {
                if !running || self.deadline.is_none_or(|d| ts < d) {
                    return Err(state_error("the deadline has not passed"));
                }
                self.timed_out = true;
                self.compensate(Failure {
                    code: ErrorCode::EventTimedOut as u16,
                    message: ErrorCode::EventTimedOut.description().into(),
                    step: None,
                    retryable: false,
                });
            }
            Fact::Finished { ops } => {
                if self.next_action(ts) != Action::Finish {
                    return Err(state_error("groups are still due"));
                }
                self.finish_ops = ops.clone();
                self.end(EventState::Completed, ts);
            }
            Fact::Concluded => {
                if self.state != EventState::Compensating || self.undo_group().is_some() {
                    return Err(state_error("groups are still to be undone"));
                }
                let end = if self.timed_out {
                    EventState::TimedOut
                } else {
                    EventState::Compensated
                };
                self.end(end, ts);
            }
        }
        self.changed();
        Ok(())
    }

    fn confirming(&mut self, step: u16, attempt: u16) -> Result<&mut StepRecord, Error> {
        if self.state != EventState::Running || attempt != self.attempt {
            return Err(state_error("not the current attempt"));
        }
        match self.steps.get_mut(step as usize) {
            Some(s) if s.status == StepStatus::Confirming => Ok(s),
            _ => Err(state_error("the step is not confirming")),
        }
    }

    fn check_undo(&self, group: u32, attempt: u16) -> Result<(), Error> {
        if self.state != EventState::Compensating
            || self.undo_group() != Some(group)
            || attempt != self.attempt
        {
            return Err(state_error("not the group due for compensation"));
        }
        Ok(())
    }

    /// A client confirms a step awaiting confirmation.
    pub fn confirm(&mut self, step: &str, amount: Option<Amount>, seq: u64) -> Result<bool, Error> {
        let i = self
            .step_index(step)
            .ok_or_else(|| Error::new(ErrorCode::StepNotFound).with_text(step.to_string()))?
            as usize;
        let s = &mut self.steps[i];
        if s.confirmed_seq != 0 && s.confirm_amount == amount {
            return Ok(true); // a repeat: harmless
        }
        if self.state != EventState::Running || s.status != StepStatus::Awaiting {
            return Err(state_error(&format!(
                "step {step} is {}, event {}",
                s.status.name(),
                self.state.name()
            )));
        }
        s.status = StepStatus::Confirming;
        s.confirm_amount = amount;
        s.confirmed_seq = seq;
        self.changed();
        Ok(false)
    }

    /// A client fails a step awaiting confirmation: the event compensates.
    pub fn fail(&mut self, step: &str, reason: &str, seq: u64) -> Result<bool, Error> {
        let i = self
            .step_index(step)
            .ok_or_else(|| Error::new(ErrorCode::StepNotFound).with_text(step.to_string()))?;
        if self.failed_by.is_some_and(|(s, _)| s == i) {
            return Ok(true);
        }
        let s = &mut self.steps[i as usize];
        if self.state != EventState::Running || s.status != StepStatus::Awaiting {
            return Err(state_error(&format!(
                "step {step} is {}, event {}",
                s.status.name(),
                self.state.name()
            )));
        }
        let failure = Failure {
            code: ErrorCode::StepFailedByClient as u16,
            message: if reason.is_empty() {
                ErrorCode::StepFailedByClient.description().into()
            } else {
                reason.into()
            },
            step: Some(i),
            retryable: false,
        };
        s.error = Some(failure.clone());
        self.failed_by = Some((i, seq));
        self.compensate(failure);
        self.changed();
        Ok(false)
    }

    /// Starts the event at log time `ts`.
    pub fn start(&mut self, seq: u64, ts: u64) -> Result<bool, Error> {
        if self.state != EventState::Created {
            return Ok(true);
        }
        if self.steps.is_empty() {
            return Err(Error::new(ErrorCode::EventHasNoSteps));
        }
        self.state = EventState::Running;
        self.started_seq = seq;
        self.started_ts = ts;
        self.deadline = self.spec.timeout_ns.map(|t| ts.saturating_add(t));
        self.changed();
        Ok(false)
    }

    /// Adds a step (before start). `Ok(Some(seq))`: the same step was added
    /// before at `seq`.
    pub fn add_step(&mut self, step: &Step, seq: u64) -> Result<Option<u64>, Error> {
        if let Some(i) = self.step_index(&step.name) {
            let s = &self.steps[i as usize];
            return if s.step == *step {
                Ok(Some(s.added_seq))
            } else {
                Err(
                    Error::new(ErrorCode::IdReusedWithDifferentContent).with_text(format!(
                        "step {} was added with different content",
                        step.name
                    )),
                )
            };
        }
        if self.state != EventState::Created {
            return Err(state_error(
                "steps can only be added before the event starts",
            ));
        }
        if self.steps.len() >= crate::limits::MAX_EVENT_STEPS {
            return Err(Error::new(ErrorCode::TooManySteps));
        }
        self.steps.push(StepRecord {
            step: step.clone(),
            status: StepStatus::Pending,
            added_seq: seq,
            ops: Vec::new(),
            undo: Vec::new(),
            result: "null".into(),
            confirm_amount: None,
            confirmed_seq: 0,
            error: None,
        });
        self.changed();
        Ok(None)
    }

    /// Checks the event's own invariants; returns what is wrong.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let id = crate::id::format_id(self.id());
        let effects = self.steps.iter().filter(|s| s.status.has_effects()).count();
        match self.state {
            EventState::Created => {
                if self.steps.iter().any(|s| s.status != StepStatus::Pending) {
                    problems.push(format!("event {id} is created but a step has run"));
                }
            }
            EventState::Completed => {
                if self.steps.iter().any(|s| s.status != StepStatus::Applied) {
                    problems.push(format!(
                        "event {id} is completed but not every step applied"
                    ));
                }
            }
            EventState::Compensated | EventState::TimedOut => {
                if effects > 0 {
                    problems.push(format!(
                        "event {id} is {} but {effects} step(s) still have effects",
                        self.state.name()
                    ));
                }
                if self.failure.is_none() {
                    problems.push(format!(
                        "event {id} is {} without a failure",
                        self.state.name()
                    ));
                }
            }
            EventState::Failed => {
                if self.compensation_error.is_none() {
                    problems.push(format!("event {id} failed without a compensation error"));
                }
            }
            EventState::Running | EventState::Compensating => {}
        }
        // Groups run in ascending order: no pending step below an applied one.
        if let Some(max_done) = self
            .steps
            .iter()
            .filter(|s| s.status != StepStatus::Pending && s.status != StepStatus::Failed)
            .map(|s| s.step.order)
            .max()
        {
            if self
                .steps
                .iter()
                .any(|s| s.status == StepStatus::Pending && s.step.order < max_done)
            {
                problems.push(format!("event {id} skipped a group"));
            }
        }
        problems
    }
}

fn state_error(why: &str) -> Error {
    Error::new(ErrorCode::InvalidEventState).with_text(why.to_string())
}
