//! Memory and throughput over time. A sampler reads the ledger process's
//! resident set, and from a tallyd's metrics the heap bytes of each
//! structure, every few seconds; at the end the samples are joined with the
//! per-second counts into the soak's summary: does memory plateau, does
//! throughput hold, how long was the longest request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one probe of the ledger process read.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// Resident set in bytes.
    pub rss: Option<u64>,
    /// Heap bytes by structure (`tally_resident_bytes`).
    pub structures: BTreeMap<String, u64>,
}

/// One point of the time series.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    pub rss_mb: Option<f64>,
    /// Operations completed by then.
    pub ops: u64,
    /// Operations per second since the previous sample.
    pub ops_per_s: f64,
    /// The longest request that completed since the previous sample, in ms.
    pub max_ms: f64,
    /// Heap MiB by structure, where the target tells.
    pub structures_mb: BTreeMap<String, f64>,
}

/// The soak's summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Soak {
    /// Length of the first and last windows compared, in seconds.
    pub window_s: u64,
    pub first_window_ops_per_s: f64,
    pub last_window_ops_per_s: f64,
    /// last / first window throughput.
    pub throughput_ratio: f64,
    pub rss_first_mb: Option<f64>,
    pub rss_max_mb: Option<f64>,
    pub rss_last_mb: Option<f64>,
    /// Resident bytes gained per operation after the first window (the
    /// slope from the sample at its end to the last sample).
    pub rss_growth_bytes_per_op: Option<f64>,
    /// The longest request over the median request.
    pub p100_over_p50: f64,
    pub samples: Vec<Sample>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// How often to sample a run of this many seconds: every second up to five
/// minutes, then every ten.
pub fn default_every(run_s: f64) -> Duration {
    if run_s <= 300.0 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    }
}

/// Calls `probe` every `every` until `stop` is set (and once more then).
pub fn sample_until(
    stop: &AtomicBool,
    start: Instant,
    every: Duration,
    probe: impl Fn() -> Probe,
) -> Vec<(f64, Probe)> {
    let mut out = Vec::new();
    let mut next = start + every;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next {
            out.push((start.elapsed().as_secs_f64(), probe()));
            next += every;
            continue;
        }
        std::thread::sleep((next - now).min(Duration::from_millis(100)));
    }
    out.push((start.elapsed().as_secs_f64(), probe()));
    out
}

/// A tallyd's metrics page (plain HTTP on its metrics address).
pub fn scrape(addr: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The samples on a metrics page: (name with its labels, value); comments
/// and lines that are not a sample are skipped.
pub fn metric_lines(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        Some((name, value.parse::<f64>().ok()?))
    })
}

/// The memory figures on a metrics page.
pub fn parse_probe(text: &str) -> Probe {
    let mut p = Probe::default();
    for (name, value) in metric_lines(text) {
        if name == "tally_process_resident_bytes" {
            p.rss = Some(value as u64);
        } else if let Some(rest) = name.strip_prefix("tally_resident_bytes{structure=\"") {
            if let Some(structure) = rest.strip_suffix("\"}") {
                p.structures.insert(structure.to_string(), value as u64);
            }
        }
    }
    p
}

/// Operations completed before second `t` of the run.
fn ops_before(per_second: &[u64], t: f64) -> u64 {
    let whole = (t.max(0.0) as usize).min(per_second.len());
    per_second[..whole].iter().sum()
}

fn mean_rate(per_second: &[u64]) -> f64 {
    if per_second.is_empty() {
        return 0.0;
    }
    per_second.iter().sum::<u64>() as f64 / per_second.len() as f64
}

