//! End to end over QUIC: a real `tallyd` process, real clients.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{BalancePolicy, Command, Entry, ErrorCode, NewAccount, Outcome};
use tally_net::client::{Client, ClientConfig};
use tally_net::frame::{self, KIND_REQUEST};
use tally_net::limits::{FRAME_HEADER_BYTES, MAX_FRAME_BYTES};
use tally_net::message::{self, Request, Response, COMMITTED};
#[path = "../support.rs"]
mod support;
use support::Tallyd;

const BANK: u128 = 1;
const WALLETS: [u128; 4] = [2, 3, 4, 5];

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

fn transfer(id: u128, from: u128, to: u128, amount: u128) -> Command {
    Entry::transfer(id, from, to, amount, usd()).into()
}

/// USD, an unrestricted bank account, four no-overdraft wallets with 1,000.00 each.
async fn setup(c: &Client) {
    let mut cmds = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
    cmds.push(Command::CreateAccount(NewAccount {
        id: BANK,
        currency: usd(),
        policy: BalancePolicy::Unrestricted,
        user_data: 0,
    }));
    for w in WALLETS {
        cmds.push(Command::CreateAccount(NewAccount {
            id: w,
            currency: usd(),
            policy: BalancePolicy::NoOverdraft,
            user_data: 7,
        }));
    }
    for (i, w) in WALLETS.iter().enumerate() {
        cmds.push(transfer(1_000 + i as u128, BANK, *w, 100_000));
    }
    let outcomes = c.submit_batch(cmds).await.unwrap();
    assert!(outcomes.iter().all(Outcome::is_ok), "{outcomes:?}");
}

async fn balances(c: &Client) -> HashMap<u128, i128> {
    let mut m = HashMap::new();
    for a in std::iter::once(BANK).chain(WALLETS) {
        m.insert(a, c.account(a).await.unwrap().unwrap().account.balance());
    }
    m
}

