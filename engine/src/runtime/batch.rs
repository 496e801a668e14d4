//! A sequenced batch: its commands, their routes, the participants' votes on
//! cross-shard commands, and the outcomes, released once the batch is both
//! executed and (with a journal) durable.

use super::Shared;
use crate::command::{Command, Outcome};
use crate::error::ErrorCode;
use crate::sequencer::Route;
use crate::shard::Verdict;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXECUTED: usize = 0;
const APPENDED: usize = 1;
const DURABLE: usize = 2;

/// Where a batch's time went after it was sequenced: the offsets from
/// `sequenced` at which it was executed (every shard done), appended to the
/// log and durable (`None`: not reached, or no log).
#[derive(Clone, Copy, Debug)]
pub struct Stages {
    pub sequenced: Instant,
    pub executed: Option<Duration>,
    pub appended: Option<Duration>,
    pub durable: Option<Duration>,
}

/// The participants' combined verdict on one cross-shard command.
pub(crate) struct Vote {
    cast: AtomicU32,
    verdict: Mutex<Verdict>,
}

impl Vote {
    fn new() -> Vote {
        Vote {
            cast: AtomicU32::new(0),
            verdict: Mutex::new(Verdict::Commit),
        }
    }

    /// Adds one participant's verdict.
    pub(crate) fn cast(&self, v: Verdict) {
        {
            let mut combined = self.verdict.lock();
            let current = std::mem::replace(&mut *combined, Verdict::Commit);
            *combined = current.combine(v);
        }
        self.cast.fetch_add(1, Ordering::Release);
    }

    /// Waits until `participants` verdicts are in, then returns the decision.
    /// Participants are shard threads working through earlier commands, so
    /// the wait is short: spin, then yield.
    pub(crate) fn decide(&self, participants: u32) -> Verdict {
        let backoff = crossbeam_utils::Backoff::new();
        while self.cast.load(Ordering::Acquire) < participants {
            if backoff.is_completed() {
                std::thread::yield_now();
            } else {
                backoff.snooze();
            }
        }
        self.verdict.lock().clone()
    }
}

/// Rounds of `Backoff::spin` before [`Batch::wait_executed`] parks: about
/// 320 pause instructions, a few µs (up to ~15 µs where a pause takes ~140
/// cycles).
const EXECUTED_SPINS: u32 = 10;

/// A batch of sequenced commands shared by the submitter, the shards involved
/// and the journal.
pub struct Batch {
    commands: Vec<Command>,
    /// The commands' wire bytes as the client sent them (the log stores
    /// these verbatim), when the submitter had them; the journal takes them.
    encoded: Mutex<Option<crate::codec::Encoded>>,
    /// Holders of the batch's in-flight reservation: the batch itself until
    /// it completes, and a reader of durable batches until
    /// [`Batch::release_reservation`] (see [`Batch::mark_durable_held`]).
    /// The last to let go gives the reservation back: exactly once, in any
    /// order of completion and release.
    holders: AtomicU32,
    /// Whether a reader holds the reservation (its release is once).
    held: std::sync::atomic::AtomicBool,
    routes: Vec<Option<Route>>,
    /// Filled by each part as it finishes (one lock per part, not per command).
    outcomes: Mutex<Vec<Option<Outcome>>>,
    /// Index into `votes` per command (u32::MAX: not cross-shard).
    vote_of: Vec<u32>,
    votes: Box<[Vote]>,
    /// Parts left: one per involved shard, plus one for the journal.
    pending: AtomicUsize,
    /// Shard parts left (the batch is executed when this reaches zero).
    unexecuted: AtomicUsize,
    /// The journal parks here until the shards are done (see
    /// [`Batch::wait_executed`]).
    executed_lock: Mutex<()>,
    executed_cv: Condvar,
    /// When it was sequenced, and how long after that it was executed,
    /// appended and durable (ns; 0 = not yet), for the stage breakdown.
    created: Instant,
    stamps: [AtomicU64; 3],
    done: Mutex<bool>,
    done_cv: Condvar,
    /// Run once when the batch completes (see `on_done`).
    on_done: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    shared: Arc<Shared>,
    sequenced: usize,
    /// Every command was sequenced, at consecutive sequences and timestamps.
    dense: bool,
    /// Outcomes reported so far that are not "committed".
    not_committed: AtomicUsize,
    /// The cold tier's answers for the batch's ids (with a cold tier).
    cold: Option<Arc<crate::idindex::ColdAnswers>>,
    /// The id records the batch made, for the cold tier (with one).
    id_records: Mutex<Vec<(u8, u128, crate::idindex::IdRecord)>>,
}

