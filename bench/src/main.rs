//! `tally-bench`: drives Tally with a closed-loop or open-loop load and
//! reports committed operations per second and request latency percentiles.
//!
//! Targets: `--in-process` (the sharded engine alone), `--in-process --wal
//! DIR` (engine and durable log), `--server ADDR` (a running tallyd), or
//! `--spawn` (starts a tallyd on a temporary data directory and stops it).

#![forbid(unsafe_code)]

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_bench::report::{p50_p99_us, rss_mb, Report, Tally};
use tally_bench::workload::{entry_ids, random_wallet, setup, Generator, Rng, Shape, Spec};
use tally_bench::{retry, sample, stages};
use tally_engine::runtime::{Runtime, RuntimeConfig};
use tally_engine::{Command, IdSpace, IdStatus};
use tally_net::client::{Client, ClientConfig};
use tally_wal::{Durability, Durable, DurableConfig};

#[derive(Parser, Debug, Clone)]
#[command(name = "tally-bench", version, about = "Load-test harness for Tally")]
struct Args {
    /// Drive the engine in this process (add --wal DIR for the durable log).
    #[arg(long, conflicts_with_all = ["server", "spawn"])]
    in_process: bool,
    /// With --in-process: log to this directory (must be new or empty).
    #[arg(long, requires = "in_process")]
    wal: Option<PathBuf>,
    /// A running tallyd.
    #[arg(long, conflicts_with = "spawn")]
    server: Option<SocketAddr>,
    /// Start a tallyd on a temporary data directory for the run.
    #[arg(long)]
    spawn: bool,
    /// With --server: the data directory whose development certificates to use.
    #[arg(long, default_value = "./tally-data")]
    data_dir: PathBuf,
    #[arg(long, value_enum, default_value = "uniform")]
    workload: Shape,
    /// Zipf exponent for --workload zipf.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// For --workload hot: how many hot wallets (one of them is on one side
    /// of every transfer).
    #[arg(long, default_value_t = 1)]
    hot_accounts: usize,
    /// Share (0..=1) of transfers whose wallets are on different shards.
    #[arg(long)]
    cross_shard: Option<f64>,
    /// Share (0..=1) of requests that are account reads instead of writes.
    #[arg(long, default_value_t = 0.0)]
    reads: f64,
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Concurrent connections (or driver threads in process).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests each client keeps in flight (closed loop).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Operations per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Open loop: offer this many operations per second in total, whatever
    /// the latency (latency then counts from each request's intended start).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many operations (default 100,000; no limit when only
    /// --duration is given)...
    #[arg(long)]
    count: Option<u64>,
    /// ...or after this long, whichever comes first: seconds, or a span such
    /// as 90s, 30m, 1h (default 60 s). Given without --count, the run is a
    /// soak: it runs the whole time and reports memory and throughput over it.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Sample the ledger process's memory this often, in seconds (default 1,
    /// or 10 for runs over five minutes).
    #[arg(long)]
    sample_every: Option<f64>,
    /// With --spawn: one more argument for the tallyd it starts
    /// (repeatable, e.g. --tallyd-arg=--workers --tallyd-arg=2).
    #[arg(long, requires = "spawn", allow_hyphen_values = true)]
    tallyd_arg: Vec<String>,
    /// With --server: its metrics address, to sample its memory there.
    #[arg(long, requires = "server")]
    metrics: Option<SocketAddr>,
    /// For targets this run starts.
    #[arg(long, default_value = "fsync")]
    durability: Durability,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// At the end, check that every acknowledged entry is committed and that
    /// every currency still sums to zero; exit 1 if not.
    #[arg(long)]
    verify: bool,
    /// Write an SVG: latency by percentile and throughput over time.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// One JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// Seconds ("90", "2.5") or a span ("90s", "30m", "1h 30m").
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s}: {e}"))
}

