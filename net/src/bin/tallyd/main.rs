//! `tallyd`: the Tally server. With no flags it keeps its data in
//! `./tally-data`, listens on 127.0.0.1:7400, serves metrics on
//! 127.0.0.1:9400, and creates development certificates on first start
//! (served on loopback addresses only, unless `--dev-certs`). Settings can
//! also come from a file (`--config`, see `config.rs`); the log is
//! `log.rs`.

#![forbid(unsafe_code)]

mod config;
mod log;
mod memory;
mod pin;

use clap::{CommandFactory, FromArgMatches, Parser};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tally_net::server::{Server, ServerConfig};
use tally_net::tls::TlsFiles;
use tally_wal::Durability;

#[derive(Parser, Debug)]
#[command(
    name = "tallyd",
    version,
    about = "The Tally ledger server (QUIC, mutual TLS)"
)]
struct Args {
    /// Read settings from this TOML file: each key is a flag's long name
    /// (data-dir = "/var/lib/tally", shards = 2, dev-certs = true,
    /// settlement-account = ["USD=9000"]). Flags given here override it.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Print the effective configuration (flags, file and defaults) as a
    /// file --config reads back, and exit.
    #[arg(long)]
    print_config: bool,
    /// Which log events to show: a level (error, warn, info, debug, trace,
    /// off) or target=level directives (info,tally_wal=debug). Given here it
    /// overrides RUST_LOG, which overrides the configuration file.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// How log lines are written on stderr: text, or json (one object per
    /// line: timestamp, level, target, message and fields).
    #[arg(long, value_enum, default_value = "text")]
    log_format: log::LogFormat,
    /// Where the log, snapshots and development certificates live.
    #[arg(long, default_value = "./tally-data")]
    data_dir: PathBuf,
    /// UDP address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Shard threads (a data directory keeps the count it was created with).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// fsync: acknowledge after the log is on stable storage. none: for
    /// benchmarks only (a machine crash can lose acknowledged writes).
    #[arg(long, default_value = "fsync")]
    durability: Durability,
    /// Where to serve Prometheus metrics over HTTP, or "off".
    #[arg(long, default_value = "127.0.0.1:9400")]
    metrics: String,
    /// CA certificate (PEM) that client certificates must be signed by.
    #[arg(long, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// The server's certificate chain (PEM).
    #[arg(long, requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
    /// Serve with the development certificates even on a non-loopback
    /// address. Anyone who can read DATA_DIR/certs can then mint a writer
    /// certificate: for trials on a private network only.
    #[arg(long)]
    dev_certs: bool,
    /// Commands in flight (accepted and not yet durable, or durable and not
    /// yet indexed by the history) before writes are answered `busy`.
    #[arg(long, default_value_t = tally_engine::limits::MAX_INFLIGHT_COMMANDS)]
    max_inflight: usize,
    /// Run the consistency verifier (sampled) this often in the background,
    /// e.g. 5m; its verdict goes to stderr and to the metrics.
    #[arg(long)]
    verify_every: Option<String>,
    /// Seconds between snapshots (0: none).
    #[arg(long, default_value_t = 60)]
    snapshot_every: u64,
    /// The settlement (external) account of a currency, for the event
    /// executors wallet.deposit and wallet.withdrawal: CUR=ACCOUNT_ID
    /// (repeatable).
    #[arg(long = "settlement-account", value_name = "CUR=ID")]
    settlement_account: Vec<String>,
    /// The FX position account of a currency, for wallet.exchange:
    /// CUR=ACCOUNT_ID (repeatable).
    #[arg(long = "fx-account", value_name = "CUR=ID")]
    fx_account: Vec<String>,
    /// Threads serving the network (QUIC, TLS, requests). Default: the
    /// machine's cores less one per shard and one for the log writer, at
    /// least 1, so the busy threads do not outnumber the cores.
    #[arg(long)]
    workers: Option<usize>,
    /// How the network threads are run: `multi-thread` (tokio's work
    /// stealing over --workers threads) or `current-thread` (all of the
    /// network on the main thread; --workers is then ignored).
    #[arg(long, value_enum, default_value_t = RuntimeKind::MultiThread)]
    runtime: RuntimeKind,
    /// Keep the busy threads on fixed cores: shard i on core i, the log
    /// writer and syncer on the next, the network on the cores left (or
    /// beside the log when none are left). Off by default.
    #[arg(long)]
    pin: bool,
    /// Memory for the ledger's state, e.g. 512MiB or 4GiB. Given (or with
    /// --hot-ids), a quarter of it holds recent id records and older ones
    /// are kept on disk in DATA_DIR/cold, looked up before a batch runs.
    /// Not given: every id record stays in memory (unless the data
    /// directory already has a cold tier). Another quarter bounds the
    /// history index's entries in memory (older ones are in DATA_DIR/history
    /// whether or not a budget is given).
    #[arg(long, value_name = "SIZE")]
    memory_budget: Option<String>,
    /// History entries (postings, references, user data) kept in memory
    /// before they are written to DATA_DIR/history, instead of what
    /// --memory-budget gives (default 2097152; 0 keeps all in memory).
    #[arg(long, value_name = "N")]
    history_tail: Option<usize>,
    /// Id records each shard keeps in memory per window (up to two windows
    /// are held), instead of what --memory-budget gives.
    #[arg(long, value_name = "N")]
    hot_ids: Option<usize>,
}