/// Fires transfers among the wallets from many connections at once; returns
/// the committed ones (id, from, to, amount) as acknowledged.
async fn fire(
    server: &Tallyd,
    clients: usize,
    per_client: u128,
    base: u128,
) -> Vec<(u128, u128, u128, u128)> {
    let mut tasks = Vec::new();
    for k in 0..clients as u128 {
        let c = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut pending = Vec::new();
            for i in 0..per_client {
                let id = base + k * 1_000_000 + i;
                let from = WALLETS[((i + k) % 4) as usize];
                let to = WALLETS[((i * 7 + k + 1) % 4) as usize];
                if from == to {
                    continue;
                }
                let amount = 1 + (i * 37 + k * 11) % 40_000;
                let c = c.clone();
                pending.push(tokio::spawn(async move {
                    (
                        id,
                        from,
                        to,
                        amount,
                        c.submit(transfer(id, from, to, amount)).await,
                    )
                }));
            }
            for p in pending {
                let (id, from, to, amount, r) = p.await.unwrap();
                match r.unwrap() {
                    Outcome::Committed { .. } => acked.push((id, from, to, amount)),
                    Outcome::Rejected { error, .. } => {
                        assert_eq!(error.code, ErrorCode::InsufficientFunds)
                    }
                    o => panic!("unexpected {o:?}"),
                }
            }
            c.close().await;
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn expected(acked: &[(u128, u128, u128, u128)]) -> HashMap<u128, i128> {
    let mut m: HashMap<u128, i128> = WALLETS.iter().map(|w| (*w, 100_000)).collect();
    m.insert(BANK, -400_000);
    for (_, from, to, amount) in acked {
        *m.get_mut(from).unwrap() -= *amount as i128;
        *m.get_mut(to).unwrap() += *amount as i128;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_every_ack_matches_and_money_is_conserved() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &["--shards", "2"]);
    let c = server.client().await;
    setup(&c).await;
    let acked = fire(&server, 8, 150, 1 << 40).await;
    assert!(acked.len() > 100, "most transfers commit: {}", acked.len());
    let got = balances(&c).await;
    assert_eq!(got, expected(&acked));
    assert_eq!(got.values().sum::<i128>(), 0, "conservation");
    for (id, ..) in acked.iter().take(50) {
        let e = c.entry(*id).await.unwrap();
        assert_eq!(e.status, message::STATUS_COMMITTED);
        assert!(e.record.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_idempotent_over_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let first = c.submit(transfer(77, 2, 3, 500)).await.unwrap();
    let Outcome::Committed { seq, .. } = first else {
        panic!("{first:?}")
    };
    // A retry (as after a timeout) returns the original outcome, applies nothing.
    let again = c.submit(transfer(77, 2, 3, 500)).await.unwrap();
    assert_eq!(again, Outcome::Duplicate { seq, code: None });
    // The same id with other content is refused.
    let other = c.submit(transfer(77, 2, 3, 501)).await.unwrap();
    assert_eq!(other.code(), Some(ErrorCode::IdReusedWithDifferentContent));
    // A rejection is final too.
    let r = c.submit(transfer(78, 2, 3, 10_000_000)).await.unwrap();
    assert_eq!(r.code(), Some(ErrorCode::InsufficientFunds));
    c.submit(transfer(79, BANK, 2, 10_000_000)).await.unwrap();
    let retry = c.submit(transfer(78, 2, 3, 10_000_000)).await.unwrap();
    assert!(
        matches!(
            retry,
            Outcome::Duplicate {
                code: Some(ErrorCode::InsufficientFunds),
                ..
            }
        ),
        "{retry:?}"
    );
    let b = balances(&c).await;
    assert_eq!(b[&2], 100_000 - 500 + 10_000_000);
    assert_eq!(b[&3], 100_000 + 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_trusted_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    // A client certificate from another CA (a second development set).
    let other = tempfile::tempdir().unwrap();
    tally_net::tls::ensure_dev_certs(other.path()).unwrap();
    let mut files = tally_net::tls::dev_client_files(other.path());
    files.ca = server.writer_files().ca;
    let refused = async {
        let c = Client::connect(ClientConfig::new(server.addr, files)).await?;
        c.status().await
    };
    let err = refused
        .await
        .expect_err("an untrusted client certificate must be refused");
    assert!(
        matches!(err.code, ErrorCode::Unavailable | ErrorCode::Timeout),
        "{err}"
    );

    // No certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(server.writer_files().ca).unwrap();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tally_net::limits::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let attempt = async {
        let conn = ep.connect(server.addr, "localhost").unwrap().await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&request_frame(1, &Request::Status)).await?;
        let mut b = [0u8; 1];
        recv.read_exact(&mut b).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await;
    assert!(
        matches!(r, Ok(Err(_))),
        "a client without a certificate must be refused"
    );

    // The server still serves trusted clients.
    let c = server.client().await;
    assert!(!c.status().await.unwrap().read_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_can_query_but_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let w = server.client().await;
    setup(&w).await;
    let r = server.client_with(server.reader_files()).await;
    assert!(r.status().await.unwrap().read_only);
    assert_eq!(
        r.account(2).await.unwrap().unwrap().account.balance(),
        100_000
    );
    let err = r.submit(transfer(90, 2, 3, 1)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    assert_eq!(w.entry(90).await.unwrap().status, message::STATUS_UNKNOWN);
}

fn request_frame(id: u64, r: &Request) -> Vec<u8> {
    let body = tally_net::protocol::encode_request(r);
    let mut f = Vec::new();
    frame::encode(KIND_REQUEST, id, &body, &mut f).unwrap();
    f
}

async fn read_response(recv: &mut quinn::RecvStream) -> (u64, Response) {
    let (h, body) = frame::read(recv).await.unwrap().unwrap();
    (h.id, tally_net::protocol::decode_response(&body).unwrap())
}

fn code_of(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(e) => ErrorCode::from_u16(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_leave_the_server_serving_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let good = server.client().await;
    setup(&good).await;
    let quic = tally_net::tls::client_config(&server.writer_files()).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quic);
    let conn = ep.connect(server.addr, "localhost").unwrap().await.unwrap();

    // A well-framed body that is not a request: an error, and the stream goes on.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut junk = Vec::new();
    frame::encode(KIND_REQUEST, 5, &[0xAB; 300], &mut junk).unwrap();
    send.write_all(&junk).await.unwrap();
    let (id, r) = read_response(&mut recv).await;
    assert_eq!((id, code_of(&r)), (5, Some(ErrorCode::MalformedRequest)));
    send.write_all(&request_frame(6, &Request::Account(2)))
        .await
        .unwrap();
    let (id, r) = read_response(&mut recv).await;
    assert_eq!(id, 6);
    assert!(matches!(r, Response::Account(Some(_))), "{r:?}");

    // An oversized frame: an error, then that stream is closed.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut head = Vec::new();
    head.extend_from_slice(&((MAX_FRAME_BYTES as u32) + 1).to_le_bytes());
    head.extend_from_slice(&[frame::VERSION, KIND_REQUEST, 0, 0]);
    head.extend_from_slice(&9u64.to_le_bytes());
    assert_eq!(head.len(), FRAME_HEADER_BYTES);
    send.write_all(&head).await.unwrap();
    let (_, r) = read_response(&mut recv).await;
    assert_eq!(code_of(&r), Some(ErrorCode::FrameTooLarge));

    // Random bytes with a nonsense header.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x01, 0, 0, 0, 0x77, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        .await
        .unwrap();
    let (_, r) = read_response(&mut recv).await;
    assert_eq!(code_of(&r), Some(ErrorCode::MalformedRequest));

    // Others are served throughout, and so is a fresh stream on this connection.
    assert!(good.submit(transfer(300, 2, 3, 1)).await.unwrap().is_ok());
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&request_frame(1, &Request::Status))
        .await
        .unwrap();
    assert!(matches!(
        read_response(&mut recv).await.1,
        Response::Status(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_restart_keeps_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let acked = fire(&server, 4, 100, 1 << 41).await;
    let before = balances(&c).await;
    server.kill();

    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    let after = balances(&c).await;
    assert_eq!(after, before);
    assert_eq!(after, expected(&acked));
    for (id, ..) in &acked {
        assert_eq!(
            c.entry(*id).await.unwrap().status,
            message::STATUS_COMMITTED,
            "entry {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_syncs_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let acked = fire(&server, 2, 50, 1 << 42).await;
    c.close().await;
    let status = server.terminate().expect("tallyd exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    assert_eq!(balances(&c).await, expected(&acked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_delivers_every_committed_entry_exactly_once_across_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let acked = fire(&server, 3, 60, 1 << 43).await;
    let last = c.status().await.unwrap().durable_seq;

    let mut seen: Vec<(u64, u128)> = Vec::new();
    let mut sub = c.subscribe(1).await.unwrap();
    let half = last / 2;
    while sub.next_seq() <= half {
        let r = sub.next().await.unwrap().unwrap();
        if r.outcome == COMMITTED {
            seen.extend(entry_ids(&r.command).into_iter().map(|id| (r.seq, id)));
        }
    }
    let resume = sub.next_seq();
    drop(sub);
    // A new connection resumes where the first stopped.
    let c2 = server.client().await;
    let mut sub = c2.subscribe(resume).await.unwrap();
    while sub.next_seq() <= last {
        let r = sub.next().await.unwrap().unwrap();
        if r.outcome == COMMITTED {
            seen.extend(entry_ids(&r.command).into_iter().map(|id| (r.seq, id)));
        }
    }
    let ids: Vec<u128> = seen.iter().map(|s| s.1).collect();
    let unique: BTreeSet<u128> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no entry twice");
    for (id, ..) in &acked {
        assert!(unique.contains(id), "entry {id} was delivered");
    }
    // And new records arrive live.
    c.submit(transfer(999_999, 2, 3, 1)).await.unwrap();
    let r = sub.next().await.unwrap().unwrap();
    assert_eq!(entry_ids(&r.command), vec![999_999]);
}

fn entry_ids(cmd: &Command) -> Vec<u128> {
    cmd.ops()
        .iter()
        .filter_map(|op| match op {
            tally_engine::Operation::Entry(e) => Some(e.id),
            tally_engine::Operation::Transfer(t) => Some(t.id),
            tally_engine::Operation::CaptureLien(c) => Some(c.entry_id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_busy_not_queued() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &["--max-inflight", "1"]);
    let c = server.client().await;
    setup(&c).await;
    let mut busy = 0;
    for round in 0..20u128 {
        let mut tasks = Vec::new();
        for i in 0..50u128 {
            let c = c.clone();
            let id = 10_000 + round * 100 + i;
            tasks.push(tokio::spawn(async move {
                c.submit_batch(vec![transfer(id, BANK, 2, 1)]).await
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                Ok(o) => assert!(o[0].is_ok()),
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::Busy);
                    busy += 1;
                }
            }
        }
        if busy > 0 {
            break;
        }
    }
    assert!(busy > 0, "a server at capacity answers busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_lookups_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let e = Entry::transfer(500, 2, 3, 250, usd()).with_reference("invoice-9");
    c.submit(e.into()).await.unwrap();
    c.submit(transfer(501, 3, 2, 100)).await.unwrap();
    let st = c.statement(2, 0, 2).await.unwrap();
    let balances: Vec<i128> = st.lines.iter().map(|l| l.balance).collect();
    assert_eq!(balances, vec![100_000, 99_750]);
    let next = st.next_from_seq.expect("a second page");
    let st2 = c.statement(2, next, 10).await.unwrap();
    assert_eq!(st2.lines.len(), 1);
    assert_eq!((st2.lines[0].credit, st2.lines[0].balance), (100, 99_850));
    assert_eq!(st2.next_from_seq, None);
    let found = c
        .find(
            message::FindKey::Reference("invoice-9".into()),
            0,
            u64::MAX,
            10,
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let accounts = c
        .find(message::FindKey::AccountUserData(7), 0, u64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(accounts.len(), 4);
    let none = c
        .find(
            message::FindKey::Reference("invoice-9".into()),
            0,
            found[0].timestamp - 1,
            10,
        )
        .await
        .unwrap();
    assert!(none.is_empty());

    let addr = server.metrics_addr().expect("metrics address");
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for metric in [
        "tally_requests_total{kind=\"submit\"}",
        "tally_operations_total{result=\"committed\"}",
        "tally_log_syncs",
        "tally_connections",
        "tally_shard_queue_depth",
        "tally_stage_seconds_count{stage=\"queue\"}",
        "tally_stage_seconds_count{stage=\"sync\"}",
        "tally_stage_seconds_count{stage=\"respond\"}",
        "tally_stage_max_seconds{stage=\"execute\"}",
        "tally_stage_max_seconds{stage=\"append\"}",
    ] {
        assert!(text.contains(metric), "{metric} missing from\n{text}");
    }
    // Memory by structure: the ids and postings written above hold bytes.
    let gauge = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    for structure in ["entry_ids", "accounts", "history_postings", "history_marks"] {
        let name = format!("tally_resident_bytes{{structure=\"{structure}\"}} ");
        assert!(gauge(&name) > 0, "{name} is 0");
    }
    assert!(gauge("tally_process_resident_bytes ") > 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tallyd_refuses_a_corrupt_log_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    for i in 0..20 {
        c.submit(transfer(5_000 + i, 2, 3, 1)).await.unwrap();
    }
    c.close().await;
    assert!(server.terminate().unwrap().success());
    // Flip a byte inside the first record's body: damage with valid records
    // after it is corruption, not a torn tail.
    let seg = dir.path().join("segment-0000000000.wal");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = tally_wal::format::SEGMENT_HEADER_BYTES + tally_wal::format::RECORD_HEADER_BYTES + 4;
    bytes[at] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();
    let out = std::process::Command::new(support::tallyd_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--metrics", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to start") && err.contains("segment-0000000000.wal"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "at byte {}",
            tally_wal::format::SEGMENT_HEADER_BYTES
        )),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "never says it listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tallyd_cuts_a_torn_tail_reports_it_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    c.submit(transfer(6_000, 2, 3, 1)).await.unwrap();
    c.close().await;
    server.kill();
    // A write that never completed: half a record header after the last record.
    let end =
        tally_wal::scan::scan(&tally_wal::storage::RealDisk, dir.path(), None, |_| Ok(())).unwrap();
    let seg = dir.path().join("segment-0000000000.wal");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[end.end_offset..end.end_offset + 40].fill(0x5A);
    std::fs::write(&seg, &bytes).unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    assert_eq!(
        c.entry(6_000).await.unwrap().status,
        message::STATUS_COMMITTED
    );
    assert!(
        server.said("truncated a torn tail"),
        "{}",
        server.stderr.lock().unwrap()
    );
    assert!(
        c.submit(transfer(6_001, 2, 3, 1)).await.unwrap().is_ok(),
        "appends after the cut"
    );
}