impl Args {
    /// Whether this run is bounded by time alone.
    fn soak(&self) -> bool {
        self.count.is_none() && self.duration.is_some()
    }
    fn count(&self) -> u64 {
        match self.count {
            Some(n) => n,
            None if self.soak() => i64::MAX as u64,
            None => 100_000,
        }
    }
    fn run_for(&self) -> Duration {
        self.duration.unwrap_or(Duration::from_secs(60))
    }
    fn sample_every(&self) -> Duration {
        self.sample_every
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_else(|| sample::default_every(self.run_for().as_secs_f64()))
    }
    /// Whether the run samples memory: a soak, `--sample-every`, or a plot
    /// (it draws memory over time). Otherwise nothing probes the target,
    /// whose figures would then include the probes' cost.
    fn samples(&self) -> bool {
        self.soak() || self.sample_every.is_some() || self.plot.is_some()
    }
}

fn main() {
    let args = Args::parse();
    if args.sample_every.is_some_and(|s| s.is_nan() || s < 1.0) {
        fail("--sample-every is at least 1 second (the counts are per second)");
    }
    if !(0.0..=1.0).contains(&args.reads)
        || args.cross_shard.is_some_and(|p| !(0.0..=1.0).contains(&p))
    {
        fail("--reads and --cross-shard are shares between 0 and 1");
    }
    let result = if args.in_process {
        in_process(&args)
    } else {
        over_quic(&args)
    };
    match result {
        Ok((report, tally)) => {
            if let Some(p) = &args.plot {
                let title = format!(
                    "tally-bench {} on {}: {:.0} ops/s",
                    report.workload, report.target, report.tps
                );
                let over_time = tally_bench::plot::OverTime {
                    per_second: &tally.per_second,
                    per_second_max_us: &tally.per_second_max_us,
                    samples: report.soak.as_ref().map_or(&[], |s| &s.samples[..]),
                };
                if let Err(e) = tally_bench::plot::plot(p, &title, &tally.latency, &over_time) {
                    fail(&e);
                }
            }
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => fail(&e.to_string()),
                }
            } else {
                println!("{}", report.table());
            }
            if report.verified == Some(false)
                || report.retried.as_ref().is_some_and(|r| !r.passed())
            {
                std::process::exit(1);
            }
        }
        Err(e) => fail(&e),
    }
}

/// Commands per request when the first commands are retried.
const RETRY_CHUNK: usize = 1_000;

/// The time series and its summary: for a soak, or when --sample-every asks.
fn summary(
    a: &Args,
    raw: Vec<(f64, sample::Probe)>,
    t: &Tally,
    r: &Report,
) -> Option<sample::Soak> {
    a.samples()
        .then(|| sample::summarise(raw, &t.per_second, &t.per_second_max_us, r.p50_us, r.max_us))
}