/// The async runtime that serves the network (see `--runtime`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RuntimeKind {
    MultiThread,
    CurrentThread,
}

/// The default number of network threads (see `--workers`).
fn default_workers(shards: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(shards + 1).max(1)
}

/// Parses `CUR=ID` pairs (exit 2 with a clear message when malformed).
fn accounts(flag: &str, list: &[String]) -> std::collections::BTreeMap<String, u128> {
    let mut map = std::collections::BTreeMap::new();
    for item in list {
        let parsed = item.split_once('=').and_then(|(c, id)| {
            let code = tally_engine::CurrencyCode::parse(c.trim()).ok()?;
            let id = tally_engine::id::parse_id(id).ok()?;
            Some((code.as_str().to_string(), id))
        });
        match parsed {
            Some((c, id)) => {
                map.insert(c, id);
            }
            None => {
                tracing::error!("--{flag} wants CUR=ACCOUNT_ID (e.g. USD=9000), not {item:?}");
                std::process::exit(2);
            }
        }
    }
    map
}

/// The command line, with the configuration file's keys before it, parsed
/// once; and the command line alone (to know what it set itself).
fn parse() -> (Args, clap::ArgMatches, clap::ArgMatches) {
    let cmd = Args::command();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let given = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv)
        .unwrap_or_default();
    let mut full: Vec<OsString> = argv.iter().take(1).cloned().collect();
    // (`given` is empty when the command line alone does not parse, e.g.
    // `--help`: the full parse below reports that.)
    if let Ok(Some(path)) = given.try_get_one::<PathBuf>("config") {
        match config::file_args(&cmd, &given, path) {
            Ok(a) => full.extend(a),
            Err(e) => {
                eprintln!("tallyd: --config {e}");
                std::process::exit(2);
            }
        }
    }
    full.extend(argv.iter().skip(1).cloned());
    let matches = cmd.try_get_matches_from(full).unwrap_or_else(|e| e.exit());
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (args, matches, given)
}

/// Installs the log (exit 2 on a bad filter).
fn start_log(args: &Args, given: &clap::ArgMatches) {
    let cli = (given.value_source("log_level") == Some(clap::parser::ValueSource::CommandLine))
        .then_some(args.log_level.as_str());
    let spec = log::filter_spec(cli, std::env::var("RUST_LOG").ok(), &args.log_level);
    let started = log::parse_filter(&spec).and_then(|f| log::init(f, args.log_format));
    if let Err(e) = started {
        eprintln!("tallyd: {e}");
        std::process::exit(2);
    }
}

/// The log's segments and the runs of the cold tier and the history keep
/// their files open (runs are never merged: one descriptor each), so the
/// soft limit on open files is raised to the hard one; a server that still
/// hits it fails those opens with an error naming the file.
fn raise_open_files() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open files limit: {n}"),
        Err(e) => tracing::warn!("could not raise the open files limit: {e}"),
    }
}

