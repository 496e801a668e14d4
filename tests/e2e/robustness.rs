//! Robustness end to end: a real `tallyd`, real sockets, clients that try to
//! take it down, exhaust it, or get more than their certificate allows. Each
//! test also checks that an ordinary client is still served.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_engine::chain::{Chain, Operation};
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::lien::CaptureLien;
use tally_engine::limits::{MAX_CHAIN_OPERATIONS, MAX_LINES_PER_ENTRY, MAX_REFERENCE_BYTES};
use tally_engine::{BalancePolicy, Command, Entry, ErrorCode, NewAccount, Outcome};
use tally_net::client::{Client, ClientConfig};
use tally_net::frame::KIND_REQUEST;
use tally_net::limits::{MAX_FRAME_BYTES, MAX_PAGE_BYTES};
use tally_net::tls::{self, TlsFiles};
#[path = "../support.rs"]
mod support;
use support::Tallyd;

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

/// USD, an unrestricted account 1, a no-overdraft account 2 with 1,000.00,
/// and an empty account 3.
async fn setup(c: &Client) {
    let mut cmds = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
    for (id, policy) in [
        (1, BalancePolicy::Unrestricted),
        (2, BalancePolicy::NoOverdraft),
        (3, BalancePolicy::NoOverdraft),
    ] {
        cmds.push(Command::CreateAccount(NewAccount {
            id,
            currency: usd(),
            policy,
            user_data: 0,
        }));
    }
    cmds.push(Entry::transfer(100, 1, 2, 100_000, usd()).into());
    let outcomes = c.submit_batch(cmds).await.unwrap();
    assert!(outcomes.iter().all(Outcome::is_ok), "{outcomes:?}");
}

