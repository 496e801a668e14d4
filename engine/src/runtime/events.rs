//! The event driver: a thread that moves running and compensating events
//! forward through the runtime, round by round.
//!
//! Each round it takes a consistent look at the active events (id and
//! version per shard), fetches those that changed, asks each for its next
//! action ([`Event::next_action`]), turns the actions into chains
//! ([`prepare`]), submits them as one batch (group commit), waits, and then
//! submits the facts that record the outcomes as a second batch. Chains are
//! durable before their facts are submitted, and facts before the next
//! action is prepared, so a crash anywhere leaves the log saying exactly
//! which actions happened: on its first look at an event after a start, the
//! driver asks the id index for the outcome of the chain it is about to
//! submit, and records that instead of submitting again, if the content
//! logged under the chain's id is the chain it prepared (fingerprints match;
//! otherwise nothing it prepared ran, and the action is refused). Later
//! looks submit the chain: the shard answers a repeat as a duplicate with
//! its original outcome, and other content under the id as
//! `id_reused_with_different_content`, by the same fingerprint.
//!
//! Ids derived before the driver had a namespace of its own (see
//! [`crate::event::ids`]) were different, so an action an earlier version
//! logged and stopped before recording is looked up under its old id too:
//! if that committed with the same content, it is recorded as done rather
//! than applied a second time under the new id.
//!
//! The driver holds no state that the log does not have: killing it (or the
//! process) at any moment and starting again resumes every event.

use super::Runtime;
use crate::chain::Chain;
use crate::command::{Command, IdSpace, Outcome};
use crate::currency::{Currency, CurrencyCode};
use crate::event::drive::prepare_in;
use crate::event::ids::Scheme;
use crate::event::{
    prepare, Action, Event, EventCommand, EventConfig, EventId, Lookup, Prepared, Registry,
};
use crate::id::LienId;
use crate::idindex::IdRecord;
use crate::lien::Lien;
use crate::limits::MAX_BATCH_COMMANDS;
use crossbeam_channel::{Receiver, Sender};
use hashbrown::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long an idle driver sleeps before looking again (a poke wakes it
/// sooner; timeouts and retries wake it at their time).
pub const IDLE_POLL: Duration = Duration::from_millis(20);

struct RuntimeLookup<'a>(&'a Runtime);

impl Lookup for RuntimeLookup<'_> {
    fn currency(&mut self, code: CurrencyCode) -> Option<Currency> {
        self.0.query(0, move |s| s.currency(code)).flatten()
    }
    fn lien(&mut self, id: LienId) -> Option<Lien> {
        self.0.lien(id)
    }
}

/// Counters for metrics.
#[derive(Default)]
pub struct DriverStats {
    pub rounds: AtomicU64,
    pub chains: AtomicU64,
    pub facts: AtomicU64,
    pub refused_facts: AtomicU64,
}

/// The driver's state between rounds (a cache of what the shards hold).
pub struct EventDriver {
    registry: Registry,
    config: EventConfig,
    events: HashMap<EventId, Event>,
    /// Events whose next chain must be looked up before it is submitted.
    unchecked: HashSet<EventId>,
    first_round: bool,
    pub stats: Arc<DriverStats>,
}

/// What a round did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Round {
    /// Actions taken (chains submitted or facts recorded).
    pub actions: usize,
    /// The earliest log time a waiting event wants to be looked at again.
    pub wake_at: Option<u64>,
}

impl EventDriver {
    pub fn new(registry: Registry, config: EventConfig) -> EventDriver {
        EventDriver {
            registry,
            config,
            events: HashMap::new(),
            unchecked: HashSet::new(),
            first_round: true,
            stats: Arc::default(),
        }
    }

