//! One simulated machine: the ledger (sequencer and shards inline), the
//! event driver, lien expiry, the log with pipelined group commit,
//! snapshots and archiving, all on a [`SimDisk`] in simulated time; crashed
//! and restarted at random points, and checked after every recovery.
//!
//! The process keeps the rules of `tallyd`'s journal: every sequenced
//! command is appended with its outcome; a group's outcomes are
//! acknowledged only after a sync that covers it returned; records carry
//! the durable watermark of the syncs completed before they were appended;
//! a failed write or sync stops the process.

use crate::workload::{self, Workload, MS};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tally_engine::event::{EventConfig, Registry};
use tally_engine::{Command, Ledger, Outcome};
use tally_wal::format::{segment_name, RecordHeader, RECORD_HEADER_BYTES};
use tally_wal::log::{LogWriter, RecordPos};
use tally_wal::problem::Problem;
use tally_wal::record::{outcome_fields, Item};
use tally_wal::scan::LogEnd;
use tally_wal::storage::sim::{Damage, DamageKind, FaultRates, Rng, SimDisk};
use tally_wal::storage::Store;

/// Segments this small rotate often (the smallest the log allows).
const SEGMENT_BYTES: u64 = tally_wal::format::MIN_SEGMENT_BYTES;
/// Groups appended and not yet synced, at most (as the journal's pipeline).
const MAX_UNSYNCED_GROUPS: usize = 4;

/// A command as it was logged.
pub struct Logged {
    pub command: Command,
    pub seq: u64,
    pub timestamp: u64,
    pub outcome: Outcome,
}

/// A record as the writer placed it.
#[derive(Clone, Copy, Debug)]
struct Placed {
    pos: RecordPos,
    /// The durable watermark it carries.
    watermark: u64,
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct Options {
    pub commands: u64,
    /// Print what happens (crashes, damage, recoveries) on stderr.
    pub trace: bool,
    pub faults: bool,
    pub lying_fsync: bool,
}

/// What one run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub shards: usize,
    pub commands: u64,
    pub logged: u64,
    pub crashes: u64,
    /// Of the crashes, processes killed with the machine still up (the
    /// page cache keeps what was written); the others are power failures.
    pub kills: u64,
    pub recoveries: u64,
    pub snapshots: u64,
    pub archived_segments: u64,
    /// Recoveries refused because planted damage was found (then healed).
    pub refusals: u64,
    /// Torn tails cut at recovery.
    pub torn_tails_cut: u64,
    /// Acknowledged records lost to damage the log cannot tell from a torn
    /// write (the last acknowledged groups: see `wal/FORMAT.md`).
    pub blind_spot_losses: u64,
    pub faults: tally_wal::storage::sim::FaultCounts,
    /// The final ledger's digest (equal for equal seeds).
    pub digest: u64,
    pub failure: Option<String>,
}

/// A violated check.
pub struct Failure(pub String);

type Checked<T> = Result<T, Failure>;

fn fail<T>(msg: impl Into<String>) -> Checked<T> {
    Err(Failure(msg.into()))
}

pub struct World {
    opts: Options,
    rng: Rng,
    disk: SimDisk,
    store: Store,
    dir: PathBuf,
    shards: usize,
    registry: Registry,
    events: EventConfig,
    workload: Workload,
    ledger: Ledger,
    log: Option<LogWriter>,
    now: u64,
    /// Every command logged by the process now running and the ones before
    /// it that survived: `truth[seq - 1]`.
    truth: Vec<Logged>,
    /// Groups appended and not yet synced: the last sequence of each.
    unsynced: Vec<u64>,
    /// The last acknowledged sequence (covered by a sync that returned).
    acked: u64,
    records: BTreeMap<u64, Placed>,
    /// The reference: a ledger fed exactly the surviving log, never crashed.
    shadow: Ledger,
    /// Snapshots given a bit flip (they stay damaged: the audit reports
    /// them, recovery skips them).
    /// (by file: bit flips not healed).
    damaged_snapshots: BTreeMap<String, u32>,
    report: RunReport,
}

