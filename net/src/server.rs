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
use crate::history::{wire_record, History};
use crate::limits::*;
use crate::message::*;
use crate::metrics::{Metrics, Snapshot};
use crate::tls::{self, Role, TlsFiles};
use parking_lot::RwLock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_engine::event::{EventCommand, EventConfig, Registry};
use tally_engine::runtime::events::{Access, DriverHandle};
use tally_engine::runtime::Runtime;
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
    driver: parking_lot::Mutex<Option<DriverHandle>>,
}

/// A running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Whether this start created the development certificates.
    pub created_certs: bool,
    pub recovery: Recovery,
}

fn err(code: ErrorCode, detail: impl Into<String>) -> Response {
    Response::Error(WireError::new(code, detail))
}

impl Server {
    /// Opens the data directory (recovering it), binds the endpoint and the
    /// metrics listener, and starts serving.
    pub async fn start(config: ServerConfig) -> Result<Server, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("creating {}: {e}", config.data_dir.display()))?;
        let (files, created_certs) = match &config.tls {
            Some(f) => (f.clone(), false),
            None => {
                let created = tls::ensure_dev_certs(&config.data_dir)?;
                (tls::dev_server_files(&config.data_dir), created)
            }
        };
        let server_config = tls::server_config(&files)?;
        let mut dc = DurableConfig::default();
        dc.runtime.shards = config.shards;
        dc.runtime.max_inflight = config.max_inflight.max(1);
        dc.durability = config.durability;
        dc.snapshot_every = config.snapshot_every;
        let dir = config.data_dir.clone();
        let (durable, recovery) =
            tokio::task::spawn_blocking(move || Durable::open(&dir, dc).map_err(|e| e.to_string()))
                .await
                .map_err(|e| format!("recovery failed: {e}"))??;
        let history = Arc::new(
            History::open(&config.data_dir, durable.stats.clone()).map_err(|p| p.to_string())?,
        );
        let endpoint = quinn::Endpoint::server(server_config, config.listen)
            .map_err(|e| format!("listening on {}: {e}", config.listen))?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(State {
            durable: RwLock::new(Some(durable)),
            history: history.clone(),
            metrics: Metrics::new(),
            in_progress: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            shards: config.shards,
            hotspots: parking_lot::Mutex::new(crate::hotspot::Hotspots::new()),
            last_verify: parking_lot::Mutex::new(None),
            registry: config.registry.clone(),
            driver: parking_lot::Mutex::new(None),
        });
        let weak = Arc::downgrade(&state);
        let access: Access = Arc::new(move |f| {
            let s = weak.upgrade()?;
            let guard = s.durable.read();
            guard.as_ref().map(|d| f(d.runtime()))
        });
        let driver = DriverHandle::spawn(access, config.registry.clone(), config.events.clone())
            .map_err(|e| format!("starting the event driver: {e}"))?;
        *state.driver.lock() = Some(driver);
        let mut threads = Vec::new();
        let s = state.clone();
        threads.push(
            std::thread::Builder::new()
                .name("tally-history".into())
                .spawn(move || {
                    while !s.stopping.load(Ordering::Acquire) {
                        if let Err(p) = s.history.catch_up() {
                            eprintln!("tallyd: the history stopped: {p}");
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .map_err(|e| e.to_string())?,
        );
        let mut tasks = Vec::new();
        let mut metrics_addr = None;
        if let Some(m) = config.metrics {
            match tokio::net::TcpListener::bind(m).await {
                Ok(l) => {
                    metrics_addr = l.local_addr().ok();
                    tasks.push(tokio::spawn(serve_metrics(state.clone(), l)));
                }
                Err(e) => eprintln!("tallyd: WARNING: metrics not served: binding {m}: {e}"),
            }
        }
        tasks.push(tokio::spawn(accept(state.clone(), endpoint.clone())));
        if let Some(every) = config.verify_every {
            tasks.push(tokio::spawn(verify_periodically(state.clone(), every)));
        }
        Ok(Server {
            endpoint,
            addr,
            metrics_addr,
            state,
            tasks,
            threads,
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
        self.state.stopping.store(true, Ordering::Release);
        if let Some(d) = self.state.durable.read().as_ref() {
            d.runtime().stop_accepting();
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.state.in_progress.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.endpoint.close(0u32.into(), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let state = self.state.clone();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            // The driver first: its round finishes, nothing it left undone is
            // lost (the next start resumes every event from the log).
            let driver = state.driver.lock().take();
            drop(driver);
            let durable = state.durable.write().take();
            if let Some(d) = durable {
                d.shutdown();
            }
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

async fn accept(state: Arc<State>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        if state.stopping.load(Ordering::Acquire)
            || state.connections.load(Ordering::Acquire) >= MAX_CONNECTIONS
        {
            incoming.refuse();
            continue;
        }
        tokio::spawn(connection(state.clone(), incoming));
    }
}

async fn connection(state: Arc<State>, incoming: quinn::Incoming) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(_) => {
            state.metrics.handshake_failures.inc();
            return;
        }
    };
    let role = tls::role_of(&conn);
    state.connections.fetch_add(1, Ordering::AcqRel);
    state.metrics.connections.inc();
    state.metrics.connections_total.inc();
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(stream(state.clone(), role, send, recv));
    }
    state.connections.fetch_sub(1, Ordering::AcqRel);
    state.metrics.connections.dec();
}

fn response_frame(id: u64, r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    let body = match encode_response(r) {
        Ok(b) => b,
        Err(e) => match encode_response(&err(ErrorCode::InvalidCommand, e)) {
            Ok(b) => b,
            Err(_) => return out,
        },
    };
    if frame::encode(KIND_RESPONSE, id, &body, &mut out).is_err() {
        out.clear();
        let r = err(
            ErrorCode::FrameTooLarge,
            "the response is over the frame limit; ask for a smaller page",
        );
        if let Ok(b) = encode_response(&r) {
            let _ = frame::encode(KIND_RESPONSE, id, &b, &mut out);
        }
    }
    out
}

/// What reading one request frame gave.
enum Read {
    Request(u64, Request),
    /// An answer to send (the frame was bad but the stream is still usable).
    Reply(Vec<u8>),
    /// An answer to send, after which the stream is unusable.
    Fatal(Vec<u8>),
    End,
}

async fn read_request(state: &State, recv: &mut quinn::RecvStream) -> Read {
    let (h, body) = match frame::read(recv).await {
        Ok(Some(f)) => f,
        Ok(None) | Err(FrameError::Io(_)) | Err(FrameError::Truncated) => return Read::End,
        Err(e) => {
            // The stream cannot be resynchronized: say why and stop it.
            state.metrics.frame_errors.inc();
            let code = match e {
                FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                _ => ErrorCode::MalformedRequest,
            };
            let _ = recv.stop(1u32.into());
            return Read::Fatal(response_frame(0, &err(code, e.to_string())));
        }
    };
    if h.kind != KIND_REQUEST {
        state.metrics.frame_errors.inc();
        return Read::Reply(response_frame(
            h.id,
            &err(ErrorCode::MalformedRequest, "expected a request frame"),
        ));
    }
    match decode_request(&body) {
        Ok(r) => Read::Request(h.id, r),
        Err(e) => {
            state.metrics.frame_errors.inc();
            Read::Reply(response_frame(h.id, &err(ErrorCode::MalformedRequest, e)))
        }
    }
}

/// One stream: read frames, answer each request as it completes. A stream
/// whose first request is `Subscribe` becomes a feed instead.
async fn stream(
    state: Arc<State>,
    role: Role,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut pending = read_request(&state, &mut recv).await;
    if let Read::Request(id, Request::Subscribe { from_seq }) = pending {
        feed(state, send, id, from_seq).await;
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_INFLIGHT_PER_STREAM);
    let inflight = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(f) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&f);
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            if send.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    loop {
        let (id, request) = match pending {
            Read::Request(id, r) => (id, r),
            Read::Reply(f) => {
                let _ = tx.send(f).await;
                pending = read_request(&state, &mut recv).await;
                continue;
            }
            Read::Fatal(f) => {
                let _ = tx.send(f).await;
                break;
            }
            Read::End => break,
        };
        let stopping = state.stopping.load(Ordering::Acquire);
        if inflight.load(Ordering::Acquire) >= MAX_INFLIGHT_PER_STREAM || stopping {
            state.metrics.busy.inc();
            let code = if stopping {
                ErrorCode::ShuttingDown
            } else {
                ErrorCode::Busy
            };
            let _ = tx.send(response_frame(id, &err(code, ""))).await;
        } else {
            inflight.fetch_add(1, Ordering::AcqRel);
            state.in_progress.fetch_add(1, Ordering::AcqRel);
            let (state, tx, inflight) = (state.clone(), tx.clone(), inflight.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let kind = request_kind(&request);
                let response = handle(&state, role, request).await;
                state.metrics.request(kind, t.elapsed().as_secs_f64());
                let _ = tx.send(response_frame(id, &response)).await;
                inflight.fetch_sub(1, Ordering::AcqRel);
                state.in_progress.fetch_sub(1, Ordering::AcqRel);
            });
        }
        pending = read_request(&state, &mut recv).await;
    }
    drop(tx);
    let _ = writer.await;
}

/// A subscription: every sequenced record from `from_seq`, in order, in
/// frames of up to `MAX_FEED_RECORDS`, as they become durable; ends when the
/// client closes the stream or the server stops.
async fn feed(state: Arc<State>, mut send: quinn::SendStream, id: u64, from_seq: u64) {
    let first = state.history.first_seq();
    if from_seq < first {
        let f = response_frame(
            id,
            &err(
                ErrorCode::HistoryUnavailable,
                format!("the history starts at sequence {first}"),
            ),
        );
        let _ = send.write_all(&f).await;
        let _ = send.finish();
        return;
    }
    let mut next = from_seq.max(1);
    loop {
        if state.stopping.load(Ordering::Acquire) {
            break;
        }
        let h = state.history.clone();
        let got = tokio::task::spawn_blocking(move || {
            h.catch_up()?;
            h.records(next, MAX_FEED_RECORDS)
        })
        .await;
        let records = match got {
            Ok(Ok(r)) => r,
            Ok(Err(p)) => {
                let f = response_frame(
                    id,
                    &err(ErrorCode::Unavailable, format!("reading the log: {p}")),
                );
                let _ = send.write_all(&f).await;
                break;
            }
            Err(_) => break,
        };
        let Some(last) = records.last() else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = send.stopped() => return,
            }
            continue;
        };
        next = last.header.seq + 1;
        let response = Response::Records(records.iter().map(wire_record).collect());
        if send
            .write_all(&response_frame(id, &response))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = send.finish();
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
            eprintln!(
                "tallyd: verify at sequence {}: clean ({} accounts, {} checked against the log, longest shard pause {} µs)",
                report.cut_sequence, report.accounts, report.accounts_checked_against_log, report.max_shard_pause_us
            );
        } else {
            eprintln!(
                "tallyd: verify at sequence {}: {} ERROR(S)",
                report.cut_sequence,
                report.errors.len()
            );
            for e in &report.errors {
                eprintln!("tallyd: verify: {}: {}", e.kind, e.message);
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
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let guard = s.durable.read();
        guard
            .as_ref()
            .map(|d| crate::verify::verify(d.runtime(), &s.history, &d.stats, full))
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| err(ErrorCode::ShuttingDown, ""))
}

/// The accounts each command writes when it commits (for hotspots).
fn written_accounts(cmd: &Command) -> smallvec::SmallVec<[u128; 2]> {
    use tally_engine::chain::Operation;
    let mut out = smallvec::SmallVec::new();
    for op in cmd.ops() {
        match op {
            Operation::Entry(e) => out.extend(e.lines.iter().map(|l| l.account)),
            Operation::CreateLien(c) => out.push(c.account),
            Operation::CaptureLien(c) => {
                out.push(c.account);
                out.extend(c.credits.iter().map(|(a, _)| *a));
            }
            Operation::ReleaseLien(r) => out.push(r.account),
        }
    }
    if let Command::SetAccountState { account, .. } = cmd {
        out.push(*account);
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::Submit(_) => "submit",
        Request::Account(_) => "account",
        Request::Entry(_) => "entry",
        Request::Lien(_) => "lien",
        Request::Currency(_) => "currency",
        Request::Statement { .. } => "statement",
        Request::Find { .. } => "find",
        Request::Subscribe { .. } => "subscribe",
        Request::Status => "status",
        Request::Verify { .. } => "verify",
        Request::Hotspots { .. } => "hotspots",
        Request::Event(_) => "event",
        Request::Events { .. } => "events",
    }
}

/// Runs `f` with the runtime on the blocking pool.
async fn with_runtime<R: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&Runtime) -> R + Send + 'static,
) -> Result<R, Response> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let guard = s.durable.read();
        guard.as_ref().map(|d| f(d.runtime()))
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| err(ErrorCode::ShuttingDown, ""))
}