    /// Refreshes the cache: active events whose version changed are fetched.
    fn refresh(&mut self, rt: &Runtime) {
        let (_, parts) = rt.cut(|s| s.events().active().collect::<Vec<_>>());
        let mut active = HashSet::new();
        let mut wanted: Vec<Vec<EventId>> = vec![Vec::new(); parts.len()];
        for (shard, list) in parts.into_iter().enumerate() {
            for (id, version) in list {
                active.insert(id);
                if self.events.get(&id).map(|e| e.version) != Some(version) {
                    wanted[shard].push(id);
                }
            }
        }
        self.events.retain(|id, _| active.contains(id));
        self.unchecked.retain(|id| active.contains(id));
        for (shard, ids) in wanted.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            let fetched = rt
                .query(shard, move |s| {
                    ids.iter()
                        .filter_map(|id| s.events().get(*id).cloned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for e in fetched {
                if self.first_round {
                    self.unchecked.insert(e.id());
                }
                self.events.insert(e.id(), e);
            }
        }
        self.first_round = false;
    }

    /// The actions due now, prepared, each with its chain's outcome when it
    /// is already known (first sight after a start: looked up, not
    /// submitted). Records in `round` when waiting events want a look.
    fn prepare_all(
        &mut self,
        rt: &Runtime,
        round: &mut Round,
    ) -> (Vec<Prepared>, Vec<Option<Outcome>>) {
        let now = rt.now();
        let mut prepared = Vec::new();
        let mut outcomes = Vec::new();
        let mut ids: Vec<EventId> = self.events.keys().copied().collect();
        ids.sort_unstable();
        let mut lookup = RuntimeLookup(rt);
        for id in ids {
            let Some(e) = self.events.get(&id) else {
                continue;
            };
            let action = e.next_action(now);
            if action == Action::TimeOut && self.unchecked.contains(&id) {
                match committed_before_deadline(rt, e, &self.registry, &self.config) {
                    Ok(Some(known)) => {
                        self.unchecked.remove(&id);
                        prepared.push(known.0);
                        outcomes.push(Some(known.1));
                        continue;
                    }
                    Ok(None) => {}
                    // The cold tier could not be read: nothing is known,
                    // so nothing is done for this event this round.
                    Err(ColdUnreadable) => continue,
                }
            }
            if let Action::Wait { until } = action {
                if let Some(t) = until {
                    round.wake_at = Some(round.wake_at.map_or(t, |w| w.min(t)));
                }
                continue;
            }
            let (registry, config) = (&self.registry, &self.config);
            let Some(p) = prepare(e, action, registry, config, &mut lookup) else {
                continue;
            };
            let (p, known) = if p.chain.is_some() && self.unchecked.contains(&id) {
                match first_sight(rt, e, action, registry, config, &mut lookup, p) {
                    Ok(seen) => {
                        self.unchecked.remove(&id);
                        seen
                    }
                    // Looked at again next round, still unchecked.
                    Err(ColdUnreadable) => continue,
                }
            } else {
                (p, None)
            };
            prepared.push(p);
            outcomes.push(known);
        }
        (prepared, outcomes)
    }

    /// One round. `now` is the current log time (approximately).
    pub fn round(&mut self, rt: &Runtime) -> Round {
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        self.refresh(rt);
        let mut round = Round::default();
        let (prepared, mut outcomes) = self.prepare_all(rt, &mut round);
        if prepared.is_empty() {
            return round;
        }
        let submit: Vec<(usize, Chain)> = prepared
            .iter()
            .zip(&outcomes)
            .enumerate()
            .filter(|(_, (_, known))| known.is_none())
            .filter_map(|(i, (p, _))| p.chain.clone().map(|c| (i, c)))
            .collect();
        self.stats
            .chains
            .fetch_add(submit.len() as u64, Ordering::Relaxed);
        for part in submit.chunks(MAX_BATCH_COMMANDS) {
            let cmds = part
                .iter()
                .map(|(_, c)| Command::Chain(c.clone()))
                .collect();
            match rt.submit(cmds) {
                Ok(t) => {
                    for ((i, _), o) in part.iter().zip(t.wait()) {
                        outcomes[*i] = Some(o);
                    }
                }
                Err(_) => return round, // stopping: the next start resumes
            }
        }
        let facts: Vec<Command> = prepared
            .iter()
            .zip(&outcomes)
            .filter_map(|(p, o)| {
                p.fact(o.as_ref()).map(|fact| {
                    Command::Event(EventCommand::Record {
                        event: p.event,
                        fact,
                    })
                })
            })
            .collect();
        for part in facts.chunks(MAX_BATCH_COMMANDS) {
            match rt.submit(part.to_vec()) {
                Ok(t) => {
                    for o in t.wait() {
                        if o.is_ok() {
                            round.actions += 1;
                            self.stats.facts.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // The event changed under us (a client's fail or
                            // confirm): the next round fetches it again.
                            self.stats.refused_facts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(_) => return round,
            }
        }
        round
    }
}

/// The outcome already logged for `p`'s chain, on the driver's first look
/// at an event after a start (`None`: submit it). When the chain's id is
/// free, the same action's chain under its [`Scheme::Legacy`] id is looked
/// up: if that committed with the same content (lien lifetimes as the
/// ledger holds them: earlier versions computed them from a clock), an
/// earlier version applied it, and it is that chain (its operations, with
/// their ids) that is recorded. Any other record under the old id is
/// ignored: a refusal (nothing ran, trying again is safe), or content that
/// is not the driver's (old ids were open to clients). This look can go
/// once no log holds chains from before the namespace.
fn first_sight(
    rt: &Runtime,
    e: &Event,
    action: Action,
    registry: &Registry,
    config: &EventConfig,
    lookup: &mut dyn Lookup,
    p: Prepared,
) -> Result<(Prepared, Option<Outcome>), ColdUnreadable> {
    let Some(id) = p.chain.as_ref().map(|c| c.id) else {
        return Ok((p, None));
    };
    if let Some(known) = p.known_outcome(chain_record(rt, id)?) {
        return Ok((p, Some(known)));
    }
    let Some(mut old) = prepare_in(Scheme::Legacy, e, action, registry, config, lookup) else {
        return Ok((p, None));
    };
    let committed = match old.chain.as_ref() {
        Some(c) => chain_record(rt, c.id)?,
        None => None,
    }
    .filter(|r| r.committed() && r.seq < config.legacy_ids_before);
    let Some(record) = committed else {
        return Ok((p, None));
    };
    old.adopt_lien_lifetimes(lookup);
    if !old.matches(&record) {
        return Ok((p, None));
    }
    let known = old.known_outcome(Some(record));
    Ok((old, known))
}

/// On the first look after a start at an event whose deadline has passed:
/// the action that was due before the deadline, if its chain committed
/// (before a crash, with its fact not yet recorded). That fact is recorded
/// first, so the timeout's compensation undoes the chain's effects instead
/// of leaving them in place.
fn committed_before_deadline(
    rt: &Runtime,
    e: &Event,
    registry: &Registry,
    config: &EventConfig,
) -> Result<Option<(Prepared, Outcome)>, ColdUnreadable> {
    let Some(due) = e
        .deadline
        .and_then(|d| d.checked_sub(1))
        .map(|t| e.next_action(t))
    else {
        return Ok(None);
    };
    if !matches!(due, Action::Execute { .. } | Action::Capture { .. }) {
        return Ok(None);
    }
    let mut lookup = RuntimeLookup(rt);
    let Some(p) = prepare(e, due, registry, config, &mut lookup) else {
        return Ok(None);
    };
    if p.chain.is_none() {
        return Ok(None);
    }
    let (p, known) = first_sight(rt, e, due, registry, config, &mut lookup, p)?;
    Ok(match known {
        Some(o @ Outcome::Duplicate { code: None, .. }) => Some((p, o)),
        _ => None,
    })
}

/// The cold tier could not be read: what an id's record is, is unknown.
struct ColdUnreadable;

/// What the id index (memory, then the cold tier) holds for chain id `id`.
/// A cold tier that cannot be read is not "no record": the event is left
/// for a later round (acting on a guess could run a committed chain again,
/// or compensate without undoing it).
fn chain_record(rt: &Runtime, id: u128) -> Result<Option<IdRecord>, ColdUnreadable> {
    rt.id_record(IdSpace::Chain, id).map_err(|_| ColdUnreadable)
}

/// A running driver thread.
pub struct DriverHandle {
    poke: Sender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<DriverStats>,
}

/// Gives the driver the runtime for one round (`None` once it is gone).
pub type Access = Arc<dyn Fn(&mut dyn FnMut(&Runtime) -> Round) -> Option<Round> + Send + Sync>;

impl DriverHandle {
    /// Starts a driver thread that reaches the runtime through `access`.
    pub fn spawn(
        access: Access,
        registry: Registry,
        config: EventConfig,
    ) -> std::io::Result<DriverHandle> {
        let (tx, rx): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut driver = EventDriver::new(registry, config);
        let stats = driver.stats.clone();
        let s = stop.clone();
        // Essential: without the driver, started events never finish.
        let thread = crate::essential::spawn("tally-events", move || {
            while !s.load(Ordering::Acquire) {
                let mut clock = 0u64;
                let r = access(&mut |rt: &Runtime| {
                    let r = driver.round(rt);
                    clock = rt.now();
                    r
                });
                let Some(r) = r else { return };
                if r.actions > 0 {
                    continue;
                }
                let wait = r
                    .wake_at
                    .map(|t| Duration::from_nanos(t.saturating_sub(clock)))
                    .map_or(IDLE_POLL, |d| d.min(IDLE_POLL));
                let _ = rx.recv_timeout(wait);
            }
        })?;
        Ok(DriverHandle {
            poke: tx,
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// Something changed (an event was started, confirmed or failed): look now.
    pub fn poke(&self) {
        let _ = self.poke.try_send(());
    }

    /// Stops the thread (after its current round).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.poke();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Drives a runtime that the caller owns (in-process use: tests, the bench):
/// spawns a driver borrowing `runtime` through an `Arc`.
pub fn spawn_for(
    runtime: Arc<Runtime>,
    registry: Registry,
    config: EventConfig,
) -> std::io::Result<DriverHandle> {
    let access: Access = Arc::new(move |f| Some(f(&runtime)));
    DriverHandle::spawn(access, registry, config)
}
