//! The sharded runtime: one thread per shard, each the single writer of its
//! accounts, fed through its own queue in global sequence order.
//!
//! A submitter validates its batch (outside any lock), then takes the
//! sequencer lock just long enough to stamp each command with its sequence
//! number and timestamp, compute the shards it involves, and push one
//! sub-batch per involved shard (and the whole batch to the journal, when one
//! is attached). Because every queue receives sub-batches in sequence order,
//! every shard sees the commands it takes part in in global order.
//!
//! A command involving one shard runs there and then. A command involving
//! several runs as an ordered shard-crossing step: each participant evaluates
//! its part when it reaches the command, casts its verdict, waits until all
//! participants have cast theirs, and applies (or discards) its part. A shard
//! waits only for commands with a lower sequence number to be finished by the
//! others, so there is no deadlock, and no client holds a lock meanwhile.
//!
//! A batch completes when every involved shard has processed its part and,
//! with a journal, when the journal says the batch is durable: outcomes are
//! released to the submitter only then.

mod batch;
pub mod events;
mod worker;

pub use batch::{Batch, Settled, Stages, Ticket};

use crate::command::{Command, IdSpace, Outcome};
use crate::currency::CurrencyCode;
use crate::error::{Error, ErrorCode};
use crate::id::{shard_of, AccountId, LienId};
use crate::ledger::merge_sums;
use crate::lien::Lien;
use crate::limits::{MAX_BATCH_COMMANDS, MAX_INFLIGHT_COMMANDS, MAX_SHARDS};
use crate::sequencer::Sequencer;
use crate::shard::ShardState;
use crate::view::{AccountView, IdStatus};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use worker::Message;

/// Where durability is decided. The runtime hands each sequenced batch to the
/// journal, in sequence order, while holding the sequencer lock (so keep
/// `append` short: enqueue, don't write). The journal calls
/// [`Batch::mark_durable`] once the batch's records are on stable storage;
/// until then the batch's outcomes are held back from the submitter.
pub trait Journal: Send + Sync + 'static {
    fn append(&self, batch: Arc<Batch>);
}

/// The cold tier as the prefetch stage sees it: the id records that left
/// the shards' memory, looked up before a batch is sequenced so that a
/// shard never waits on storage.
pub trait ColdIds: Send + Sync + 'static {
    /// The watermark a lookup made now would cover: every id record decided
    /// at or before it can be found. It never goes back.
    fn covered(&self) -> u64;
    /// Looks these keys up. The answers carry the watermark they cover. An
    /// error (storage that cannot be read) refuses the whole batch: an id
    /// that may have been used must never be taken for a new one.
    fn lookup(&self, keys: &[(IdSpace, u128)]) -> Result<crate::idindex::ColdAnswers, Error>;
    /// [`ColdIds::lookup`] of only the records decided after `after` (what
    /// a watermark that moved past `after` added): asked under the
    /// sequencer lock, so it should touch as little as it can.
    fn lookup_after(
        &self,
        keys: &[(IdSpace, u128)],
        after: u64,
    ) -> Result<crate::idindex::ColdAnswers, Error> {
        let _ = after;
        self.lookup(keys)
    }
}

/// A clock: nanoseconds since the Unix epoch (or any monotone origin).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

/// How to run.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Shard threads (1..=64).
    pub shards: usize,
    pub clock: Clock,
    /// Pre-sized accounts and entry ids per shard (0: grow as needed).
    pub reserve_accounts: usize,
    pub reserve_entry_ids: usize,
    /// How often to check for expired liens and issue a `Tick` (None: never;
    /// liens then expire only when later commands' timestamps pass them).
    pub tick_interval: Option<Duration>,
    pub journal: Option<Arc<dyn Journal>>,
    /// Commands in flight before `try_submit` answers `busy`.
    pub max_inflight: usize,
    /// A cold tier for id records, and the window of records each shard
    /// keeps in memory per namespace (see `IdIndex`). Every batch's
    /// records then go to it once durable (`Batch::take_id_records`).
    pub cold: Option<(Arc<dyn ColdIds>, usize)>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shards: 1,
            clock: system_clock(),
            reserve_accounts: 0,
            reserve_entry_ids: 0,
            tick_interval: Some(Duration::from_millis(50)),
            journal: None,
            max_inflight: MAX_INFLIGHT_COMMANDS,
            cold: None,
        }
    }
}