/// The entry ids of each command, when they will be verified.
fn ids_if(verify: bool, cmds: &[Command]) -> Vec<Vec<u128>> {
    if verify {
        cmds.iter().map(|c| entry_ids(c).collect()).collect()
    } else {
        Vec::new()
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("tally-bench: {msg}");
    std::process::exit(1)
}

fn config_json(a: &Args) -> serde_json::Value {
    serde_json::json!({
        "accounts": a.accounts, "clients": a.clients, "pipeline": a.pipeline, "batch": a.batch,
        "rate": a.rate, "reads": a.reads, "hot_accounts": a.hot_accounts, "zipf_s": a.zipf_s, "cross_shard": a.cross_shard,
        "count": a.count.or((!a.soak()).then(|| a.count())), "duration_limit_s": a.run_for().as_secs_f64(), "durability": format!("{:?}", a.durability).to_lowercase(),
        "shards": a.shards, "seed": a.seed,
    })
}

fn workload_name(a: &Args) -> String {
    let mut name = format!("{:?}", a.workload).to_lowercase();
    if let Some(p) = a.cross_shard {
        name.push_str(&format!("+cross-shard-{p}"));
    }
    if a.reads > 0.0 {
        name.push_str(&format!("+reads-{}", a.reads));
    }
    name
}

fn spec(a: &Args) -> Arc<Spec> {
    let mut s = Spec::new(
        a.workload,
        a.accounts,
        a.seed,
        a.zipf_s,
        a.cross_shard,
        a.shards,
    );
    s.hot = a.hot_accounts;
    Arc::new(s)
}

fn progress(a: &Args) -> ProgressBar {
    if a.soak() {
        // Bounded by time: the bar fills with the seconds.
        let bar = ProgressBar::new(a.run_for().as_secs());
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} s {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        return bar;
    }
    let bar = ProgressBar::new(a.count());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} ops {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Moves the bar on by `n` operations (a soak's bar counts seconds).
fn advance(bar: &ProgressBar, soak: bool, start: Instant, n: u64) {
    if soak {
        bar.set_position(start.elapsed().as_secs());
    } else {
        bar.inc(n);
    }
}

/// Keeps a request's commands for the retry check while they are among the
/// first of their stream (a clone only while any are kept).
fn keep_first(t: &Tally, start: Instant, cmds: &[Command]) -> Option<Vec<Command>> {
    (t.keeps_more(retry::KEEP_PER_STREAM)
        && start.elapsed().as_secs_f64() < retry::KEEP_WITHIN_S
        && cmds.iter().any(retry::keepable))
    .then(|| cmds.to_vec())
}

/// The memory of this process and of each of the runtime's structures.
fn probe_in_process(rt: &Runtime) -> sample::Probe {
    let (_, parts) = rt.cut(|s| s.memory());
    let mut engine = tally_engine::MemoryUse::default();
    for m in &parts {
        engine.add(m);
    }
    sample::Probe {
        rss: tally_net::metrics::process_rss(),
        structures: engine
            .parts()
            .iter()
            .map(|(k, v)| (k.to_string(), *v as u64))
            .collect(),
    }
}

/// The pace of one stream in open loop: the time between its requests.
fn interval(a: &Args) -> Option<Duration> {
    let streams = (a.clients * a.pipeline).max(1) as f64;
    a.rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(a.batch as f64 * streams / r))
}

/// The engine (and optionally the log) in this process; one thread per
/// client x pipeline slot.
fn in_process(a: &Args) -> Result<(Report, Tally), String> {
    let mut rc = RuntimeConfig {
        shards: a.shards,
        ..RuntimeConfig::default()
    };
    rc.reserve_accounts = a.accounts / a.shards.max(1) + 16;
    let (durable, runtime, target) = match &a.wal {
        Some(dir) => {
            let dc = DurableConfig {
                runtime: rc,
                durability: a.durability,
                ..DurableConfig::default()
            };
            let (d, _) = Durable::open(dir, dc).map_err(|e| e.to_string())?;
            (Some(d), None, "in-process+wal")
        }
        None => (
            None,
            Some(Runtime::start(rc).map_err(|e| e.to_string())?),
            "in-process",
        ),
    };
    let rt: &Runtime = match (&durable, &runtime) {
        (Some(d), _) => d.runtime(),
        (_, Some(r)) => r,
        _ => return Err("no runtime".into()),
    };
    for chunk in setup(a.accounts, 4_096) {
        let outcomes = rt.submit(chunk).map_err(|e| e.message())?.wait();
        if let Some(bad) = outcomes.iter().find(|o| !o.is_ok()) {
            return Err(format!("setting up the ledger failed: {bad:?}"));
        }
    }
    let spec = spec(a);
    let remaining = AtomicI64::new(a.count() as i64);
    let bar = progress(a);
    let deadline = Instant::now() + a.run_for();
    let pace = interval(a);
    let start = Instant::now();
    let mut total = Tally::default();
    let sampling = std::sync::atomic::AtomicBool::new(false);
    let mut raw_samples = Vec::new();
    let events = matches!(a.workload, Shape::Events | Shape::BatchEvents);
    let driving = std::sync::atomic::AtomicBool::new(events);
    let mut drained_at = None;
    let mut event_states = [0u64; 7];
    std::thread::scope(|s| {
        let sampler = a.samples().then(|| {
            let (sampling, every) = (&sampling, a.sample_every());
            s.spawn(move || sample::sample_until(sampling, start, every, || probe_in_process(rt)))
        });
        // Events: the runtime's event driver, on a thread of its own, moves
        // them to completion; the run ends when none is left active.
        let driver = events.then(|| {
            let driving = &driving;
            s.spawn(move || {
                let mut d = tally_engine::runtime::events::EventDriver::new(
                    tally_engine::event::Registry::with_builtins(),
                    tally_engine::event::EventConfig::default(),
                );
                while driving.load(Ordering::Acquire) {
                    if d.round(rt).actions == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        });
        let handles: Vec<_> = (0..a.clients * a.pipeline)
            .map(|stream| {
                let (remaining, spec, bar) = (&remaining, spec.clone(), &bar);
                s.spawn(move || {
                    let mut gen = Generator::new(spec, stream as u64);
                    let mut rng = Rng::new(a.seed ^ 0xBEEF ^ stream as u64);
                    let mut t = Tally::default();
                    let mut next = start;
                    while remaining.fetch_sub(a.batch as i64, Ordering::Relaxed) > 0
                        && Instant::now() < deadline
                    {
                        let t0 = match pace {
                            Some(iv) => {
                                let due = next;
                                next += iv;
                                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                    std::thread::sleep(wait);
                                }
                                due
                            }
                            None => Instant::now(),
                        };
                        if a.reads > 0.0 && rng.unit() < a.reads {
                            let _ = rt.account(random_wallet(&mut rng, a.accounts));
                            t.read(
                                t0.elapsed().as_micros() as u64,
                                start.elapsed().as_secs_f64(),
                            );
                            advance(bar, a.soak(), start, 1);
                            continue;
                        }
                        let batch = if events {
                            (0..a.batch).flat_map(|_| gen.event().1).collect()
                        } else {
                            gen.batch(a.batch)
                        };
                        let ids = ids_if(a.verify, &batch);
                        let kept = keep_first(&t, start, &batch);
                        match rt.submit(batch) {
                            Ok(ticket) => {
                                let outcomes = ticket.wait();
                                let at = start.elapsed().as_secs_f64();
                                t.submitted(t0.elapsed().as_micros() as u64, at, &outcomes, &ids);
                                if let Some(cmds) = kept {
                                    t.keep(cmds, &outcomes, retry::KEEP_PER_STREAM);
                                }
                            }
                            Err(e) => t.failed(e.code.as_str(), a.batch as u64),
                        }
                        advance(bar, a.soak(), start, a.batch as u64);
                    }
                    t
                })
            })
            .collect();
        for h in handles {
            if let Ok(t) = h.join() {
                total.merge(t);
            }
        }
        sampling.store(true, Ordering::Release);
        if let Some(sampler) = sampler {
            raw_samples = sampler.join().unwrap_or_default();
        }
        if let Some(driver) = driver {
            let until = Instant::now() + Duration::from_secs(120);
            loop {
                let (_, active) = rt.cut(|s| s.events().active().count());
                if active.iter().sum::<usize>() == 0 || Instant::now() > until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            drained_at = Some(start.elapsed().as_secs_f64());
            driving.store(false, Ordering::Release);
            let _ = driver.join();
            let (_, states) = rt.cut(|s| {
                let mut n = [0u64; 7];
                for e in s.events().iter() {
                    n[e.state as usize] += 1;
                }
                n
            });
            for n in states {
                for (t, x) in event_states.iter_mut().zip(n) {
                    *t += x;
                }
            }
        }
    });
    let seconds = drained_at.unwrap_or_else(|| start.elapsed().as_secs_f64());
    bar.finish_and_clear();
    let mut report = Report::new(&workload_name(a), target, &total, seconds, config_json(a));
    if events {
        // An operation is an event; it counts when it completed (the
        // latencies are those of submitting its commands, not of the event).
        use tally_engine::event::EventState;
        let completed = event_states[EventState::Completed as usize];
        let total_events: u64 = event_states.iter().sum();
        report.ops = completed;
        report.tps = completed as f64 / seconds.max(1e-9);
        eprintln!(
            "events: {completed} completed of {total_events} ({} compensated, {} still active) in {seconds:.2} s: {:.0} events/s",
            event_states[EventState::Compensated as usize],
            event_states[EventState::Running as usize] + event_states[EventState::Compensating as usize],
            report.tps
        );
        if a.verify && completed != total_events {
            return Err(format!(
                "{} events did not complete",
                total_events - completed
            ));
        }
    }
    report.offered_rate = a.rate;
    report.server_rss_mb = rss_mb(std::process::id());
    report.soak = summary(a, raw_samples, &total, &report);
    if (a.soak() || a.verify) && !total.first.is_empty() {
        let mut again = Vec::with_capacity(total.first.len());
        for chunk in total.first.chunks(RETRY_CHUNK) {
            let cmds: Vec<Command> = chunk.iter().map(|(c, _)| c.clone()).collect();
            match rt.submit(cmds) {
                Ok(ticket) => again.extend(ticket.wait()),
                Err(e) => return Err(format!("retrying the first commands: {}", e.message())),
            }
        }
        report.retried = Some(retry::check(&total.first, &again));
    }
    if let Some(d) = &durable {
        if let Some((p50, p99)) = p50_p99_us(d.stats.recent_syncs.lock().clone()) {
            (report.log_sync_p50_us, report.log_sync_p99_us) = (Some(p50), Some(p99));
        }
    }
    if a.verify {
        let sums = rt.balance_sums();
        let unbalanced: Vec<_> = sums.iter().filter(|(_, s)| *s != 0).collect();
        let shards = rt.shards();
        let mut per_shard: Vec<Vec<u128>> = vec![Vec::new(); shards];
        for id in &total.acked {
            per_shard[tally_engine::id::shard_of(*id, shards)].push(*id);
        }
        let mut missing = 0usize;
        for (shard, ids) in per_shard.into_iter().enumerate() {
            missing += rt
                .query(shard, move |s| {
                    ids.iter()
                        .filter(|id| {
                            !matches!(
                                s.id_status(IdSpace::Entry, **id),
                                IdStatus::Committed { .. }
                            )
                        })
                        .count()
                })
                .unwrap_or(usize::MAX / 2);
        }
        report.verified = Some(unbalanced.is_empty() && missing == 0);
        report.verify_detail = Some(format!(
            "{} acknowledged entries, {missing} not committed; currencies not summing to zero: {}",
            total.acked.len(),
            unbalanced.len()
        ));
    }
    if let Some(r) = runtime {
        r.shutdown();
    }
    if let Some(d) = durable {
        d.shutdown();
    }
    Ok((report, total))
}

/// A tallyd started for this run (stopped when dropped).
struct Spawned {
    child: std::process::Child,
    metrics: Arc<parking_lot::Mutex<Option<SocketAddr>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn spawn(a: &Args) -> Result<(Spawned, SocketAddr, PathBuf), String> {
    use std::io::BufRead;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tallyd = exe.with_file_name("tallyd");
    let dir = tempfile::tempdir_in(".").map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(&tallyd)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--snapshot-every",
            "0",
        ])
        .args([
            "--durability",
            if a.durability == Durability::None {
                "none"
            } else {
                "fsync"
            },
        ])
        .args(["--shards", &a.shards.to_string()])
        .args(&a.tallyd_arg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", tallyd.display()))?;
    let metrics = Arc::new(parking_lot::Mutex::new(None));
    if let Some(err) = child.stderr.take() {
        let m = metrics.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("metrics on http://").nth(1) {
                    *m.lock() = rest.split('/').next().and_then(|a| a.parse().ok());
                }
            }
        });
    }
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut addr = None;
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(x) = line.strip_prefix("tallyd listening on ") {
            addr = x.trim().parse().ok();
            break;
        }
    }
    let path = dir.path().to_path_buf();
    let spawned = Spawned {
        child,
        metrics,
        _dir: dir,
    };
    let addr = addr.ok_or("tallyd did not start")?;
    Ok((spawned, addr, path))
}

/// Log sync quantiles from a tallyd's metrics endpoint, in µs.
fn scrape_sync(addr: SocketAddr) -> Option<(u64, u64)> {
    let text = sample::scrape(addr)?;
    let q = |name: &str| -> Option<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with("tally_log_sync_seconds{") && l.contains(name))?;
        let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
        Some((v * 1e6) as u64)
    };
    Some((q("quantile=\"0.5\"")?, q("quantile=\"0.99\"")?))
}