/// What a batch came to, in the form that is cheapest to answer with.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Every command committed, the first at `first_seq` and `first_timestamp`
    /// and each next one at the next sequence and timestamp (no outcome was
    /// collected).
    AllCommitted {
        count: usize,
        first_seq: u64,
        first_timestamp: u64,
    },
    /// Each command's outcome, in submission order.
    Outcomes(Vec<Outcome>),
}

impl Settled {
    /// Every command's outcome, in submission order.
    pub fn into_outcomes(self) -> Vec<Outcome> {
        match self {
            Settled::AllCommitted {
                count,
                first_seq,
                first_timestamp,
            } => (0..count as u64)
                .map(|k| Outcome::Committed {
                    seq: first_seq + k,
                    timestamp: first_timestamp + k,
                })
                .collect(),
            Settled::Outcomes(o) => o,
        }
    }
}

impl Batch {
    // One call site (the sequencer), each argument a different part.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        commands: Vec<Command>,
        routes: Vec<Option<Route>>,
        early: Vec<Option<Outcome>>,
        encoded: Option<crate::codec::Encoded>,
        shard_parts: usize,
        journal: bool,
        shared: Arc<Shared>,
        cold: Option<Arc<crate::idindex::ColdAnswers>>,
    ) -> Batch {
        debug_assert!(encoded.as_ref().is_none_or(|e| e.len() == commands.len()));
        let parts = shard_parts + usize::from(journal);
        let mut vote_of = Vec::with_capacity(routes.len());
        let mut votes = 0u32;
        for (r, cmd) in routes.iter().zip(&commands) {
            // Broadcast commands are decided identically by every shard: no vote.
            let broadcast = matches!(cmd, Command::CreateCurrency(_) | Command::Tick);
            match r {
                Some(r) if !r.is_single() && !broadcast => {
                    vote_of.push(votes);
                    votes += 1;
                }
                _ => vote_of.push(u32::MAX),
            }
        }
        let sequenced = routes.iter().filter(|r| r.is_some()).count();
        let dense = sequenced == routes.len()
            && routes.windows(2).all(|w| match (&w[0], &w[1]) {
                (Some(a), Some(b)) => {
                    Some(b.seq) == a.seq.checked_add(1)
                        && Some(b.timestamp) == a.timestamp.checked_add(1)
                }
                _ => false,
            });
        let not_committed = early.iter().filter(|o| o.is_some()).count();
        Batch {
            holders: AtomicU32::new(1),
            held: std::sync::atomic::AtomicBool::new(false),
            dense,
            not_committed: AtomicUsize::new(not_committed),
            commands,
            encoded: Mutex::new(encoded),
            routes,
            outcomes: Mutex::new(early),
            vote_of,
            votes: (0..votes).map(|_| Vote::new()).collect(),
            pending: AtomicUsize::new(parts),
            unexecuted: AtomicUsize::new(shard_parts),
            executed_lock: Mutex::new(()),
            executed_cv: Condvar::new(),
            created: Instant::now(),
            stamps: Default::default(),
            done: Mutex::new(false),
            done_cv: Condvar::new(),
            on_done: Mutex::new(None),
            shared,
            sequenced,
            cold,
            id_records: Mutex::new(Vec::new()),
        }
    }

    /// The cold tier's answers for this batch (with a cold tier).
    pub fn cold(&self) -> Option<&Arc<crate::idindex::ColdAnswers>> {
        self.cold.as_ref()
    }

    pub(crate) fn add_id_records(&self, records: Vec<(u8, u128, crate::idindex::IdRecord)>) {
        if !records.is_empty() {
            let mut mine = self.id_records.lock();
            if mine.is_empty() {
                *mine = records;
            } else {
                mine.extend(records);
            }
        }
    }

    /// The id records the batch made (in no particular order across
    /// shards); taken once, by the cold tier, after the batch is durable.
    pub fn take_id_records(&self) -> Vec<(u8, u128, crate::idindex::IdRecord)> {
        std::mem::take(&mut *self.id_records.lock())
    }

    /// The commands, in submission order.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// The commands' wire bytes as the client sent them, when known; taken
    /// by the journal (once written, nothing needs them).
    pub fn take_encoded(&self) -> Option<crate::codec::Encoded> {
        self.encoded.lock().take()
    }

    /// Each command's route (`None`: refused before sequencing, not logged).
    pub fn routes(&self) -> &[Option<Route>] {
        &self.routes
    }

    /// The outcome of command `i`, once decided.
    pub fn outcome(&self, i: usize) -> Option<Outcome> {
        self.outcomes.lock().get(i).cloned().flatten()
    }

    /// Whether every involved shard is done with the batch.
    pub fn is_executed(&self) -> bool {
        self.unexecuted.load(Ordering::Acquire) == 0
    }

    /// Waits until every involved shard is done (the journal calls this
    /// before writing outcomes). A small batch executes in microseconds:
    /// spin briefly, then park until the last shard's part wakes it. It
    /// never yields in a loop, which would take the core from the very
    /// shard it waits for when threads outnumber cores.
    pub fn wait_executed(&self) {
        let backoff = crossbeam_utils::Backoff::new();
        for _ in 0..EXECUTED_SPINS {
            if self.is_executed() {
                return;
            }
            backoff.spin();
        }
        let mut guard = self.executed_lock.lock();
        while !self.is_executed() {
            self.executed_cv.wait(&mut guard);
        }
    }

    /// Every command's outcome (`None` only before execution).
    pub fn outcomes(&self) -> Vec<Option<Outcome>> {
        self.outcomes.lock().clone()
    }

    pub(crate) fn vote(&self, i: usize) -> &Vote {
        &self.votes[self.vote_of[i] as usize]
    }

    /// Called by the journal when the batch's records are durable.
    pub fn mark_durable(&self) {
        self.stamp(DURABLE);
        self.finish_part();
    }

    /// Called by the journal once the batch's records are written (not yet
    /// synced): the stage breakdown's "append".
    pub fn mark_appended(&self) {
        self.stamp(APPENDED);
    }

    fn stamp(&self, stage: usize) {
        self.stamps[stage].store(self.elapsed_ns(), Ordering::Release);
    }

    /// Nanoseconds since the batch was sequenced (at least 1: 0 is "not yet").
    fn elapsed_ns(&self) -> u64 {
        self.created.elapsed().as_nanos().clamp(1, u64::MAX as u128) as u64
    }

    /// Where the batch's time went so far.
    pub fn stages(&self) -> Stages {
        let at = |stage: usize| match self.stamps[stage].load(Ordering::Acquire) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        };
        Stages {
            sequenced: self.created,
            executed: at(EXECUTED),
            appended: at(APPENDED),
            durable: at(DURABLE),
        }
    }

    /// [`Batch::mark_durable`], keeping the batch's in-flight reservation
    /// until [`Batch::release_reservation`]: a reader of durable batches (the
    /// history) that holds on to them counts against `max_inflight`, so
    /// what it holds is bounded by it, and a slow reader slows admission
    /// (`busy`) instead of the log writer.
    pub fn mark_durable_held(&self) {
        self.stamp(DURABLE);
        // The holder is counted before `held` says so: a release can then
        // never let go of a hold not yet counted.
        self.holders.fetch_add(1, Ordering::AcqRel);
        if self.held.swap(true, Ordering::AcqRel) {
            // Already held (called twice): one hold only.
            self.holders.fetch_sub(1, Ordering::AcqRel);
        }
        self.finish_part();
    }

    /// Gives back a reservation kept by [`Batch::mark_durable_held`] (once).
    pub fn release_reservation(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.let_go();
        }
    }

    /// One holder of the reservation lets go; the last gives it back.
    fn let_go(&self) {
        let before = self.holders.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before >= 1, "a holder let go of a reservation twice");
        if before == 1 {
            let inflight = self
                .shared
                .inflight
                .fetch_sub(self.commands.len(), Ordering::AcqRel);
            debug_assert!(
                inflight >= self.commands.len(),
                "in-flight count below zero"
            );
        }
    }

    /// A part (a shard's share, or the journal) is finished; `outcomes` are
    /// the ones it reports.
    pub(crate) fn part_done(&self, outcomes: Vec<(u32, Outcome)>) {
        if !outcomes.is_empty() {
            let not_committed = outcomes
                .iter()
                .filter(|(_, o)| !matches!(o, Outcome::Committed { .. }))
                .count();
            if not_committed > 0 {
                self.not_committed
                    .fetch_add(not_committed, Ordering::AcqRel);
            }
            let mut slots = self.outcomes.lock();
            for (i, o) in outcomes {
                debug_assert!(slots[i as usize].is_none(), "one reporter per command");
                slots[i as usize] = Some(o);
            }
        }
        // Stamped before the count the journal watches moves: whoever sees
        // the batch executed sees the last part's stamp.
        self.stamps[EXECUTED].fetch_max(self.elapsed_ns(), Ordering::AcqRel);
        if self.unexecuted.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The journal checks `is_executed` under this lock before it
            // parks: taking it here means it either saw the count at zero
            // or is parked and gets this notification.
            let _guard = self.executed_lock.lock();
            self.executed_cv.notify_all();
        }
        // The journal may finish its part before this (it only waits for
        // `unexecuted`), and a reader may even have let go of the
        // reservation by then: `holders` makes the give-back exactly once
        // whatever the order. (Before, the last part gave it back on
        // completion unless a reader held it, and a reader that had already
        // let go meant it was given back twice: the count wrapped below zero
        // and every later write was `busy`.)
        self.finish_part();
    }

    fn finish_part(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete();
        }
    }

    /// Completes a batch that went to no shard and no journal (every
    /// command was refused before sequencing). Only the submitter calls it,
    /// and only for such a batch, so completion happens exactly once.
    pub(super) fn complete_unsequenced(&self) {
        debug_assert_eq!(self.sequenced, 0);
        self.complete();
    }

    fn complete(&self) {
        debug_assert!(self.is_executed());
        self.let_go();
        let callback = {
            let mut done = self.done.lock();
            *done = true;
            self.done_cv.notify_all();
            self.on_done.lock().take()
        };
        if let Some(f) = callback {
            f();
        }
    }

    /// Runs `f` once the batch is complete (executed and durable): at once if
    /// it already is, otherwise on the thread that completes it (a shard or
    /// the journal), so keep it short: wake a waiter, do not work. Lets an
    /// async caller await a batch without a thread blocked in `Ticket::wait`.
    pub fn on_done(&self, f: impl FnOnce() + Send + 'static) {
        let done = self.done.lock();
        if *done {
            drop(done);
            f();
        } else {
            *self.on_done.lock() = Some(Box::new(f));
        }
    }

    fn wait_done(&self) {
        let mut done = self.done.lock();
        while !*done {
            self.done_cv.wait(&mut done);
        }
    }

    /// Commands that were sequenced (and so will be logged).
    pub fn sequenced(&self) -> usize {
        self.sequenced
    }
}

