//! Counting what happened and summarising it.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use tally_engine::Outcome;

/// What one driver saw.
pub struct Tally {
    /// Per-request latency in microseconds.
    pub latency: Histogram<u64>,
    pub committed: u64,
    pub rejected: BTreeMap<String, u64>,
    pub requests: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            // 1 µs .. 100 s, 3 significant digits; bounds are constants.
            latency: Histogram::new_with_bounds(1, 100_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            committed: 0,
            rejected: BTreeMap::new(),
            requests: 0,
        }
    }
}

impl Tally {
    pub fn request(&mut self, micros: u64, outcomes: &[Outcome]) {
        self.requests += 1;
        let _ = self.latency.record(micros.max(1));
        for o in outcomes {
            match o.code() {
                None => self.committed += 1,
                Some(c) => *self.rejected.entry(c.as_str().to_string()).or_default() += 1,
            }
        }
    }

    pub fn failed(&mut self, code: &str, n: u64) {
        *self.rejected.entry(code.to_string()).or_default() += n;
    }

    pub fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.committed += other.committed;
        self.requests += other.requests;
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
    }
}

#[derive(serde::Serialize)]
pub struct Report {
    pub workload: String,
    pub target: String,
    pub ops: u64,
    pub requests: u64,
    pub tps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub rejected: BTreeMap<String, u64>,
    pub duration_s: f64,
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
            ops: t.committed,
            requests: t.requests,
            tps: t.committed as f64 / seconds.max(1e-9),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: t.latency.max(),
            rejected: t.rejected.clone(),
            duration_s: seconds,
            config,
        }
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "{} on {}: {} ops committed in {:.2} s = {:.0} ops/s ({} requests)\nrequest latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.workload, self.target, self.ops, self.duration_s, self.tps, self.requests, self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        );
        if !self.rejected.is_empty() {
            s.push_str("\nrejected:");
            for (k, v) in &self.rejected {
                s.push_str(&format!(" {k}={v}"));
            }
        }
        s
    }
}