struct Shared {
    sequencer: Mutex<Sequencer>,
    queues: Vec<Sender<Message>>,
    inflight: AtomicUsize,
    max_inflight: usize,
    stopping: AtomicBool,
    clock: Clock,
    journal: Option<Arc<dyn Journal>>,
    /// Per shard: the earliest lien deadline it may still have to expire.
    deadlines: Vec<AtomicU64>,
    cold: Option<Arc<dyn ColdIds>>,
}

impl Shared {
    fn reserve(&self, n: usize) -> Result<(), Error> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(ErrorCode::ShuttingDown.into());
        }
        if n > MAX_BATCH_COMMANDS {
            return Err(Error::new(ErrorCode::BatchTooLarge)
                .with_text(format!("{n} > {MAX_BATCH_COMMANDS}")));
        }
        let prev = self.inflight.fetch_add(n, Ordering::AcqRel);
        if prev > 0 && prev + n > self.max_inflight {
            self.inflight.fetch_sub(n, Ordering::AcqRel);
            return Err(ErrorCode::Busy.into());
        }
        Ok(())
    }

    fn submit_reserved(
        self: &Arc<Self>,
        commands: Vec<Command>,
        encoded: Option<crate::codec::Encoded>,
    ) -> Result<Ticket, Error> {
        let n = commands.len();
        let encoded = encoded.filter(|e| e.len() == n);
        // Stateless checks run outside the lock, in the submitter's thread.
        // Bytes logged verbatim are bounded as sent (a command may be sent
        // in a longer form than the encoder would write).
        let early: Vec<Option<Outcome>> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let sent = encoded
                    .as_ref()
                    .and_then(|e| e.get(i))
                    .map_or(0, <[u8]>::len);
                if sent > crate::limits::MAX_COMMAND_BYTES {
                    let error = Error::new(ErrorCode::CommandTooLarge).with_text(format!(
                        "the command was sent in {sent} bytes; the limit is {}",
                        crate::limits::MAX_COMMAND_BYTES
                    ));
                    return Some(Outcome::rejected_early(error));
                }
                c.validate().err().map(Outcome::rejected_early)
            })
            .collect();
        let shards = self.queues.len();
        let mut items: Vec<Vec<u32>> = vec![Vec::new(); shards];
        // The prefetch stage: cold lookups outside the lock.
        let keys = self.cold.as_ref().map(|_| cold_keys(&commands, &early));
        let mut cold = match (&self.cold, &keys) {
            (Some(c), Some(k)) => match c.lookup(k) {
                Ok(answers) => Some(answers),
                Err(e) => {
                    self.inflight.fetch_sub(n, Ordering::AcqRel);
                    return Err(e);
                }
            },
            _ => None,
        };
        let batch;
        {
            let mut seq = self.sequencer.lock();
            if self.stopping.load(Ordering::Acquire) {
                drop(seq);
                self.inflight.fetch_sub(n, Ordering::AcqRel);
                return Err(ErrorCode::ShuttingDown.into());
            }
            // Shards drop the id records the cold tier covers when a batch
            // says it covers them, so the watermarks must not go back in
            // sequence order: one that moved since the lookup is asked
            // again, under the lock (rare: once per cold run written).
            if let (Some(c), Some(k), Some(answers)) = (&self.cold, &keys, &mut cold) {
                if c.covered() != answers.covered {
                    match c.lookup_after(k, answers.covered) {
                        Ok(newer) => *answers = std::mem::take(answers).with(newer),
                        Err(e) => {
                            drop(seq);
                            self.inflight.fetch_sub(n, Ordering::AcqRel);
                            return Err(e);
                        }
                    }
                }
            }
            let now = (self.clock)();
            let mut routes = Vec::with_capacity(n);
            for (i, (cmd, early)) in commands.iter().zip(&early).enumerate() {
                if early.is_some() {
                    routes.push(None);
                    continue;
                }
                let route = seq.sequence(cmd, now);
                let mut mask = route.mask;
                while mask != 0 {
                    items[mask.trailing_zeros() as usize].push(i as u32);
                    mask &= mask - 1;
                }
                routes.push(Some(route));
            }
            let parts = items.iter().filter(|v| !v.is_empty()).count();
            let journal = self.journal.is_some() && parts > 0;
            batch = Arc::new(Batch::new(
                commands,
                routes,
                early,
                encoded,
                parts,
                journal,
                self.clone(),
                cold.map(Arc::new),
            ));
            for (shard, list) in items.into_iter().enumerate() {
                if !list.is_empty() {
                    // A send fails only when the shard thread is gone, and a
                    // dead shard aborts the process (see worker::run).
                    let _ = self.queues[shard].send(Message::Work {
                        batch: batch.clone(),
                        items: list,
                    });
                }
            }
            if journal {
                if let Some(j) = &self.journal {
                    j.append(batch.clone());
                }
            }
        }
        if batch.sequenced() == 0 {
            batch.complete_unsequenced();
        }
        Ok(Ticket::new(batch))
    }
}