fn main() {
    let (args, matches, given) = parse();
    if args.print_config {
        print!("{}", config::print(&Args::command(), &matches));
        std::process::exit(0);
    }
    start_log(&args, &given);
    raise_open_files();
    let metrics = match args.metrics.as_str() {
        "off" | "none" => None,
        m => match m.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("--metrics must be an address like 127.0.0.1:9400 or off: {e}");
                std::process::exit(2);
            }
        },
    };
    let tls = match (args.ca, args.cert, args.key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        _ => None,
    };
    let verify_every = match args.verify_every.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => Some(d),
        Some(Ok(_)) => None,
        Some(Err(e)) => {
            tracing::error!("--verify-every must be a duration like 30s or 5m: {e}");
            std::process::exit(2);
        }
    };
    // The cold tier is opt-in for now (docs/PERFORMANCE.md, "The cold
    // tier of id records": its lookups cost throughput on small machines).
    let budget = match args.memory_budget.as_deref().map(memory::parse_size) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            tracing::error!("--memory-budget: {e}");
            std::process::exit(2);
        }
    };
    let window = match (args.hot_ids, budget) {
        (Some(0), _) => {
            tracing::error!("--hot-ids must be at least 1");
            std::process::exit(2);
        }
        (Some(n), _) => Some(n),
        (None, Some(b)) => Some(memory::hot_ids(b, args.shards)),
        (None, None) => None,
    };
    let history_tail = match (args.history_tail, budget) {
        (Some(n), _) => n,
        (None, Some(b)) => memory::history_tail(b),
        (None, None) => tally_wal::history::DEFAULT_TAIL_ENTRIES,
    };
    let config = ServerConfig {
        history_tail,
        cold: window.map(|window| tally_wal::ColdTier {
            window,
            ..tally_wal::ColdTier::default()
        }),
        verify_every,
        dev_certs: args.dev_certs,
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        shards: args.shards,
        durability: args.durability,
        metrics,
        tls,
        max_inflight: args.max_inflight,
        snapshot_every: (args.snapshot_every > 0).then(|| Duration::from_secs(args.snapshot_every)),
        registry: tally_engine::event::Registry::with_builtins(),
        events: tally_engine::event::EventConfig {
            settlement: accounts("settlement-account", &args.settlement_account),
            fx_position: accounts("fx-account", &args.fx_account),
            // Set by the server from the data directory (see server::start).
            legacy_ids_before: 0,
        },
    };
    let workers = match args.workers {
        Some(0) => {
            tracing::error!("--workers must be at least 1");
            std::process::exit(2);
        }
        Some(n) => n,
        None => default_workers(args.shards),
    };
    let built = match args.runtime {
        RuntimeKind::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
        RuntimeKind::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let pin = args.pin.then_some(args.shards);
    let code = rt.block_on(run(config, pin));
    std::process::exit(code);
}

async fn run(config: ServerConfig, pin: Option<usize>) -> i32 {
    let data_dir = config.data_dir.clone();
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    if server.created_certs {
        let d = tally_net::tls::dev_dir(&data_dir);
        tracing::info!(
            dir = %d.display(),
            "created a development CA and certificates in {} (ca.pem; server.pem/server.key; client.pem/client.key for writers, OU tally-writer; reader.pem/reader.key read-only). For production pass --ca/--cert/--key.",
            d.display()
        );
    }
    tracing::info!("{}", server.recovery.describe());
    if let Some(shards) = pin {
        // Every long-lived thread has started: the shards, the log and the
        // runtime's workers (the main thread names the current-thread one).
        match pin::pin_threads(shards) {
            Ok(pinned) => tracing::info!("pinned: {}", pinned.join("; ")),
            Err(e) => tracing::warn!("--pin: {e}; threads left unpinned"),
        }
    }
    if let Some(m) = server.metrics_addr() {
        tracing::info!("metrics on http://{m}/metrics (status page: http://{m}/)");
    }
    println!("tallyd listening on {}", server.local_addr());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    tracing::info!("shutting down: draining requests and syncing the log");
    server.shutdown().await;
    tracing::info!("stopped cleanly");
    0
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
