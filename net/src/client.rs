//! The async client library. One QUIC connection, a few streams carrying
//! pipelined requests matched by request id, timeouts on every call, and
//! automatic batching: concurrent [`Client::submit`] calls are gathered into
//! one `Submit` request (many callers, one round trip, one log sync).
//!
//! A call that times out may still have been applied; retrying it with the
//! same ids is safe (ids are idempotency keys: the retry returns the
//! original outcome).

use crate::frame::{self, FrameError, KIND_REQUEST};
use crate::limits::MAX_BATCH_OPERATIONS;
use crate::message::*;
use crate::protocol::{decode_response, encode_request};
use crate::tls::{self, TlsFiles};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{Command, ErrorCode, Outcome};
use tokio::sync::{mpsc, oneshot};

/// A failed call: a stable code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
}

impl ClientError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ClientError {}

/// How to reach a server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub server: SocketAddr,
    /// The name the server's certificate must carry.
    pub server_name: String,
    pub tls: TlsFiles,
    pub timeout: Duration,
    /// Streams to spread requests over.
    pub streams: usize,
    /// Most operations the automatic batcher puts in one request.
    pub max_batch: usize,
}

impl ClientConfig {
    pub fn new(server: SocketAddr, tls: TlsFiles) -> ClientConfig {
        ClientConfig {
            server,
            server_name: "localhost".into(),
            tls,
            timeout: Duration::from_secs(10),
            streams: 2,
            max_batch: 1_024,
        }
    }
}

/// `submit` calls waiting for the batcher before callers are made to wait.
pub const MAX_QUEUED_SUBMITS: usize = 65_536;

type Reply = oneshot::Sender<Result<Response, ClientError>>;
type Waiters = Arc<Mutex<HashMap<u64, Reply>>>;

/// One request stream. When the server ends it (a stream-level error) its
/// calls fail and the next call opens a fresh stream in its place.
struct Pipe {
    stream: tokio::sync::Mutex<PipeStream>,
}

struct PipeStream {
    send: quinn::SendStream,
    waiters: Waiters,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl PipeStream {
    async fn open(conn: &quinn::Connection) -> Result<PipeStream, ClientError> {
        let (send, recv) = conn.open_bi().await.map_err(unavailable)?;
        let waiters: Waiters = Arc::default();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        tokio::spawn(read_responses(recv, waiters.clone(), alive.clone()));
        Ok(PipeStream {
            send,
            waiters,
            alive,
        })
    }
}

struct Inner {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    pipes: Vec<Pipe>,
    next_id: AtomicU64,
    next_pipe: AtomicUsize,
    timeout: Duration,
    batcher: mpsc::Sender<(Command, oneshot::Sender<Result<Outcome, ClientError>>)>,
}

/// A connected client (cheap to clone; clones share the connection).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn unavailable(e: impl std::fmt::Display) -> ClientError {
    ClientError::new(ErrorCode::Unavailable, e.to_string())
}

fn unexpected(r: Response) -> ClientError {
    ClientError::new(
        ErrorCode::MalformedRequest,
        format!("unexpected response {r:?}"),
    )
}

