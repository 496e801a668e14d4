//! The QUIC endpoint: accepting connections and their streams.
//!
//! A connection counts against [`MAX_CONNECTIONS`] from the moment it is
//! accepted, handshake included; handshakes in progress are capped lower
//! ([`MAX_HANDSHAKES`], [`MAX_HANDSHAKES_PER_ADDRESS`]) and time out after
//! [`HANDSHAKE_TIMEOUT`], so clients that never finish one cannot lock out
//! those that do. A client whose address is not yet validated is sent a QUIC
//! Retry first (so a spoofed source address cannot make the server do
//! handshake work or send data to a victim). After the handshake,
//! a client identity (its certificate) may hold at most
//! [`MAX_CONNECTIONS_PER_IDENTITY`] connections; each connection has its own
//! byte budget ([`Budget`]) and a bound on heavy requests and feeds.

use super::*;
use crate::tls::peer_leaf;
use tokio::sync::Semaphore;

/// What one connection may hold at once: bytes of requests (frames being
/// read and requests being handled), bytes of responses (reserved at their
/// bound before they are built, held until written), heavy requests, feeds.
pub(super) struct ConnLimits {
    pub(super) bytes: Budget,
    pub(super) replies: Budget,
    pub(super) heavy: Arc<Semaphore>,
    pub(super) feeds: Arc<Semaphore>,
}

impl ConnLimits {
    pub(super) fn new() -> ConnLimits {
        ConnLimits {
            bytes: Budget::new(MAX_CONNECTION_BUFFER_BYTES),
            replies: Budget::new(MAX_CONNECTION_BUFFER_BYTES),
            heavy: Arc::new(Semaphore::new(MAX_HEAVY_PER_CONNECTION)),
            feeds: Arc::new(Semaphore::new(MAX_FEEDS_PER_CONNECTION)),
        }
    }
}

/// A connection's byte budget: a frame's declared length is reserved before
/// its body is read (the buffer then grows as bytes arrive), a response's
/// bound before it is built.
#[derive(Clone)]
pub(super) struct Budget(Arc<Semaphore>);

impl Budget {
    pub(super) fn new(bytes: usize) -> Budget {
        Budget(Arc::new(Semaphore::new(bytes)))
    }

    /// Waits until `bytes` are free (at most the whole budget).
    pub(super) async fn reserve(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = bytes.clamp(1, MAX_CONNECTION_BUFFER_BYTES) as u32;
        self.0.clone().acquire_many_owned(n).await.ok()
    }
}

/// Releases a connection slot (and an identity's) when dropped.
struct Slot {
    state: Arc<State>,
    identity: Option<u128>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::AcqRel);
        if let Some(id) = self.identity {
            let mut map = self.state.identities.lock();
            if let Some(n) = map.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&id);
                }
            }
        }
    }
}

/// A handshake in progress (counted in total and per source address).
struct Handshake {
    state: Arc<State>,
    ip: std::net::IpAddr,
}

impl Handshake {
    /// Takes a handshake slot, or `None` when the server or this address has
    /// as many handshakes in progress as it may.
    fn take(state: &Arc<State>, ip: std::net::IpAddr) -> Option<Handshake> {
        let mut map = state.handshakes.lock();
        let total: usize = map.values().sum();
        let mine = map.get(&ip).copied().unwrap_or(0);
        if total >= MAX_HANDSHAKES || mine >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *map.entry(ip).or_insert(0) += 1;
        Some(Handshake {
            state: state.clone(),
            ip,
        })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut map = self.state.handshakes.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

pub(super) async fn accept(state: Arc<State>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        if state.stopping.load(Ordering::Acquire) {
            incoming.refuse();
            continue;
        }
        if !incoming.remote_address_validated() {
            // Costs one round trip; the client proves it owns its address.
            let _ = incoming.retry();
            continue;
        }
        // Unfinished handshakes have a cap of their own, far below the
        // connection limit, and a smaller one per address: clients that never
        // finish cannot take the slots of those that authenticate.
        let Some(handshake) = Handshake::take(&state, incoming.remote_address().ip()) else {
            state.metrics.connections_refused.inc();
            incoming.refuse();
            continue;
        };
        let taken = state.connections.fetch_add(1, Ordering::AcqRel);
        if taken >= MAX_CONNECTIONS {
            state.connections.fetch_sub(1, Ordering::AcqRel);
            state.metrics.connections_refused.inc();
            incoming.refuse();
            continue;
        }
        let slot = Slot {
            state: state.clone(),
            identity: None,
        };
        tokio::spawn(connection(slot, handshake, incoming));
    }
}

async fn connection(mut slot: Slot, handshake: Handshake, incoming: quinn::Incoming) {
    let state = slot.state.clone();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(_) => {
            state.metrics.handshake_failures.inc();
            return;
        }
    };
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        _ => {
            state.metrics.handshake_failures.inc();
            return;
        }
    };
    drop(handshake);
    let Some(leaf) = peer_leaf(&conn) else {
        conn.close(1u32.into(), b"no client certificate");
        return;
    };
    let identity = xxhash_rust::xxh3::xxh3_128(&leaf);
    {
        let mut map = state.identities.lock();
        let n = map.entry(identity).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_IDENTITY {
            drop(map);
            state.metrics.connections_refused.inc();
            conn.close(2u32.into(), b"too many connections with this certificate");
            return;
        }
        *n += 1;
    }
    slot.identity = Some(identity);
    let role = tls::role_of_der(&leaf);
    state.metrics.connections.inc();
    state.metrics.connections_total.inc();
    let limits = Arc::new(ConnLimits::new());
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(stream(state.clone(), role, limits.clone(), send, recv));
    }
    state.metrics.connections.dec();
    drop(slot);
}
