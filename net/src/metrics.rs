//! Prometheus metrics: counters and histograms updated by the server, gauges
//! read from the runtime and the log at scrape time, served as text on a
//! loopback HTTP endpoint.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

fn latency_histogram() -> Histogram {
    // 20 µs to ~5 s.
    Histogram::new(exponential_buckets(20e-6, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    operations: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub handshake_failures: Counter,
    pub connections_refused: Counter,
    pub frame_errors: Counter,
    pub busy: Counter,
    // Set at scrape time.
    inflight: Gauge,
    queue_depth: Family<Labels, Gauge>,
    next_seq: Gauge,
    durable_seq: Gauge,
    history_seq: Gauge,
    log_records: Gauge,
    log_syncs: Gauge,
    log_sync_seconds_total: FGauge,
    log_sync_seconds_max: FGauge,
    log_sync_quantile: Family<Labels, FGauge>,
    hot_writes: Family<Labels, Gauge>,
    hot_conflicts: Family<Labels, Gauge>,
    verify_last_run: Gauge,
    verify_errors: Gauge,
    verify_warnings: Gauge,
    verify_pause: FGauge,
    events: Family<Labels, Gauge>,
    liens_active: Gauge,
    event_liens_active: Gauge,
    resident_bytes: Family<Labels, Gauge>,
    process_resident_bytes: Gauge,
    stage: Family<Labels, Histogram, fn() -> Histogram>,
    stage_max: Family<Labels, FGauge>,
    /// The longest time seen in each stage (ns), behind `stage_max`.
    stage_max_ns: [AtomicU64; STAGES.len()],
    cold: Family<Labels, Gauge>,
    cold_lookup_seconds_total: FGauge,
    cold_lookup_seconds_max: FGauge,
    history: Family<Labels, Gauge>,
    /// The series every submit touches, looked up once (a lookup hashes
    /// and allocates its label each time: eight per submit otherwise).
    hot: Hot,
}

/// Series resolved at start: they share their values with the families'.
struct Hot {
    submits: Counter,
    submit_latency: Histogram,
    stages: Vec<Histogram>,
    committed: Counter,
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

impl Hot {
    fn resolve(
        requests: &Family<Labels, Counter>,
        latency: &HistogramFamily,
        stage: &HistogramFamily,
        operations: &Family<Labels, Counter>,
    ) -> Hot {
        let submit = label("kind", "submit");
        Hot {
            submits: requests.get_or_create(&submit).clone(),
            submit_latency: latency.get_or_create(&submit).clone(),
            stages: STAGES
                .iter()
                .map(|name| stage.get_or_create(&label("stage", name)).clone())
                .collect(),
            committed: operations
                .get_or_create(&label("result", "committed"))
                .clone(),
        }
    }
}

/// What the history's runs report (see `tally_wal::history::HistoryStats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HistoryFigures {
    pub runs: u64,
    pub runs_written: u64,
    pub seal_failures: u64,
    pub run_reads: u64,
}

/// What the cold tier reports (see `tally_wal::cold::ColdStats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ColdFigures {
    /// Keys looked up, block reads, keys found, lookups that read storage.
    pub keys: u64,
    pub reads: u64,
    pub hits: u64,
    pub slow_lookups: u64,
    pub lookup_ns: u64,
    pub lookup_max_ns: u64,
    pub runs: u64,
    pub runs_written: u64,
    pub merges: u64,
    /// Its watermark and what the manifest on storage covers.
    pub covered: u64,
    pub persisted: u64,
}

/// The stages of a submit, in order: decoded to sequenced (admission, early
/// checks, the sequencer); sequenced to executed (the shard queues and the
/// shards); executed to appended (waiting for the log writer, writing);
/// appended to durable (waiting for the syncer, the sync); durable to the
/// request's task running again (its wake-up; the answer is encoded after).
pub const STAGES: [&str; 5] = ["queue", "execute", "append", "sync", "respond"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// (account, count) pairs, largest first.
pub type Counts = Vec<(u128, u64)>;

/// What the scrape reads from the running server.
pub struct Snapshot {
    pub inflight: usize,
    pub queue_depths: Vec<usize>,
    pub next_seq: u64,
    pub durable_seq: u64,
    pub history_seq: u64,
    pub log_records: u64,
    pub log_syncs: u64,
    pub sync_nanos_total: u64,
    pub sync_nanos_max: u64,
    /// Recent sync latencies in ns (any order).
    pub recent_syncs: Vec<u64>,
    /// Top accounts by writes and by version conflicts over the last minute.
    pub hot: (Counts, Counts),
    /// The last background verification: (unix time, errors, warnings, pause µs).
    pub verify: Option<(u64, u64, u64, u64)>,
    /// Events per state name.
    pub events: Vec<(&'static str, u64)>,
    /// Active liens, and those of them owned by events.
    pub liens: (u64, u64),
    /// Heap bytes by structure name.
    pub memory: Vec<(&'static str, usize)>,
    /// The process's resident set in bytes, where the platform tells.
    pub rss: Option<u64>,
    /// The cold tier's figures, when there is one.
    pub cold: Option<ColdFigures>,
    /// The history's runs.
    pub history: HistoryFigures,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("tally");
        let requests = Family::default();
        let operations = Family::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let stage: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let hot = Hot::resolve(&requests, &latency, &stage, &operations);
        let m = Metrics {
            requests,
            operations,
            latency,
            connections: Gauge::default(),
            connections_total: Counter::default(),
            handshake_failures: Counter::default(),
            connections_refused: Counter::default(),
            frame_errors: Counter::default(),
            busy: Counter::default(),
            inflight: Gauge::default(),
            queue_depth: Family::default(),
            next_seq: Gauge::default(),
            durable_seq: Gauge::default(),
            history_seq: Gauge::default(),
            log_records: Gauge::default(),
            log_syncs: Gauge::default(),
            log_sync_seconds_total: FGauge::default(),
            log_sync_seconds_max: FGauge::default(),
            log_sync_quantile: Family::default(),
            hot_writes: Family::default(),
            hot_conflicts: Family::default(),
            verify_last_run: Gauge::default(),
            verify_errors: Gauge::default(),
            verify_warnings: Gauge::default(),
            verify_pause: FGauge::default(),
            events: Family::default(),
            liens_active: Gauge::default(),
            event_liens_active: Gauge::default(),
            resident_bytes: Family::default(),
            process_resident_bytes: Gauge::default(),
            cold: Family::default(),
            cold_lookup_seconds_total: FGauge::default(),
            cold_lookup_seconds_max: FGauge::default(),
            history: Family::default(),
            stage,
            stage_max: Family::default(),
            stage_max_ns: Default::default(),
            registry: Registry::default(),
            hot,
        };
        r.register("requests", "Requests by kind", m.requests.clone());
        r.register(
            "operations",
            "Submitted operations by result (committed, duplicate, or the error code)",
            m.operations.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request latency in the server, by kind",
            m.latency.clone(),
        );
        r.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "Connections that completed the handshake",
            m.connections_total.clone(),
        );
        r.register(
            "handshake_failures",
            "Connections refused at the handshake (no or untrusted certificate, wrong ALPN)",
            m.handshake_failures.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused for a limit (all connections, or per client certificate)",
            m.connections_refused.clone(),
        );
        r.register(
            "frame_errors",
            "Malformed or oversized frames",
            m.frame_errors.clone(),
        );
        r.register(
            "busy",
            "Requests answered busy (backpressure)",
            m.busy.clone(),
        );
        r.register(
            "inflight_commands",
            "Commands submitted and not yet completed",
            m.inflight.clone(),
        );
        r.register(
            "shard_queue_depth",
            "Messages waiting in each shard's queue",
            m.queue_depth.clone(),
        );
        r.register(
            "next_sequence",
            "The next sequence number to be assigned",
            m.next_seq.clone(),
        );
        r.register(
            "durable_sequence",
            "The last sequence number on stable storage",
            m.durable_seq.clone(),
        );
        r.register(
            "history_sequence",
            "The next sequence number the history index has not read",
            m.history_seq.clone(),
        );
        r.register(
            "log_records",
            "Records appended to the log since start",
            m.log_records.clone(),
        );
        r.register(
            "log_syncs",
            "Log syncs (fdatasync) since start",
            m.log_syncs.clone(),
        );
        r.register(
            "log_sync_seconds_sum",
            "Time spent in log syncs since start",
            m.log_sync_seconds_total.clone(),
        );
        r.register(
            "log_sync_seconds_max",
            "Longest log sync since start",
            m.log_sync_seconds_max.clone(),
        );
        r.register(
            "log_sync_seconds",
            "Log sync latency over the recent syncs, by quantile",
            m.log_sync_quantile.clone(),
        );
        r.register(
            "hot_account_writes",
            "Writes to the most written accounts over the last minute (top 10)",
            m.hot_writes.clone(),
        );
        r.register("account_version_conflicts", "version_conflict rejections of the most conflicted accounts over the last minute (top 10)", m.hot_conflicts.clone());
        r.register(
            "verify_last_run_timestamp_seconds",
            "When the background verifier last ran (0: never)",
            m.verify_last_run.clone(),
        );
        r.register(
            "verify_errors",
            "Errors the last background verification found (0: consistent)",
            m.verify_errors.clone(),
        );
        r.register(
            "verify_warnings",
            "Warnings of the last background verification",
            m.verify_warnings.clone(),
        );
        r.register(
            "verify_pause_seconds",
            "The longest time a shard spent in the last verification's cut",
            m.verify_pause.clone(),
        );
        r.register(
            "events",
            "Chained transaction events by state",
            m.events.clone(),
        );
        r.register(
            "liens_active",
            "Active liens (funds reserved)",
            m.liens_active.clone(),
        );
        r.register(
            "event_liens_active",
            "Active liens owned by events",
            m.event_liens_active.clone(),
        );
        r.register(
            "resident_bytes",
            "Heap bytes held by each in-memory structure (all shards together)",
            m.resident_bytes.clone(),
        );
        r.register(
            "stage_seconds",
            "Time a submit spent in each stage: queue, execute, append, sync, respond",
            m.stage.clone(),
        );
        r.register(
            "stage_max_seconds",
            "The longest time a submit spent in each stage since start",
            m.stage_max.clone(),
        );
        r.register(
            "process_resident_bytes",
            "Resident set of the tallyd process (Linux: VmRSS in /proc/self/status)",
            m.process_resident_bytes.clone(),
        );
        r.register(
            "history",
            "The history index's runs on storage: runs, runs written, seals that failed (retried), run reads by queries",
            m.history.clone(),
        );
        r.register(
            "cold",
            "The cold tier of id records: keys looked up, block reads, hits (ids found there), lookups that read storage, runs, runs written, merges, covered and persisted sequence",
            m.cold.clone(),
        );
        r.register(
            "cold_lookup_seconds_total",
            "Time spent in cold-tier lookups that read storage",
            m.cold_lookup_seconds_total.clone(),
        );
        r.register(
            "cold_lookup_seconds_max",
            "The longest cold-tier lookup that read storage",
            m.cold_lookup_seconds_max.clone(),
        );
        Metrics { registry: r, ..m }
    }

    pub fn request(&self, kind: &str, seconds: f64) {
        if kind == "submit" {
            self.hot.submits.inc();
            self.hot.submit_latency.observe(seconds);
            return;
        }
        let l = label("kind", kind);
        self.requests.get_or_create(&l).inc();
        self.latency.get_or_create(&l).observe(seconds);
    }

    /// One submit's time in each stage ([`STAGES`], in order; `None`: the
    /// stage was not reached).
    pub fn stages(&self, times: [Option<std::time::Duration>; STAGES.len()]) {
        for ((series, t), max) in self.hot.stages.iter().zip(times).zip(&self.stage_max_ns) {
            let Some(t) = t else { continue };
            series.observe(t.as_secs_f64());
            max.fetch_max(t.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        }
    }

    pub fn operation(&self, result: &str) {
        self.operations(result, 1);
    }

    /// `n` operations with this result (one label lookup for all of them).
    pub fn operations(&self, result: &str, n: u64) {
        if result == "committed" {
            self.hot.committed.inc_by(n);
            return;
        }
        self.operations
            .get_or_create(&label("result", result))
            .inc_by(n);
    }

    /// The metrics as Prometheus text, after reading the gauges.
    pub fn render(&self, s: Snapshot) -> String {
        self.inflight.set(s.inflight as i64);
        for (i, d) in s.queue_depths.iter().enumerate() {
            self.queue_depth
                .get_or_create(&label("shard", &i.to_string()))
                .set(*d as i64);
        }
        self.next_seq.set(s.next_seq as i64);
        self.durable_seq.set(s.durable_seq as i64);
        self.history_seq.set(s.history_seq as i64);
        self.log_records.set(s.log_records as i64);
        self.log_syncs.set(s.log_syncs as i64);
        self.log_sync_seconds_total
            .set(s.sync_nanos_total as f64 / 1e9);
        self.log_sync_seconds_max.set(s.sync_nanos_max as f64 / 1e9);
        let mut recent = s.recent_syncs;
        recent.sort_unstable();
        for (name, q) in [("0.5", 0.5), ("0.99", 0.99), ("0.999", 0.999)] {
            if let Some(i) = (!recent.is_empty()).then(|| ((recent.len() - 1) as f64 * q) as usize)
            {
                self.log_sync_quantile
                    .get_or_create(&label("quantile", name))
                    .set(recent[i] as f64 / 1e9);
            }
        }
        self.hot_writes.clear();
        for (a, n) in &s.hot.0 {
            self.hot_writes
                .get_or_create(&label("account", &tally_engine::id::format_id(*a)))
                .set(*n as i64);
        }
        self.hot_conflicts.clear();
        for (a, n) in &s.hot.1 {
            self.hot_conflicts
                .get_or_create(&label("account", &tally_engine::id::format_id(*a)))
                .set(*n as i64);
        }
        for (state, n) in &s.events {
            self.events
                .get_or_create(&label("state", state))
                .set(*n as i64);
        }
        self.liens_active.set(s.liens.0 as i64);
        self.event_liens_active.set(s.liens.1 as i64);
        for (structure, bytes) in &s.memory {
            self.resident_bytes
                .get_or_create(&label("structure", structure))
                .set(*bytes as i64);
        }
        if let Some(rss) = s.rss {
            self.process_resident_bytes.set(rss as i64);
        }
        let h = s.history;
        set_counts(
            &self.history,
            &[
                ("runs", h.runs),
                ("runs_written", h.runs_written),
                ("seal_failures", h.seal_failures),
                ("run_reads", h.run_reads),
            ],
        );
        if let Some(c) = s.cold {
            set_counts(
                &self.cold,
                &[
                    ("keys", c.keys),
                    ("reads", c.reads),
                    ("hits", c.hits),
                    ("slow_lookups", c.slow_lookups),
                    ("runs", c.runs),
                    ("runs_written", c.runs_written),
                    ("merges", c.merges),
                    ("covered_seq", c.covered),
                    ("persisted_seq", c.persisted),
                ],
            );
            self.cold_lookup_seconds_total.set(c.lookup_ns as f64 / 1e9);
            self.cold_lookup_seconds_max
                .set(c.lookup_max_ns as f64 / 1e9);
        }
        for (name, max) in STAGES.iter().zip(&self.stage_max_ns) {
            let ns = max.load(Ordering::Relaxed);
            if ns > 0 {
                self.stage_max
                    .get_or_create(&label("stage", name))
                    .set(ns as f64 / 1e9);
            }
        }
        if let Some((at, errors, warnings, pause_us)) = s.verify {
            self.verify_last_run.set(at as i64);
            self.verify_errors.set(errors as i64);
            self.verify_warnings.set(warnings as i64);
            self.verify_pause.set(pause_us as f64 / 1e6);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// This process's resident set in bytes (Linux; `None` elsewhere).
pub fn process_rss() -> Option<u64> {
    rss_of("self")
}

/// The resident set of process `pid` ("self" for this one) in bytes, from
/// `/proc/PID/status` (Linux; `None` elsewhere).
pub fn rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sets one gauge per `what` label of a family of counts.
fn set_counts(family: &Family<Labels, Gauge>, counts: &[(&str, u64)]) {
    for &(what, n) in counts {
        family
            .get_or_create(&label("what", what))
            .set(n.min(i64::MAX as u64) as i64);
    }
}