/// Runs `f` on the history (caught up first) on the blocking pool.
async fn with_history<R: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&History) -> Result<R, tally_wal::Problem> + Send + 'static,
) -> Result<R, Response> {
    let h = state.history.clone();
    match tokio::task::spawn_blocking(move || {
        h.catch_up()?;
        f(&h)
    })
    .await
    {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(p)) => Err(err(ErrorCode::Unavailable, format!("reading the log: {p}"))),
        Err(e) => Err(err(ErrorCode::Unavailable, e.to_string())),
    }
}

async fn handle(state: &Arc<State>, role: Role, request: Request) -> Response {
    match handle_inner(state, role, request).await {
        Ok(r) | Err(r) => r,
    }
}

async fn handle_inner(
    state: &Arc<State>,
    role: Role,
    request: Request,
) -> Result<Response, Response> {
    Ok(match request {
        Request::Submit(commands) => {
            if role == Role::ReadOnly {
                return Err(err(ErrorCode::PermissionDenied, ""));
            }
            if commands.len() > MAX_BATCH_OPERATIONS {
                return Err(err(
                    ErrorCode::BatchTooLarge,
                    format!("{} > {MAX_BATCH_OPERATIONS}", commands.len()),
                ));
            }
            if commands.iter().any(|c| matches!(c, Command::Tick)) {
                return Err(err(
                    ErrorCode::MalformedRequest,
                    "tick is issued by the server, not by clients",
                ));
            }
            if commands.is_empty() {
                return Ok(Response::Outcomes(Vec::new()));
            }
            if commands
                .iter()
                .any(|c| matches!(c, Command::Event(EventCommand::Record { .. })))
            {
                return Err(err(
                    ErrorCode::MalformedRequest,
                    "event records are written by the server's event driver, not by clients",
                ));
            }
            let events = commands.iter().any(|c| matches!(c, Command::Event(_)));
            // Steps are checked against the registry before they are logged:
            // an unknown type or a bad payload leaves no trace.
            let early: Vec<Option<Outcome>> = commands
                .iter()
                .map(|c| match c {
                    Command::Event(EventCommand::AddStep { step, .. }) => state
                        .registry
                        .validate_step(step)
                        .err()
                        .map(Outcome::rejected_early),
                    _ => None,
                })
                .collect();
            let (commands, early) = if early.iter().any(Option::is_some) {
                let kept = commands
                    .into_iter()
                    .zip(&early)
                    .filter(|(_, e)| e.is_none())
                    .map(|(c, _)| c)
                    .collect::<Vec<_>>();
                (kept, early)
            } else {
                (commands, Vec::new())
            };
            if commands.is_empty() {
                let outcomes: Vec<Outcome> = early.into_iter().flatten().collect();
                return Ok(Response::Outcomes(
                    outcomes.iter().map(WireOutcome::from).collect(),
                ));
            }
            let written: Vec<_> = commands.iter().map(written_accounts).collect();
            let ticket = {
                let guard = state.durable.read();
                let Some(d) = guard.as_ref() else {
                    return Err(err(ErrorCode::ShuttingDown, ""));
                };
                d.runtime().try_submit(commands)
            };
            let ticket = match ticket {
                Ok(t) => t,
                Err(e) => {
                    if e.code == ErrorCode::Busy {
                        state.metrics.busy.inc();
                    }
                    return Err(err(e.code, e.text.as_deref().unwrap_or("")));
                }
            };
            // The thread that completes the batch (the log writer) wakes
            // this task directly: no thread sits blocked per request.
            let (reply, wait) = oneshot::channel::<()>();
            ticket.batch().on_done(move || {
                let _ = reply.send(());
            });
            wait.await.map_err(|_| err(ErrorCode::ShuttingDown, ""))?;
            let outcomes = ticket.wait();
            if events {
                if let Some(d) = state.driver.lock().as_ref() {
                    d.poke();
                }
            }
            {
                let now = Instant::now();
                let mut hot = state.hotspots.lock();
                for (o, accounts) in outcomes.iter().zip(&written) {
                    match o {
                        Outcome::Committed { .. } => hot.write(now, accounts),
                        Outcome::Rejected { error, .. }
                            if error.code == ErrorCode::VersionConflict =>
                        {
                            hot.conflict(now, error.subject)
                        }
                        _ => {}
                    }
                }
            }
            for o in &outcomes {
                match o {
                    Outcome::Committed { .. } => state.metrics.operation("committed"),
                    Outcome::Duplicate { .. } => state.metrics.operation("duplicate"),
                    Outcome::Rejected { error, .. } => state.metrics.operation(error.code.as_str()),
                }
            }
            let outcomes = if early.is_empty() {
                outcomes
            } else {
                let mut submitted = outcomes.into_iter();
                early
                    .into_iter()
                    .map(|e| {
                        e.or_else(|| submitted.next()).unwrap_or_else(|| {
                            Outcome::rejected_early(ErrorCode::ShuttingDown.into())
                        })
                    })
                    .collect()
            };
            Response::Outcomes(outcomes.iter().map(WireOutcome::from).collect())
        }
        Request::Event(id) => {
            let found = with_runtime(state, move |rt| {
                let shard = tally_engine::id::shard_of(id, rt.shards());
                let event = rt
                    .query(shard, move |s| s.events().get(id).cloned())
                    .flatten()?;
                let liens = event
                    .liens()
                    .into_iter()
                    .filter_map(|(l, _)| rt.lien(l))
                    .collect();
                let currencies = rt
                    .query(0, |s| s.currencies().iter().copied().collect())
                    .unwrap_or_default();
                Some(WireEvent {
                    event,
                    liens,
                    currencies,
                    now: rt.now(),
                })
            })
            .await?;
            Response::Event(found)
        }
        Request::Events {
            state: wanted,
            older_than_s,
            limit,
        } => {
            let limit = (limit as usize).clamp(1, MAX_EVENTS_LISTED);
            let list = with_runtime(state, move |rt| {
                let now = rt.now();
                let older = older_than_s.saturating_mul(1_000_000_000);
                let (_, parts) = rt.cut(move |s| {
                    s.events()
                        .iter()
                        .filter(|e| wanted.is_none_or(|w| e.state as u8 == w))
                        .filter(|e| {
                            older == 0
                                || (e.started_ts != 0
                                    && !e.state.is_terminal()
                                    && now.saturating_sub(e.started_ts) >= older)
                        })
                        .map(|e| EventSummary {
                            id: e.id(),
                            name: e.spec.name.to_string(),
                            state: e.state as u8,
                            steps: e.steps.len() as u32,
                            created_ts: e.created_ts,
                            started_ts: e.started_ts,
                            ended_ts: e.ended_ts,
                            deadline: e.deadline,
                            failure: e.failure.as_ref().map(|f| f.code),
                        })
                        .collect::<Vec<_>>()
                });
                let mut all: Vec<EventSummary> = parts.into_iter().flatten().collect();
                all.sort_by_key(|e| (e.created_ts, e.id));
                all.truncate(limit);
                all
            })
            .await?;
            Response::Events(list)
        }
        Request::Account(id) => {
            let view = with_runtime(state, move |rt| rt.account(id)).await?;
            Response::Account(view.map(|v| WireAccount {
                account: v.account,
                currency: v.currency,
            }))
        }
        Request::Lien(id) => {
            let found = with_runtime(state, move |rt| {
                let lien = rt.lien(id)?;
                let scale = rt.account(lien.account).map_or(0, |a| a.currency.scale);
                Some(WireLien { lien, scale })
            })
            .await?;
            Response::Lien(found)
        }
        Request::Currency(code) => {
            let c = with_runtime(state, move |rt| {
                let (_, found) = rt.cut(move |s| s.currency(code));
                found.into_iter().next().flatten()
            })
            .await?;
            Response::Currency(c)
        }
        Request::Entry(id) => {
            let status = with_runtime(state, move |rt| rt.status(IdSpace::Entry, id)).await?;
            let (st, seq, code) = match status {
                IdStatus::Committed { seq } => (STATUS_COMMITTED, seq, 0),
                IdStatus::Rejected { seq, code } => (STATUS_REJECTED, seq, code as u16),
                IdStatus::Unknown => (STATUS_UNKNOWN, 0, 0),
            };
            let record = if seq == 0 {
                None
            } else {
                with_history(state, move |h| h.record(seq))
                    .await?
                    .map(|r| wire_record(&r))
            };
            Response::Entry(EntryInfo {
                status: st,
                seq,
                code,
                record,
            })
        }
        Request::Statement {
            account,
            from_seq,
            limit,
        } => {
            let view = with_runtime(state, move |rt| rt.account(account)).await?;
            let Some(view) = view else {
                return Err(err(
                    ErrorCode::AccountNotFound,
                    tally_engine::id::format_id(account),
                ));
            };
            let first = state.history.first_seq();
            if from_seq < first && first > 1 && from_seq > 0 {
                return Err(err(
                    ErrorCode::HistoryUnavailable,
                    format!("the history starts at sequence {first}"),
                ));
            }
            let (lines, next_from_seq) =
                with_history(state, move |h| h.statement(account, from_seq, limit)).await?;
            Response::Statement(Statement {
                account,
                currency: Some(view.currency),
                lines,
                next_from_seq,
            })
        }
        Request::Find {
            key,
            from_ts,
            to_ts,
            limit,
        } => {
            if let FindKey::Reference(t) = &key {
                if t.len() > MAX_QUERY_REFERENCE_BYTES {
                    return Err(err(ErrorCode::ReferenceTooLong, ""));
                }
            }
            let found = with_history(state, move |h| h.find(&key, from_ts, to_ts, limit)).await?;
            Response::Records(found.iter().map(wire_record).collect())
        }
        Request::Verify { full } => Response::Verification(run_verify(state, full).await?),
        Request::Hotspots { window_s, top } => {
            let window = Duration::from_secs(window_s.clamp(1, crate::hotspot::MAX_WINDOW_S));
            let top = top.clamp(1, crate::hotspot::CAPACITY as u32) as usize;
            let (w, c) = state.hotspots.lock().window(Instant::now(), window);
            Response::Hotspots(HotspotReport {
                window_s: window.as_secs(),
                writes: w.top(top),
                conflicts: c.top(top),
                total_writes: w.total,
                total_conflicts: c.total,
            })
        }
        Request::Subscribe { .. } => {
            return Err(err(
                ErrorCode::MalformedRequest,
                "subscribe must be the first request on its own stream",
            ))
        }
        Request::Status => {
            let (next_seq, durable_seq) = {
                let guard = state.durable.read();
                let Some(d) = guard.as_ref() else {
                    return Err(err(ErrorCode::ShuttingDown, ""));
                };
                (
                    d.runtime().next_seq(),
                    d.stats.durable_seq.load(Ordering::Acquire),
                )
            };
            Response::Status(ServerStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                shards: state.shards as u32,
                next_seq,
                durable_seq,
                history_from: state.history.first_seq(),
                read_only: role == Role::ReadOnly,
            })
        }
    })
}

