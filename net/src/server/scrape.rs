//! The metrics endpoint: Prometheus text at `/metrics`, and at `/` a live
//! status page (`status.html`, one self-contained file) that reads
//! `/metrics` every second and shows throughput, latency, log sync, queues,
//! hot accounts, events and the verifier's last verdict.

use super::*;

/// The status page, compiled in.
const STATUS_PAGE: &str = include_str!("status.html");
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const HTML_TYPE: &str = "text/html; charset=utf-8";

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Page {
    Metrics,
    Status,
    NotFound,
}

/// The page a request's first line names (`GET PATH[?QUERY] HTTP/1.x`).
fn route(head: &str) -> Page {
    let line = head.lines().next().unwrap_or("");
    let mut words = line.split(' ');
    let (Some("GET"), Some(target)) = (words.next(), words.next()) else {
        return Page::NotFound;
    };
    match target.split('?').next().unwrap_or("") {
        "/metrics" => Page::Metrics,
        "/" | "/index.html" => Page::Status,
        _ => Page::NotFound,
    }
}

/// Serves the page to at most [`MAX_METRICS_CONNECTIONS`] scrapers at once
/// (more are closed at once). A scrape never waits on the ledger: the page is
/// rendered on the blocking pool at most every [`METRICS_MAX_AGE`], one
/// rendering at a time, and scrapes in between get the last one.
pub(super) async fn serve_metrics(state: Arc<State>, listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    while let Ok((mut sock, _)) = listener.accept().await {
        let Ok(slot) = open.clone().try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = [0u8; 4096];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, kind, body) = match route(&head) {
                Page::Metrics => ("200 OK", METRICS_TYPE, cached_metrics(&state).await),
                Page::Status => ("200 OK", HTML_TYPE, Arc::new(STATUS_PAGE.to_string())),
                Page::NotFound => (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    Arc::new(
                        "not found: the metrics are at /metrics, the status page at /\n"
                            .to_string(),
                    ),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// The metrics page, rendered at most every [`METRICS_MAX_AGE`].
async fn cached_metrics(state: &Arc<State>) -> Arc<String> {
    let mut cache = state.scrape.lock().await;
    if let Some((at, text)) = cache.as_ref() {
        if at.elapsed() < METRICS_MAX_AGE {
            return text.clone();
        }
    }
    let s = state.clone();
    let text = Arc::new(
        tokio::task::spawn_blocking(move || metrics_text(&s))
            .await
            .unwrap_or_default(),
    );
    *cache = Some((Instant::now(), text.clone()));
    text
}

pub(super) fn metrics_text(state: &State) -> String {
    let guard = state.durable.read();
    let Some(d) = guard.as_ref() else {
        return String::new();
    };
    let rt = d.runtime();
    let s = &d.stats;
    let liens;
    let mut memory: Vec<(&'static str, usize)>;
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
                (n, all, owned, s.memory())
            });
            let mut n = [0u64; 7];
            let (mut all, mut owned) = (0, 0);
            let mut engine = tally_engine::MemoryUse::default();
            for (p, a, o, m) in parts {
                for (t, x) in n.iter_mut().zip(p) {
                    *t += x;
                }
                all += a;
                owned += o;
                engine.add(&m);
            }
            liens = (all, owned);
            memory = engine.parts().to_vec();
            memory.extend(state.history.memory().parts());
            if let Some(c) = d.cold() {
                memory.push(("cold_index", c.memory_bytes()));
            }
            tally_engine::event::EventState::ALL
                .iter()
                .map(|s| (s.name(), n[*s as usize]))
                .collect()
        },
        liens: (0, 0),
        memory: Vec::new(),
        rss: crate::metrics::process_rss(),
        history: {
            let st = state.history.stats();
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            crate::metrics::HistoryFigures {
                runs: state.history.runs() as u64,
                runs_written: n(&st.runs_written),
                seal_failures: n(&st.seal_failures),
                run_reads: n(&st.run_reads),
            }
        },
        cold: d.cold().map(|c| {
            use tally_engine::runtime::ColdIds;
            let st = c.stats();
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            crate::metrics::ColdFigures {
                keys: n(&st.keys),
                reads: n(&st.reads),
                hits: n(&st.hits),
                slow_lookups: n(&st.slow_lookups),
                lookup_ns: n(&st.lookup_ns),
                lookup_max_ns: n(&st.lookup_max_ns),
                runs: c.runs() as u64,
                runs_written: n(&st.runs_written),
                merges: n(&st.merges),
                covered: c.covered(),
                persisted: c.persisted(),
            }
        }),
        verify: state.last_verify.lock().as_ref().map(|(at, r)| {
            (
                *at,
                r.errors.len() as u64,
                r.warnings.len() as u64,
                r.max_shard_pause_us,
            )
        }),
    };
    // The event and lien counts came from the shards: show them once the
    // log covers what they saw, like every read.
    let _ = wait_durable(d);
    drop(guard);
    snapshot.liens = liens;
    snapshot.memory = memory;
    state.metrics.render(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_their_path() {
        assert_eq!(route("GET /metrics HTTP/1.0\r\n\r\n"), Page::Metrics);
        assert_eq!(
            route("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n"),
            Page::Metrics
        );
        assert_eq!(route("GET / HTTP/1.1\r\n"), Page::Status);
        assert_eq!(route("GET /index.html HTTP/1.1\r\n"), Page::Status);
        for other in [
            "GET /metricsx HTTP/1.1",
            "POST /metrics HTTP/1.1",
            "",
            "GET",
            "\u{0}\u{1}",
        ] {
            assert_eq!(route(other), Page::NotFound, "{other:?}");
        }
    }

    #[test]
    fn the_status_page_reads_the_metrics_it_shows() {
        for name in [
            "tally_operations_total",
            "tally_request_duration_seconds_bucket",
            "tally_log_sync_seconds",
            "tally_shard_queue_depth",
            "tally_hot_account_writes",
            "tally_events",
            "tally_verify_errors",
            "tally_process_resident_bytes",
        ] {
            assert!(STATUS_PAGE.contains(name), "{name}");
        }
    }
}
