//! A durable ledger: a data directory opened, its log verified and replayed
//! (recovery), then a runtime whose journal is the log.

use crate::cold::{ColdConfig, ColdStore};
use crate::format::{DEFAULT_SEGMENT_BYTES, OUTCOME_COMMITTED};
use crate::history::{sealer, History, HistoryBuilder, HistoryConfig, PageLimits};
use crate::journal::{self, Durability, LogStats, WalJournal};
use crate::log::LogWriter;
use crate::problem::{file_label, Problem};
use crate::record::outcome_fields;
use crate::scan::{self, ScanStart, TornTail};
use crate::segment::SegmentWriter;
use crate::storage::{RealDisk, Storage};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tally_engine::runtime::{ColdIds, Runtime, RuntimeConfig};
use tally_engine::Ledger;

/// What to do with segments wholly before the newest good snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ArchivePolicy {
    /// Keep every segment (the default).
    #[default]
    Keep,
    Delete,
    /// Move them into this directory.
    MoveTo(PathBuf),
}

/// How to open a data directory.
#[derive(Clone)]
pub struct DurableConfig {
    pub runtime: RuntimeConfig,
    pub durability: Durability,
    pub segment_size: u64,
    /// Take a snapshot this often, in a background thread (None: only on
    /// request, with `Durable::take_snapshot`).
    pub snapshot_every: Option<std::time::Duration>,
    /// Applied after each background snapshot.
    pub archive: ArchivePolicy,
    /// Keep a history index (statements, lookups, the feed) with pages of
    /// these limits; `None`: no index.
    pub history: Option<PageLimits>,
    /// Entries the history keeps in memory before it writes them to
    /// `history/` as a run ([`HistoryConfig::tail_entries`]; 0: all in
    /// memory).
    pub history_tail: usize,
    /// Keep only a window of recent id records in memory and the rest in
    /// the cold tier (`cold/`). A data directory that has a cold tier gets
    /// one whatever this says (with [`ColdTier::default`]).
    pub cold: Option<ColdTier>,
}

/// How the cold tier for id records is run.
#[derive(Clone, Copy, Debug)]
pub struct ColdTier {
    /// Id records per generation a shard keeps per namespace: between one
    /// and two windows (and what the cold tier has not caught up with) are
    /// in memory.
    pub window: usize,
    /// Records per run the cold tier writes.
    pub run_records: usize,
}

impl Default for ColdTier {
    fn default() -> ColdTier {
        ColdTier {
            window: 1 << 20,
            run_records: crate::cold::DEFAULT_RUN_RECORDS,
        }
    }
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            runtime: RuntimeConfig::default(),
            durability: Durability::Fsync,
            segment_size: DEFAULT_SEGMENT_BYTES,
            snapshot_every: None,
            archive: ArchivePolicy::Keep,
            history: None,
            history_tail: crate::history::DEFAULT_TAIL_ENTRIES,
            cold: None,
        }
    }
}

/// What recovery found and did.
#[derive(Clone, Debug)]
pub struct Recovery {
    pub records: u64,
    pub last_seq: u64,
    pub segments: usize,
    /// A torn tail that was cut off (never acknowledged).
    pub truncated: Option<TornTail>,
    pub replay_seconds: f64,
    /// The snapshot recovery started from (its last sequence).
    pub snapshot: Option<u64>,
    /// Damaged snapshots that were skipped (an older one or the log was used).
    pub skipped_snapshots: Vec<Problem>,
}

impl Recovery {
    /// One line per fact, for the operator.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "recovered {} records in {} segment(s) up to sequence {} in {:.3}s",
            self.records, self.segments, self.last_seq, self.replay_seconds
        );
        if let Some(seq) = self.snapshot {
            s.push_str(&format!(" (from the snapshot at sequence {seq})"));
        }
        for p in &self.skipped_snapshots {
            s.push_str(&format!("; skipped a damaged snapshot: {p}"));
        }
        if let Some(t) = &self.truncated {
            s.push_str(&format!(
                "; truncated a torn tail at {} byte {} (sequence {} was never acknowledged: {})",
                t.file.display(),
                t.offset,
                t.sequence,
                t.reason
            ));
            if !t.later_segments.is_empty() {
                s.push_str(&format!(
                    "; removed {} later segment(s) that held no complete record",
                    t.later_segments.len()
                ));
            }
        }
        s
    }
}