/// The submitter's handle on a batch.
pub struct Ticket {
    batch: Arc<Batch>,
}

impl Ticket {
    pub(super) fn new(batch: Arc<Batch>) -> Ticket {
        Ticket { batch }
    }

    /// Blocks until the batch is executed and durable; returns the outcomes
    /// in submission order.
    pub fn wait(self) -> Vec<Outcome> {
        self.batch.wait_done();
        let slots = std::mem::take(&mut *self.batch.outcomes.lock());
        let missing = || Outcome::rejected_early(ErrorCode::ShuttingDown.into());
        slots
            .into_iter()
            .map(|o| o.unwrap_or_else(missing))
            .collect()
    }

    /// Blocks like [`Ticket::wait`]; when every command committed at
    /// consecutive sequences, says so without collecting the outcomes.
    pub fn settle(self) -> Settled {
        self.batch.wait_done();
        let b = &self.batch;
        if b.dense && b.not_committed.load(Ordering::Acquire) == 0 {
            if let Some(Some(first)) = b.routes.first() {
                debug_assert!(b.outcomes.lock().iter().zip(&b.routes).all(|(o, r)| {
                    let at = r.as_ref().map(|r| (r.seq, r.timestamp));
                    matches!(o, Some(Outcome::Committed { seq, timestamp }) if Some((*seq, *timestamp)) == at)
                }));
                return Settled::AllCommitted {
                    count: b.routes.len(),
                    first_seq: first.seq,
                    first_timestamp: first.timestamp,
                };
            }
        }
        Settled::Outcomes(self.wait())
    }

    /// Whether `wait` would return at once.
    pub fn is_done(&self) -> bool {
        *self.batch.done.lock()
    }

    pub fn batch(&self) -> &Arc<Batch> {
        &self.batch
    }
}