/// The server still commits an ordinary transfer.
async fn still_serves(server: &Tallyd, id: u128) {
    let c = server.client().await;
    let o = c.submit(Entry::transfer(id, 1, 2, 1, usd()).into()).await;
    assert!(matches!(o, Ok(Outcome::Committed { .. })), "{o:?}");
    c.close().await;
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// `tallyd`'s resident memory now is below `bound` (printed beside `before`).
fn rss_stays_below(pid: u32, before: u64, bound: u64, under: &str) {
    let now = rss_bytes(pid);
    eprintln!(
        "tallyd RSS before {under} {} MiB, during {} MiB",
        before >> 20,
        now >> 20
    );
    assert!(
        now < bound,
        "tallyd holds {} MiB under {under} (bound {} MiB)",
        now >> 20,
        bound >> 20
    );
}

/// One request frame, as a client would send it.
fn request_frame(id: u64, r: &tally_net::message::Request) -> Vec<u8> {
    let body = tally_net::protocol::encode_request(r);
    let mut f = Vec::new();
    tally_net::frame::encode(KIND_REQUEST, id, &body, &mut f).unwrap();
    f
}

/// The command that once aborted the server: inside every count limit the
/// code had (1,024 operations), about 4.5 MB encoded, over the log's limit.
fn oversized_chain(id: u128) -> Command {
    Command::Chain(Chain {
        id,
        ops: (0..MAX_CHAIN_OPERATIONS as u128)
            .map(|i| {
                Operation::CaptureLien(Box::new(CaptureLien {
                    lien: id * 10_000 + i,
                    account: 2,
                    entry_id: id * 10_000 + 5_000 + i,
                    currency: usd(),
                    credits: (0..MAX_LINES_PER_ENTRY as u128 - 1)
                        .map(|a| (a + 1_000, 1))
                        .collect(),
                    reference: Some("r".repeat(MAX_REFERENCE_BYTES).into()),
                }))
            })
            .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_is_refused_and_a_retry_is_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    for _ in 0..2 {
        let o = c.submit_batch(vec![oversized_chain(7)]).await.unwrap();
        assert_eq!(o[0].code(), Some(ErrorCode::CommandTooLarge), "{o:?}");
    }
    // Nothing of it was sequenced: the id is still free.
    assert_eq!(
        c.entry(7).await.unwrap().status,
        tally_net::message::STATUS_UNKNOWN
    );
    still_serves(&server, 200).await;
    // And after a restart the server starts and serves as before.
    server.kill();
    let server = Tallyd::start(dir.path(), &[]);
    still_serves(&server, 201).await;
}

/// A QUIC connection with `files`, without the client library.
async fn raw_connection(server: &Tallyd, files: &TlsFiles) -> (quinn::Endpoint, quinn::Connection) {
    let quic = tls::client_config(files).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quic);
    let conn = ep.connect(server.addr, "localhost").unwrap().await.unwrap();
    (ep, conn)
}

/// The bound this suite holds `tallyd` to under the flood below (it was
/// 4,070 MiB when a header alone allocated its declared length).
const FLOOD_RSS_BOUND: u64 = 512 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_sent_frames_neither_exhausts_memory_nor_stops_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let pid = server.child.id();
    let before = rss_bytes(pid);
    // 24 read-only connections, 60 streams each: a header declaring 8 MiB,
    // then 64 KiB of body, then nothing.
    let mut held = Vec::new();
    for _ in 0..24 {
        let (ep, conn) = raw_connection(&server, &server.reader_files()).await;
        let mut streams = Vec::new();
        for s in 0..60u64 {
            let Ok((mut send, recv)) = conn.open_bi().await else {
                break;
            };
            let mut f = Vec::new();
            f.extend_from_slice(&(MAX_FRAME_BYTES as u32).to_le_bytes());
            f.extend_from_slice(&[tally_net::frame::VERSION, KIND_REQUEST, 0, 0]);
            f.extend_from_slice(&s.to_le_bytes());
            f.extend_from_slice(&vec![0x5A; 64 << 10]);
            let _ = tokio::time::timeout(Duration::from_secs(2), send.write_all(&f)).await;
            streams.push((send, recv));
        }
        held.push((ep, conn, streams));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_stays_below(pid, before, FLOOD_RSS_BOUND, "a flood of half-sent frames");
    // Another client is served while the flood holds its streams open.
    still_serves(&server, 300).await;
    assert_eq!(
        c.account(2).await.unwrap().unwrap().account.balance(),
        100_001
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..tally_net::limits::MAX_CONNECTIONS_PER_IDENTITY + 4 {
        let (ep, conn) = raw_connection(&server, &server.reader_files()).await;
        // The server closes the surplus right after the handshake.
        let status = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&request_frame(1, &tally_net::message::Request::Status))
                .await?;
            let mut b = [0u8; 1];
            recv.read_exact(&mut b).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), status).await {
            Ok(Ok(())) => open.push((ep, conn)),
            _ => refused += 1,
        }
    }
    assert_eq!(open.len(), tally_net::limits::MAX_CONNECTIONS_PER_IDENTITY);
    assert_eq!(refused, 4);
    // Another identity still connects and writes.
    still_serves(&server, 400).await;
}

