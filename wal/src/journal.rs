//! Group commit, pipelined. Batches arrive in sequence order from the
//! runtime. The log writer thread takes every batch that is waiting (a
//! group), waits for the shards to execute them, appends one record per
//! sequenced command, and hands the group to the syncer thread; it then
//! appends the next group while the syncer syncs. The syncer takes every
//! group handed over (at most [`MAX_PENDING_GROUPS`]), syncs once for all of
//! them (and gives the segments rotation started their names, each after
//! the one before it is synced: the writer never waits for a rotation's
//! syncs), and only then releases their outcomes, in order. A write or sync
//! error is fatal: the process stops rather than acknowledge anything it
//! cannot prove durable.

use crate::log::{run_sync_steps, LogWriter, RecordPos, SyncStep};
use crate::record::Item;
use crate::storage::Store;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tally_engine::runtime::{Batch, Journal};

/// Most batches one group commit takes.
pub const MAX_GROUP_BATCHES: usize = 1_024;

/// A group takes no more batches once its records pass this many bytes (a
/// group is at most this plus its last batch's records): a group's sync,
/// and what waits on it, stays short.
pub const MAX_GROUP_BYTES: u64 = 4 << 20;

/// Most groups handed to the syncer and waiting; beyond it the writer waits.
/// The syncer syncs at most this many at once, so what is written but not
/// yet durable is at most `2 × MAX_PENDING_GROUPS + 1` groups (those being
/// synced, those waiting, the one being appended) of at most
/// [`MAX_GROUP_BATCHES`] batches.
pub const MAX_PENDING_GROUPS: usize = 4;

/// When an outcome may be acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After the group's `fdatasync` returns (the default).
    Fsync,
    /// As soon as the record is in the page cache: a crash of the machine
    /// (not of the process) can lose acknowledged writes. For benchmarks.
    None,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "none" => Ok(Durability::None),
            other => Err(format!("durability must be fsync or none, not {other:?}")),
        }
    }
}

/// Counters of the writer, for metrics and benchmarks.
#[derive(Default)]
pub struct LogStats {
    /// The last sequence number whose record is durable (synced, or written
    /// with durability none).
    pub durable_seq: AtomicU64,
    pub records: AtomicU64,
    pub groups: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_nanos_total: AtomicU64,
    pub sync_nanos_max: AtomicU64,
    /// Recent sync latencies (ns), a bounded ring for percentiles.
    pub recent_syncs: Mutex<Vec<u64>>,
    /// Readers waiting for `durable_seq` to move wait here.
    durable_lock: Mutex<()>,
    durable_moved: parking_lot::Condvar,
}

const RECENT_SYNCS: usize = 4_096;

impl LogStats {
    /// Marks the log durable up to `seq` and wakes the readers waiting for it.
    pub fn set_durable(&self, seq: u64) {
        self.durable_seq.store(seq, Ordering::Release);
        let _guard = self.durable_lock.lock();
        self.durable_moved.notify_all();
    }

    /// Waits until the log is durable up to `seq`, or `deadline`; whether it
    /// is. Woken by the writer at each group (no polling).
    pub fn wait_durable(&self, seq: u64, deadline: Instant) -> bool {
        let mut guard = self.durable_lock.lock();
        loop {
            if self.durable_seq.load(Ordering::Acquire) >= seq {
                return true;
            }
            if self
                .durable_moved
                .wait_until(&mut guard, deadline)
                .timed_out()
            {
                return self.durable_seq.load(Ordering::Acquire) >= seq;
            }
        }
    }

    fn sync_took(&self, ns: u64) {
        let n = self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos_total.fetch_add(ns, Ordering::Relaxed);
        self.sync_nanos_max.fetch_max(ns, Ordering::Relaxed);
        // A ring: the oldest is overwritten in place (readers take the
        // latencies in any order).
        let mut r = self.recent_syncs.lock();
        if r.len() < RECENT_SYNCS {
            r.push(ns);
        } else {
            r[(n % RECENT_SYNCS as u64) as usize] = ns;
        }
    }
}

/// The runtime's journal: hands batches to the writer thread.
pub struct WalJournal {
    tx: Mutex<Option<Sender<Arc<Batch>>>>,
}

impl Journal for WalJournal {
    fn append(&self, batch: Arc<Batch>) {
        if let Some(tx) = self.tx.lock().as_ref() {
            // The writer only stops after `close`, which the owner calls once
            // the runtime has stopped sequencing.
            let _ = tx.send(batch);
        }
    }
}

impl WalJournal {
    /// No more batches will come: the writer drains what it has and exits.
    pub fn close(&self) {
        self.tx.lock().take();
    }
}

/// A group of batches that just became durable, handed to the history so
/// it indexes what the writer has in memory instead of reading the log back.
pub struct DurableGroup {
    /// The records written for the group, in order.
    pub records: Vec<RecordPos>,
    /// The group's batches (their sequenced commands are the records' commands).
    pub batches: Vec<Arc<Batch>>,
    /// The sequences in the group whose outcome is not "committed".
    pub not_committed: Vec<u64>,
}

