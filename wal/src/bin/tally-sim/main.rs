//! `tally-sim`: deterministic simulation of the ledger and its log on a
//! simulated disk, with crashes and storage faults drawn from a seed.
//!
//! `tally-sim --seed S` replays one run exactly; `tally-sim --seeds N`
//! runs seeds `--first-seed` .. `+N` and prints what they did; exit 1 on
//! any failed check (with the seed and the first violated check), 2 on bad
//! arguments. `--plant lying-fsync` makes the disk acknowledge syncs it did
//! not perform: the checks must then find lost acknowledged writes.

#![forbid(unsafe_code)]

mod workload;
mod world;

use clap::{Parser, ValueEnum};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use tally_wal::storage::sim::FaultCounts;
use world::{Options, RunReport, World};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Plant {
    /// Syncs report success and persist nothing.
    LyingFsync,
}

#[derive(Parser)]
#[command(
    name = "tally-sim",
    version,
    about = "Deterministic simulation: the ledger on a simulated disk, crashed and faulted from a seed, checked after every recovery"
)]
struct Args {
    /// Run this one seed (and print its report).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --first-seed on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Client commands per seed (the event driver's come on top).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    commands: u64,
    /// Crashes only: no misdirected writes, EIO, ENOSPC, bit flips or
    /// latent sector errors.
    #[arg(long)]
    no_faults: bool,
    /// Plant a bug in the simulated disk (the checker's self-test).
    #[arg(long, value_enum)]
    plant: Option<Plant>,
    /// Seeds run at once (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Print each crash, planted damage and recovery on stderr.
    #[arg(long)]
    trace: bool,
}

#[derive(serde::Serialize, Default)]
struct Summary {
    seeds: u64,
    first_seed: u64,
    commands_per_seed: u64,
    commands: u64,
    logged: u64,
    crashes: u64,
    kills: u64,
    recoveries: u64,
    refusals: u64,
    torn_tails_cut: u64,
    blind_spot_losses: u64,
    snapshots: u64,
    archived_segments: u64,
    faults: FaultCounts,
    failures: Vec<SeedFailure>,
    plant: Option<&'static str>,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

#[derive(serde::Serialize)]
struct SeedFailure {
    seed: u64,
    check: String,
    reproduce: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = std::time::Instant::now();
    let (first, count) = match args.seed {
        Some(s) => (s, 1),
        None => (args.first_seed, args.seeds),
    };
    let opts = Options {
        commands: args.commands,
        trace: args.trace,
        faults: !args.no_faults,
        lying_fsync: args.plant == Some(Plant::LyingFsync),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let reports = run_all(first, count, threads, &opts);
    let mut s = Summary {
        seeds: count,
        first_seed: first,
        commands_per_seed: args.commands,
        plant: args.plant.map(|_| "lying-fsync"),
        ..Summary::default()
    };
    for r in &reports {
        s.commands += r.commands;
        s.logged += r.logged;
        s.crashes += r.crashes;
        s.kills += r.kills;
        s.recoveries += r.recoveries;
        s.refusals += r.refusals;
        s.torn_tails_cut += r.torn_tails_cut;
        s.blind_spot_losses += r.blind_spot_losses;
        s.snapshots += r.snapshots;
        s.archived_segments += r.archived_segments;
        s.faults.add(&r.faults);
        if let Some(check) = &r.failure {
            let mut reproduce = format!("tally-sim --seed {} --commands {}", r.seed, args.commands);
            if args.no_faults {
                reproduce.push_str(" --no-faults");
            }
            if args.plant.is_some() {
                reproduce.push_str(" --plant lying-fsync");
            }
            s.failures.push(SeedFailure {
                seed: r.seed,
                check: check.clone(),
                reproduce,
            });
        }
    }
    if args.seed.is_some() {
        s.digest = reports.first().map(|r| format!("{:016x}", r.digest));
    }
    s.seconds = started.elapsed().as_secs_f64();
    if args.json {
        match serde_json::to_string_pretty(&s) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print_human(&s);
    }
    if s.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs seeds on `threads` threads; each seed is independent and
/// deterministic, so the order they run in changes nothing.
fn run_all(first: u64, count: u64, threads: usize, opts: &Options) -> Vec<RunReport> {
    let next = AtomicU64::new(0);
    let mut reports: Vec<RunReport> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= count {
                            return mine;
                        }
                        let seed = first.wrapping_add(k);
                        mine.push(World::new(seed, opts.clone()).run());
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join().unwrap_or_else(|_| {
                    eprintln!("error: a simulation thread panicked");
                    std::process::exit(1)
                })
            })
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}

fn print_human(s: &Summary) {
    println!(
        "tally-sim: {} seed(s) from {}, {} commands ({} logged) in {:.1} s",
        s.seeds, s.first_seed, s.commands, s.logged, s.seconds
    );
    println!(
        "  crashes {} ({} kill -9, the rest power failures), recoveries {}, refusals of damaged logs {}, torn tails cut {}, snapshots {}, segments archived {}",
        s.crashes, s.kills, s.recoveries, s.refusals, s.torn_tails_cut, s.snapshots, s.archived_segments
    );
    let f = &s.faults;
    println!(
        "  faults: lost_unsynced {}, torn {}, reordered {}, latent_sector_error {}, bit_flip {}, misdirected {}, eio {}, enospc {}",
        f.lost_unsynced, f.torn, f.reordered, f.latent_sector_error, f.bit_flip, f.misdirected, f.eio, f.enospc
    );
    println!(
        "  acknowledged records lost to damage the log cannot tell from a torn write (FORMAT.md's blind spot): {}",
        s.blind_spot_losses
    );
    if let Some(d) = &s.digest {
        println!("  final state digest {d}");
    }
    if s.failures.is_empty() {
        println!("  every check passed");
    }
    for f in &s.failures {
        println!("FAILED seed {}: {}", f.seed, f.check);
        println!("  reproduce: {}", f.reproduce);
    }
}