/// Why a data directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The log is damaged before its tail: nothing is started.
    Corrupt(Problem),
    /// Another process holds the directory, or it cannot be read or written.
    Io(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Corrupt(p) => write!(f, "refusing to start: the log is corrupt: {p}"),
            OpenError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// A running durable ledger.
pub struct Durable {
    runtime: Option<Runtime>,
    journal: Arc<WalJournal>,
    writer: Option<JoinHandle<LogWriter>>,
    pub stats: Arc<LogStats>,
    dir: PathBuf,
    snapshotter: Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>,
    /// Held while a snapshot is written: the snapshot thread, a backup and
    /// `take_snapshot` would otherwise write the same temporary file.
    snapshot_lock: Arc<parking_lot::Mutex<()>>,
    history: Option<Arc<History>>,
    /// The thread that hands durable groups to the history and the cold tier.
    indexer: Option<JoinHandle<()>>,
    cold: Option<(Arc<ColdStore>, ColdTier)>,
    scrub: Option<Scrub>,
    _lock: File,
}

/// Checks one logged record and applies it: the command must be well formed,
/// its timestamp must increase, and replaying it must give the outcome the
/// log recorded. Recovery and the audit both go through here.
pub fn replay_record(ledger: &mut Ledger, rec: &scan::LogRecord) -> Result<(), Problem> {
    replay_record_with(ledger, rec, None)
}

/// [`replay_record`] for a ledger whose older id records are in a cold
/// tier: the record's ids are looked up there first.
pub fn replay_record_with(
    ledger: &mut Ledger,
    rec: &scan::LogRecord,
    cold: Option<&dyn ColdIds>,
) -> Result<(), Problem> {
    // The file's name only when there is something to report (this runs
    // once per command of a replay).
    let name = || file_label(rec.file);
    let (seq, offset) = (rec.header.seq, rec.offset as u64);
    if let Err(e) = rec.command.validate_logged() {
        // Unbalanced entries and other malformed commands are never logged.
        let msg = format!("a logged command is malformed: {e}");
        return Err(Problem::new("invalid_command", name(), offset, seq, msg));
    }
    if rec.header.timestamp <= ledger.sequencer().last_timestamp() {
        return Err(Problem::new(
            "bad_record",
            name(),
            offset + 16,
            seq,
            "timestamps must increase",
        ));
    }
    let outcome = match cold {
        None => ledger.replay(&rec.command, seq, rec.header.timestamp),
        Some(cold) => {
            let keys = replay_keys(&rec.command, rec.header.outcome == OUTCOME_COMMITTED);
            let answers = if keys.is_empty() {
                tally_engine::idindex::ColdAnswers::new(cold.covered(), Vec::new())
            } else {
                cold.lookup(&keys)
                    .map_err(|e| Problem::new("bad_cold_run", name(), offset, seq, e.to_string()))?
            };
            // A replay behind the cold tier (recovery, a snapshot) finds
            // records of this command and later ones there too: only those
            // decided before it count.
            let answers = Arc::new(answers.before(seq));
            ledger.replay_cold(&rec.command, seq, rec.header.timestamp, &answers)
        }
    };
    let replayed = outcome_fields(&outcome);
    let logged = (rec.header.outcome, rec.header.code, rec.header.original_seq);
    if replayed != logged {
        let msg = format!("replay gives outcome {replayed:?}, the log says {logged:?}");
        return Err(Problem::new("replay_mismatch", name(), offset, seq, msg));
    }
    Ok(())
}

/// A snapshot whose chain value is not the log's at its sequence.
pub(crate) fn chain_mismatch(info: &crate::snapshot::SnapshotInfo) -> Problem {
    let msg = "the snapshot's chain value differs from the log's at its sequence";
    Problem::new(
        "snapshot_mismatch",
        file_label(&info.path),
        32,
        info.last_seq,
        msg,
    )
}

/// Where to start reading when segments before a snapshot were archived:
/// the first segment present, accepted only if the state before it is covered
/// (`from` is the first sequence not covered by the loaded snapshot).
pub fn archived_start(
    store: &dyn Storage,
    dir: &Path,
    from: u64,
) -> Result<Option<ScanStart>, Problem> {
    let files = scan::segment_files(store, dir)?;
    let Some((index, path)) = files.first() else {
        return Ok(None);
    };
    if *index == 0 {
        return Ok(None);
    }
    let start = segment_start(store, *index, path)?;
    if start.first_seq > from {
        let msg = format!(
            "segments before this one were removed, but no snapshot covers sequences {from} to {}",
            start.first_seq - 1
        );
        return Err(Problem::new(
            "segment_missing",
            file_label(path),
            0,
            from,
            msg,
        ));
    }
    Ok(Some(start))
}

/// Segment `index`'s start, from its header.
fn segment_start(store: &dyn Storage, index: u64, path: &Path) -> Result<ScanStart, Problem> {
    let name = file_label(path);
    let mut reader = crate::segment::SegmentReader::open(store, path)
        .map_err(|e| Problem::new("unreadable", name.clone(), 0, 0, e.to_string()))?;
    let header = crate::format::SegmentHeader::decode(reader.header_bytes()?)
        .map_err(|m| Problem::new("bad_segment_header", name, 0, 0, m))?;
    Ok(ScanStart {
        segment: index,
        first_seq: header.first_seq,
        prev_chain: header.prev_chain,
    })
}

/// Where a scan that needs the records from sequence `seq` on starts: the
/// last segment whose first record is at or before `seq` (found by reading
/// O(log segments) headers), so that what comes before it is not read;
/// `None` for the log's genesis. Segments archived past `seq` are refused
/// as [`archived_start`] refuses them. A restart and a snapshot read the
/// log from the snapshot they start from (and the history's runs' end):
/// their cost follows the state and what is new, not the log's length.
pub fn start_at(store: &dyn Storage, dir: &Path, seq: u64) -> Result<Option<ScanStart>, Problem> {
    let first = archived_start(store, dir, seq)?;
    let files = scan::segment_files(store, dir)?;
    // files[lo] starts at or before `seq` (the first does, checked above);
    // find the last that does.
    let (mut lo, mut hi) = (0, files.len());
    let mut found = first;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let (index, path) = &files[mid];
        let start = segment_start(store, *index, path)?;
        if start.first_seq <= seq {
            lo = mid;
            found = Some(start);
        } else {
            hi = mid;
        }
    }
    // A header that disagrees with its neighbours is found by the scan,
    // which checks each segment's header against the records before it.
    Ok(found)
}