fn rates(opts: &Options) -> FaultRates {
    FaultRates {
        misdirected_write: if opts.faults { 300 } else { 0 },
        write_eio: if opts.faults { 200 } else { 0 },
        sync_eio: if opts.faults { 2_000 } else { 0 },
        enospc: if opts.faults { 5_000 } else { 0 },
        lying_fsync: opts.lying_fsync,
    }
}

impl World {
    pub fn new(seed: u64, opts: Options) -> World {
        let mut rng = Rng::new(seed);
        let shards = 1 + rng.below(4) as usize;
        let disk = SimDisk::new(seed, FaultRates::default());
        let dir = PathBuf::from("/data");
        World {
            rng,
            store: std::sync::Arc::new(disk.clone()),
            disk,
            dir,
            shards,
            registry: Registry::with_builtins(),
            events: workload::event_config(),
            workload: Workload::new(seed),
            ledger: Ledger::new(shards),
            log: None,
            now: 0,
            truth: Vec::new(),
            unsynced: Vec::new(),
            acked: 0,
            records: BTreeMap::new(),
            shadow: Ledger::new(shards),
            damaged_snapshots: Default::default(),
            report: RunReport {
                seed,
                shards,
                ..RunReport::default()
            },
            opts,
        }
    }

    /// Runs the seed to its end or its first failure.
    pub fn run(mut self) -> RunReport {
        let result = self.run_checked();
        self.report.faults = self.disk.counts();
        if let Err(Failure(msg)) = result {
            self.report.failure = Some(msg);
        }
        self.report
    }

    fn run_checked(&mut self) -> Checked<()> {
        if let Err(e) = self.store.create_dir(&self.dir) {
            return fail(format!("creating the data directory: {e}"));
        }
        match LogWriter::create(self.store.clone(), &self.dir, SEGMENT_BYTES) {
            Ok(log) => self.log = Some(log),
            Err(e) => return fail(format!("creating the log: {e}")),
        }
        self.log_mut()?.track_positions();
        self.disk.set_rates(rates(&self.opts));
        let setup = Workload::setup();
        self.group(&setup);
        while self.report.commands < self.opts.commands {
            self.step()?;
        }
        // The end: the power fails once more, and the last recovery is
        // checked like every other.
        self.crash_and_recover()?;
        self.report.digest = self.ledger.digest();
        Ok(())
    }

    fn log_mut(&mut self) -> Checked<&mut LogWriter> {
        match self.log.as_mut() {
            Some(l) => Ok(l),
            None => fail("the log is not open"),
        }
    }

    /// One client batch (and the event driver, and maybe a sync, a
    /// snapshot, an archive, a crash).
    fn step(&mut self) -> Checked<()> {
        if self.log.is_none() || self.disk.halted() {
            return self.crash_and_recover();
        }
        self.now += self.rng.below(3 * MS);
        let batch = self.workload.batch();
        self.group(&batch);
        if self.rng.below(2) == 0 {
            self.drive_events();
        }
        if self.log.is_some()
            && (self.unsynced.len() >= MAX_UNSYNCED_GROUPS || self.rng.below(3) == 0)
        {
            self.sync()?;
        }
        if self.log.is_some() && self.rng.below(150) == 0 {
            self.snapshot();
        }
        match self.rng.below(400) {
            0 => self.crash_and_recover()?,
            1 => self.disk.crash_after(self.rng.below(40)),
            2 => self.disk.kill_after(self.rng.below(40)),
            _ => {}
        }
        Ok(())
    }

    /// Executes commands at the current time and appends what was
    /// sequenced as one group.
    fn group(&mut self, commands: &[Command]) {
        let mut logged = Vec::new();
        for c in commands {
            self.report.commands += 1;
            execute(&mut self.ledger, c, self.now, &mut logged);
        }
        self.append(logged);
    }

