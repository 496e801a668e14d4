//! The events a shard owns (those whose id hashes to it), and how event
//! commands apply to them.

use super::{Event, EventCommand, EventId, NewEvent};
use crate::command::{Fingerprint, Outcome};
use crate::error::{Error, ErrorCode};
use crate::sequencer::Route;
use hashbrown::{HashMap, HashSet};

#[derive(Default)]
pub struct EventTable {
    events: HashMap<EventId, Event>,
    /// Running or compensating: what the driver looks at.
    active: HashSet<EventId>,
}

/// A content fingerprint of an event's creation.
pub fn spec_fingerprint(e: &NewEvent) -> u64 {
    let mut f = Fingerprint::new();
    f.tag(20)
        .u128(e.id)
        .str(Some(&e.name))
        .str(Some(&e.description))
        .u64(e.timeout_ns.map_or(0, |t| t.wrapping_add(1)))
        .str(Some(&e.metadata))
        .u64(e.retries.into())
        .u64(e.retry_delay_ns);
    f.finish()
}

impl EventTable {
    pub fn get(&self, id: EventId) -> Option<&Event> {
        self.events.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.values()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Running or compensating events: (id, version).
    pub fn active(&self) -> impl Iterator<Item = (EventId, u64)> + '_ {
        self.active
            .iter()
            .filter_map(|id| self.events.get(id).map(|e| (*id, e.version)))
    }

    pub(crate) fn restore(&mut self, e: Event) {
        if e.state.is_active() {
            self.active.insert(e.id());
        }
        self.events.insert(e.id(), e);
    }

    #[doc(hidden)]
    pub fn get_mut_for_test(&mut self, id: EventId) -> Option<&mut Event> {
        self.events.get_mut(&id)
    }

    /// Applies an event command at `route` (this shard owns the event id).
    pub fn apply(&mut self, cmd: &EventCommand, route: &Route) -> Outcome {
        let (seq, ts) = (route.seq, route.timestamp);
        let committed = Outcome::Committed { seq, timestamp: ts };
        let duplicate = |seq| Outcome::Duplicate { seq, code: None };
        let rejected = |error: Error| Outcome::Rejected {
            seq: Some(seq),
            error,
        };
        let id = cmd.event();
        if let EventCommand::Create(spec) = cmd {
            let fp = spec_fingerprint(spec);
            return match self.events.get(&id) {
                Some(e) if e.fingerprint == fp => duplicate(e.created_seq),
                Some(_) => {
                    rejected(Error::new(ErrorCode::IdReusedWithDifferentContent).with_subject(id))
                }
                None => {
                    self.events
                        .insert(id, Event::new(spec.clone(), fp, seq, ts));
                    committed
                }
            };
        }
        let Some(e) = self.events.get_mut(&id) else {
            return rejected(Error::new(ErrorCode::EventNotFound).with_subject(id));
        };
        let result = match cmd {
            EventCommand::Create(_) => unreachable!("handled above"),
            EventCommand::AddStep { step, .. } => e.add_step(step, seq),
            EventCommand::Start { .. } => e
                .start(seq, ts)
                .map(|repeat| repeat.then_some(e.started_seq)),
            EventCommand::Confirm { step, amount, .. } => e.confirm(step, *amount, seq).map(|r| {
                r.then(|| {
                    e.steps
                        .iter()
                        .find(|s| s.step.name == *step)
                        .map_or(seq, |s| s.confirmed_seq)
                })
            }),
            EventCommand::Fail { step, reason, .. } => e
                .fail(step, reason, seq)
                .map(|r| r.then(|| e.failed_by.map_or(seq, |(_, s)| s))),
            EventCommand::Record { fact, .. } => e.apply_fact(fact, ts).map(|()| None),
        };
        let active = e.state.is_active();
        if active {
            self.active.insert(id);
        } else {
            self.active.remove(&id);
        }
        match result {
            Ok(None) => committed,
            Ok(Some(first)) => duplicate(first),
            Err(error) => rejected(error.with_subject(id)),
        }
    }
}
