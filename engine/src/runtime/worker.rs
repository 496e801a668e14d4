//! The shard thread: the single writer of one shard's state.

use super::batch::Batch;
use crate::command::Command;
use crate::shard::ShardState;
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    Stop,
}

/// If a shard thread dies, other shards could wait forever for its vote and
/// half-applied cross-shard commands could follow: stop the whole process.
struct AbortOnPanic(usize);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "tally: shard {} failed; stopping the process so no half-applied command survives",
                self.0
            );
            std::process::abort();
        }
    }
}

pub(super) fn run(mut state: ShardState, rx: Receiver<Message>, deadline: &AtomicU64) {
    let me = state.index();
    let _guard = AbortOnPanic(me);
    while let Ok(msg) = rx.recv() {
        match msg {
            Message::Work { batch, items } => {
                for &i in &items {
                    process(&mut state, &batch, i as usize, me);
                }
                deadline.store(state.next_deadline().unwrap_or(u64::MAX), Ordering::Relaxed);
                batch.part_done();
            }
            Message::Query { timestamp, f } => {
                state.sweep(timestamp);
                f(&state);
            }
            Message::Stop => break,
        }
    }
}

fn process(state: &mut ShardState, batch: &Batch, i: usize, me: usize) {
    let cmd = &batch.commands()[i];
    let Some(route) = &batch.routes()[i] else {
        unreachable!("only sequenced commands are queued")
    };
    match cmd {
        Command::CreateCurrency(_) | Command::Tick => {
            // Every shard decides these identically from replicated state.
            let outcome = state.apply_everywhere(cmd, route);
            if route.leader() == me {
                batch.set_outcome(i, outcome);
            }
        }
        _ if route.is_single() => batch.set_outcome(i, state.apply_local(cmd, route)),
        _ => {
            state.sweep(route.timestamp);
            let (verdict, txn) = state.evaluate(cmd, route);
            let vote = batch.vote(i);
            vote.cast(verdict);
            let decision = vote.decide(route.mask.count_ones());
            state.finalize(cmd, route, &decision, txn);
            if route.leader() == me {
                batch.set_outcome(i, decision.outcome(route));
            }
        }
    }
}
