//! A durable ledger: a data directory opened, its log verified and replayed
//! (recovery), then a runtime whose journal is the log.

use crate::format::DEFAULT_SEGMENT_BYTES;
use crate::journal::{self, Durability, LogStats, WalJournal};
use crate::log::LogWriter;
use crate::problem::Problem;
use crate::record::outcome_fields;
use crate::scan::{self, TornTail};
use crate::segment::SegmentWriter;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tally_engine::runtime::{Runtime, RuntimeConfig};
use tally_engine::Ledger;

/// How to open a data directory.
#[derive(Clone)]
pub struct DurableConfig {
    pub runtime: RuntimeConfig,
    pub durability: Durability,
    pub segment_size: u64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            runtime: RuntimeConfig::default(),
            durability: Durability::Fsync,
            segment_size: DEFAULT_SEGMENT_BYTES,
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
}

impl Recovery {
    /// One line per fact, for the operator.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "recovered {} records in {} segment(s) up to sequence {} in {:.3}s",
            self.records, self.segments, self.last_seq, self.replay_seconds
        );
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
    _lock: File,
}

/// Checks one logged record and applies it: the command must be well formed,
/// its timestamp must increase, and replaying it must give the outcome the
/// log recorded. Recovery and the audit both go through here.
pub fn replay_record(ledger: &mut Ledger, rec: &scan::LogRecord) -> Result<(), Problem> {
    let name = rec
        .file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (seq, offset) = (rec.header.seq, rec.offset as u64);
    if let Err(e) = rec.command.validate() {
        // Unbalanced entries and other malformed commands are never logged.
        let msg = format!("a logged command is malformed: {e}");
        return Err(Problem::new("invalid_command", name, offset, seq, msg));
    }
    if rec.header.timestamp <= ledger.sequencer().last_timestamp() {
        return Err(Problem::new(
            "bad_record",
            name,
            offset + 16,
            seq,
            "timestamps must increase",
        ));
    }
    let outcome = ledger.replay(&rec.command, seq, rec.header.timestamp);
    let replayed = outcome_fields(&outcome);
    let logged = (rec.header.outcome, rec.header.code, rec.header.original_seq);
    if replayed != logged {
        let msg = format!("replay gives outcome {replayed:?}, the log says {logged:?}");
        return Err(Problem::new("replay_mismatch", name, offset, seq, msg));
    }
    Ok(())
}

/// Replays a data directory's log into a fresh ledger (verifying every record
/// and that replay reproduces every logged outcome).
pub fn recover(dir: &Path, shards: usize) -> Result<(Ledger, scan::LogEnd), Problem> {
    let mut ledger = Ledger::new(shards);
    let end = scan::scan(dir, None, |rec| replay_record(&mut ledger, rec))?;
    Ok((ledger, end))
}

impl Durable {
    /// Opens (or creates) a data directory: locks it, verifies and replays the
    /// log, cuts a torn tail, and starts the runtime with the log as journal.
    pub fn open(dir: &Path, config: DurableConfig) -> Result<(Durable, Recovery), OpenError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| OpenError::Io(format!("creating {}: {e}", dir.display())))?;
        let lock = lock(dir)?;
        let t = Instant::now();
        let shards = config.runtime.shards;
        let (ledger, end) = recover(dir, shards).map_err(OpenError::Corrupt)?;
        let replay_seconds = t.elapsed().as_secs_f64();
        if let Some(torn) = &end.torn {
            cut_torn_tail(dir, &end, torn)?;
        }
        let writer = LogWriter::resume(dir, &end, config.segment_size)
            .map_err(|e| OpenError::Io(format!("opening the log in {}: {e}", dir.display())))?;
        if config.durability == Durability::None {
            eprintln!("tally: WARNING: durability none: acknowledged writes can be lost if the machine crashes (benchmarks only)");
        }
        let (journal, handle, stats) = journal::start(writer, config.durability);
        let mut runtime_config = config.runtime.clone();
        runtime_config.journal = Some(journal.clone());
        let runtime = Runtime::start_with(runtime_config, ledger)
            .map_err(|e| OpenError::Io(e.to_string()))?;
        let recovery = Recovery {
            records: end.records,
            last_seq: end.last_seq,
            segments: end.segments.len(),
            truncated: end.torn.clone(),
            replay_seconds,
        };
        let durable = Durable {
            runtime: Some(runtime),
            journal,
            writer: Some(handle),
            stats,
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        Ok((durable, recovery))
    }

    pub fn runtime(&self) -> &Runtime {
        match &self.runtime {
            Some(r) => r,
            None => unreachable!("the runtime lives until shutdown consumes self"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops accepting, lets sequenced work finish and reach the log, syncs,
    /// and stops the writer.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown();
        }
        self.journal.close();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
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
fn cut_torn_tail(dir: &Path, end: &scan::LogEnd, torn: &TornTail) -> Result<(), OpenError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        OpenError::Io(format!("{what} {}: {e}", p.display()))
    };
    let (_, header) = end
        .segments
        .last()
        .ok_or_else(|| OpenError::Io("torn tail without a segment".into()))?;
    let mut seg = SegmentWriter::open(&torn.file, *header, torn.offset)
        .map_err(|e| io("opening", &torn.file, e))?;
    seg.zero_from(torn.offset)
        .map_err(|e| io("truncating", &torn.file, e))?;
    for later in &torn.later_segments {
        std::fs::remove_file(later).map_err(|e| io("removing", later, e))?;
    }
    if !torn.later_segments.is_empty() {
        crate::segment::sync_dir(dir).map_err(|e| io("syncing", dir, e))?;
    }
    Ok(())
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
