//! Counting what happened and summarising it.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use tally_engine::Outcome;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1000 s, 3 significant digits: valid constant bounds.
    Histogram::new_with_bounds(1, 1_000_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// What one driver saw.
pub struct Tally {
    /// Per-request latency in microseconds (from the intended start in open
    /// loop, so queueing behind a slow request counts).
    pub latency: Histogram<u64>,
    pub committed: u64,
    pub rejected: BTreeMap<String, u64>,
    pub requests: u64,
    pub reads: u64,
    /// Operations completed in each second of the run.
    pub per_second: Vec<u64>,
    /// The longest request that completed in each second of the run, in µs.
    pub per_second_max_us: Vec<u64>,
    /// The first commands submitted and their outcomes, to retry at the end
    /// ([`crate::retry`]).
    pub first: Vec<(tally_engine::Command, Outcome)>,
    /// Entry ids acknowledged as committed (kept only for `--verify`).
    pub acked: Vec<u128>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: histogram(),
            committed: 0,
            rejected: BTreeMap::new(),
            requests: 0,
            reads: 0,
            per_second: Vec::new(),
            per_second_max_us: Vec::new(),
            first: Vec::new(),
            acked: Vec::new(),
        }
    }
}

impl Tally {
    fn second(&mut self, at_s: f64, n: u64, micros: u64) {
        let i = at_s.max(0.0) as usize;
        if self.per_second.len() <= i {
            self.per_second.resize(i + 1, 0);
            self.per_second_max_us.resize(i + 1, 0);
        }
        self.per_second[i] += n;
        self.per_second_max_us[i] = self.per_second_max_us[i].max(micros);
    }

    /// Keeps these commands and their outcomes while fewer than `most` are
    /// kept (the caller clones them only when [`Tally::keeps_more`]).
    pub fn keep(&mut self, cmds: Vec<tally_engine::Command>, outcomes: &[Outcome], most: usize) {
        let room = most.saturating_sub(self.first.len());
        self.first.extend(
            cmds.into_iter()
                .zip(outcomes.iter().cloned())
                .filter(|(c, _)| crate::retry::keepable(c))
                .take(room),
        );
    }

    pub fn keeps_more(&self, most: usize) -> bool {
        self.first.len() < most
    }

    pub fn request(&mut self, micros: u64, at_s: f64, outcomes: &[Outcome]) {
        self.requests += 1;
        let _ = self.latency.record(micros.max(1));
        let mut done = 0;
        for o in outcomes {
            match o.code() {
                None => {
                    self.committed += 1;
                    done += 1;
                }
                Some(c) => *self.rejected.entry(c.as_str().to_string()).or_default() += 1,
            }
        }
        self.second(at_s, done, micros);
    }

    /// A write request's outcomes; `ids[i]` are the entry ids of command `i`
    /// (empty unless verifying), kept for those that committed.
    pub fn submitted(&mut self, micros: u64, at_s: f64, outcomes: &[Outcome], ids: &[Vec<u128>]) {
        self.request(micros, at_s, outcomes);
        for (o, ids) in outcomes.iter().zip(ids) {
            if matches!(o, Outcome::Committed { .. }) {
                self.acked.extend(ids);
            }
        }
    }

    pub fn read(&mut self, micros: u64, at_s: f64) {
        self.requests += 1;
        self.reads += 1;
        let _ = self.latency.record(micros.max(1));
        self.second(at_s, 1, micros);
    }

    pub fn failed(&mut self, code: &str, n: u64) {
        *self.rejected.entry(code.to_string()).or_default() += n;
    }

    pub fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.committed += other.committed;
        self.requests += other.requests;
        self.reads += other.reads;
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (i, n) in other.per_second.iter().enumerate() {
            self.per_second[i] += n;
        }
        if self.per_second_max_us.len() < other.per_second_max_us.len() {
            self.per_second_max_us
                .resize(other.per_second_max_us.len(), 0);
        }
        for (i, m) in other.per_second_max_us.iter().enumerate() {
            self.per_second_max_us[i] = self.per_second_max_us[i].max(*m);
        }
        self.first.extend(other.first);
        self.acked.extend(other.acked);
    }
}

