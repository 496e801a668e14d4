//! Durable-path measurements: the cost of a sync on fallocated and on
//! pre-written segments (docs/PERFORMANCE.md, "Storage choice"), group
//! commit latency, durable in-process throughput, and replay rate.
//! Run: `cargo bench -p tally-wal --bench durable [-- SECONDS]`
//! (a plain harness: each figure is printed with what it measured).

use std::time::{Duration, Instant};
use tally_engine::id::{mix, shard_of};
use tally_engine::runtime::{RuntimeConfig, Ticket};
use tally_engine::*;
use tally_wal::{Durability, Durable, DurableConfig};

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn sync_methods() {
    use tally_wal::storage::{RealDisk, Storage};
    let dir = tempfile::tempdir_in(".").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let size: u64 = 64 << 20;
    for (k, (name, prewrite)) in [("fallocated", false), ("pre-written", true)]
        .into_iter()
        .enumerate()
    {
        let file = RealDisk
            .create_new(&dir.path().join(format!("seg{k}")))
            .unwrap();
        assert!(file.allocate(size).unwrap());
        if prewrite {
            tally_wal::storage::write_zeros(&*file, 0, size).unwrap();
        }
        file.sync_data().unwrap();
        let page = vec![0xa5u8; 4096];
        let mut lat = Vec::new();
        for i in 0..300u64 {
            file.write_all_at(&page, 4096 * (i + 1)).unwrap();
            let t = Instant::now();
            file.sync_data().unwrap();
            lat.push(t.elapsed().as_micros() as u64);
        }
        println!(
            "sync of a 4 KiB pwrite to a {name} segment, fdatasync: p50 {} us, p99 {} us (300 runs)",
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
    }
}

/// The log writer alone: encode, checksum, chain and write records (no
/// runtime), then one sync; batches of 1,000 transfers, one
/// record each, as the journal writes them. Also the log bytes each
/// transfer takes.
fn append_rate() {
    let dir = tempfile::tempdir_in(".").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let mut log =
        tally_wal::log::LogWriter::create(tally_wal::storage::real(), dir.path(), 256 << 20)
            .unwrap();
    let usd = CurrencyCode::parse("USD").unwrap();
    let n = 2_000_000u64;
    let commands: Vec<Command> = (1..=n as u128)
        .map(|i| Transfer::new(i, 1 + i % 997, 2 + i % 991, 1 + i % 100, usd).into())
        .collect();
    let outcome = Outcome::Committed {
        seq: 0,
        timestamp: 0,
    };
    let t = Instant::now();
    for (b, chunk) in commands.chunks(1_000).enumerate() {
        let first = 1 + b as u64 * 1_000;
        let items: Vec<tally_wal::record::Item> = chunk
            .iter()
            .enumerate()
            .map(|(i, c)| tally_wal::record::Item {
                command: c,
                seq: first + i as u64,
                timestamp: first + i as u64,
                outcome: &outcome,
                wire: None,
            })
            .collect();
        log.append_batch(&items, first - 1).unwrap();
    }
    let append = t.elapsed().as_secs_f64();
    log.sync().unwrap();
    let total = t.elapsed().as_secs_f64();
    drop(log);
    let end =
        tally_wal::scan::scan(&tally_wal::storage::RealDisk, dir.path(), None, |_| Ok(())).unwrap();
    let bytes = end.end_offset as u64 - tally_wal::format::SEGMENT_HEADER_BYTES as u64
        + (end.segments.len() as u64 - 1) * (256 << 20);
    println!(
        "log append alone (batches of 1,000 two-line transfers): {:.2} M transfers/s ({n} in {append:.2}s; with the final sync {total:.2}s); {:.1} log bytes per transfer",
        n as f64 / append / 1e6,
        bytes as f64 / n as f64
    );
}

fn durable_throughput(
    shards: usize,
    seconds: f64,
    durability: Durability,
    snapshots: bool,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(".").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let config = DurableConfig {
        runtime: RuntimeConfig {
            shards,
            tick_interval: None,
            reserve_entry_ids: 16_000_000 / shards,
            ..RuntimeConfig::default()
        },
        durability,
        segment_size: 256 << 20,
        ..DurableConfig::default()
    };
    let (d, _) = Durable::open(dir.path(), config).unwrap();
    let rt = d.runtime();
    let usd = CurrencyCode::parse("USD").unwrap();
    let accounts = 10_000u128;
    let mut setup = vec![
        Command::CreateCurrency(Currency {
            code: usd,
            scale: 2,
        }),
        Command::CreateAccount(NewAccount {
            id: u128::MAX,
            currency: usd,
            policy: BalancePolicy::Unrestricted,
            user_data: 0,
        }),
    ];
    let ids: Vec<u128> = (1..=accounts).map(|i| mix(i) as u128 | (i << 64)).collect();
    for (n, &id) in ids.iter().enumerate() {
        setup.push(Command::CreateAccount(NewAccount {
            id,
            currency: usd,
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }));
        setup.push(
            Transfer::new(
                (1 << 127) | n as u128,
                u128::MAX,
                id,
                1_000_000_000_000,
                usd,
            )
            .into(),
        );
    }
    for chunk in setup.chunks(4_000) {
        rt.submit(chunk.to_vec()).unwrap().wait();
    }
    let by_shard: Vec<Vec<u128>> = (0..shards)
        .map(|s| {
            ids.iter()
                .copied()
                .filter(|&a| shard_of(a, shards) == s)
                .collect()
        })
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut next_id = 1u128;
    let mut batch = |next: &mut dyn FnMut() -> u64| -> Vec<Command> {
        (0..1_000)
            .map(|_| {
                let s = (next() % shards as u64) as usize;
                let list = &by_shard[s];
                let (from, to) = (
                    list[(next() % list.len() as u64) as usize],
                    list[(next() % list.len() as u64) as usize],
                );
                let id = loop {
                    next_id += 1;
                    if shard_of(next_id, shards) == s {
                        break next_id;
                    }
                };
                Transfer::new(id, from, to, 1 + (next() % 100) as u128, usd).into()
            })
            .collect()
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let dref = &d;
    let snapshot_times = std::thread::scope(|scope| {
        let snapshotter = scope.spawn(|| {
            let mut times = Vec::new();
            while snapshots && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let t = Instant::now();
                if let Ok(Some(info)) = dref.take_snapshot() {
                    times.push((t.elapsed().as_millis() as u64, info.last_seq, info.bytes));
                }
            }
            times
        });
        let start = Instant::now();
        let mut pending: std::collections::VecDeque<(Instant, Ticket)> = Default::default();
        let (mut done, mut lat) = (0usize, Vec::new());
        while start.elapsed() < Duration::from_secs_f64(seconds) {
            if pending.len() >= 16 {
                let (t0, t) = pending.pop_front().unwrap();
                done += t.wait().len();
                lat.push(t0.elapsed().as_micros() as u64);
            }
            let b = batch(&mut next);
            pending.push_back((Instant::now(), rt.submit(b).unwrap()));
        }
        for (t0, t) in pending {
            done += t.wait().len();
            lat.push(t0.elapsed().as_micros() as u64);
        }
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let times = snapshotter.join().unwrap();
        let mut syncs = d.stats.recent_syncs.lock().clone();
        let groups = d.stats.groups.load(std::sync::atomic::Ordering::Relaxed);
        let records = d.stats.records.load(std::sync::atomic::Ordering::Relaxed);
        let sync_line = if syncs.is_empty() {
            "no syncs (durability none)".to_string()
        } else {
            format!(
                "group commit sync p50 {} us p99 {} us",
                percentile(&mut syncs, 0.5) / 1000,
                percentile(&mut syncs, 0.99) / 1000
            )
        };
        println!(
        "durable in-process, {shards} shard(s), {durability:?}{}: {:.0} transfers/s ({done} in {secs:.1}s), batch of 1,000 latency p50 {} ms p99 {} ms p99.9 {} ms; {sync_line}; {:.0} records per group",
        if snapshots { ", snapshots every 0.5 s" } else { "" },
        done as f64 / secs,
        percentile(&mut lat, 0.5) / 1000,
        percentile(&mut lat, 0.99) / 1000,
        percentile(&mut lat, 0.999) / 1000,
        records as f64 / groups.max(1) as f64
    );
        times
    });
    for (ms, seq, bytes) in &snapshot_times {
        println!(
            "  snapshot at sequence {seq}: {ms} ms to build and write, {} MB",
            bytes / 1_000_000
        );
    }
    d.shutdown();
    dir
}

fn replay(dir: &std::path::Path, shards: usize) {
    let config = DurableConfig {
        runtime: RuntimeConfig {
            shards,
            tick_interval: None,
            ..RuntimeConfig::default()
        },
        ..DurableConfig::default()
    };
    let (d, rec) = Durable::open(dir, config).unwrap();
    println!("replay (recovery): {} records in {:.2}s = {:.2} M records/s (verify + replay through the engine)", rec.records, rec.replay_seconds, rec.records as f64 / rec.replay_seconds / 1e6);
    d.shutdown();
    let t = Instant::now();
    let report = tally_wal::audit::audit(dir, None).unwrap();
    println!(
        "tally-audit: {} records in {:.2}s, clean: {}",
        report.records,
        t.elapsed().as_secs_f64(),
        report.clean
    );
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5.0);
    sync_methods();
    append_rate();
    let _none = durable_throughput(1, seconds, Durability::None, false);
    let dir = durable_throughput(1, seconds, Durability::Fsync, false);
    let _two = durable_throughput(2, seconds, Durability::Fsync, false);
    let _snap = durable_throughput(1, seconds, Durability::Fsync, true);
    replay(dir.path(), 1);
}
