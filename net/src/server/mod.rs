//! The server: a quinn endpoint in front of a durable ledger. Each connection
//! is mutually authenticated; each bidirectional stream carries pipelined
//! requests (answered as they complete, matched by request id) or, when its
//! first request is `Subscribe`, becomes a feed of records.
//!
//! Writes go to the runtime without blocking the async workers: `try_submit`
//! sequences a batch at once (or answers `busy`), and the thread that
//! completes the batch wakes the request. Events are moved forward by the
//! event driver thread (`tally_engine::runtime::events`). Queries that
//! wait on shards or read the log run on the blocking pool.

use crate::frame::{self, FrameError, KIND_REQUEST, KIND_RESPONSE};
use crate::history::History;
use crate::limits::*;
use crate::message::*;
use crate::metrics::{Metrics, Snapshot};
use crate::protocol::codec::{decode_request_measured, Decoded};
use crate::protocol::convert::{statement_line, wire_record};
use crate::protocol::encode_response;

mod backup;
mod dispatch;
mod endpoint;
mod feed;
mod scrape;
mod service;
mod stream;

use crate::tls::{self, Role, TlsFiles};
use dispatch::*;
use endpoint::*;
use feed::*;
use parking_lot::RwLock;
use scrape::*;
pub use service::{Service, Session};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::*;
use tally_engine::codec::Encoded;
use tally_engine::event::{EventCommand, EventConfig, Registry};
use tally_engine::runtime::events::{Access, DriverHandle};
use tally_engine::runtime::{Runtime, Settled};
use tally_engine::{Command, ErrorCode, IdSpace, IdStatus, Outcome};
use tally_wal::{Durability, Durable, DurableConfig, Recovery};
use tokio::sync::{mpsc, oneshot};

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub shards: usize,
    pub durability: Durability,
    /// Where to serve metrics (None: not at all).
    pub metrics: Option<SocketAddr>,
    /// CA, certificate and key; `None` uses (and on first start creates) the
    /// development certificates in `DATA_DIR/certs`.
    pub tls: Option<TlsFiles>,
    pub snapshot_every: Option<Duration>,
    /// Commands in flight before writes are answered `busy`.
    pub max_inflight: usize,
    /// Run the verifier (sampled) this often in the background.
    pub verify_every: Option<Duration>,
    /// Executors of event steps, by type (the built-ins by default; add your own).
    pub registry: Registry,
    /// Settlement and FX position accounts for the built-in executors.
    pub events: EventConfig,
    /// Serve with the development certificates on a non-loopback address
    /// (`tallyd --dev-certs`). Without it, `start` refuses: anyone who can
    /// read the data directory's `certs/` could mint a writer.
    pub dev_certs: bool,
    /// The cold tier for id records (`tallyd --memory-budget`, `--hot-ids`);
    /// `None`: every id record stays in memory (a data directory that has a
    /// cold tier gets one anyway).
    pub cold: Option<tally_wal::ColdTier>,
    /// Entries the history index keeps in memory before it writes them to
    /// DATA_DIR/history as a run (`tallyd --history-tail`, or from
    /// `--memory-budget`; 0: all in memory).
    pub history_tail: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./tally-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            shards: 1,
            durability: Durability::Fsync,
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9400))),
            tls: None,
            snapshot_every: Some(Duration::from_secs(60)),
            max_inflight: tally_engine::limits::MAX_INFLIGHT_COMMANDS,
            verify_every: None,
            registry: Registry::with_builtins(),
            events: EventConfig::default(),
            dev_certs: false,
            cold: None,
            history_tail: tally_wal::history::DEFAULT_TAIL_ENTRIES,
        }
    }
}

struct State {
    durable: RwLock<Option<Durable>>,
    history: Arc<History>,
    metrics: Metrics,
    in_progress: AtomicUsize,
    connections: AtomicUsize,
    stopping: AtomicBool,
    shards: usize,
    hotspots: parking_lot::Mutex<crate::hotspot::Hotspots>,
    last_verify: parking_lot::Mutex<Option<(u64, crate::verify::VerifyReport)>>,
    registry: Registry,
    /// The accounts the event executors were given (checked when a step is
    /// added and when its event starts: `not_configured`).
    events: EventConfig,
    driver: parking_lot::Mutex<Option<DriverHandle>>,
    /// Handshakes in progress per source address.
    handshakes: parking_lot::Mutex<hashbrown::HashMap<std::net::IpAddr, usize>>,
    /// Open connections per client certificate (a hash of it).
    identities: parking_lot::Mutex<hashbrown::HashMap<u128, usize>>,
    /// The history's next sequence, for feeds to wait on.
    history_seq: Arc<tokio::sync::watch::Sender<u64>>,
    /// Heavy requests running server-wide ([`MAX_HEAVY_AT_ONCE`]).
    heavy: Arc<tokio::sync::Semaphore>,
    /// Online backups in progress.
    backups: parking_lot::Mutex<backup::Backups>,
    /// The last rendering of the metrics page.
    scrape: tokio::sync::Mutex<Option<(Instant, Arc<String>)>>,
}

