//! Hot accounts and version conflicts over sliding windows, in bounded
//! memory. Each time bucket keeps a Misra-Gries summary of `CAPACITY`
//! counters (the heavy hitters of that bucket: any account with more than
//! n/(CAPACITY+1) of the bucket's n events is kept, and every count is low by
//! at most that much); a window merges the buckets it covers. Wall-clock time:
//! this is operations telemetry, not ledger state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Counters per bucket and per kind.
pub const CAPACITY: usize = 256;
/// The width of one bucket.
pub const BUCKET: Duration = Duration::from_secs(10);
/// Buckets kept: the longest window is `BUCKET * BUCKETS` (one hour).
pub const BUCKETS: usize = 360;
/// The longest window, in seconds.
pub const MAX_WINDOW_S: u64 = 3_600;

/// A Misra-Gries summary.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    counts: HashMap<u128, u64>,
    /// Events seen, including those not counted.
    pub total: u64,
}

impl Summary {
    pub fn add(&mut self, key: u128, n: u64) {
        self.total += n;
        if let Some(c) = self.counts.get_mut(&key) {
            *c += n;
            return;
        }
        if self.counts.len() < CAPACITY {
            self.counts.insert(key, n);
            return;
        }
        // Full: decrement every counter (and the newcomer) by the smallest
        // amount that frees a slot, or by n when the newcomer is smaller.
        let min = self.counts.values().copied().min().unwrap_or(0);
        let d = min.min(n);
        self.counts.retain(|_, c| {
            *c -= d;
            *c > 0
        });
        if n > d && self.counts.len() < CAPACITY {
            self.counts.insert(key, n - d);
        }
    }

    pub fn merge(&mut self, other: &Summary) {
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_default() += v;
        }
        self.total += other.total;
    }

    /// The `n` largest counts, largest first (ties by id).
    pub fn top(&self, n: usize) -> Vec<(u128, u64)> {
        let mut v: Vec<(u128, u64)> = self.counts.iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    /// Bucket number since the tracker started.
    number: u64,
    writes: Summary,
    conflicts: Summary,
}

/// Writes and `version_conflict` rejections per account, bucketed in time.
pub struct Hotspots {
    start: Instant,
    buckets: Vec<Bucket>,
}

impl Default for Hotspots {
    fn default() -> Self {
        Self::new()
    }
}

impl Hotspots {
    pub fn new() -> Hotspots {
        Hotspots {
            start: Instant::now(),
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let number = (now.saturating_duration_since(self.start).as_secs() / BUCKET.as_secs()) + 1;
        let b = &mut self.buckets[(number % BUCKETS as u64) as usize];
        if b.number != number {
            *b = Bucket {
                number,
                ..Bucket::default()
            };
        }
        b
    }

    /// A committed operation wrote these accounts.
    pub fn write(&mut self, now: Instant, accounts: &[u128]) {
        let b = self.bucket(now);
        for a in accounts {
            b.writes.add(*a, 1);
        }
    }

    /// A `version_conflict` rejection on this account.
    pub fn conflict(&mut self, now: Instant, account: u128) {
        self.bucket(now).conflicts.add(account, 1);
    }

    /// Merged summaries (writes, conflicts) over the last `window`.
    pub fn window(&self, now: Instant, window: Duration) -> (Summary, Summary) {
        let current = (now.saturating_duration_since(self.start).as_secs() / BUCKET.as_secs()) + 1;
        let span = window
            .as_secs()
            .div_ceil(BUCKET.as_secs())
            .clamp(1, BUCKETS as u64);
        let oldest = current.saturating_sub(span - 1);
        let (mut w, mut c) = (Summary::default(), Summary::default());
        for b in &self.buckets {
            if b.number >= oldest && b.number <= current && b.number > 0 {
                w.merge(&b.writes);
                c.merge(&b.conflicts);
            }
        }
        (w, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_capacity_and_heavy_hitters_survive_above_it() {
        let mut s = Summary::default();
        for (k, n) in [(1u128, 50u64), (2, 30), (3, 10)] {
            for _ in 0..n {
                s.add(k, 1);
            }
        }
        assert_eq!(s.top(2), vec![(1, 50), (2, 30)]);
        // Many one-off keys cannot push out a key holding a large share.
        for k in 1_000..20_000u128 {
            s.add(k, 1);
            if k % 10 == 0 {
                s.add(7, 1);
            }
        }
        let top = s.top(1);
        assert_eq!(top[0].0, 7, "{top:?}");
        // Misra-Gries: never over, and under by at most total / (capacity + 1).
        let bound = s.total / (CAPACITY as u64 + 1);
        assert!(
            top[0].1 <= 1_900 && top[0].1 >= 1_900 - bound,
            "{} (bound {bound})",
            top[0].1
        );
        assert!(s.counts.len() <= CAPACITY);
    }

    #[test]
    fn windows_cover_recent_buckets_only() {
        let mut h = Hotspots::new();
        let t0 = h.start;
        h.write(t0, &[1, 2]);
        h.write(t0 + Duration::from_secs(25), &[2]);
        h.conflict(t0 + Duration::from_secs(25), 3);
        let now = t0 + Duration::from_secs(25);
        let (w, c) = h.window(now, Duration::from_secs(10));
        assert_eq!(w.top(5), vec![(2, 1)]);
        assert_eq!(c.top(5), vec![(3, 1)]);
        let (w, _) = h.window(now, Duration::from_secs(60));
        assert_eq!(w.top(5), vec![(2, 2), (1, 1)]);
        // An hour later the old buckets are gone.
        let (w, _) = h.window(now + Duration::from_secs(3_700), Duration::from_secs(3_600));
        assert!(w.top(5).is_empty());
    }
}