    fn drive_events(&mut self) {
        self.now += self.rng.below(2 * MS);
        let mut logged = Vec::new();
        let now = self.now;
        tally_engine::event::run_ledger_with(
            &mut self.ledger,
            &self.registry,
            &self.events,
            now,
            |ledger, c| execute(ledger, c, now, &mut logged),
        );
        self.report.commands += logged.len() as u64;
        self.append(logged);
    }

    /// Appends a group; a failed write stops the process.
    fn append(&mut self, logged: Vec<Logged>) {
        if logged.is_empty() {
            return;
        }
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let items: Vec<Item> = logged
            .iter()
            .map(|l| Item {
                command: &l.command,
                seq: l.seq,
                timestamp: l.timestamp,
                outcome: &l.outcome,
                wire: None,
            })
            .collect();
        let result = log.append_batch(&items, self.acked);
        let mut placed = Vec::new();
        log.take_written(&mut placed);
        for pos in placed {
            self.records.insert(
                pos.first_seq,
                Placed {
                    pos,
                    watermark: self.acked,
                },
            );
        }
        self.report.logged += logged.len() as u64;
        let last = logged.last().map(|l| l.seq).unwrap_or(0);
        self.truth.extend(logged);
        match result {
            Ok(()) => self.unsynced.push(last),
            // The process stops: nothing more is acknowledged.
            Err(_) => self.log = None,
        }
    }

