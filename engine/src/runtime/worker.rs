//! The shard thread: the single writer of one shard's state.

use super::batch::Batch;
use crate::command::{Command, Outcome};
use crate::shard::{ShardState, Txn};
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many commands ahead a shard warms the caches for.
const PREFETCH_DISTANCE: usize = 6;

pub(super) type QueryFn = Box<dyn FnOnce(&ShardState) + Send>;

pub(super) enum Message {
    /// This shard's commands of a batch (indices, in sequence order).
    Work {
        batch: Arc<Batch>,
        items: Vec<u32>,
    },
    /// Runs at this point of the global order, after expiring liens up to
    /// `timestamp` (the last sequenced command's time).
    Query {
        timestamp: u64,
        f: QueryFn,
    },
    /// Test hook: mutate the shard's state (plant an inconsistency).
    #[cfg(feature = "test-hooks")]
    Tamper(Box<dyn FnOnce(&mut ShardState) + Send>),
    Stop,
}

/// If a shard thread dies, other shards could wait forever for its vote and
/// half-applied cross-shard commands could follow: stop the whole process.
struct AbortOnPanic(usize);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::essential::fatal(
                &format!("tally-shard-{}", self.0),
                "panicked; no half-applied command may survive",
            );
        }
    }
}

pub(super) fn run(mut state: ShardState, rx: Receiver<Message>, deadline: &AtomicU64) {
    let me = state.index();
    let _guard = AbortOnPanic(me);
    let mut txn = Txn::default();
    while let Ok(msg) = rx.recv() {
        match msg {
            Message::Work { batch, items } => {
                if let Some(cold) = batch.cold() {
                    state.begin_batch(cold);
                }
                let mut outcomes = Vec::with_capacity(items.len());
                let commands = batch.commands();
                for (n, &i) in items.iter().enumerate() {
                    if let Some(&ahead) = items.get(n + PREFETCH_DISTANCE) {
                        state.prefetch(&commands[ahead as usize]);
                    }
                    if let Some(o) = process(&mut state, &mut txn, &batch, i as usize, me) {
                        outcomes.push((i, o));
                    }
                }
                deadline.store(state.next_deadline().unwrap_or(u64::MAX), Ordering::Relaxed);
                if batch.cold().is_some() {
                    batch.add_id_records(state.take_id_records());
                }
                batch.part_done(outcomes);
            }
            Message::Query { timestamp, f } => {
                state.sweep(timestamp);
                f(&state);
            }
            #[cfg(feature = "test-hooks")]
            Message::Tamper(f) => f(&mut state),
            Message::Stop => break,
        }
    }
}

/// Runs this shard's part of command `i`; returns its outcome when this
/// shard is the one that reports it (the lowest participant).
fn process(
    state: &mut ShardState,
    txn: &mut Txn,
    batch: &Batch,
    i: usize,
    me: usize,
) -> Option<Outcome> {
    let cmd = &batch.commands()[i];
    let Some(route) = &batch.routes()[i] else {
        unreachable!("only sequenced commands are queued")
    };
    let leader = route.leader() == me;
    match cmd {
        Command::CreateCurrency(_) | Command::Tick => {
            // Every shard decides these identically from replicated state.
            let outcome = state.apply_everywhere(cmd, route);
            leader.then_some(outcome)
        }
        _ if route.is_single() => Some(state.apply_local(cmd, route, txn)),
        _ => {
            state.sweep(route.timestamp);
            let verdict = state.evaluate(cmd, route, txn);
            let vote = batch.vote(i);
            vote.cast(verdict);
            let decision = vote.decide(route.mask.count_ones());
            state.finalize(cmd, route, &decision, txn);
            leader.then(|| decision.outcome(route))
        }
    }
}