#[derive(serde::Serialize)]
pub struct Report {
    pub workload: String,
    pub target: String,
    /// Committed operations (plus reads in a mixed run).
    pub ops: u64,
    pub requests: u64,
    pub reads: u64,
    pub tps: f64,
    /// Operations per second asked for in open loop (null in closed loop).
    pub offered_rate: Option<f64>,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub rejected: BTreeMap<String, u64>,
    pub duration_s: f64,
    /// Log sync latency (in-process with a log, or a spawned server).
    pub log_sync_p50_us: Option<u64>,
    pub log_sync_p99_us: Option<u64>,
    /// Resident memory of the process holding the ledger, when known.
    pub server_rss_mb: Option<u64>,
    /// `--verify`: every acknowledged entry committed and money conserved.
    pub verified: Option<bool>,
    pub verify_detail: Option<String>,
    /// Memory and throughput over time, and the soak's verdicts.
    pub soak: Option<crate::sample::Soak>,
    /// The first commands of the run submitted again at its end: each must
    /// come back as a duplicate with its original outcome.
    pub retried: Option<crate::retry::Retried>,
    /// The server's breakdown of the run's submits by stage (when its
    /// metrics page is reachable).
    pub stages: Option<Vec<crate::stages::Stage>>,
    pub config: serde_json::Value,
}

impl Report {
    pub fn new(
        workload: &str,
        target: &str,
        t: &Tally,
        seconds: f64,
        config: serde_json::Value,
    ) -> Report {
        let q = |x: f64| t.latency.value_at_quantile(x);
        Report {
            workload: workload.into(),
            target: target.into(),
            ops: t.committed + t.reads,
            requests: t.requests,
            reads: t.reads,
            tps: (t.committed + t.reads) as f64 / seconds.max(1e-9),
            offered_rate: None,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: t.latency.max(),
            rejected: t.rejected.clone(),
            duration_s: seconds,
            log_sync_p50_us: None,
            log_sync_p99_us: None,
            server_rss_mb: None,
            verified: None,
            verify_detail: None,
            soak: None,
            retried: None,
            stages: None,
            config,
        }
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "{} on {}: {} ops in {:.2} s = {:.0} ops/s ({} requests{})",
            self.workload,
            self.target,
            self.ops,
            self.duration_s,
            self.tps,
            self.requests,
            if self.reads > 0 {
                format!(", {} reads", self.reads)
            } else {
                String::new()
            }
        );
        if let Some(r) = self.offered_rate {
            s.push_str(&format!(
                "\noffered {r:.0} ops/s (open loop; latency from each request's intended start)"
            ));
        }
        s.push_str(&format!(
            "\nrequest latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        ));
        if let (Some(a), Some(b)) = (self.log_sync_p50_us, self.log_sync_p99_us) {
            s.push_str(&format!("\nlog sync µs: p50 {a}  p99 {b}"));
        }
        if let Some(m) = self.server_rss_mb {
            s.push_str(&format!("\nledger process RSS: {m} MiB"));
        }
        if !self.rejected.is_empty() {
            s.push_str("\nrejected:");
            for (k, v) in &self.rejected {
                s.push_str(&format!(" {k}={v}"));
            }
        }
        if let Some(stages) = self.stages.as_ref().filter(|s| !s.is_empty()) {
            s.push_str(&crate::stages::table(stages));
        }
        if let Some(soak) = &self.soak {
            s.push_str(&soak.table());
        }
        if let Some(r) = &self.retried {
            s.push_str(&format!(
                "\nretried {} of the first commands: {} came back with their original outcome{}",
                r.checked,
                r.same,
                r.first_difference
                    .as_deref()
                    .map(|d| format!("; first difference: {d}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(v) = self.verified {
            s.push_str(&format!(
                "\nverify: {} ({})",
                if v { "PASSED" } else { "FAILED" },
                self.verify_detail.as_deref().unwrap_or("")
            ));
        }
        s
    }
}

/// Resident set size of a process, in MiB.
pub fn rss_mb(pid: u32) -> Option<u64> {
    tally_net::metrics::rss_of(&pid.to_string()).map(|b| b >> 20)
}

/// Percentiles of a list of nanosecond samples, in µs: (p50, p99).
pub fn p50_p99_us(mut ns: Vec<u64>) -> Option<(u64, u64)> {
    if ns.is_empty() {
        return None;
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] / 1_000;
    Some((at(0.5), at(0.99)))
}
