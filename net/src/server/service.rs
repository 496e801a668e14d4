//! The service: a recovered durable ledger, its history and its event
//! driver, answering `(role, request)` with a response, one function per
//! request kind (`dispatch.rs`). No socket, certificate or frame here: the
//! endpoint (`endpoint.rs`, `stream.rs`) only moves frames to and from it,
//! and tests drive it directly (`net/tests/service.rs`).

use super::*;

/// A running service (see the module docs).
pub struct Service {
    pub(super) state: Arc<State>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// What recovery found.
    pub recovery: Recovery,
}

/// One client's view of the service: what a connection holds (its turn at
/// heavy requests, its byte budgets).
pub struct Session {
    state: Arc<State>,
    role: Role,
    limits: ConnLimits,
}

impl Service {
    /// Opens `config.data_dir` (recovering its log), starts the history
    /// follower and the event driver. Uses only the ledger's part of the
    /// configuration: nothing is listened on.
    pub async fn open(config: &ServerConfig) -> Result<Service, String> {
        crate::private::create_dir(&config.data_dir)?;
        if let Some(mode) = crate::private::loose_mode(&config.data_dir) {
            tracing::warn!(
                "{} has mode {mode:o}: others can read the ledger (chmod 700 it)",
                config.data_dir.display()
            );
        }
        let mut dc = DurableConfig::default();
        dc.runtime.shards = config.shards;
        dc.runtime.max_inflight = config.max_inflight.max(1);
        dc.durability = config.durability;
        dc.snapshot_every = config.snapshot_every;
        dc.cold = config.cold;
        dc.history_tail = config.history_tail;
        dc.history = Some(tally_wal::history::PageLimits {
            max_items: crate::limits::MAX_PAGE,
            max_bytes: crate::limits::MAX_PAGE_BYTES,
            record_overhead: crate::limits::RECORD_WIRE_OVERHEAD,
        });
        let dir = config.data_dir.clone();
        let (durable, recovery) =
            tokio::task::spawn_blocking(move || Durable::open(&dir, dc).map_err(|e| e.to_string()))
                .await
                .map_err(|e| format!("recovery failed: {e}"))??;
        let history = durable
            .history()
            .cloned()
            .ok_or("the ledger was opened without its history")?;
        let history_seq = Arc::new(tokio::sync::watch::Sender::new(0));
        let tell = history_seq.clone();
        history.on_indexed(move |next| {
            tell.send_if_modified(|v| {
                let moved = *v < next;
                *v = (*v).max(next);
                moved
            });
        });
        // After the listener is in place, so that no move is missed.
        history_seq.send_if_modified(|v| {
            let next = history.next_seq();
            let moved = *v < next;
            *v = (*v).max(next);
            moved
        });
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
            events: config.events.clone(),
            driver: parking_lot::Mutex::new(None),
            identities: parking_lot::Mutex::new(hashbrown::HashMap::new()),
            handshakes: parking_lot::Mutex::new(hashbrown::HashMap::new()),
            history_seq,
            heavy: Arc::new(tokio::sync::Semaphore::new(MAX_HEAVY_AT_ONCE)),
            scrape: tokio::sync::Mutex::new(None),
            backups: parking_lot::Mutex::new(Default::default()),
        });
        let weak = Arc::downgrade(&state);
        let access: Access = Arc::new(move |f| {
            let s = weak.upgrade()?;
            let guard = s.durable.read();
            guard.as_ref().map(|d| f(d.runtime()))
        });
        let mut events = config.events.clone();
        events.legacy_ids_before = {
            let guard = state.durable.read();
            let next = guard.as_ref().map_or(1, |d| d.runtime().next_seq());
            namespace_epoch(&config.data_dir, next)?
        };
        let driver = DriverHandle::spawn(access, config.registry.clone(), events)
            .map_err(|e| format!("starting the event driver: {e}"))?;
        *state.driver.lock() = Some(driver);
        Ok(Service {
            state,
            threads: Vec::new(),
            recovery,
        })
    }

    /// A session for a client of `role` (one per connection).
    pub fn session(&self, role: Role) -> Session {
        Session {
            state: self.state.clone(),
            role,
            limits: ConnLimits::new(),
        }
    }

    /// Refuses new writes (`shutting_down`) from now on.
    pub fn stop_accepting(&self) {
        self.state.stopping.store(true, Ordering::Release);
        if let Some(d) = self.state.durable.read().as_ref() {
            d.runtime().stop_accepting();
        }
    }

    /// Stops the event driver, the ledger (which syncs the log) and the
    /// history follower.
    pub async fn shutdown(self) {
        self.stop_accepting();
        let Service { state, threads, .. } = self;
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

impl Session {
    /// Answers one request as the endpoint would (subscriptions excepted:
    /// a feed is a stream, served by `stream.rs`).
    pub async fn handle(&self, request: Request) -> Response {
        self.answer(request, None).await
    }

    /// [`Session::handle`], with a `Submit`'s commands' bytes as sent.
    async fn answer(&self, request: Request, encoded: Option<Encoded>) -> Response {
        if let Request::Subscribe { .. } = request {
            return err(
                ErrorCode::MalformedRequest,
                "a subscription is a stream's first request; serve it over a stream",
            );
        }
        handle(&self.state, self.role, &self.limits, request, encoded).await
    }

    /// Decodes a request body, answers it and encodes the answer: the bytes
    /// a stream would carry, minus the frame (a read-only client's `Submit`
    /// is refused before it is decoded, as on a stream).
    pub async fn handle_bytes(&self, body: &[u8]) -> Vec<u8> {
        let response = match decode_for(self.role, body) {
            Ok(mut d) => {
                let encoded = d.encoded(body.to_vec());
                self.answer(d.request, encoded).await
            }
            Err(refused) => Response::Error(refused),
        };
        encode_response(&response)
    }
}

/// Decodes a request body for a client of `role`: the request and the
/// memory it takes decoded, or the answer that refuses it. A read-only
/// client's `Submit` is refused before it is decoded (decoding is where a
/// request's memory grows).
pub(super) fn decode_for(role: Role, body: &[u8]) -> Result<Decoded, WireError> {
    if role == Role::ReadOnly && body.first() == Some(&crate::protocol::codec::request::SUBMIT) {
        return Err(WireError::new(ErrorCode::PermissionDenied, ""));
    }
    decode_request_measured(body).map_err(|e| WireError::new(e.code, e.to_string()))
}