/// The development CA in the server's data directory, re-created as an
/// issuer (same name, same key) to sign test certificates.
fn dev_ca(dir: &std::path::Path) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key_pem = std::fs::read_to_string(tls::dev_dir(dir).join("ca.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Tally development CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = p.self_signed(&key).unwrap();
    (ca, key)
}

/// A client certificate signed by the server's CA with this OU (if any).
fn signed_client(dir: &std::path::Path, name: &str, ou: Option<rcgen::DnValue>) -> TlsFiles {
    let (ca, ca_key) = dev_ca(dir);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    if let Some(ou) = ou {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, ou);
    }
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let out = dir.join(format!("test-{name}"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("c.pem"), cert.pem()).unwrap();
    std::fs::write(out.join("c.key"), key.serialize_pem()).unwrap();
    TlsFiles {
        ca: tls::dev_dir(dir).join("ca.pem"),
        cert: out.join("c.pem"),
        key: out.join("c.key"),
    }
}

async fn can_write(server: &Tallyd, files: TlsFiles, id: u128) -> Result<Outcome, ErrorCode> {
    let c = Client::connect(ClientConfig::new(server.addr, files))
        .await
        .map_err(|e| e.code)?;
    let r = c
        .submit(Entry::transfer(id, 1, 2, 1, usd()).into())
        .await
        .map_err(|e| e.code);
    c.close().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_writes_only_if_it_says_writer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    setup(&server.client().await).await;
    use rcgen::DnValue;
    // Signed by the server's own CA but without the writer OU: read-only.
    let stranger = signed_client(dir.path(), "stranger", None);
    assert_eq!(
        can_write(&server, stranger.clone(), 500).await,
        Err(ErrorCode::PermissionDenied)
    );
    let c = Client::connect(ClientConfig::new(server.addr, stranger))
        .await
        .unwrap();
    assert!(c.status().await.unwrap().read_only);
    assert!(c.account(2).await.unwrap().is_some(), "read-only may read");
    let other_ou = signed_client(dir.path(), "ops", Some(DnValue::Utf8String("ops".into())));
    assert_eq!(
        can_write(&server, other_ou, 501).await,
        Err(ErrorCode::PermissionDenied)
    );
    // The read-only OU as a BMPString (once not read at all: a writer).
    let bmp = |s: &str| DnValue::BmpString(rcgen::BmpString::try_from(s).unwrap());
    let bmp_reader = signed_client(dir.path(), "bmp-reader", Some(bmp(tls::READ_ONLY_OU)));
    assert_eq!(
        can_write(&server, bmp_reader, 502).await,
        Err(ErrorCode::PermissionDenied)
    );
    let t61 = DnValue::TeletexString(rcgen::TeletexString::try_from(tls::READ_ONLY_OU).unwrap());
    let t61_reader = signed_client(dir.path(), "t61-reader", Some(t61));
    assert_eq!(
        can_write(&server, t61_reader, 503).await,
        Err(ErrorCode::PermissionDenied)
    );
    // The writer OU, in any string encoding, writes.
    let bmp_writer = signed_client(dir.path(), "bmp-writer", Some(bmp(tls::WRITER_OU)));
    assert!(matches!(
        can_write(&server, bmp_writer, 504).await,
        Ok(Outcome::Committed { .. })
    ));
    // Nothing the refused ones sent was applied.
    let c = server.client().await;
    for id in 500..=503 {
        assert_eq!(
            c.entry(id).await.unwrap().status,
            tally_net::message::STATUS_UNKNOWN
        );
    }
}

/// Chains of `per` entries with full references (about 700 bytes an
/// entry); the first credits account 2, the others account 3.
fn big_chain(id: u128, per: u128) -> Command {
    Command::Chain(Chain {
        id,
        ops: (0..per)
            .map(|i| {
                let to = if i == 0 { 2 } else { 3 };
                Operation::Entry(Box::new(
                    Entry::transfer(id * 1_000 + i, 1, to, 1, usd()).with_reference(
                        format!("{id}-{i}-").repeat(40)[..MAX_REFERENCE_BYTES].to_string(),
                    ),
                ))
            })
            .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_a_window_of_large_records_is_not_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &["--snapshot-every", "0"]);
    let c = server.client().await;
    setup(&c).await;
    // 600 records of ~40 KB: any 512 of them are far over the frame limit.
    let mut chain = 10_000u128;
    for _ in 0..20 {
        let batch: Vec<Command> = (0..30)
            .map(|_| {
                chain += 1;
                big_chain(chain, 60)
            })
            .collect();
        let o = c.submit_batch(batch).await.unwrap();
        assert!(
            o.iter().all(Outcome::is_ok),
            "{:?}",
            o.iter().find(|o| !o.is_ok())
        );
    }
    let last = c.status().await.unwrap().durable_seq;
    let mut feed = c.subscribe(1).await.unwrap();
    let mut seen = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < last {
        assert!(Instant::now() < deadline, "the feed stalled at {seen}");
        let r = feed
            .next()
            .await
            .expect("the feed failed")
            .expect("the feed ended");
        seen = r.seq;
    }
    assert_eq!(seen, last);
    // A statement over the same records pages by bytes and reaches the end.
    // 601 lines, each with its ~40 KB record: under the count limit of one
    // page, far over the frame limit, so it must take several pages.
    let (mut from, mut lines, mut pages) = (0, 0usize, 0);
    loop {
        let s = c.statement(2, from, 1_000).await.unwrap();
        assert!(!s.lines.is_empty());
        lines += s.lines.len();
        pages += 1;
        match s.next_from_seq {
            Some(n) => from = n,
            None => break,
        }
    }
    assert_eq!(lines, 600 + 1);
    // Paged by count alone it would be one page of ~25 MB, over the frame
    // limit (the error repeated on every retry).
    assert!(pages >= 601 * 30_000 / MAX_PAGE_BYTES, "{pages} pages");

    // A read-only client asks for 200 such pages on one stream and reads
    // none of the answers: responses wait for the connection's budget
    // before they are built, so tallyd's memory stays bounded (200 pages of
    // ~4 MB were once all built and held).
    let pid = server.child.id();
    let before = rss_bytes(pid);
    let (_ep, conn) = raw_connection(&server, &server.reader_files()).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    for id in 1..=200u64 {
        let r = tally_net::message::Request::Statement {
            account: 2,
            from_seq: 0,
            limit: 1_000,
        };
        send.write_all(&request_frame(id, &r)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss_stays_below(pid, before, before + (128 << 20), "200 unread pages");
    still_serves(&server, 700).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_storm_during_load_does_not_stall_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let metrics = server.metrics_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut storm = Vec::new();
    for _ in 0..32 {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        storm.push(std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = std::net::TcpStream::connect(metrics) else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                if s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").is_ok() {
                    let mut out = String::new();
                    if s.read_to_string(&mut out).is_ok() && out.contains("tally_log_syncs") {
                        scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Writes keep committing: 2,000 transfers in batches, each acknowledged
    // well within the client's timeout.
    for b in 0..20u128 {
        let batch: Vec<Command> = (0..100u128)
            .map(|i| Entry::transfer(50_000 + b * 100 + i, 1, 2, 1, usd()).into())
            .collect();
        let o = c.submit_batch(batch).await.unwrap();
        assert!(o.iter().all(Outcome::is_ok));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in storm {
        t.join().unwrap();
    }
    assert!(scrapes.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(
        c.account(2).await.unwrap().unwrap().account.balance(),
        100_000 + 2_000
    );
}

#[test]
fn development_certificates_are_refused_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::tallyd_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0", "--metrics", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("development certificates"), "{err}");
    assert!(err.contains("--dev-certs"), "{err}");
    // Private files: the data directory 0700, keys 0600, from creation.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let server = Tallyd::start(&dir.path().join("d"), &[]);
    assert_eq!(mode(&server.dir), 0o700);
    let certs = tls::dev_dir(&server.dir);
    assert_eq!(mode(&certs), 0o700);
    for key in ["ca.key", "server.key", "client.key", "reader.key"] {
        assert_eq!(mode(&certs.join(key)), 0o600, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_take_the_event_drivers_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    // The id the driver would use for event 42's first step.
    let derived =
        tally_engine::event::ids::derive(42, tally_engine::event::ids::Purpose::StepOp, 0, 1, 0);
    let o = c
        .submit(Entry::transfer(derived, 1, 2, 1, usd()).into())
        .await
        .unwrap();
    assert_eq!(o.code(), Some(ErrorCode::ReservedId), "{o:?}");
    assert_eq!(
        c.entry(derived).await.unwrap().status,
        tally_net::message::STATUS_UNKNOWN
    );
    still_serves(&server, 600).await;
}

// One thread: the 40 callers all queue their submits before the batcher
// runs, so it gathers them at once.
#[tokio::test(flavor = "current_thread")]
async fn the_batcher_keeps_each_frame_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    // 40 concurrent submits of ~350 KB chains: about 14 MB if gathered into
    // one request, which the batcher once sent as one oversized frame and
    // failed every caller with frame_too_large.
    let mut calls = Vec::new();
    for k in 0..40u128 {
        let c = c.clone();
        calls.push(tokio::spawn(async move {
            c.submit(big_chain(20_000 + k, 500)).await
        }));
    }
    for call in calls {
        let o = call.await.unwrap().expect("a submit the batcher gathered");
        assert!(o.is_ok(), "{o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_reads_take_turns_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    // A read-only client asks for full verifications and event scans on
    // many streams at once: one runs per connection, the rest are told
    // `busy` at once instead of queueing (they once all queued, and kept
    // running after the connection closed).
    let mut cc = ClientConfig::new(server.addr, server.reader_files());
    cc.streams = 8;
    let r = Client::connect(cc).await.unwrap();
    let mut heavy = Vec::new();
    for i in 0..16 {
        let r = r.clone();
        heavy.push(tokio::spawn(async move {
            if i % 2 == 0 {
                r.verify(true).await.map(|v| v.clean)
            } else {
                r.events(None, Duration::ZERO, 1_000).await.map(|_| true)
            }
        }));
    }
    for b in 0..10u128 {
        let batch: Vec<Command> = (0..100u128)
            .map(|i| Entry::transfer(70_000 + b * 100 + i, 1, 2, 1, usd()).into())
            .collect();
        let o = c.submit_batch(batch).await.unwrap();
        assert!(o.iter().all(Outcome::is_ok));
    }
    let (mut ran, mut busy) = (0, 0);
    for h in heavy {
        match h.await.unwrap() {
            Ok(true) => ran += 1,
            Err(e) if e.code == ErrorCode::Busy => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(ran >= 1 && busy >= 1, "ran {ran}, busy {busy}");
    // Alone, it runs.
    assert!(r.verify(true).await.unwrap().clean);
}

/// Many single-transfer requests at once on one network thread: every one
/// commits (none is answered `busy`) and every in-flight reservation comes
/// back. A shard that signalled "executed" before counting its part out of
/// the batch let the history give a reservation back before the batch
/// completed, which gave it back again: the count wrapped below zero and
/// every later write was `busy` (found with `--workers 1` at 8 k/s; a
/// debug build now asserts it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_singles_on_one_worker_all_commit_and_give_their_reservations_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &["--workers", "1", "--shards", "2"]);
    let c = server.client().await;
    setup(&c).await;
    let mut tasks = Vec::new();
    for k in 0..8u128 {
        let c = server.client().await;
        // 16 requests in flight per connection, 100 rounds.
        for lane in 0..16u128 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut busy = 0;
                for i in 0..100u128 {
                    let id = 10_000 + k * 10_000 + lane * 100 + i;
                    match c.submit(Entry::transfer(id, 1, 3, 1, usd()).into()).await {
                        Ok(o) => assert!(o.is_ok(), "{o:?}"),
                        Err(e) if e.code == ErrorCode::Busy => busy += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                busy
            }));
        }
    }
    let mut busy = 0;
    for t in tasks {
        busy += t.await.unwrap();
    }
    assert_eq!(busy, 0, "nothing was in flight beyond the limits");
    let addr = server.metrics_addr().expect("metrics address");
    let deadline = Instant::now() + Duration::from_secs(10);
    let inflight = loop {
        let text = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("tally_inflight_commands "))
            .expect("the in-flight gauge")
            .to_string();
        if line.ends_with(" 0") || Instant::now() > deadline {
            break line;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(inflight, "tally_inflight_commands 0");
    still_serves(&server, 99_999).await;
}

/// A stream's error answers never wait for budget that only its running
/// requests give back: 400 submits pipelined on one stream hold more reply
/// budget than a connection has (each reserves its answer's bound before it
/// runs), then a frame of the wrong kind is answered, then 10 more submits.
/// (When a stream's requests first ran inside its task, the error answer
/// was awaited in the loop that polls them: it queued for budget behind
/// them, they were never polled again, and the stream, then the
/// connection, hung.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_behind_many_pipelined_submits_does_not_hang_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let c = server.client().await;
    setup(&c).await;
    let (_ep, conn) = raw_connection(&server, &server.writer_files()).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let submit = |id: u64| {
        let command: Command = Entry::transfer(50_000 + id as u128, 1, 3, 1, usd()).into();
        request_frame(id, &tally_net::message::Request::Submit(vec![command]))
    };
    let mut frames = Vec::new();
    for id in 1..=400u64 {
        frames.extend_from_slice(&submit(id));
    }
    let body = tally_net::protocol::encode_request(&tally_net::message::Request::Status);
    tally_net::frame::encode(tally_net::frame::KIND_RESPONSE, 401, &body, &mut frames).unwrap();
    for id in 402..=411u64 {
        frames.extend_from_slice(&submit(id));
    }
    send.write_all(&frames).await.unwrap();
    send.finish().unwrap();
    let read_all = async {
        let mut answered = std::collections::BTreeSet::new();
        while let Some(h) = tally_net::frame::read_header(&mut recv).await.unwrap() {
            tally_net::frame::read_body(&mut recv, h.len as usize)
                .await
                .unwrap();
            answered.insert(h.id);
        }
        answered
    };
    let answered = tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("every frame answered and the stream ended");
    assert_eq!(answered, (1..=411u64).collect());
    still_serves(&server, 99_998).await;
}
