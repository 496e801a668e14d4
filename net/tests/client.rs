//! The client library against a scripted server: a stream the server ends
//! with a stream-level error is replaced by a fresh one, so one bad stream
//! does not fail every later call on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tally_net::client::{Client, ClientConfig};
use tally_net::frame::{self, KIND_RESPONSE};
use tally_net::message::{Request, Response, ServerStatus, WireError};
use tally_net::tls;

async fn reply(send: &mut quinn::SendStream, id: u64, r: &Response) {
    let body = tally_net::protocol::encode_response(r);
    let mut f = Vec::new();
    frame::encode(KIND_RESPONSE, id, &body, &mut f).unwrap();
    send.write_all(&f).await.unwrap();
}

/// Serves `Status` on every stream but the first, which it answers with a
/// stream-level error (id 0) and ends, as tallyd does after a bad frame.
async fn scripted_server(endpoint: quinn::Endpoint, streams: Arc<AtomicUsize>) {
    let Some(incoming) = endpoint.accept().await else {
        return;
    };
    let conn = incoming.await.unwrap();
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let n = streams.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            while let Ok(Some((h, body))) = frame::read(&mut recv).await {
                assert!(matches!(
                    tally_net::protocol::decode_request(&body).unwrap(),
                    Request::Status
                ));
                if n == 0 {
                    let e = WireError::new(tally_engine::ErrorCode::MalformedRequest, "planted");
                    reply(&mut send, 0, &Response::Error(e)).await;
                    let _ = send.finish();
                    return;
                }
                let status = ServerStatus {
                    version: "test".into(),
                    shards: 1,
                    next_seq: 1,
                    durable_seq: 0,
                    history_from: 1,
                    read_only: false,
                };
                reply(&mut send, h.id, &Response::Status(status)).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_server_ended_is_replaced_by_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    tls::ensure_dev_certs(dir.path()).unwrap();
    let config = tls::server_config(&tls::dev_server_files(dir.path())).unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    tokio::spawn(scripted_server(endpoint, streams.clone()));

    let mut cc = ClientConfig::new(addr, tls::dev_client_files(dir.path()));
    cc.streams = 1;
    cc.timeout = std::time::Duration::from_secs(5);
    let c = Client::connect(cc).await.unwrap();
    // The first call meets the stream-level error.
    let e = c.status().await.unwrap_err();
    assert_eq!(e.code, tally_engine::ErrorCode::MalformedRequest, "{e}");
    // Later calls go over a new stream and succeed (they timed out before:
    // the dead stream was reused forever).
    for _ in 0..3 {
        let s = c.status().await.expect("a call after a stream error");
        assert_eq!(s.version, "test");
    }
    assert_eq!(streams.load(Ordering::SeqCst), 2);
}