/// A running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What the endpoint serves (taken at shutdown).
    service: Option<Service>,
    /// Whether this start created the development certificates.
    pub created_certs: bool,
    pub recovery: Recovery,
}

fn err(code: ErrorCode, detail: impl Into<String>) -> Response {
    Response::Error(WireError::new(code, detail))
}

impl Server {
    /// Opens the data directory (recovering it) as a [`Service`], binds the
    /// endpoint and the metrics listener, and starts serving.
    pub async fn start(config: ServerConfig) -> Result<Server, String> {
        crate::private::create_dir(&config.data_dir)?;
        let (files, created_certs) = match &config.tls {
            Some(f) => (f.clone(), false),
            None => {
                if !config.listen.ip().is_loopback() && !config.dev_certs {
                    return Err(format!(
                        "refusing to serve {} with the development certificates: they are for loopback addresses only. Pass --ca/--cert/--key (client certificates with OU {} are writers), or --dev-certs to accept the risk",
                        config.listen,
                        tls::WRITER_OU
                    ));
                }
                let created = tls::ensure_dev_certs(&config.data_dir)?;
                (tls::dev_server_files(&config.data_dir), created)
            }
        };
        let server_config = tls::server_config(&files)?;
        let service = Service::open(&config).await?;
        let endpoint = quinn::Endpoint::server(server_config, config.listen)
            .map_err(|e| format!("listening on {}: {e}", config.listen))?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        let state = service.state.clone();
        let mut tasks = Vec::new();
        let mut metrics_addr = None;
        if let Some(m) = config.metrics {
            match tokio::net::TcpListener::bind(m).await {
                Ok(l) => {
                    metrics_addr = l.local_addr().ok();
                    tasks.push(tokio::spawn(serve_metrics(state.clone(), l)));
                }
                Err(e) => tracing::warn!("metrics not served: binding {m}: {e}"),
            }
        }
        tasks.push(tokio::spawn(accept(state.clone(), endpoint.clone())));
        if let Some(every) = config.verify_every {
            tasks.push(tokio::spawn(verify_periodically(state.clone(), every)));
        }
        let recovery = service.recovery.clone();
        Ok(Server {
            endpoint,
            addr,
            metrics_addr,
            state,
            tasks,
            service: Some(service),
            created_certs,
            recovery,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Graceful shutdown: refuse new connections and writes, let requests
    /// in progress finish (up to `DRAIN_TIMEOUT`), close connections, then
    /// stop the ledger, which syncs the log.
    pub async fn shutdown(mut self) {
        let Some(service) = self.service.take() else {
            return;
        };
        service.stop_accepting();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.state.in_progress.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.endpoint.close(0u32.into(), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        service.shutdown().await;
    }
}

/// The file that says from which sequence this data directory's event ids
/// are all in the driver's reserved namespace.
pub const NAMESPACE_FILE: &str = "id-namespace";

/// The first sequence number logged by a version that derives event ids in
/// the reserved namespace: read from `DATA_DIR/id-namespace`, or written
/// there as `next` (the sequence this start will log next) on the first
/// start of such a version. Chains logged before it may carry ids an earlier
/// version derived; later ones under such ids are clients' own.
fn namespace_epoch(data_dir: &std::path::Path, next: u64) -> Result<u64, String> {
    let path = data_dir.join(NAMESPACE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .find_map(|l| l.strip_prefix("reserved event ids from sequence "))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("{}: not a sequence number: {text:?}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!("reserved event ids from sequence {next}\n");
            crate::private::write_new(&path, text.as_bytes(), crate::private::PRIVATE_FILE_MODE)?;
            Ok(next)
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Waits until the log is durable up to everything sequenced so far, so that
/// a read taken before this call shows nothing a crash could still erase
/// (the isolation rule in ARCHITECTURE.md).
fn wait_durable(d: &Durable) -> Result<(), WireError> {
    let wait = |seq, deadline| d.stats.wait_durable(seq, deadline);
    durable_after(d.runtime(), wait, DURABLE_READ_TIMEOUT).map_err(|upto| {
        WireError::new(
            ErrorCode::Unavailable,
            format!("the log is not durable up to sequence {upto} yet; retry"),
        )
    })
}

/// Waits, through `wait(seq, deadline)` (true once the log is durable up to
/// `seq`), until the log covers every command `rt` has sequenced by now, or
/// `timeout` passes (`Err` with the sequence waited for). Called after a
/// read: whatever the read saw was sequenced before this call looks at
/// `next_seq`.
pub fn durable_after(
    rt: &Runtime,
    wait: impl Fn(u64, Instant) -> bool,
    timeout: Duration,
) -> Result<(), u64> {
    let upto = rt.next_seq().saturating_sub(1);
    if upto == 0 || wait(upto, Instant::now() + timeout) {
        Ok(())
    } else {
        Err(upto)
    }
}

fn stopping() -> WireError {
    WireError::new(ErrorCode::ShuttingDown, "")
}

/// Runs the (sampled) verifier every `every`, logging the verdict and
/// keeping it for the metrics.
async fn verify_periodically(state: Arc<State>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if state.stopping.load(Ordering::Acquire) {
            return;
        }
        let Ok(report) = run_verify(&state, false).await else {
            return;
        };
        if report.clean {
            tracing::info!(
                sequence = report.cut_sequence,
                "verify at sequence {}: clean ({} accounts, {} checked against the log, longest shard pause {} µs)",
                report.cut_sequence, report.accounts, report.accounts_checked_against_log, report.max_shard_pause_us
            );
        } else {
            tracing::error!(
                sequence = report.cut_sequence,
                "verify at sequence {}: {} ERROR(S)",
                report.cut_sequence,
                report.errors.len()
            );
            for e in &report.errors {
                tracing::error!(kind = %e.kind, "verify: {}: {}", e.kind, e.message);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *state.last_verify.lock() = Some((now, report));
    }
}

async fn run_verify(
    state: &Arc<State>,
    full: bool,
) -> Result<crate::verify::VerifyReport, Response> {
    let history = state.history.clone();
    with_durable(state, move |d| {
        crate::verify::verify(d.runtime(), &history, &d.stats, full)
    })
    .await
}

/// Runs `f` with the runtime on the blocking pool, and answers once the log
/// is durable up to what `f` saw.
async fn with_runtime<R: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&Runtime) -> R + Send + 'static,
) -> Result<R, Response> {
    with_durable(state, move |d| f(d.runtime())).await
}

/// Runs `f` with the open ledger on the blocking pool, and answers once the
/// log is durable up to what `f` saw (every read of ledger state goes here).
async fn with_durable<R: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&Durable) -> R + Send + 'static,
) -> Result<R, Response> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let guard = s.durable.read();
        let d = guard.as_ref().ok_or_else(stopping)?;
        let r = f(d);
        wait_durable(d)?;
        Ok(r)
    })
    .await
    .unwrap_or_else(|_| Err(stopping()))
    .map_err(Response::Error)
}

/// Runs `f` on the history on the blocking pool, once it has indexed
/// everything durable when the request came (a client sees its own
/// acknowledged writes).
async fn with_history<R: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&History) -> Result<R, tally_wal::Problem> + Send + 'static,
) -> Result<R, Response> {
    let h = state.history.clone();
    let durable = state
        .durable
        .read()
        .as_ref()
        .map(|d| d.stats.durable_seq.load(Ordering::Acquire))
        .ok_or_else(|| Response::Error(stopping()))?;
    match tokio::task::spawn_blocking(move || {
        if !h.wait_indexed(durable, Instant::now() + DURABLE_READ_TIMEOUT) {
            let msg = format!("the history has not reached sequence {durable} yet; retry");
            return Ok(Err(err(ErrorCode::Unavailable, msg)));
        }
        f(&h).map(Ok)
    })
    .await
    {
        Ok(Ok(Ok(r))) => Ok(r),
        Ok(Ok(Err(refused))) => Err(refused),
        Ok(Err(p)) => Err(err(ErrorCode::Unavailable, format!("reading the log: {p}"))),
        Err(e) => Err(err(ErrorCode::Unavailable, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_epoch_is_written_once_and_then_read() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(namespace_epoch(t.path(), 17), Ok(17));
        // A later start keeps the first start's epoch.
        assert_eq!(namespace_epoch(t.path(), 90), Ok(17));
        std::fs::write(t.path().join(NAMESPACE_FILE), "garbage").unwrap();
        assert!(namespace_epoch(t.path(), 90)
            .unwrap_err()
            .contains("not a sequence"));
    }
}