/// The ids a replayed command must look up in the cold tier. A command
/// the log says committed found its own id and its operations' ids free
/// (the replay checks it gives the same outcome): only the entries it
/// corrects are looked up. Without this, a replay behind the cold tier
/// (recovery, a snapshot) would find each command's own record there and
/// read a block for it (measured: restarts 3x slower). Any other outcome
/// looks everything up.
fn replay_keys(cmd: &tally_engine::Command, committed: bool) -> Vec<(tally_engine::IdSpace, u128)> {
    let mut keys = Vec::new();
    if committed {
        for op in cmd.ops() {
            if let tally_engine::Operation::Entry(e) = op {
                if let Some(c) = e.corrects {
                    keys.push((tally_engine::IdSpace::Entry, c));
                }
            }
        }
    } else {
        cmd.cold_keys(|space, id| keys.push((space, id)));
    }
    keys
}

/// A snapshot that left id records to the cold tier needs one that holds
/// them.
pub(crate) fn check_cold(
    info: &crate::snapshot::SnapshotInfo,
    cold: Option<&ColdStore>,
) -> Result<(), Problem> {
    if info.cold_through == 0 {
        return Ok(());
    }
    let name = file_label(&info.path);
    match cold {
        None => Err(Problem::new(
            "cold_tier_missing",
            name,
            108,
            info.last_seq,
            format!(
                "the snapshot keeps id records decided at or before sequence {} in the cold tier (cold/), which this reader was not given",
                info.cold_through
            ),
        )),
        Some(c) if c.persisted() < info.cold_through => Err(Problem::new(
            "cold_tier_missing",
            name,
            108,
            info.last_seq,
            format!(
                "the snapshot keeps id records decided at or before sequence {} in the cold tier, whose manifest covers only up to {}",
                info.cold_through,
                c.persisted()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// What recovery started from.
#[derive(Clone, Debug, Default)]
pub struct Start {
    /// The snapshot loaded (its last sequence), if any.
    pub snapshot: Option<u64>,
    /// Snapshots that failed verification and were skipped.
    pub skipped_snapshots: Vec<Problem>,
    /// The first sequence recovery read (1: the whole log; later when it
    /// started behind a snapshot and the history's runs). What comes
    /// before is verified by [`scrub`], in the background.
    pub read_from: u64,
}

/// Rebuilds the ledger of a data directory: loads the newest valid snapshot
/// (skipping damaged ones), verifies the log from the segment holding the
/// snapshot's end (checksums, chain, continuity; the chain at the
/// snapshot's sequence must match it; the whole log when there is no
/// snapshot; `tally-audit` verifies all of it offline), and replays the
/// records after the snapshot, checking every outcome.
pub fn recover(
    store: &dyn Storage,
    dir: &Path,
    shards: usize,
) -> Result<(Ledger, scan::LogEnd, Start), Problem> {
    recover_indexed(store, dir, shards, None, None).map(|(l, e, s, _)| (l, e, s))
}

/// [`recover`], building the history index from the records it reads when
/// `index` is set, with the data directory's cold tier (needed when the
/// snapshot it starts from left id records to it).
pub fn recover_indexed(
    store: &dyn Storage,
    dir: &Path,
    shards: usize,
    index: Option<HistoryStart>,
    cold: Option<&ColdStore>,
) -> Result<(Ledger, scan::LogEnd, Start, Option<HistoryBuilder>), Problem> {
    let mut start = Start::default();
    let mut base = None;
    for (_, path) in crate::snapshot::list(store, dir).into_iter().rev() {
        match crate::snapshot::read(store, &path) {
            Ok(s) => {
                base = Some(s);
                break;
            }
            Err(p) => start.skipped_snapshots.push(p),
        }
    }
    let mut opening = Vec::new();
    let (mut ledger, snap) = match base {
        Some((info, image)) => {
            if index.is_some() {
                opening.extend(image.accounts.iter().map(|(a, _)| (a.id, a.balance())));
            }
            let mut ledger = Ledger::import(&image, shards).map_err(|m| {
                Problem::new(
                    "bad_snapshot",
                    info.path.display().to_string(),
                    0,
                    info.last_seq,
                    m,
                )
            })?;
            check_cold(&info, cold)?;
            ledger.restore_released_through(info.cold_through);
            start.snapshot = Some(info.last_seq);
            (ledger, Some(info))
        }
        None => (Ledger::new(shards), None),
    };
    let from = ledger.sequencer().next_seq();
    let first = archived_start(store, dir, from)?;
    // With segments archived, the history starts after the snapshot, from
    // its balances; otherwise at the log's start.
    let mut builder = None;
    if let Some(h) = index {
        let mut b = match first {
            Some(_) => HistoryBuilder::new(from, opening),
            None => HistoryBuilder::new(1, []),
        }
        .tail_entries(h.tail_entries)
        .seal_while_recovering(h.store.clone(), dir);
        if let Some(sealed) = h.sealed {
            if !b.resume(sealed)? {
                // Segments were archived past the runs: they start again.
                sealer::discard(store, dir)?;
            }
        }
        builder = Some(b);
    }
    // Only what the snapshot and the history's runs do not hold is read:
    // a restart's cost follows the state and the log after them, not the
    // log's length. The records before `need` in the segment it starts in
    // are read (and checked) but neither replayed nor indexed again.
    let need = builder.as_ref().map_or(from, |b| b.needs_from().min(from));
    let scan_start = start_at(store, dir, need)?;
    start.read_from = scan_start.map_or(1, |s| s.first_seq);
    if let (Some(info), Some(s)) = (&snap, scan_start) {
        // The scan checks the chain at the snapshot's sequence when it reads
        // that record; one that starts right after it checks it here.
        if s.first_seq == info.last_seq + 1 && s.prev_chain != info.chain {
            return Err(chain_mismatch(info));
        }
    }
    let observe = |rec: &scan::LogRecord| {
        if let Some(b) = builder.as_mut() {
            b.observe(rec);
        }
    };
    let end = scan::scan_pipelined(store, dir, scan_start, u64::MAX, observe, |rec| {
        if let Some(info) = &snap {
            if rec.header.seq == info.last_seq && rec.header.chain != info.chain {
                return Err(chain_mismatch(info));
            }
        }
        if rec.header.seq >= from {
            replay_record_with(&mut ledger, rec, cold.map(|c| c as &dyn ColdIds))?;
        }
        Ok(())
    })?;
    if end.last_seq + 1 < from {
        let msg = format!(
            "a snapshot covers sequence {}, but the log ends at {}",
            from - 1,
            end.last_seq
        );
        return Err(Problem::new("snapshot_mismatch", "", 0, from - 1, msg));
    }
    if let Some(b) = &builder {
        if b.sealed_through() > end.last_seq {
            let msg = format!(
                "the history's runs cover sequence {}, past the end of the log at {} (remove history/ to index the log again)",
                b.sealed_through(),
                end.last_seq
            );
            return Err(Problem::new(
                "history_ahead",
                sealer::HISTORY_DIR,
                0,
                end.last_seq,
                msg,
            ));
        }
    }
    Ok((ledger, end, start, builder))
}

/// Commands a scrub checks per second at most: it reads behind a running
/// server (about 38 MB/s of 128-byte commands: a 58 GB log in 25 minutes).
pub const SCRUB_COMMANDS_PER_S: u64 = 300_000;

/// Verifies the log up to sequence `until` (checksums, chain, continuity,
/// each segment's header), from its first segment present: the part a
/// recovery that started behind a snapshot did not read, up to and
/// including the first record it did read ([`Start::read_from`]), so that
/// the two join (the header recovery started from continues the chain
/// verified here).
/// `pace`: commands per second at most (`None`: as fast as it reads);
/// `stop` ends it early (`Ok` with what was checked). The commands
/// checked, or the first problem, with where it is.
pub fn scrub(
    store: &dyn Storage,
    dir: &Path,
    until: u64,
    pace: Option<u64>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<u64, Problem> {
    let first = archived_start(store, dir, u64::MAX)?;
    let started = std::time::Instant::now();
    let mut checked = 0u64;
    let end = scan::scan_until(store, dir, first, until, |_| {
        checked += 1;
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Problem::new("stopped", "", 0, 0, "the scrub was stopped"));
        }
        if let Some(per_s) = pace.filter(|_| checked % 4_096 == 0) {
            let due = std::time::Duration::from_secs_f64(checked as f64 / per_s.max(1) as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        Ok(())
    });
    match end {
        Ok(end) => {
            // A torn tail at or after `until` is recovery's to judge (it cut
            // it), or the writer's append being read as it happens.
            if let Some(t) = end.torn.filter(|t| t.sequence < until) {
                // Damage no later record vouches for: recovery would cut the
                // log there. Inside the log it is damage like any other.
                let msg = format!(
                    "damaged at sequence {} (the log continues after it): {}",
                    t.sequence, t.reason
                );
                let file = file_label(&t.file);
                return Err(Problem::new(
                    "bad_crc",
                    file,
                    t.offset as u64,
                    t.sequence,
                    msg,
                ));
            }
            // (The segment recovery started from may hold no record yet:
            // its header was checked against the chain before it.)
            if end.last_seq + 1 < until {
                let msg = format!("the log ends at {}, before sequence {until}", end.last_seq);
                return Err(Problem::new("sequence_gap", "", 0, end.last_seq + 1, msg));
            }
            Ok(checked)
        }
        Err(p) if p.kind == "stopped" => Ok(checked),
        Err(p) => Err(p),
    }
}

/// Runs [`scrub`] on its own thread after a recovery that did not read the
/// log before `read_from`: a problem is logged as an error with where it
/// is (the ledger itself does not need those records; statements and
/// reads of them report it too) and kept for [`Durable::scrub_problem`].
fn start_scrub(dir: &Path, read_from: u64) -> Option<Scrub> {
    use std::sync::atomic::AtomicBool;
    let stop = Arc::new(AtomicBool::new(false));
    let problem = Arc::new(parking_lot::Mutex::new(None));
    let (dir, flag, found) = (dir.to_path_buf(), stop.clone(), problem.clone());
    let first = match archived_start(&RealDisk, dir.as_path(), u64::MAX) {
        Ok(first) => first,
        Err(p) => {
            tracing::error!("scrub: the log's first segment cannot be read: {p}");
            return None;
        }
    };
    if read_from <= first.map_or(1, |s| s.first_seq) {
        return None;
    }
    let until = read_from;
    // Not an essential thread: the ledger does not need these records, and
    // a scrub that fails must not stop the server.
    let spawned = std::thread::Builder::new()
        .name(SCRUB_THREAD.into())
        .spawn(move || {
            crate::background::lower_this_thread();
            let at = std::time::Instant::now();
            match scrub(&RealDisk, &dir, until, Some(SCRUB_COMMANDS_PER_S), &flag) {
                Ok(n) if flag.load(std::sync::atomic::Ordering::Relaxed) => tracing::info!(
                    "scrub: stopped at shutdown after {n} commands ({:.1}s); the next start scrubs again",
                    at.elapsed().as_secs_f64()
                ),
                Ok(n) => tracing::info!(
                    "scrub: the log up to sequence {until} checked ({n} commands in {:.1}s)",
                    at.elapsed().as_secs_f64()
                ),
                Err(p) => {
                    let moved = archived_start(&RealDisk, &dir, u64::MAX)
                        .ok()
                        .flatten()
                        .map(|s| s.first_seq)
                        != first.map(|s| s.first_seq);
                    let gone = !p.file.is_empty() && !dir.join(&p.file).exists();
                    if moved && gone {
                        // Segments archived under it: what is left was read.
                        tracing::info!("scrub: stopped, segments were archived meanwhile ({p})");
                    } else {
                        tracing::error!("scrub: the log is damaged before where the restart read it: {p}");
                        *found.lock() = Some(p);
                    }
                }
            }
        });
    let t = match spawned {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("the log before the snapshot is not scrubbed: no thread ({e})");
            return None;
        }
    };
    Some(Scrub {
        stop,
        thread: Some(t),
        problem,
    })
}

/// The scrub thread ([`start_scrub`]).
struct Scrub {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
    problem: Arc<parking_lot::Mutex<Option<Problem>>>,
}

/// The thread that verifies the log a restart did not read.
pub const SCRUB_THREAD: &str = "tally-scrub";

/// What the history index starts from at recovery.
pub struct HistoryStart {
    /// The storage the runs are on (the data directory's).
    pub store: crate::storage::Store,
    /// The runs an earlier process wrote.
    pub sealed: Option<sealer::Sealed>,
    /// [`DurableConfig::history_tail`].
    pub tail_entries: usize,
}

impl Durable {
    /// Opens (or creates) a data directory: locks it, verifies and replays the
    /// log, cuts a torn tail, and starts the runtime with the log as journal.
    pub fn open(dir: &Path, config: DurableConfig) -> Result<(Durable, Recovery), OpenError> {
        let shards = config.runtime.shards;
        if !(1..=tally_engine::limits::MAX_SHARDS).contains(&shards) {
            let max = tally_engine::limits::MAX_SHARDS;
            return Err(OpenError::Io(format!(
                "shards must be between 1 and {max}, not {shards}"
            )));
        }
        create_private_dir(dir)
            .map_err(|e| OpenError::Io(format!("creating {}: {e}", dir.display())))?;
        let lock = lock(dir)?;
        let t = Instant::now();
        let cold_tier = match config.cold {
            Some(c) => Some(c),
            // A manifest is written when a snapshot relies on the cold
            // tier: from then on the directory needs one.
            None if RealDisk.exists(&dir.join(crate::cold::COLD_DIR).join("MANIFEST")) => {
                Some(ColdTier::default())
            }
            None => None,
        };
        let cold = match cold_tier {
            Some(tier) => {
                let config = ColdConfig {
                    // A run at least every window: the shards drop a
                    // generation only once a run covers it.
                    run_records: tier.run_records.min(tier.window).max(1),
                };
                let store = ColdStore::open(crate::storage::real(), dir, config)
                    .map_err(OpenError::Corrupt)?;
                Some((Arc::new(store), tier))
            }
            None => None,
        };
        let history_start = match config.history {
            Some(_) => Some(HistoryStart {
                store: crate::storage::real(),
                sealed: sealer::open(&RealDisk, dir).map_err(OpenError::Corrupt)?,
                tail_entries: config.history_tail,
            }),
            None => None,
        };
        let (ledger, end, start, builder) = recover_indexed(
            &RealDisk,
            dir,
            shards,
            history_start,
            cold.as_ref().map(|(c, _)| &**c),
        )
        .map_err(OpenError::Corrupt)?;
        if let Some((c, _)) = &cold {
            if c.covered() > end.last_seq {
                // Records of commands this log does not have (a log put back
                // from an older copy beside a newer cold tier).
                let msg = format!(
                    "the cold tier's manifest covers sequence {}, past the end of the log at {}",
                    c.covered(),
                    end.last_seq
                );
                return Err(OpenError::Corrupt(Problem::new(
                    "cold_tier_ahead",
                    "cold/MANIFEST",
                    0,
                    end.last_seq,
                    msg,
                )));
            }
            // What the manifest does not cover comes back from the snapshot
            // and the log (every record after it is in the ledger now).
            c.feed(ledger.id_records_after(c.covered()), end.last_seq);
            c.seal();
        }
        let replay_seconds = t.elapsed().as_secs_f64();
        let replayed = end.last_seq.saturating_sub(start.snapshot.unwrap_or(0));
        if let Some(torn) = &end.torn {
            cut_torn_tail(&RealDisk, dir, &end, torn).map_err(OpenError::Io)?;
        }
        let writer = LogWriter::resume(crate::storage::real(), dir, &end, config.segment_size)
            .map_err(|e| OpenError::Io(format!("opening the log in {}: {e}", dir.display())))?;
        if config.durability == Durability::None {
            tracing::warn!("durability none: acknowledged writes can be lost if the machine crashes (benchmarks only)");
        }
        let history = match (builder, config.history) {
            (Some(b), Some(limits)) => {
                let config = HistoryConfig {
                    limits,
                    tail_entries: config.history_tail,
                };
                let h = Arc::new(b.finish(crate::storage::real(), dir, end.last_seq + 1, config));
                h.start_sealer()
                    .map_err(|e| OpenError::Io(format!("starting the history's sealer: {e}")))?;
                Some(h)
            }
            _ => None,
        };
        let (to_index, indexer) = if history.is_some() || cold.is_some() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let t = spawn_indexer(history.clone(), cold.as_ref().map(|(c, _)| c.clone()), rx)
                .map_err(|e| OpenError::Io(format!("starting the history thread: {e}")))?;
            (Some(tx), Some(t))
        } else {
            (None, None)
        };
        let (journal, handle, stats) = journal::start(writer, config.durability, to_index);
        // What recovery read is durable: readers of the log may follow it.
        stats
            .durable_seq
            .store(end.last_seq, std::sync::atomic::Ordering::Release);
        let mut runtime_config = config.runtime.clone();
        runtime_config.journal = Some(journal.clone());
        if let Some((c, tier)) = &cold {
            runtime_config.cold = Some((c.clone() as Arc<dyn ColdIds>, tier.window.max(1)));
        }
        let runtime = Runtime::start_with(runtime_config, ledger)
            .map_err(|e| OpenError::Io(e.to_string()))?;
        let recovery = Recovery {
            records: end.records,
            last_seq: end.last_seq,
            segments: end.segments.len(),
            truncated: end.torn.clone(),
            replay_seconds,
            snapshot: start.snapshot,
            skipped_snapshots: start.skipped_snapshots,
        };
        let mut durable = Durable {
            snapshotter: None,
            snapshot_lock: Arc::new(parking_lot::Mutex::new(())),
            history,
            indexer,
            cold,
            runtime: Some(runtime),
            journal,
            writer: Some(handle),
            stats,
            dir: dir.to_path_buf(),
            scrub: start_scrub(dir, start.read_from),
            _lock: lock,
        };
        if let Some(every) = config.snapshot_every {
            // On failure, dropping `durable` stops what was started.
            let first = if replayed > SNAPSHOT_AFTER_REPLAY_RECORDS {
                every.min(SNAPSHOT_SOON)
            } else {
                every
            };
            let snapshotter = spawn_snapshotter(
                dir,
                durable.stats.clone(),
                durable.snapshot_lock.clone(),
                (first, every),
                config.archive,
                durable.cold.clone(),
            )
            .map_err(|e| OpenError::Io(format!("starting the snapshot thread: {e}")))?;
            durable.snapshotter = Some(snapshotter);
        }
        Ok((durable, recovery))
    }

    /// The cold tier, when there is one.
    pub fn cold(&self) -> Option<&Arc<ColdStore>> {
        self.cold.as_ref().map(|(c, _)| c)
    }

    /// The history index, when [`DurableConfig::history`] asked for one.
    pub fn history(&self) -> Option<&Arc<History>> {
        self.history.as_ref()
    }

    pub fn runtime(&self) -> &Runtime {
        match &self.runtime {
            Some(r) => r,
            None => unreachable!("the runtime lives until shutdown consumes self"),
        }
    }

    /// Writes a snapshot of everything durable so far, built by replaying the
    /// log (from the newest snapshot) beside the running ledger: the live
    /// shards are not paused. Returns `None` when there is nothing new.
    pub fn take_snapshot(&self) -> Result<Option<crate::snapshot::SnapshotInfo>, Problem> {
        let until = self
            .stats
            .durable_seq
            .load(std::sync::atomic::Ordering::Acquire);
        let _one_at_a_time = self.snapshot_lock.lock();
        let cold = self.cold.as_ref().map(|(c, t)| (&**c, t.window));
        let info = crate::snapshot::take_with(&RealDisk, &self.dir, until, cold)?;
        if info.is_some() {
            prune_snapshots(&self.dir);
        }
        Ok(info)
    }

    /// An online backup's plan ([`crate::backup`]): a snapshot of what is
    /// durable now (so that a copy restarts without replaying the whole
    /// log), then the files and bytes consistent at the durable sequence
    /// after it. The writer and the shards keep going throughout.
    pub fn backup_plan(&self) -> Result<crate::backup::BackupPlan, Problem> {
        self.take_snapshot()?;
        // No snapshot pruned and no segment archived while the plan lists
        // and opens its files; once open, the snapshot stays readable. The
        // cut is read under the lock, so that the snapshot just taken is
        // still there (two more cannot have been taken and pruned it).
        let _one_at_a_time = self.snapshot_lock.lock();
        let durable = self
            .stats
            .durable_seq
            .load(std::sync::atomic::Ordering::Acquire);
        crate::backup::plan(&RealDisk, &self.dir, durable)
    }

    /// Removes the segments wholly before the newest valid snapshot, moving
    /// them into `archive` when given (deleting them otherwise). The segment
    /// being written is always kept. Returns the segments removed.
    pub fn archive(&self, archive: Option<&Path>) -> Result<Vec<PathBuf>, Problem> {
        let _one_at_a_time = self.snapshot_lock.lock();
        archive_segments(&RealDisk, &self.dir, archive)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops accepting, lets sequenced work finish and reach the log, syncs,
    /// and stops the writer.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// The damage the background scrub found in the log before the
    /// snapshot a restart started from, if any (also logged).
    pub fn scrub_problem(&self) -> Option<Problem> {
        self.scrub.as_ref().and_then(|s| s.problem.lock().clone())
    }

    /// Waits for the background scrub to finish (tests).
    #[doc(hidden)]
    pub fn wait_for_scrub(&mut self) {
        if let Some(s) = self.scrub.as_mut() {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn stop(&mut self) {
        if let Some(s) = self.scrub.take() {
            s.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = s.thread {
                let _ = t.join();
            }
        }
        if let Some((stop, t)) = self.snapshotter.take() {
            stop.store(true, std::sync::atomic::Ordering::Release);
            t.thread().unpark();
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown();
        }
        self.journal.close();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // The writer is gone with its end of the channel: the indexer
        // finishes what it was given and stops.
        if let Some(t) = self.indexer.take() {
            let _ = t.join();
        }
        if let Some(h) = &self.history {
            h.stop_sealer();
        }
        if let Some((c, _)) = &self.cold {
            c.shutdown();
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Zeroes a torn tail and removes segments after it (they hold no valid
/// record), so appending continues where the last complete record ended.
pub fn cut_torn_tail(
    store: &dyn Storage,
    dir: &Path,
    end: &scan::LogEnd,
    torn: &TornTail,
) -> Result<(), String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let (_, header) = end
        .segments
        .last()
        .ok_or_else(|| "torn tail without a segment".to_string())?;
    // Later segments go first (and durably): were the process to stop
    // between the two steps, the log must still read as one with a torn
    // tail, never as a segment ending before the next one starts.
    for later in &torn.later_segments {
        store.remove(later).map_err(|e| io("removing", later, e))?;
    }
    if !torn.later_segments.is_empty() {
        store.sync_dir(dir).map_err(|e| io("syncing", dir, e))?;
    }
    let mut seg = SegmentWriter::open(store, &torn.file, *header, torn.offset)
        .map_err(|e| io("opening", &torn.file, e))?;
    seg.zero_from(torn.offset)
        .map_err(|e| io("truncating", &torn.file, e))?;
    Ok(())
}

/// Removes the segments of `dir` wholly before its newest valid snapshot,
/// moving them into `archive` when given (deleting them otherwise). The
/// segment being written is always kept. Returns the segments removed.
pub fn archive_segments(
    store: &dyn Storage,
    dir: &Path,
    archive: Option<&Path>,
) -> Result<Vec<PathBuf>, Problem> {
    let Some((info, _)) = crate::snapshot::list(store, dir)
        .into_iter()
        .rev()
        .find_map(|(_, p)| crate::snapshot::read(store, &p).ok())
    else {
        return Ok(Vec::new());
    };
    let files = scan::segment_files(store, dir)?;
    let io = |p: &Path, e: std::io::Error| {
        Problem::new("unwritable", p.display().to_string(), 0, 0, e.to_string())
    };
    let mut removed = Vec::new();
    // Segment i holds sequences [first_i, first_{i+1}); read the next header.
    for pair in files.windows(2) {
        let mut next = crate::segment::SegmentReader::open(store, &pair[1].1)
            .map_err(|e| io(&pair[1].1, e))?;
        let Ok(h) = crate::format::SegmentHeader::decode(next.header_bytes()?) else {
            break;
        };
        if h.first_seq > info.last_seq + 1 {
            break;
        }
        let path = &pair[0].1;
        match archive {
            Some(to) => {
                store.create_dir(to).map_err(|e| io(to, e))?;
                let target = to.join(path.file_name().unwrap_or_default());
                copy_private(store, path, &target).map_err(|e| io(&target, e))?;
                store.sync_dir(to).map_err(|e| io(to, e))?;
                store.remove(path).map_err(|e| io(path, e))?;
            }
            None => store.remove(path).map_err(|e| io(path, e))?,
        }
        removed.push(path.clone());
    }
    store.sync_dir(dir).map_err(|e| io(dir, e))?;
    Ok(removed)
}

/// The history thread's name.
pub const HISTORY_THREAD: &str = "tally-history";

/// Indexes each group the writer made durable. Essential: a history that
/// stopped would leave statements and the feed behind for good.
fn spawn_indexer(
    history: Option<Arc<History>>,
    cold: Option<Arc<ColdStore>>,
    groups: crossbeam_channel::Receiver<journal::DurableGroup>,
) -> std::io::Result<JoinHandle<()>> {
    tally_engine::essential::spawn(HISTORY_THREAD, move || {
        for group in groups.iter() {
            if let Some(h) = &history {
                h.index_group(&group);
            }
            if let Some(c) = &cold {
                c.index_group(&group.batches);
            }
            for b in &group.batches {
                b.release_reservation();
            }
        }
    })
}

/// The background snapshot thread's name.
pub const SNAPSHOT_THREAD: &str = "tally-snapshot";

/// Records replayed after the newest snapshot at startup beyond which the
/// first background snapshot is taken soon ([`SNAPSHOT_SOON`]) rather than
/// a whole `--snapshot-every` later: a server that restarts more often than
/// that (a crash loop) would otherwise never take one, and each restart
/// would replay more.
pub const SNAPSHOT_AFTER_REPLAY_RECORDS: u64 = 100_000;

/// How soon that first snapshot is taken.
pub const SNAPSHOT_SOON: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes a snapshot every `every` and applies the archive policy; reports
/// failures on stderr and keeps going (the log stays the source of truth).
/// An essential thread: a panic in it is a bug in the replay that recovery
/// runs too, and a server that silently stopped taking snapshots would let
/// its log and its next restart grow without bound; it aborts the process.
fn spawn_snapshotter(
    dir: &Path,
    stats: Arc<LogStats>,
    lock: Arc<parking_lot::Mutex<()>>,
    (first, every): (std::time::Duration, std::time::Duration),
    policy: ArchivePolicy,
    cold: Option<(Arc<ColdStore>, ColdTier)>,
) -> std::io::Result<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let (dir, flag) = (dir.to_path_buf(), stop.clone());
    let mut wait = first;
    let t = tally_engine::essential::spawn(SNAPSHOT_THREAD, move || {
        crate::background::lower_this_thread();
        loop {
            std::thread::park_timeout(wait);
            wait = every;
            if flag.load(Ordering::Acquire) {
                return;
            }
            let _one_at_a_time = lock.lock();
            let cold = cold.as_ref().map(|(c, t)| (&**c, t.window));
            snapshot_and_archive(
                &dir,
                stats.durable_seq.load(Ordering::Acquire),
                &policy,
                cold,
            );
        }
    })?;
    Ok((stop, t))
}

/// One round of the snapshot thread: a snapshot up to `until`, then the
/// archive policy when there was one. Failures are reported on stderr.
fn snapshot_and_archive(
    dir: &Path,
    until: u64,
    policy: &ArchivePolicy,
    cold: Option<(&ColdStore, usize)>,
) {
    match crate::snapshot::take_with(&RealDisk, dir, until, cold) {
        Ok(Some(_)) => {
            prune_snapshots(dir);
            let result = match policy {
                ArchivePolicy::Keep => Ok(Vec::new()),
                ArchivePolicy::Delete => archive_segments(&RealDisk, dir, None),
                ArchivePolicy::MoveTo(to) => archive_segments(&RealDisk, dir, Some(to)),
            };
            if let Err(p) = result {
                tracing::error!("archiving old segments failed: {p}");
            }
        }
        Ok(None) => {}
        Err(p) => tracing::error!("snapshot failed: {p}"),
    }
}

/// Keeps the newest [`crate::snapshot::KEEP_SNAPSHOTS`]; a failure is
/// reported and changes nothing else (the log stays the truth).
fn prune_snapshots(dir: &Path) {
    if let Err(e) = crate::snapshot::prune(&RealDisk, dir, crate::snapshot::KEEP_SNAPSHOTS) {
        tracing::error!("removing old snapshots failed: {e}");
    }
}

/// Creates `dir` (and missing parents) private to its owner (mode 0700), or
/// leaves it as it is when it exists.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Copies `from` to `to` (created with mode 0600, or overwritten) and syncs
/// the copy.
fn copy_private(store: &dyn Storage, from: &Path, to: &Path) -> std::io::Result<()> {
    let source = store.open(from, false)?;
    match store.remove(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let target = store.create_new(to)?;
    let len = source.len()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        source.read_exact_at(&mut buf[..n], at)?;
        target.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    target.sync_data()
}

/// How long opening waits for the data directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the data directory's lock file (one process at a time).
fn lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| OpenError::Io(format!("opening {}: {e}", path.display())))?;
    // A process that forked (to run a program) shares our lock's open file
    // until its exec closes it; give such a window a moment before refusing.
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => {
                return Err(OpenError::Io(format!(
                    "{} is in use by another process ({e})",
                    dir.display()
                )))
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{CommandHeader, MAX_READ_RECORD_BODY};
    use tally_engine::*;

    /// Replay does not apply the size bound of new commands: a logged
    /// command is checked field by field only (the record limit bounds it).
    #[test]
    fn logged_commands_over_the_command_limit_replay() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let big = Command::Chain(Chain {
            id: 1,
            ops: (0..tally_engine::limits::MAX_CHAIN_OPERATIONS as u128)
                .map(|i| {
                    Operation::CaptureLien(Box::new(CaptureLien {
                        lien: i + 10,
                        account: 2,
                        entry_id: i + 5_000,
                        currency: usd,
                        credits: (0..40u128).map(|a| (a + 100, 1)).collect(),
                        reference: Some("r".repeat(200).into()),
                    }))
                })
                .collect(),
        });
        let len = big.encoded_len().unwrap();
        assert!(len > tally_engine::limits::MAX_COMMAND_BYTES && len <= MAX_READ_RECORD_BODY);
        let mut ledger = Ledger::new(1);
        let expected = {
            let mut probe = Ledger::new(1);
            probe.replay(&big, 1, 10)
        };
        let (outcome, code, original_seq) = crate::record::outcome_fields(&expected);
        let header = CommandHeader {
            seq: 1,
            timestamp: 10,
            outcome,
            code,
            original_seq,
            chain: [0; 32],
            last_in_record: true,
            body_len: len as u32,
        };
        let rec = scan::LogRecord {
            header,
            command: big,
            file: Path::new("segment-0000000000.wal"),
            segment: 0,
            offset: 4096,
            watermark: 0,
        };
        replay_record(&mut ledger, &rec).expect("a large logged command replays");
    }
}