async fn serve_metrics(state: Arc<State>, listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut sock, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let ok = head.starts_with("GET /metrics") || head.starts_with("GET / ");
            let body = if ok {
                metrics_text(&state)
            } else {
                "not found: try /metrics\n".to_string()
            };
            let status = if ok { "200 OK" } else { "404 Not Found" };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

fn metrics_text(state: &State) -> String {
    let guard = state.durable.read();
    let Some(d) = guard.as_ref() else {
        return String::new();
    };
    let rt = d.runtime();
    let s = &d.stats;
    let liens;
    let mut snapshot = Snapshot {
        inflight: rt.inflight(),
        queue_depths: rt.queue_depths(),
        next_seq: rt.next_seq(),
        durable_seq: s.durable_seq.load(Ordering::Acquire),
        history_seq: state.history.next_seq(),
        log_records: s.records.load(Ordering::Relaxed),
        log_syncs: s.syncs.load(Ordering::Relaxed),
        sync_nanos_total: s.sync_nanos_total.load(Ordering::Relaxed),
        sync_nanos_max: s.sync_nanos_max.load(Ordering::Relaxed),
        recent_syncs: s.recent_syncs.lock().clone(),
        hot: {
            let (w, c) = state
                .hotspots
                .lock()
                .window(Instant::now(), Duration::from_secs(60));
            (w.top(10), c.top(10))
        },
        events: {
            let (_, parts) = rt.cut(|s| {
                let mut n = [0u64; 7];
                for e in s.events().iter() {
                    n[e.state as usize] += 1;
                }
                let active = s
                    .liens()
                    .filter(|l| l.status == tally_engine::LienStatus::Active);
                let (mut all, mut owned) = (0u64, 0u64);
                for l in active {
                    all += 1;
                    owned += u64::from(l.owner != 0);
                }
                (n, all, owned)
            });
            let mut n = [0u64; 7];
            let (mut all, mut owned) = (0, 0);
            for (p, a, o) in parts {
                for (t, x) in n.iter_mut().zip(p) {
                    *t += x;
                }
                all += a;
                owned += o;
            }
            liens = (all, owned);
            tally_engine::event::EventState::ALL
                .iter()
                .map(|s| (s.name(), n[*s as usize]))
                .collect()
        },
        liens: (0, 0),
        verify: state.last_verify.lock().as_ref().map(|(at, r)| {
            (
                *at,
                r.errors.len() as u64,
                r.warnings.len() as u64,
                r.max_shard_pause_us,
            )
        }),
    };
    drop(guard);
    snapshot.liens = liens;
    state.metrics.render(snapshot)
}
