//! The longest single insert while a table grows from empty to N ids:
//! hashbrown's `HashMap` (what the shard's id index was) against
//! [`IdTable`] (what it is). Run in release:
//! `cargo run --release -p tally-engine --example growth_pause -- 20000000`
use std::time::{Duration, Instant};
use tally_engine::idindex::IdRecord;
use tally_engine::table::IdTable;

fn ids(n: u64) -> impl Iterator<Item = u128> {
    // Random-looking ids, as clients' UUIDs are.
    (0..n).map(|i| tally_engine::id::mix(i as u128) as u128 | ((i as u128) << 64))
}

fn report(name: &str, n: u64, total: Duration, pauses: &[Duration], bytes: usize) {
    let mut sorted = pauses.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let over = |ms: u64| {
        sorted
            .iter()
            .filter(|d| **d > Duration::from_millis(ms))
            .count()
    };
    println!(
        "{name}: {n} inserts in {:.2} s ({:.0} ns each); slowest insert {:.2} ms, p99.9999 {:.1} us; \
         inserts over 1 ms: {}, over 10 ms: {}; {:.1} bytes per id",
        total.as_secs_f64(),
        total.as_nanos() as f64 / n as f64,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        at(0.999_999).as_secs_f64() * 1e6,
        over(1),
        over(10),
        bytes as f64 / n as f64,
    );
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let record = IdRecord::new(0xdead_beef_0000_0000, 1, None);
    let mut pauses = Vec::with_capacity(n as usize);
    let start = Instant::now();
    let mut map = hashbrown::HashMap::new();
    for id in ids(n) {
        let t = Instant::now();
        map.insert(id, record);
        pauses.push(t.elapsed());
    }
    let total = start.elapsed();
    let bytes = (map.capacity() * 8 / 7).next_power_of_two() * 33;
    report("hashbrown HashMap", n, total, &pauses, bytes);
    drop(map);
    pauses.clear();
    let start = Instant::now();
    let mut table = IdTable::new();
    for id in ids(n) {
        let t = Instant::now();
        table.insert(id, record);
        pauses.push(t.elapsed());
    }
    let total = start.elapsed();
    report("IdTable", n, total, &pauses, table.memory_bytes());
    println!("largest segment: {} ids", table.largest_segment());
}