/// The log writer thread's name.
pub const LOG_WRITER_THREAD: &str = "tally-log";

/// The syncer thread's name.
pub const LOG_SYNCER_THREAD: &str = "tally-log-sync";

/// Starts the writer thread (an essential thread: a panic in it aborts the
/// process, see `crate::essential`).
/// `durable`, when given, receives each group once it is durable; its
/// batches keep their in-flight reservations until the receiver releases
/// them (`Batch::release_reservation`), so the runtime's `max_inflight`
/// bounds what waits there and the writer never waits for the receiver.
pub fn start(
    mut writer: LogWriter,
    durability: Durability,
    durable: Option<Sender<DurableGroup>>,
) -> (Arc<WalJournal>, JoinHandle<LogWriter>, Arc<LogStats>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(LogStats::default());
    let s = stats.clone();
    if durable.is_some() {
        writer.track_positions();
    }
    let out = Output {
        durability,
        store: writer.store(),
        durable,
    };
    // Essential: were it to die, every write would wait forever.
    let handle = tally_engine::essential::spawn(LOG_WRITER_THREAD, move || run(writer, rx, out, s))
        .unwrap_or_else(|e| fatal(LOG_WRITER_THREAD, &format!("spawning the log writer: {e}")));
    (
        Arc::new(WalJournal {
            tx: Mutex::new(Some(tx)),
        }),
        handle,
        stats,
    )
}

/// Where the writer's groups go.
struct Output {
    durability: Durability,
    store: Store,
    durable: Option<Sender<DurableGroup>>,
}

/// A group appended to the log, waiting for its sync.
struct Pending {
    batches: Vec<Arc<Batch>>,
    not_committed: Vec<u64>,
    /// Where its records went (when the history wants them).
    records: Vec<RecordPos>,
    /// Its last sequence (0: it sequenced nothing).
    last_seq: u64,
    /// What makes it durable: a sync of each segment it wrote to and the
    /// name of each segment it started, in order.
    steps: Vec<SyncStep>,
}

/// The writer: appends groups and hands them to the syncer.
fn run(
    mut writer: LogWriter,
    rx: Receiver<Arc<Batch>>,
    out: Output,
    stats: Arc<LogStats>,
) -> LogWriter {
    // The last sequence made durable by a sync (recovery's end is synced
    // before the writer starts); the syncer moves it.
    let synced = Arc::new(AtomicU64::new(writer.next_seq() - 1));
    let (to_sync, pending) = crossbeam_channel::bounded::<Pending>(MAX_PENDING_GROUPS);
    let syncer = {
        let (stats, synced) = (stats.clone(), synced.clone());
        tally_engine::essential::spawn(LOG_SYNCER_THREAD, move || {
            sync_groups(pending, out, &stats, &synced)
        })
        .unwrap_or_else(|e| fatal(LOG_WRITER_THREAD, &format!("spawning the log syncer: {e}")))
    };
    let mut not_committed: Vec<u64> = Vec::new();
    while let Ok(first) = rx.recv() {
        // The group: the batches waiting when it begins, up to
        // MAX_GROUP_BATCHES and MAX_GROUP_BYTES (those arriving while it is
        // appended wait for the next group, so the syncer is not kept
        // waiting for a group that keeps growing).
        let waiting = rx.len().min(MAX_GROUP_BATCHES - 1);
        let start = writer.appended_bytes();
        let mut group = Vec::with_capacity(waiting + 1);
        let mut last_seq = 0;
        let mut next = Some(first);
        while let Some(batch) = next {
            // Every record says what was synced before it was appended (with
            // durability none, nothing after recovery: a machine crash may
            // then cut what was acknowledged, as that mode allows, but never
            // makes the log refuse to start). A sync still running is not
            // counted; one that finished while this group waited is.
            let watermark = synced.load(Ordering::Acquire);
            last_seq =
                append(&mut writer, &batch, watermark, &mut not_committed, &stats).max(last_seq);
            group.push(batch);
            let full = group.len() > waiting || writer.appended_bytes() - start >= MAX_GROUP_BYTES;
            next = if full { None } else { rx.try_recv().ok() };
        }
        stats.groups.fetch_add(1, Ordering::Relaxed);
        let mut records = Vec::new();
        writer.take_written(&mut records);
        let mut steps = Vec::with_capacity(1);
        writer.take_sync_steps(&mut steps);
        let appended = Pending {
            batches: group,
            not_committed: std::mem::take(&mut not_committed),
            records,
            last_seq,
            steps,
        };
        // Waits while MAX_PENDING_GROUPS wait for their sync.
        if to_sync.send(appended).is_err() {
            fatal(LOG_WRITER_THREAD, "the log syncer stopped");
        }
    }
    drop(to_sync);
    if syncer.join().is_err() {
        fatal(LOG_WRITER_THREAD, "the log syncer panicked");
    }
    if let Err(e) = writer.sync() {
        fatal(
            LOG_WRITER_THREAD,
            &format!("final sync of {}: {e}", writer.current_segment().display()),
        );
    }
    writer
}