fn over_quic(a: &Args) -> Result<(Report, Tally), String> {
    let (spawned, addr, data_dir) = match a.server {
        Some(addr) => (None, addr, a.data_dir.clone()),
        None if a.spawn => {
            let (s, addr, dir) = spawn(a)?;
            (Some(s), addr, dir)
        }
        None => return Err("give a target: --in-process, --server ADDR or --spawn".into()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // What the sampler reads: the spawned server's resident set and its
    // metrics page, or a running server's metrics page (--metrics).
    let (pid, metrics) = match &spawned {
        Some(s) => (Some(s.child.id()), s.metrics.clone()),
        None => (None, Arc::new(parking_lot::Mutex::new(a.metrics))),
    };
    let page = metrics.clone();
    let probe = move || {
        let mut p = metrics
            .lock()
            .and_then(sample::scrape)
            .map(|text| sample::parse_probe(&text))
            .unwrap_or_default();
        if let Some(pid) = pid {
            p.rss = tally_net::metrics::rss_of(&pid.to_string()).or(p.rss);
        }
        p
    };
    let mut result = rt.block_on(drive(a, addr, data_dir, probe, page));
    if let (Ok((report, _)), Some(s)) = (&mut result, &spawned) {
        report.target = "spawned-server".into();
        report.server_rss_mb = rss_mb(s.child.id());
        if let Some((p50, p99)) = s.metrics.lock().and_then(scrape_sync) {
            (report.log_sync_p50_us, report.log_sync_p99_us) = (Some(p50), Some(p99));
        }
    }
    drop(spawned);
    result
}

async fn drive(
    a: &Args,
    addr: SocketAddr,
    data_dir: PathBuf,
    probe: impl Fn() -> sample::Probe + Send + 'static,
    metrics: Arc<parking_lot::Mutex<Option<SocketAddr>>>,
) -> Result<(Report, Tally), String> {
    // The metrics page, read off the runtime's threads.
    let read_page = move || {
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || {
            let addr = *metrics.lock();
            addr.and_then(sample::scrape)
                .map(|text| stages::parse(&text))
        })
    };
    let files = tally_net::tls::dev_client_files(&data_dir);
    let mut cc = ClientConfig::new(addr, files);
    cc.timeout = Duration::from_secs(60);
    cc.streams = a.pipeline.clamp(1, 8);
    let first = Client::connect(cc.clone())
        .await
        .map_err(|e| e.to_string())?;
    let before = first.status().await.map_err(|e| e.to_string())?.next_seq;
    for chunk in setup(a.accounts, 4_096) {
        let outcomes = first.submit_batch(chunk).await.map_err(|e| e.to_string())?;
        if let Some(bad) = outcomes.iter().find(|o| !o.is_ok()) {
            return Err(format!("setting up the ledger failed: {bad:?}"));
        }
    }
    let spec = spec(a);
    let remaining = Arc::new(AtomicI64::new(a.count() as i64));
    let bar = progress(a);
    let deadline = Instant::now() + a.run_for();
    let mut clients = vec![first];
    for _ in 1..a.clients {
        clients.push(
            Client::connect(cc.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let pace = interval(a);
    let page_before = read_page().await.ok().flatten();
    let start = Instant::now();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = a.samples().then(|| {
        let (sampling, every) = (sampling.clone(), a.sample_every());
        std::thread::spawn(move || sample::sample_until(&sampling, start, every, probe))
    });
    let soak = a.soak();
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for p in 0..a.pipeline {
            let (client, remaining, bar) = (client.clone(), remaining.clone(), bar.clone());
            let stream = (c * a.pipeline + p) as u64;
            let mut gen = Generator::new(spec.clone(), stream);
            let mut rng = Rng::new(a.seed ^ 0xBEEF ^ stream);
            let (batch, reads, accounts, verify) = (a.batch, a.reads, a.accounts, a.verify);
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let mut next = tokio::time::Instant::from_std(start);
                while remaining.fetch_sub(batch as i64, Ordering::Relaxed) > 0
                    && Instant::now() < deadline
                {
                    let t0 = match pace {
                        Some(iv) => {
                            let due = next;
                            next += iv;
                            tokio::time::sleep_until(due).await;
                            due.into_std()
                        }
                        None => Instant::now(),
                    };
                    if reads > 0.0 && rng.unit() < reads {
                        match client.account(random_wallet(&mut rng, accounts)).await {
                            Ok(_) => t.read(
                                t0.elapsed().as_micros() as u64,
                                start.elapsed().as_secs_f64(),
                            ),
                            Err(e) => t.failed(e.code.as_str(), 1),
                        }
                        advance(&bar, soak, start, 1);
                        continue;
                    }
                    let cmds = gen.batch(batch);
                    let ids = ids_if(verify, &cmds);
                    let kept = keep_first(&t, start, &cmds);
                    match client.submit_batch(cmds).await {
                        Ok(outcomes) => {
                            let at = start.elapsed().as_secs_f64();
                            t.submitted(t0.elapsed().as_micros() as u64, at, &outcomes, &ids);
                            if let Some(cmds) = kept {
                                t.keep(cmds, &outcomes, retry::KEEP_PER_STREAM);
                            }
                        }
                        Err(e) => t.failed(e.code.as_str(), batch as u64),
                    }
                    advance(&bar, soak, start, batch as u64);
                }
                t
            }));
        }
    }
    let mut total = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            total.merge(t);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    sampling.store(true, Ordering::Release);
    let raw_samples = match sampler {
        Some(sampler) => tokio::task::spawn_blocking(move || sampler.join().unwrap_or_default())
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    bar.finish_and_clear();
    let mut report = Report::new(&workload_name(a), "server", &total, seconds, config_json(a));
    report.offered_rate = a.rate;
    report.soak = summary(a, raw_samples, &total, &report);
    if let (Some(before), Ok(Some(after))) = (page_before, read_page().await) {
        report.stages = Some(stages::between(&before, &after));
    }
    if (a.soak() || a.verify) && !total.first.is_empty() {
        let mut again = Vec::with_capacity(total.first.len());
        for chunk in total.first.chunks(RETRY_CHUNK) {
            let cmds: Vec<Command> = chunk.iter().map(|(c, _)| c.clone()).collect();
            match clients[0].submit_batch(cmds).await {
                Ok(outcomes) => again.extend(outcomes),
                Err(e) => return Err(format!("retrying the first commands: {e}")),
            }
        }
        report.retried = Some(retry::check(&total.first, &again));
    }
    if a.verify {
        let (ok, detail) = verify_server(&clients[0], before, &total.acked).await?;
        report.verified = Some(ok);
        report.verify_detail = Some(detail);
    }
    for c in &clients {
        c.close().await;
    }
    Ok((report, total))
}

/// Every acknowledged entry is in the server's log as committed (read back
/// through the feed from where this run began), and every currency sums to
/// zero (the server's verifier).
async fn verify_server(
    c: &Client,
    from_seq: u64,
    acked: &[u128],
) -> Result<(bool, String), String> {
    let end = c.status().await.map_err(|e| e.to_string())?.durable_seq;
    let mut committed: HashSet<u128> = HashSet::with_capacity(acked.len());
    let mut feed = c
        .subscribe(from_seq.max(1))
        .await
        .map_err(|e| e.to_string())?;
    let seen = AtomicU64::new(0);
    while feed.next_seq() <= end {
        let Some(r) = feed.next().await.map_err(|e| e.to_string())? else {
            break;
        };
        seen.fetch_add(1, Ordering::Relaxed);
        if r.outcome == tally_net::message::COMMITTED {
            committed.extend(entry_ids(&r.command));
        }
        if matches!(r.command, Command::Tick) {
            continue;
        }
    }
    let missing = acked.iter().filter(|id| !committed.contains(id)).count();
    let v = c.verify(false).await.map_err(|e| e.to_string())?;
    let ok = missing == 0 && v.clean;
    Ok((
        ok,
        format!(
            "{} acknowledged entries, {missing} missing from the log's {} records; server verifier {}",
            acked.len(),
            seen.load(Ordering::Relaxed),
            if v.clean { "clean".to_string() } else { format!("found {} error(s)", v.errors.len()) }
        ),
    ))
}