/// The summary of a run from its samples and per-second counts.
/// `p50_us` and `max_us` are the whole run's request latencies.
pub fn summarise(
    raw: Vec<(f64, Probe)>,
    per_second: &[u64],
    per_second_max_us: &[u64],
    p50_us: u64,
    max_us: u64,
) -> Soak {
    // Whole seconds only: the last, partial one would read low.
    let full = &per_second[..per_second
        .len()
        .saturating_sub(1)
        .max(1)
        .min(per_second.len())];
    let seconds = full.len() as u64;
    let window_s = if seconds >= 900 {
        300
    } else {
        (seconds / 5).max(1)
    };
    let w = (window_s as usize).min(full.len());
    let first = mean_rate(&full[..w]);
    let last = mean_rate(&full[full.len() - w..]);
    let mut samples = Vec::with_capacity(raw.len());
    let mut prev_t = 0.0;
    for (t, p) in raw {
        let (from, to) = (prev_t as usize, (t as usize).max(prev_t as usize + 1));
        let max_us = per_second_max_us
            .get(from.min(per_second_max_us.len())..to.min(per_second_max_us.len()))
            .and_then(|s| s.iter().copied().max())
            .unwrap_or(0);
        let ops = ops_before(per_second, t);
        let ops_then = ops_before(per_second, prev_t);
        samples.push(Sample {
            t_s: t,
            rss_mb: p.rss.map(|b| b as f64 / MIB),
            ops,
            ops_per_s: ops.saturating_sub(ops_then) as f64 / (t - prev_t).max(1e-9),
            max_ms: max_us as f64 / 1e3,
            structures_mb: p
                .structures
                .iter()
                .map(|(k, v)| (k.clone(), *v as f64 / MIB))
                .collect(),
        });
        prev_t = t;
    }
    let rss: Vec<f64> = samples.iter().filter_map(|s| s.rss_mb).collect();
    let growth = {
        let after = samples
            .iter()
            .find(|s| s.t_s >= window_s as f64 && s.rss_mb.is_some());
        let end = samples.iter().rev().find(|s| s.rss_mb.is_some());
        match (after, end) {
            (Some(a), Some(b)) if b.ops > a.ops => Some(
                (b.rss_mb.unwrap_or(0.0) - a.rss_mb.unwrap_or(0.0)) * MIB / (b.ops - a.ops) as f64,
            ),
            _ => None,
        }
    };
    Soak {
        window_s,
        first_window_ops_per_s: first,
        last_window_ops_per_s: last,
        throughput_ratio: if first > 0.0 { last / first } else { 0.0 },
        rss_first_mb: rss.first().copied(),
        rss_max_mb: rss.iter().copied().reduce(f64::max),
        rss_last_mb: rss.last().copied(),
        rss_growth_bytes_per_op: growth,
        p100_over_p50: max_us as f64 / p50_us.max(1) as f64,
        samples,
    }
}

impl Soak {
    /// The summary's lines for the table.
    pub fn table(&self) -> String {
        let mb = |x: Option<f64>| x.map_or("?".to_string(), |v| format!("{v:.0}"));
        let mut s = format!(
            "\nthroughput: first {w} s {:.0} ops/s, last {w} s {:.0} ops/s (ratio {:.3})",
            self.first_window_ops_per_s,
            self.last_window_ops_per_s,
            self.throughput_ratio,
            w = self.window_s,
        );
        s.push_str(&format!(
            "\nledger RSS MiB: first {}  max {}  last {}",
            mb(self.rss_first_mb),
            mb(self.rss_max_mb),
            mb(self.rss_last_mb)
        ));
        if let Some(g) = self.rss_growth_bytes_per_op {
            s.push_str(&format!(
                "; after the first window {g:.1} bytes per operation"
            ));
        }
        s.push_str(&format!(
            "\nlongest request / median request: {:.1}",
            self.p100_over_p50
        ));
        if let Some(last) = self.samples.last() {
            if !last.structures_mb.is_empty() {
                s.push_str("\nheap MiB by structure at the end:");
                for (k, v) in &last.structures_mb {
                    s.push_str(&format!(" {k}={v:.1}"));
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reads_plateau_and_slope() {
        // 20 s at 100 ops/s, then a partial second; RSS grows 1 MiB per
        // 1,000 ops after t = 4.
        let per_second: Vec<u64> = (0..20).map(|_| 100).chain([7]).collect();
        let max: Vec<u64> = (0..21).map(|i| if i == 10 { 5_000 } else { 100 }).collect();
        let raw: Vec<(f64, Probe)> = (1..=20)
            .map(|t| {
                let ops = t as f64 * 100.0;
                let rss = 100.0 * MIB + (ops - 400.0).max(0.0) * 1024.0 * 1.024;
                (
                    t as f64,
                    Probe {
                        rss: Some(rss as u64),
                        structures: BTreeMap::new(),
                    },
                )
            })
            .collect();
        let s = summarise(raw, &per_second, &max, 100, 5_000);
        assert_eq!(s.window_s, 4);
        assert_eq!(s.first_window_ops_per_s, 100.0);
        assert_eq!(s.throughput_ratio, 1.0);
        let g = s.rss_growth_bytes_per_op.unwrap();
        assert!((g - 1048.6).abs() < 1.0, "{g}");
        assert_eq!(s.p100_over_p50, 50.0);
        assert_eq!(s.samples[10].max_ms, 5.0, "{:?}", s.samples[10]);
        assert_eq!(s.samples[3].ops, 400);
    }

    #[test]
    fn a_metrics_page_gives_memory_by_structure() {
        let page = "# HELP x\ntally_resident_bytes{structure=\"entry_ids\"} 2048\n\
                    tally_process_resident_bytes 1048576\ntally_next_seq 5\n";
        let p = parse_probe(page);
        assert_eq!(p.rss, Some(1 << 20));
        assert_eq!(p.structures.get("entry_ids"), Some(&2048));
        assert_eq!(p.structures.len(), 1);
    }
}