/// The syncer: takes every appended group waiting, syncs once for all of
/// them, marks the log durable to the last, and releases them in order.
fn sync_groups(pending: Receiver<Pending>, out: Output, stats: &LogStats, synced: &AtomicU64) {
    let mut ready: Vec<Pending> = Vec::with_capacity(MAX_PENDING_GROUPS);
    let mut steps: Vec<SyncStep> = Vec::new();
    while let Ok(first) = pending.recv() {
        ready.push(first);
        while ready.len() < MAX_PENDING_GROUPS {
            match pending.try_recv() {
                Ok(p) => ready.push(p),
                Err(_) => break,
            }
        }
        let last_seq = ready.iter().map(|p| p.last_seq).max().unwrap_or(0);
        // Every group's steps, in order: consecutive syncs of one segment
        // are one (it covers every byte the writer had written before it
        // began), and a new segment is named after the one before it is
        // synced. Without fsync durability the names are still given, each
        // after its predecessor's sync (a segment readers cannot see would
        // be lost at restart, and one over an unsynced predecessor would
        // read as a gap after a machine crash); only the last syncs go.
        steps.clear();
        for p in &mut ready {
            steps.append(&mut p.steps);
        }
        if out.durability != Durability::Fsync {
            let named = steps
                .iter()
                .rposition(|s| matches!(s, SyncStep::Name(_)))
                .map_or(0, |i| i + 1);
            steps.truncate(named);
        }
        if !steps.is_empty() {
            let t = Instant::now();
            if let Err(e) = run_sync_steps(&*out.store, &steps) {
                let segment = steps.last().map_or(0, SyncStep::segment);
                fatal(
                    LOG_SYNCER_THREAD,
                    &format!(
                        "syncing the log (through {}): {e}",
                        crate::format::segment_name(segment)
                    ),
                );
            }
            if out.durability == Durability::Fsync {
                stats.sync_took(t.elapsed().as_nanos() as u64);
            }
        }
        if out.durability == Durability::Fsync && last_seq > 0 {
            synced.fetch_max(last_seq, Ordering::AcqRel);
        }
        if last_seq > 0 {
            stats.set_durable(last_seq);
        }
        for p in ready.drain(..) {
            release(&out, p);
        }
    }
}

/// Appends one executed batch's sequenced commands (the client's bytes
/// verbatim where the batch has them), noting the sequences that did not
/// commit. Returns the last sequence appended (0: none).
fn append(
    writer: &mut LogWriter,
    batch: &Batch,
    watermark: u64,
    not_committed: &mut Vec<u64>,
    stats: &LogStats,
) -> u64 {
    batch.wait_executed();
    let encoded = batch.take_encoded();
    let outcomes = batch.outcomes();
    let mut items: Vec<Item> = Vec::with_capacity(batch.routes().len());
    let mut last_seq = 0;
    for (i, route) in batch.routes().iter().enumerate() {
        let Some(route) = route else { continue };
        let Some(outcome) = &outcomes[i] else {
            fatal(LOG_WRITER_THREAD, "a sequenced command has no outcome")
        };
        if !matches!(outcome, tally_engine::Outcome::Committed { .. }) {
            not_committed.push(route.seq);
        }
        items.push(Item {
            command: &batch.commands()[i],
            seq: route.seq,
            timestamp: route.timestamp,
            outcome,
            wire: encoded.as_ref().and_then(|e| e.get(i)),
        });
        last_seq = route.seq;
    }
    if let Err(e) = writer.append_batch(&items, watermark) {
        fatal(
            LOG_WRITER_THREAD,
            &format!("appending to {}: {e}", writer.current_segment().display()),
        );
    }
    batch.mark_appended();
    stats
        .records
        .fetch_add(items.len() as u64, Ordering::Relaxed);
    last_seq
}

/// The group is durable: releases its outcomes, and hands it to the
/// history when there is one.
fn release(out: &Output, group: Pending) {
    for batch in &group.batches {
        if out.durable.is_some() {
            batch.mark_durable_held();
        } else {
            batch.mark_durable();
        }
    }
    let Some(tx) = &out.durable else {
        return;
    };
    let done = DurableGroup {
        records: group.records,
        batches: group.batches,
        not_committed: group.not_committed,
    };
    // Unbounded: the batches keep their in-flight reservations until
    // indexed, so `max_inflight` bounds what waits here. When the history
    // stopped, nothing is left to tell.
    if let Err(crossbeam_channel::SendError(done)) = tx.send(done) {
        for b in &done.batches {
            b.release_reservation();
        }
    }
}

/// A log that cannot be written stops the process: nothing unsynced has
/// been acknowledged, and nothing will be.
fn fatal(thread: &str, msg: &str) -> ! {
    tally_engine::essential::fatal(
        thread,
        &format!("{msg} (no write is acknowledged without being durable)"),
    )
}