/// The ids a batch's commands may read, for the cold tier's lookup.
fn cold_keys(commands: &[Command], early: &[Option<Outcome>]) -> Vec<(IdSpace, u128)> {
    let mut keys = Vec::with_capacity(commands.len());
    for (cmd, early) in commands.iter().zip(early) {
        if early.is_none() {
            cmd.cold_keys(|space, id| keys.push((space, id)));
        }
    }
    keys
}

/// A running sharded ledger.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl Runtime {
    pub fn start(config: RuntimeConfig) -> Result<Runtime, Error> {
        let n = config.shards;
        if !(1..=MAX_SHARDS).contains(&n) {
            return Err(Error::new(ErrorCode::InvalidCommand)
                .with_text(format!("shards must be 1..={MAX_SHARDS}")));
        }
        Self::start_with(config, crate::ledger::Ledger::new(n))
    }

    /// Starts from a ledger's state (recovery: a snapshot loaded and the log
    /// replayed into a `Ledger`, then handed over here). The ledger's shard
    /// count wins over `config.shards`.
    pub fn start_with(
        config: RuntimeConfig,
        ledger: crate::ledger::Ledger,
    ) -> Result<Runtime, Error> {
        let (sequencer, states) = ledger.into_parts();
        let n = states.len();
        let mut queues = Vec::with_capacity(n);
        let mut receivers: Vec<Receiver<Message>> = Vec::with_capacity(n);
        for _ in 0..n {
            // Unbounded queues: what bounds them is the in-flight command limit
            // (every sub-batch carries at least one command).
            let (tx, rx) = crossbeam_channel::unbounded();
            queues.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            sequencer: Mutex::new(sequencer),
            queues,
            inflight: AtomicUsize::new(0),
            max_inflight: config.max_inflight.max(1),
            stopping: AtomicBool::new(false),
            clock: config.clock.clone(),
            journal: config.journal.clone(),
            deadlines: (0..n).map(|_| AtomicU64::new(u64::MAX)).collect(),
            cold: config.cold.as_ref().map(|(c, _)| c.clone()),
        });
        let mut threads = Vec::with_capacity(n);
        for (i, (rx, mut state)) in receivers.into_iter().zip(states).enumerate() {
            assert_eq!(state.index(), i);
            if let Some((_, window)) = &config.cold {
                state.set_id_window(*window);
            }
            state.reserve(config.reserve_accounts, config.reserve_entry_ids);
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("tally-shard-{i}"))
                .spawn(move || worker::run(state, rx, &shared.deadlines[i]))
                .map_err(|e| {
                    Error::new(ErrorCode::InvalidCommand)
                        .with_text(format!("spawning shard thread: {e}"))
                })?;
            threads.push(t);
        }
        let mut rt = Runtime {
            shared,
            threads,
            ticker: None,
        };
        if let Some(every) = config.tick_interval {
            let ticker = rt.spawn_ticker(every).map_err(|e| {
                Error::new(ErrorCode::InvalidCommand)
                    .with_text(format!("spawning the ticker thread: {e}"))
            })?;
            rt.ticker = Some(ticker);
        }
        Ok(rt)
    }

    pub fn shards(&self) -> usize {
        self.shared.queues.len()
    }

    /// Commands submitted and not yet completed.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::Relaxed)
    }

    /// Queued messages per shard (a gauge for metrics).
    pub fn queue_depths(&self) -> Vec<usize> {
        self.shared.queues.iter().map(|q| q.len()).collect()
    }

    /// The current log time: the clock, or the last timestamp if later.
    pub fn now(&self) -> u64 {
        let last = self.shared.sequencer.lock().last_timestamp();
        (self.shared.clock)().max(last)
    }

    /// The sequence number the next command will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.sequencer.lock().next_seq()
    }

    /// Submits a batch, waiting while the runtime is at capacity.
    pub fn submit(&self, commands: Vec<Command>) -> Result<Ticket, Error> {
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            match self.shared.reserve(commands.len()) {
                Ok(()) => return self.shared.submit_reserved(commands, None),
                Err(e) if e.code == ErrorCode::Busy => {
                    if backoff.is_completed() {
                        std::thread::sleep(Duration::from_micros(50));
                    } else {
                        backoff.snooze();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits a batch, or answers `busy` at once when the runtime is at
    /// capacity (nothing is sequenced then).
    pub fn try_submit(&self, commands: Vec<Command>) -> Result<Ticket, Error> {
        self.shared.reserve(commands.len())?;
        self.shared.submit_reserved(commands, None)
    }

    /// [`Runtime::try_submit`], with the commands' wire bytes as the client
    /// sent them (`encoded` holds one entry per command, or it is ignored):
    /// the log stores those bytes verbatim instead of encoding the commands
    /// again.
    pub fn try_submit_encoded(
        &self,
        commands: Vec<Command>,
        encoded: crate::codec::Encoded,
    ) -> Result<Ticket, Error> {
        self.shared.reserve(commands.len())?;
        self.shared.submit_reserved(commands, Some(encoded))
    }

    /// Submits one command and waits for its outcome.
    pub fn execute(&self, command: Command) -> Outcome {
        match self.submit(vec![command]) {
            Ok(t) => t
                .wait()
                .pop()
                .unwrap_or_else(|| Outcome::rejected_early(ErrorCode::ShuttingDown.into())),
            Err(e) => Outcome::rejected_early(e),
        }
    }

    /// Runs `f` on one shard at the current point of the global order.
    pub fn query<R: Send + 'static>(
        &self,
        shard: usize,
        f: impl FnOnce(&ShardState) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let seq = self.shared.sequencer.lock();
            let timestamp = seq.last_timestamp();
            let f = Box::new(move |s: &ShardState| {
                let _ = tx.send(f(s));
            });
            self.shared
                .queues
                .get(shard)?
                .send(Message::Query { timestamp, f })
                .ok()?;
        }
        rx.recv().ok()
    }

    /// Runs `f` on every shard at one point of the global order: a consistent
    /// cut. Shards do not stop for each other; each runs `f` when it reaches
    /// the cut's position in its queue. Returns the results by shard and the
    /// sequence number the cut follows.
    pub fn cut<R: Send + 'static>(
        &self,
        f: impl Fn(&ShardState) -> R + Send + Sync + 'static,
    ) -> (u64, Vec<R>) {
        let f = Arc::new(f);
        let (tx, rx) = crossbeam_channel::bounded(self.shards());
        let after;
        {
            let seq = self.shared.sequencer.lock();
            after = seq.next_seq() - 1;
            let timestamp = seq.last_timestamp();
            for (i, q) in self.shared.queues.iter().enumerate() {
                let (f, tx) = (f.clone(), tx.clone());
                let job = Box::new(move |s: &ShardState| {
                    let _ = tx.send((i, f(s)));
                });
                let _ = q.send(Message::Query { timestamp, f: job });
            }
        }
        drop(tx);
        let mut results: Vec<(usize, R)> = rx.iter().collect();
        results.sort_by_key(|(i, _)| *i);
        (after, results.into_iter().map(|(_, r)| r).collect())
    }

    /// Test hook (feature `test-hooks`): runs `f` on a shard's state at this
    /// point of the global order, to plant inconsistencies for the verifier's
    /// tests. Not part of any public interface of the product.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn tamper_for_test(&self, shard: usize, f: impl FnOnce(&mut ShardState) + Send + 'static) {
        let _seq = self.shared.sequencer.lock();
        if let Some(q) = self.shared.queues.get(shard) {
            let _ = q.send(Message::Tamper(Box::new(f)));
        }
    }

    pub fn account(&self, id: AccountId) -> Option<AccountView> {
        self.query(shard_of(id, self.shards()), move |s| s.account(id))
            .flatten()
    }

    /// A lien by id (two hops: the id's home names the account, the
    /// account's shard holds the lien; a lien's account never changes).
    pub fn lien(&self, id: LienId) -> Option<Lien> {
        let account = self
            .query(shard_of(id, self.shards()), move |s| s.lien_account(id))
            .flatten()?;
        self.query(shard_of(account, self.shards()), move |s| s.lien(id))
            .flatten()
    }

    /// What is known of an id (a cold tier that cannot be read counts as
    /// unknown here: see [`Runtime::try_status`]).
    pub fn status(&self, space: IdSpace, id: u128) -> IdStatus {
        self.try_status(space, id).unwrap_or(IdStatus::Unknown)
    }

    /// An id's record in the cold tier alone (`None` without one). Asked
    /// after the shard's memory said it does not hold it: a record the
    /// shard dropped was in the cold tier by then.
    pub fn cold_record(
        &self,
        space: IdSpace,
        id: u128,
    ) -> Result<Option<crate::idindex::IdRecord>, Error> {
        match &self.shared.cold {
            None => Ok(None),
            Some(cold) => Ok(cold.lookup(&[(space, id)])?.get(space.tag(), id)),
        }
    }

    /// An id's record, from the shard's memory or the cold tier.
    pub fn id_record(
        &self,
        space: IdSpace,
        id: u128,
    ) -> Result<Option<crate::idindex::IdRecord>, Error> {
        let hot = self
            .query(shard_of(id, self.shards()), move |s| {
                s.id_index(space).get(id).copied()
            })
            .flatten();
        match hot {
            Some(r) => Ok(Some(r)),
            None => self.cold_record(space, id),
        }
    }

    /// What is known of an id, from the shard's memory or the cold tier.
    pub fn try_status(&self, space: IdSpace, id: u128) -> Result<IdStatus, Error> {
        let hot = self
            .query(shard_of(id, self.shards()), move |s| s.id_status(space, id))
            .unwrap_or(IdStatus::Unknown);
        match (&hot, &self.shared.cold) {
            // Not in the shard's memory at this point of the order: if the
            // shard had dropped it, the cold tier held it by then.
            (IdStatus::Unknown, Some(cold)) => {
                Ok(match cold.lookup(&[(space, id)])?.get(space.tag(), id) {
                    None => IdStatus::Unknown,
                    Some(r) => match r.code() {
                        None => IdStatus::Committed { seq: r.seq },
                        Some(code) => IdStatus::Rejected { seq: r.seq, code },
                    },
                })
            }
            _ => Ok(hot),
        }
    }

    /// A digest of the whole state at a consistent cut (equal to
    /// `Ledger::digest` of an equal state, whatever the shard count).
    pub fn digest(&self) -> u64 {
        let (_, parts) = self.cut(|s| s.digest(s.index() == 0));
        parts.into_iter().fold(0u64, |a, d| a.wrapping_add(d))
    }

    /// Sum of balances per currency at a consistent cut.
    pub fn balance_sums(&self) -> Vec<(CurrencyCode, i128)> {
        merge_sums(self.cut(|s| s.balance_sums()).1)
    }

    fn spawn_ticker(&self, every: Duration) -> std::io::Result<JoinHandle<()>> {
        let shared = Arc::downgrade(&self.shared);
        // Essential: without the ticker, liens would not expire on an idle ledger.
        crate::essential::spawn("tally-ticker", move || loop {
            std::thread::sleep(every);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.stopping.load(Ordering::Acquire) {
                return;
            }
            let next = shared
                .deadlines
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .min()
                .unwrap_or(u64::MAX);
            if next <= (shared.clock)() && shared.reserve(1).is_ok() {
                // Busy or stopping: the next round tries again.
                let _ = shared.submit_reserved(vec![Command::Tick], None);
            }
        })
    }

    /// Refuses new submissions (`shutting_down`) from now on; work already
    /// sequenced still completes. The first step of a graceful shutdown.
    pub fn stop_accepting(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Stops accepting, lets queued work finish, and joins the shard threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.stopping.store(true, Ordering::Release);
        {
            // Taking the lock orders Stop after every sequenced batch.
            let _seq = self.shared.sequencer.lock();
            for q in &self.shared.queues {
                let _ = q.send(Message::Stop);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}