impl Client {
    /// Connects (TLS 1.3, presenting the client certificate).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let quic = tls::client_config(&config.tls)
            .map_err(|m| ClientError::new(ErrorCode::Unavailable, m))?;
        let bind: SocketAddr = if config.server.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(unavailable)?;
        endpoint.set_default_client_config(quic);
        let connecting = endpoint
            .connect(config.server, &config.server_name)
            .map_err(unavailable)?;
        let conn = match tokio::time::timeout(config.timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unavailable(format!("connecting to {}: {e}", config.server))),
            Err(_) => {
                return Err(ClientError::new(
                    ErrorCode::Timeout,
                    format!("connecting to {}", config.server),
                ))
            }
        };
        let mut pipes = Vec::new();
        for _ in 0..config.streams.max(1) {
            let stream = PipeStream::open(&conn).await?;
            pipes.push(Pipe {
                stream: tokio::sync::Mutex::new(stream),
            });
        }
        // Bounded: callers wait (not memory) when the server is slower.
        let (tx, rx) = mpsc::channel(MAX_QUEUED_SUBMITS);
        let client = Client {
            inner: Arc::new(Inner {
                endpoint,
                conn,
                pipes,
                next_id: AtomicU64::new(1),
                next_pipe: AtomicUsize::new(0),
                timeout: config.timeout,
                batcher: tx,
            }),
        };
        tokio::spawn(batch(
            Arc::downgrade(&client.inner),
            rx,
            config.max_batch.clamp(1, MAX_BATCH_OPERATIONS),
        ));
        Ok(client)
    }

    /// Sends one request and waits for its response (within the timeout).
    pub async fn request(&self, request: &Request) -> Result<Response, ClientError> {
        request_on(&self.inner, request).await
    }

    /// Submits one operation; concurrent calls share requests.
    pub async fn submit(&self, command: Command) -> Result<Outcome, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .batcher
            .send((command, tx))
            .await
            .map_err(|_| unavailable("the client is closed"))?;
        rx.await.map_err(|_| unavailable("the client is closed"))?
    }

    /// Submits operations as one request; outcomes in the same order.
    pub async fn submit_batch(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, ClientError> {
        submit_on(&self.inner, commands).await
    }

    pub async fn account(&self, id: u128) -> Result<Option<WireAccount>, ClientError> {
        match self.request(&Request::Account(id)).await? {
            Response::Account(a) => Ok(a),
            r => Err(unexpected(r)),
        }
    }

    pub async fn entry(&self, id: u128) -> Result<EntryInfo, ClientError> {
        match self.request(&Request::Entry(id)).await? {
            Response::Entry(e) => Ok(e),
            r => Err(unexpected(r)),
        }
    }

    pub async fn lien(&self, id: u128) -> Result<Option<WireLien>, ClientError> {
        match self.request(&Request::Lien(id)).await? {
            Response::Lien(l) => Ok(l),
            r => Err(unexpected(r)),
        }
    }

    pub async fn currency(&self, code: CurrencyCode) -> Result<Option<Currency>, ClientError> {
        match self.request(&Request::Currency(code)).await? {
            Response::Currency(c) => Ok(c),
            r => Err(unexpected(r)),
        }
    }

    pub async fn statement(
        &self,
        account: u128,
        from_seq: u64,
        limit: u32,
    ) -> Result<Statement, ClientError> {
        match self
            .request(&Request::Statement {
                account,
                from_seq,
                limit,
            })
            .await?
        {
            Response::Statement(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    pub async fn find(
        &self,
        key: FindKey,
        from_ts: u64,
        to_ts: u64,
        limit: u32,
    ) -> Result<Vec<WireRecord>, ClientError> {
        match self
            .request(&Request::Find {
                key,
                from_ts,
                to_ts,
                limit,
            })
            .await?
        {
            Response::Records(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    /// Runs the consistency verifier on the server.
    pub async fn verify(&self, full: bool) -> Result<crate::verify::VerifyReport, ClientError> {
        match self.request(&Request::Verify { full }).await? {
            Response::Verification(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    /// The most written and most conflicted accounts over the last `window`.
    pub async fn hotspots(&self, window: Duration, top: u32) -> Result<HotspotReport, ClientError> {
        match self
            .request(&Request::Hotspots {
                window_s: window.as_secs(),
                top,
            })
            .await?
        {
            Response::Hotspots(h) => Ok(h),
            r => Err(unexpected(r)),
        }
    }

    /// An event: its state, steps (with results), and liens.
    pub async fn event(&self, id: u128) -> Result<Option<WireEvent>, ClientError> {
        match self.request(&Request::Event(id)).await? {
            Response::Event(e) => Ok(e),
            r => Err(unexpected(r)),
        }
    }

    /// Events in `state` (any when `None`); with `running_longer_than`, only
    /// those started that long ago and not finished (stuck ones).
    pub async fn events(
        &self,
        state: Option<tally_engine::event::EventState>,
        running_longer_than: Duration,
        limit: u32,
    ) -> Result<Vec<EventSummary>, ClientError> {
        match self
            .request(&Request::Events {
                state: state.map(|s| s as u8),
                older_than_s: running_longer_than.as_secs(),
                limit,
            })
            .await?
        {
            Response::Events(e) => Ok(e),
            r => Err(unexpected(r)),
        }
    }

    /// Creates an event (idempotent: the same spec again is a duplicate).
    pub async fn create_event(
        &self,
        spec: tally_engine::event::NewEvent,
    ) -> Result<Outcome, ClientError> {
        self.submit(Command::Event(tally_engine::event::EventCommand::Create(
            spec,
        )))
        .await
    }

    /// Adds a step to an event that has not started.
    pub async fn add_step(
        &self,
        event: u128,
        step: tally_engine::event::Step,
    ) -> Result<Outcome, ClientError> {
        self.submit(Command::Event(tally_engine::event::EventCommand::AddStep {
            event,
            step,
        }))
        .await
    }

    /// Starts an event (starting it again is harmless).
    pub async fn start_event(&self, event: u128) -> Result<Outcome, ClientError> {
        self.submit(Command::Event(tally_engine::event::EventCommand::Start {
            event,
        }))
        .await
    }

    /// Confirms a step awaiting confirmation (`amount`: a partial capture).
    pub async fn confirm_step(
        &self,
        event: u128,
        step: &str,
        amount: Option<u128>,
    ) -> Result<Outcome, ClientError> {
        self.submit(Command::Event(tally_engine::event::EventCommand::Confirm {
            event,
            step: step.into(),
            amount,
        }))
        .await
    }

    /// Reports a step awaiting confirmation as failed: the event compensates.
    pub async fn fail_step(
        &self,
        event: u128,
        step: &str,
        reason: &str,
    ) -> Result<Outcome, ClientError> {
        self.submit(Command::Event(tally_engine::event::EventCommand::Fail {
            event,
            step: step.into(),
            reason: reason.into(),
        }))
        .await
    }

    /// Begins an online backup: the files to fetch with [`Client::backup_read`].
    pub async fn backup(&self) -> Result<BackupManifest, ClientError> {
        match self.request(&Request::Backup).await? {
            Response::Backup(m) => Ok(m),
            r => Err(unexpected(r)),
        }
    }

    /// Up to `len` bytes of file `file` of a backup, from `offset` (empty
    /// past the end of what the file's copy takes).
    pub async fn backup_read(
        &self,
        backup: u64,
        file: u32,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let q = Request::BackupRead {
            backup,
            file,
            offset,
            len,
        };
        match self.request(&q).await? {
            Response::BackupChunk(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    /// Ends a backup: the server forgets its plan.
    pub async fn backup_end(&self, backup: u64) -> Result<(), ClientError> {
        match self.request(&Request::BackupEnd { backup }).await? {
            Response::BackupChunk(_) => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    pub async fn status(&self) -> Result<ServerStatus, ClientError> {
        match self.request(&Request::Status).await? {
            Response::Status(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    /// Every sequenced record from `from_seq` on, as it becomes durable.
    pub async fn subscribe(&self, from_seq: u64) -> Result<Subscription, ClientError> {
        let (mut send, recv) = self.inner.conn.open_bi().await.map_err(unavailable)?;
        let body = encode_request(&Request::Subscribe { from_seq });
        let mut f = Vec::new();
        frame::encode(KIND_REQUEST, 0, &body, &mut f).map_err(unavailable)?;
        send.write_all(&f).await.map_err(unavailable)?;
        Ok(Subscription {
            _send: send,
            recv,
            buffered: std::collections::VecDeque::new(),
            next_seq: from_seq.max(1),
        })
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.inner.conn.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }
}

/// A feed of records (see [`Client::subscribe`]).
pub struct Subscription {
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    buffered: std::collections::VecDeque<WireRecord>,
    next_seq: u64,
}

impl Subscription {
    /// The next record; `Ok(None)` when the server ended the feed. Checks
    /// that sequence numbers follow each other with no gap.
    pub async fn next(&mut self) -> Result<Option<WireRecord>, ClientError> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                if r.seq != self.next_seq {
                    return Err(ClientError::new(
                        ErrorCode::MalformedRequest,
                        format!("feed gap: got sequence {} for {}", r.seq, self.next_seq),
                    ));
                }
                self.next_seq += 1;
                return Ok(Some(r));
            }
            match frame::read(&mut self.recv).await {
                Ok(Some((_, body))) => match decode_response(&body).map_err(unavailable)? {
                    Response::Records(rs) => self.buffered.extend(rs),
                    Response::Error(e) => return Err(server_error(e)),
                    r => return Err(unexpected(r)),
                },
                Ok(None) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// The sequence the next record will have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

fn server_error(e: WireError) -> ClientError {
    let code = ErrorCode::from_u16(e.code).unwrap_or(ErrorCode::MalformedRequest);
    ClientError::new(code, e.message)
}

async fn request_on(inner: &Inner, request: &Request) -> Result<Response, ClientError> {
    let body = encode_request(request);
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let mut f = Vec::with_capacity(body.len() + crate::limits::FRAME_HEADER_BYTES);
    frame::encode(KIND_REQUEST, id, &body, &mut f)
        .map_err(|e| ClientError::new(ErrorCode::FrameTooLarge, e.to_string()))?;
    let pipe = &inner.pipes[inner.next_pipe.fetch_add(1, Ordering::Relaxed) % inner.pipes.len()];
    let (tx, rx) = oneshot::channel();
    let mut used: Option<Waiters> = None;
    let call = async {
        let mut stream = pipe.stream.lock().await;
        let mut tx = Some(tx);
        for _ in 0..2 {
            // Registered only while the stream is alive, under the lock its
            // reader takes to mark it dead and fail its waiters: a waiter is
            // never left behind on a dead stream.
            {
                let mut w = stream.waiters.lock();
                if stream.alive.load(Ordering::Acquire) {
                    if let Some(tx) = tx.take() {
                        w.insert(id, tx);
                    }
                    break;
                }
            }
            // The server ended this stream: carry on over a new one.
            *stream = PipeStream::open(&inner.conn).await?;
        }
        if tx.is_some() {
            return Err(unavailable("the server keeps ending the stream"));
        }
        used = Some(stream.waiters.clone());
        stream.send.write_all(&f).await.map_err(unavailable)?;
        drop(stream);
        rx.await.map_err(|_| unavailable("the connection closed"))?
    };
    let result = match tokio::time::timeout(inner.timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::new(
            ErrorCode::Timeout,
            format!("no answer within {:?}", inner.timeout),
        )),
    };
    if let Some(w) = used {
        w.lock().remove(&id);
    }
    match result? {
        Response::Error(e) => Err(server_error(e)),
        r => Ok(r),
    }
}

async fn submit_on(inner: &Inner, commands: Vec<Command>) -> Result<Vec<Outcome>, ClientError> {
    let n = commands.len();
    match request_on(inner, &Request::Submit(commands)).await? {
        Response::Outcomes(o) if o.count as usize == n => o
            .expand()
            .map_err(|m| ClientError::new(ErrorCode::MalformedRequest, m)),
        r => Err(unexpected(r)),
    }
}

async fn read_responses(
    mut recv: quinn::RecvStream,
    waiters: Waiters,
    alive: Arc<std::sync::atomic::AtomicBool>,
) {
    let why = loop {
        match frame::read(&mut recv).await {
            Ok(Some((h, body))) => {
                let response = decode_response(&body).map_err(unavailable);
                if h.id == 0 {
                    // A stream-level error from the server: every call fails.
                    break match response {
                        Ok(Response::Error(e)) => server_error(e),
                        _ => unavailable("the server closed the stream"),
                    };
                }
                if let Some(w) = waiters.lock().remove(&h.id) {
                    let _ = w.send(response);
                }
            }
            Ok(None) => break unavailable("the server closed the stream"),
            Err(FrameError::Io(m)) => break unavailable(m),
            Err(e) => break unavailable(e),
        }
    };
    let mut pending = waiters.lock();
    alive.store(false, Ordering::Release);
    for (_, w) in pending.drain() {
        let _ = w.send(Err(why.clone()));
    }
}

/// What the batcher lets one `Submit` frame carry, leaving room for the
/// request's own framing.
const MAX_BATCH_FRAME_BYTES: usize = crate::limits::MAX_FRAME_BYTES - (64 << 10);

/// What the batcher lets one `Submit` take in the server's memory once
/// decoded (`MAX_DECODED_REQUEST_BYTES`, less room for the request itself).
const MAX_BATCH_DECODED_BYTES: usize = crate::limits::MAX_DECODED_REQUEST_BYTES - (64 << 10);

/// A command's share of a `Submit` frame, counted generously.
fn batch_bytes(c: &Command) -> usize {
    c.encoded_len_bound()
        .unwrap_or(crate::limits::MAX_FRAME_BYTES)
        + 64
}

/// Gathers concurrent `submit` calls into batches, each within the frame
/// limit and `max` operations.
async fn batch(
    inner: std::sync::Weak<Inner>,
    mut rx: mpsc::Receiver<(Command, oneshot::Sender<Result<Outcome, ClientError>>)>,
    max: usize,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(f) => f,
            None => match rx.recv().await {
                Some(f) => f,
                None => return,
            },
        };
        let mut bytes = batch_bytes(&first.0);
        let mut decoded = tally_engine::codec::decoded_size(&first.0);
        let mut commands = vec![first.0];
        let mut replies = vec![first.1];
        while commands.len() < max {
            match rx.try_recv() {
                Ok((c, r)) => {
                    // The frame stays within the limit: a command that would
                    // take it over starts the next batch.
                    // So does what it takes in the server's memory decoded.
                    let b = batch_bytes(&c);
                    let d = tally_engine::codec::decoded_size(&c);
                    if bytes + b > MAX_BATCH_FRAME_BYTES || decoded + d > MAX_BATCH_DECODED_BYTES {
                        next = Some((c, r));
                        break;
                    }
                    bytes += b;
                    decoded += d;
                    commands.push(c);
                    replies.push(r);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        tokio::spawn(async move {
            match submit_on(&inner, commands).await {
                Ok(outcomes) => {
                    for (o, r) in outcomes.into_iter().zip(replies) {
                        let _ = r.send(Ok(o));
                    }
                }
                Err(e) => {
                    for r in replies {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