    /// Syncs every appended group and acknowledges them; a failed sync
    /// stops the process, and no later sync may succeed.
    fn sync(&mut self) -> Checked<()> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        match log.sync() {
            Ok(()) => {
                if let Some(&last) = self.unsynced.last() {
                    self.acked = last;
                }
                self.unsynced.clear();
                Ok(())
            }
            Err(_) => {
                if !self.disk.halted() && log.sync().is_ok() {
                    return fail("a sync succeeded after a failed one (unsynced bytes may be lost and would be acknowledged)");
                }
                self.log = None;
                Ok(())
            }
        }
    }

    /// A snapshot of what is acknowledged, built from the disk as the
    /// snapshot thread builds it; sometimes followed by archiving. Failures
    /// are reported by the real server and ignored (the log is the truth).
    fn snapshot(&mut self) {
        let store = &*self.store;
        if let Ok(Some(_)) = tally_wal::snapshot::take(store, &self.dir, self.acked) {
            self.report.snapshots += 1;
            let keep = tally_wal::snapshot::KEEP_SNAPSHOTS;
            if let Ok(removed) = tally_wal::snapshot::prune(store, &self.dir, keep) {
                // A damaged snapshot removed is damage no more.
                for p in removed {
                    self.damaged_snapshots.remove(&label(&p));
                }
            }
            if self.rng.below(3) == 0 {
                if let Ok(removed) = tally_wal::durable::archive_segments(store, &self.dir, None) {
                    self.report.archived_segments += removed.len() as u64;
                }
            }
        }
    }

    /// The power fails or the process is killed (unless one of them
    /// already happened), damage may be planted, and the restarted process
    /// recovers; again when a fault stops it while it restarts.
    fn crash_and_recover(&mut self) -> Checked<()> {
        loop {
            self.crash();
            if self.recover()? {
                return Ok(());
            }
        }
    }

    fn crash(&mut self) {
        self.log = None;
        let halted = self.disk.halted();
        let kill = if halted {
            self.disk.was_killed()
        } else {
            self.rng.below(3) == 0
        };
        if kill {
            self.disk.restart();
            self.report.kills += 1;
        } else {
            self.disk.crash();
        }
        self.report.crashes += 1;
        if self.opts.trace {
            let how = if kill { "kill -9" } else { "power failure" };
            eprintln!("crash {}: {how}", self.report.crashes);
        }
        self.unsynced.clear();
        // Recovery reads a disk without new faults (what it must cope with
        // is on the disk already); faults come back for its writes.
        self.disk.set_rates(FaultRates {
            lying_fsync: self.opts.lying_fsync,
            ..FaultRates::default()
        });
        if self.opts.faults && self.rng.below(6) == 0 {
            self.plant_damage();
        }
    }

    /// The highest watermark of the records on the disk now, acknowledged
    /// or not, whose header and checksum are intact (a record that cannot
    /// be read counts with the watermark it was written with): recovery
    /// must refuse to cut anything up to it.
    fn witnessed_on_disk(&self) -> u64 {
        let mut files: BTreeMap<u64, Option<std::sync::Arc<dyn tally_wal::storage::StorageFile>>> =
            BTreeMap::new();
        let mut best = 0;
        for p in self.records.values() {
            let file = files.entry(p.pos.segment).or_insert_with(|| {
                self.store
                    .open(&self.segment_path(p.pos.segment), false)
                    .ok()
            });
            let Some(f) = file else { continue };
            let at = u64::from(p.pos.offset);
            let mut head = [0u8; RECORD_HEADER_BYTES];
            if f.read_exact_at(&mut head, at).is_err() {
                best = best.max(p.watermark);
                continue;
            }
            if !RecordHeader::well_formed(&head) {
                continue;
            }
            let h = RecordHeader::decode(&head);
            let mut body = vec![0u8; h.body_len as usize];
            if f.read_exact_at(&mut body, at + RECORD_HEADER_BYTES as u64)
                .is_err()
            {
                best = best.max(p.watermark);
                continue;
            }
            if h.first_seq == p.pos.first_seq && h.crc_ok(&body) {
                best = best.max(h.watermark);
            }
        }
        best
    }

    fn segment_path(&self, segment: u64) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// The byte length of a record on the disk.
    fn record_len(&self, p: &Placed) -> Option<u64> {
        let path = self.segment_path(p.pos.segment);
        let file = self.store.open(&path, false).ok()?;
        let mut b = [0u8; RECORD_HEADER_BYTES];
        file.read_exact_at(&mut b, u64::from(p.pos.offset)).ok()?;
        if !RecordHeader::well_formed(&b) {
            return None;
        }
        Some(RecordHeader::decode(&b).total_len() as u64)
    }

    /// A bit flip or a latent sector error in an acknowledged record still
    /// on the disk.
    fn plant_damage(&mut self) {
        if self.rng.below(4) == 0 {
            // A snapshot instead: recovery must skip it (or refuse, when
            // the segments it replaced were archived).
            let snaps = tally_wal::snapshot::list(&*self.store, &self.dir);
            if !snaps.is_empty() {
                let (_, path) = &snaps[self.rng.below(snaps.len() as u64) as usize];
                if let Some(len) = self.disk.file_len(path).filter(|&l| l > 0) {
                    let (at, bit) = (self.rng.below(len), self.rng.below(8) as u8);
                    if self.disk.flip_bit(path, at, bit).is_ok() {
                        *self.damaged_snapshots.entry(label(path)).or_default() += 1;
                    }
                }
                return;
            }
        }
        let acked: Vec<Placed> = self
            .records
            .range(..=self.acked.max(1))
            .map(|(_, p)| *p)
            .filter(|p| p.pos.first_seq + u64::from(p.pos.count) - 1 <= self.acked)
            .collect();
        if acked.is_empty() {
            return;
        }
        let p = acked[self.rng.below(acked.len() as u64) as usize];
        let path = self.segment_path(p.pos.segment);
        let Some(len) = self.record_len(&p) else {
            return;
        };
        let at = u64::from(p.pos.offset) + self.rng.below(len);
        let _ = if self.rng.below(2) == 0 {
            self.disk.flip_bit(&path, at, self.rng.below(8) as u8)
        } else {
            self.disk.bad_sector(&path, at)
        };
    }

    /// The record holding `seq`, if the writer placed one there.
    fn record_of(&self, seq: u64) -> Option<Placed> {
        self.records
            .range(..=seq)
            .next_back()
            .map(|(_, p)| *p)
            .filter(|p| seq < p.pos.first_seq + u64::from(p.pos.count))
    }

    /// Whether `d` touches the bytes of the record holding `seq`.
    fn damages(&self, d: &Damage, seq: u64) -> bool {
        let Some(p) = self.record_of(seq) else {
            return false;
        };
        let from = u64::from(p.pos.offset);
        let to = from + self.record_len(&p).unwrap_or(RECORD_HEADER_BYTES as u64);
        d.touches(&self.segment_path(p.pos.segment), from, to)
    }

    /// A refusal is justified when it names a file with planted damage at
    /// or after the offset it gives (the scan stops at the first problem
    /// it meets, at or before the damaged byte), or, for a missing segment,
    /// when a snapshot that would have covered it is damaged.
    fn justified(&self, p: &Problem, damage: &[Damage]) -> bool {
        damage.iter().any(|d| {
            let name = label(&d.path);
            let last = d.offset.max(d.elsewhere.unwrap_or(0)) + d.len;
            (name == p.file && p.offset <= last)
                || (p.kind == "segment_missing" && name.starts_with("snapshot-"))
        })
    }

    /// Every problem `tally-audit` reports is explained by damage in its
    /// own file (planted now, or a snapshot flipped earlier and never
    /// healed); an audit that cannot read the directory is a failure.
    fn check_audit(
        &self,
        audit: &Result<tally_wal::audit::Report, String>,
        damage: &[Damage],
    ) -> Checked<()> {
        let r = match audit {
            Ok(r) => r,
            Err(e) => return fail(format!("tally-audit cannot read the directory: {e}")),
        };
        for p in &r.problems {
            let explained = self.damaged_snapshots.contains_key(&p.file)
                || damage.iter().any(|d| label(&d.path) == p.file)
                || (p.kind == "segment_missing"
                    && (damage
                        .iter()
                        .any(|d| label(&d.path).starts_with("snapshot-"))
                        || !self.damaged_snapshots.is_empty()));
            if !explained {
                return fail(format!(
                    "tally-audit reports a problem no damage explains: {p}"
                ));
            }
        }
        Ok(())
    }

    /// Recovers, checks, and resumes the process. `Ok(false)`: a fault
    /// stopped the restart (cutting the torn tail or resuming the log), and
    /// the process must be started again.
    fn recover(&mut self) -> Checked<bool> {
        self.report.recoveries += 1;
        let witnessed = self.witnessed_on_disk();
        let damage = self.disk.damage();
        if self.opts.trace {
            eprintln!(
                "recovery {}: acknowledged up to {}, witnessed up to {witnessed}, damage {damage:?}, files {:?}",
                self.report.recoveries,
                self.acked,
                self.disk.files()
            );
        }
        let store = self.store.clone();
        // A recovery behind a snapshot reads the log from there; tallyd then
        // scrubs what comes before in the background. Damage the scrub
        // finds is held to the same standard as a refusal.
        let first = tally_wal::recover(&*store, &self.dir, self.shards).and_then(|(l, e, s)| {
            if s.read_from > 1 {
                let never = std::sync::atomic::AtomicBool::new(false);
                tally_wal::durable::scrub(&*store, &self.dir, s.read_from, None, &never)?;
            }
            Ok((l, e, s))
        });
        let audit = tally_wal::audit::audit_on(&*store, &self.dir, None);
        let (ledger, end, damage) = match first {
            Ok((ledger, end, start)) => {
                // The newest snapshot, when damaged, was skipped and said so.
                let newest = tally_wal::snapshot::list(&*store, &self.dir)
                    .last()
                    .map(|(_, p)| label(p));
                if let Some(n) = newest.filter(|n| self.damaged_snapshots.contains_key(n)) {
                    if !start.skipped_snapshots.iter().any(|p| p.file == n) {
                        return fail(format!("recovery loaded or ignored the damaged snapshot {n} without reporting it"));
                    }
                }
                self.check_audit(&audit, &damage)?;
                (ledger, end, damage)
            }
            Err(p) => {
                if !self.justified(&p, &damage) {
                    return fail(format!(
                        "recovery refused a log with no damage there: {p} (damage planted: {damage:?})"
                    ));
                }
                if let Ok(r) = &audit {
                    if r.clean {
                        return fail(format!("recovery refused ({p}) but tally-audit says clean"));
                    }
                }
                self.report.refusals += 1;
                if self.opts.trace {
                    eprintln!("  refused (justified): {p}");
                }
                self.heal(&damage);
                let audit = tally_wal::audit::audit_on(&*store, &self.dir, None);
                self.check_audit(&audit, &[])?;
                match tally_wal::recover(&*store, &self.dir, self.shards) {
                    // Healed: nothing excuses a loss any more.
                    Ok((ledger, end, _)) => (ledger, end, Vec::new()),
                    Err(p) => return fail(format!("recovery refused a healed log: {p}")),
                }
            }
        };
        if self.opts.trace {
            eprintln!(
                "  recovered to {} (torn: {:?})",
                end.last_seq,
                end.torn.as_ref().map(|t| (&t.file, t.offset, t.sequence))
            );
        }
        self.check_outcomes(&end, &damage, witnessed)?;
        self.check_state(ledger, &end)?;
        self.disk.forget_damage();
        self.resume(end)
    }

    /// An operator puts the damaged bytes back from a copy.
    fn heal(&mut self, damage: &[Damage]) {
        self.disk.heal();
        for d in damage {
            let name = label(&d.path);
            if let Some(n) = self.damaged_snapshots.get_mut(&name) {
                *n -= 1;
                if *n == 0 {
                    self.damaged_snapshots.remove(&name);
                }
            }
        }
    }

    /// Cuts the torn tail and resumes the log, with faults on (and now and
    /// then a power cut or a kill armed): `Ok(false)` when one stopped it.
    /// Without faults, a failure here is a failed check.
    fn resume(&mut self, end: LogEnd) -> Checked<bool> {
        let store = self.store.clone();
        self.disk.set_rates(rates(&self.opts));
        if self.opts.faults && self.rng.below(4) == 0 {
            let n = self.rng.below(12);
            if self.rng.below(2) == 0 {
                self.disk.crash_after(n);
            } else {
                self.disk.kill_after(n);
            }
        }
        let stopped = |what: &str, e: String, faults: bool| -> Checked<bool> {
            if faults {
                Ok(false)
            } else {
                fail(format!("{what}: {e}"))
            }
        };
        if let Some(torn) = &end.torn {
            if let Err(e) = tally_wal::durable::cut_torn_tail(&*store, &self.dir, &end, torn) {
                return stopped("cutting the torn tail", e, self.opts.faults);
            }
            self.report.torn_tails_cut += 1;
        }
        match LogWriter::resume(store, &self.dir, &end, SEGMENT_BYTES) {
            Ok(mut log) => {
                log.track_positions();
                self.log = Some(log);
            }
            Err(e) => return stopped("resuming the log", e.to_string(), self.opts.faults),
        }
        let last = end.last_seq;
        self.truth.truncate(last as usize);
        self.acked = last;
        self.records.retain(|&first, _| first <= last);
        self.now = self.now.max(self.ledger.now()) + MS;
        Ok(true)
    }

    /// Every acknowledged command is in the recovered log with its logged
    /// outcome; anything past them is a prefix of what was appended, whole
    /// records; nothing else appears.
    fn check_outcomes(&mut self, end: &LogEnd, damage: &[Damage], witnessed: u64) -> Checked<()> {
        let last = end.last_seq;
        if last < self.acked {
            let lost = last + 1;
            let excused = lost > witnessed && damage.iter().any(|d| self.damages(d, lost));
            let planted = damage
                .iter()
                .any(|d| d.kind != DamageKind::Misdirected && self.damages(d, lost));
            if !excused {
                return fail(format!(
                    "lost acknowledged writes: sequences {lost}..={} were acknowledged, the recovered log ends at {last}{}",
                    self.acked,
                    if planted { " (damage inside the witnessed region was cut instead of refused)" } else { "" }
                ));
            }
            self.report.blind_spot_losses += self.acked - last;
            // Accepted as lost: a later restart must not expect them.
            self.acked = last;
        }
        if last as usize > self.truth.len() {
            return fail(format!(
                "the recovered log ends at {last}, past the {} commands ever appended",
                self.truth.len()
            ));
        }
        if last > self.acked {
            // Unacknowledged records survived: they must end where a record
            // did.
            let ends_record = self
                .record_of(last)
                .is_some_and(|p| p.pos.first_seq + u64::from(p.pos.count) - 1 == last);
            if !ends_record {
                return fail(format!("the recovered log ends at {last}, inside a record"));
            }
        }
        let mut mismatch = None;
        let store = &*self.store;
        // With segments archived, from the first one present.
        let start = match tally_wal::durable::archived_start(store, &self.dir, u64::MAX) {
            Ok(s) => s,
            Err(p) => return fail(format!("the recovered log's first segment: {p}")),
        };
        let truth = &self.truth;
        let scanned = tally_wal::scan::scan(store, &self.dir, start, |rec| {
            let seq = rec.header.seq;
            let t = &truth[(seq - 1) as usize];
            let logged = outcome_fields(&t.outcome);
            let found = (rec.header.outcome, rec.header.code, rec.header.original_seq);
            if mismatch.is_none()
                && (t.command != rec.command
                    || t.timestamp != rec.header.timestamp
                    || logged != found)
            {
                mismatch = Some(seq);
            }
            Ok(())
        });
        if let Err(p) = scanned {
            return fail(format!("the recovered log does not scan: {p}"));
        }
        if let Some(seq) = mismatch {
            return fail(format!(
                "sequence {seq} in the recovered log differs from what was logged"
            ));
        }
        Ok(())
    }

    /// The recovered ledger equals the reference fed exactly the surviving
    /// log; money is conserved and every policy holds; a second replay of
    /// the same disk gives the same state.
    fn check_state(&mut self, mut ledger: Ledger, end: &LogEnd) -> Checked<()> {
        let last = end.last_seq;
        let done = self.shadow.sequencer().next_seq() - 1;
        if last < done {
            self.shadow = Ledger::new(self.shards);
        }
        let from = self.shadow.sequencer().next_seq();
        for t in &self.truth[(from - 1) as usize..last as usize] {
            let o = self.shadow.replay(&t.command, t.seq, t.timestamp);
            if o != t.outcome {
                return fail(format!(
                    "the reference gives {o:?} for sequence {}, the process gave {:?}",
                    t.seq, t.outcome
                ));
            }
        }
        let (want, got) = (self.shadow.digest(), ledger.digest());
        if want != got {
            return fail(format!(
                "the recovered state (digest {got:x}) differs from the reference's ({want:x}) at sequence {last}"
            ));
        }
        for (c, sum) in ledger.balance_sums() {
            if sum != 0 {
                return fail(format!("{c} is not conserved: balances sum to {sum}"));
            }
        }
        for s in ledger.shards() {
            if let Some(v) = s.check_invariants().into_iter().next() {
                return fail(format!("a policy does not hold: {v}"));
            }
            for e in s.events().iter() {
                if let Some(v) = e.check().into_iter().next() {
                    return fail(format!("event {}: {v}", e.id()));
                }
            }
        }
        if self.rng.below(4) == 0 {
            match tally_wal::recover(&*self.store, &self.dir, self.shards) {
                Ok((mut again, end2, _)) => {
                    if again.digest() != got || end2.last_seq != last {
                        return fail("a second replay of the same disk gives another state");
                    }
                }
                Err(p) => return fail(format!("a second recovery of the same disk fails: {p}")),
            }
        }
        self.ledger = ledger;
        Ok(())
    }
}

/// A file's name, as problems name it.
fn label(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Executes one command; what was sequenced is logged.
fn execute(ledger: &mut Ledger, c: &Command, now: u64, logged: &mut Vec<Logged>) -> Outcome {
    let seq = ledger.sequencer().next_seq();
    let outcome = ledger.execute(c, now);
    if ledger.sequencer().next_seq() > seq {
        logged.push(Logged {
            command: c.clone(),
            seq,
            timestamp: ledger.sequencer().last_timestamp(),
            outcome: outcome.clone(),
        });
    }
    outcome
}
