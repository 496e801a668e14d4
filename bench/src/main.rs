//! `tally-bench`: drives Tally with a closed-loop load and reports committed
//! operations per second and request latency percentiles.
//!
//! Targets: `--in-process` (the sharded engine alone), `--in-process --wal
//! DIR` (engine and durable log), `--server ADDR` (a running tallyd), or
//! `--spawn` (starts a tallyd on a temporary data directory and stops it).

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_bench::report::{Report, Tally};
use tally_bench::workload::{setup, Shape, Transfers};
use tally_engine::runtime::{Runtime, RuntimeConfig};
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
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Concurrent connections (or driver threads in process).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests each client keeps in flight.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Operations per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Stop after this many operations...
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// For targets this run starts.
    #[arg(long, default_value = "fsync")]
    durability: Durability,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// One JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    let result = if args.in_process {
        in_process(&args)
    } else {
        over_quic(&args)
    };
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => fail(&e.to_string()),
                }
            } else {
                println!("{}", report.table());
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("tally-bench: {msg}");
    std::process::exit(1)
}

fn config_json(a: &Args) -> serde_json::Value {
    serde_json::json!({
        "accounts": a.accounts, "clients": a.clients, "pipeline": a.pipeline, "batch": a.batch,
        "count": a.count, "duration_limit_s": a.duration, "durability": format!("{:?}", a.durability).to_lowercase(),
        "shards": a.shards, "seed": a.seed,
    })
}

fn workload_name(a: &Args) -> String {
    format!("{:?}", a.workload).to_lowercase()
}

/// The engine (and optionally the log) in this process; one thread per
/// client x pipeline slot, each submitting a batch and waiting for it.
fn in_process(a: &Args) -> Result<Report, String> {
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
    let remaining = AtomicI64::new(a.count as i64);
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let start = Instant::now();
    let mut total = Tally::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.clients * a.pipeline)
            .map(|stream| {
                let remaining = &remaining;
                s.spawn(move || {
                    let mut gen = Transfers::new(a.workload, a.accounts, a.seed, stream as u64);
                    let mut t = Tally::default();
                    while remaining.fetch_sub(a.batch as i64, Ordering::Relaxed) > 0
                        && Instant::now() < deadline
                    {
                        let batch = gen.batch(a.batch);
                        let t0 = Instant::now();
                        match rt.submit(batch) {
                            Ok(ticket) => {
                                let outcomes = ticket.wait();
                                t.request(t0.elapsed().as_micros() as u64, &outcomes);
                            }
                            Err(e) => t.failed(e.code.as_str(), a.batch as u64),
                        }
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
    });
    let seconds = start.elapsed().as_secs_f64();
    if let Some(r) = runtime {
        r.shutdown();
    }
    if let Some(d) = durable {
        d.shutdown();
    }
    Ok(Report::new(
        &workload_name(a),
        target,
        &total,
        seconds,
        config_json(a),
    ))
}

/// A tallyd started for this run (stopped when dropped).
struct Spawned {
    child: std::process::Child,
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
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(&tallyd)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
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
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", tallyd.display()))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut addr = None;
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(x) = line.strip_prefix("tallyd listening on ") {
            addr = x.trim().parse().ok();
            break;
        }
    }
    let path = dir.path().to_path_buf();
    let spawned = Spawned { child, _dir: dir };
    let addr = addr.ok_or("tallyd did not start")?;
    Ok((spawned, addr, path))
}

fn over_quic(a: &Args) -> Result<Report, String> {
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
    let report = rt.block_on(drive(a, addr, data_dir));
    drop(spawned);
    report
}

async fn drive(a: &Args, addr: SocketAddr, data_dir: PathBuf) -> Result<Report, String> {
    let files = tally_net::tls::dev_client_files(&data_dir);
    let mut cc = ClientConfig::new(addr, files);
    cc.timeout = Duration::from_secs(60);
    cc.streams = a.pipeline.clamp(1, 8);
    let first = Client::connect(cc.clone())
        .await
        .map_err(|e| e.to_string())?;
    for chunk in setup(a.accounts, 4_096) {
        let outcomes = first.submit_batch(chunk).await.map_err(|e| e.to_string())?;
        if let Some(bad) = outcomes.iter().find(|o| !o.is_ok()) {
            return Err(format!("setting up the ledger failed: {bad:?}"));
        }
    }
    let remaining = Arc::new(AtomicI64::new(a.count as i64));
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let mut clients = vec![first];
    for _ in 1..a.clients {
        clients.push(
            Client::connect(cc.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for p in 0..a.pipeline {
            let (client, remaining) = (client.clone(), remaining.clone());
            let mut gen =
                Transfers::new(a.workload, a.accounts, a.seed, (c * a.pipeline + p) as u64);
            let batch = a.batch;
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                while remaining.fetch_sub(batch as i64, Ordering::Relaxed) > 0
                    && Instant::now() < deadline
                {
                    let cmds = gen.batch(batch);
                    let t0 = Instant::now();
                    match client.submit_batch(cmds).await {
                        Ok(outcomes) => t.request(t0.elapsed().as_micros() as u64, &outcomes),
                        Err(e) => t.failed(e.code.as_str(), batch as u64),
                    }
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
    for c in &clients {
        c.close().await;
    }
    let target = if a.server.is_some() {
        "server"
    } else {
        "spawned-server"
    };
    Ok(Report::new(
        &workload_name(a),
        target,
        &total,
        seconds,
        config_json(a),
    ))
}
