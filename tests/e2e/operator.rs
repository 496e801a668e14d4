//! What an operator does with a real `tallyd` (issue 17): an online backup
//! under load, the configuration file with its precedence, and the log's
//! formats.

use std::collections::BTreeSet;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{BalancePolicy, Command, Entry, NewAccount, Outcome};
use tally_net::client::Client;
use tally_net::message::STATUS_COMMITTED;
#[path = "../support.rs"]
mod support;
use support::{tally, tallyd_bin, Tallyd};

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

async fn setup(c: &Client) {
    let mut cmds = vec![Command::CreateCurrency(Currency::new("USD", 2).unwrap())];
    for id in [1, 2] {
        cmds.push(Command::CreateAccount(NewAccount {
            id,
            currency: usd(),
            policy: BalancePolicy::Unrestricted,
            user_data: 0,
        }));
    }
    let out = c.submit_batch(cmds).await.unwrap();
    assert!(out.iter().all(Outcome::is_ok), "{out:?}");
}

/// `tally backup DEST` while two clients keep writing: every entry
/// acknowledged before the backup began is in the copy, the copy audits
/// clean, and a second `tallyd` starts from it and serves those entries. A
/// read-only client may not take one; DEST is never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_load_holds_every_entry_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    // With a cold tier of 1,000 ids a window: the copy must carry it.
    let server = Tallyd::start(dir.path(), &["--snapshot-every", "1", "--hot-ids", "1000"]);
    let c = server.client().await;
    setup(&c).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..2u128 {
        let (c, acked, stop) = (server.client().await, acked.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut id = 1_000_000 * (t + 1);
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Command> = (0..20)
                    .map(|k| Entry::transfer(id + k, 1, 2, 1, usd()).into())
                    .collect();
                let out = c.submit_batch(batch).await.unwrap();
                assert!(out.iter().all(Outcome::is_ok), "{out:?}");
                acked.lock().unwrap().extend((0..20).map(|k| id + k));
                id += 20;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let before: BTreeSet<u128> = acked.lock().unwrap().clone();
    assert!(before.len() > 100, "the load is running");
    let dest = dir.path().join("backup");
    let d = dest.to_str().unwrap().to_string();
    let (code, out, err) = {
        let server = &server;
        let d = d.clone();
        tokio::task::spawn_blocking({
            let args = ["--json".to_string(), "backup".to_string(), d];
            let addr = server.addr.to_string();
            let data = server.dir.clone();
            move || {
                let o = Process::new(support::tally_bin())
                    .args(["--server", &addr, "--data-dir"])
                    .arg(&data)
                    .args(&args)
                    .output()
                    .unwrap();
                (
                    o.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            }
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 0, "{out} {err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["verified"], true, "{report}");
    let durable = report["durable_sequence"].as_u64().unwrap();
    assert_eq!(report["last_sequence"].as_u64(), Some(durable));
    assert!(
        report["snapshot_sequence"].as_u64().unwrap() > 0,
        "{report}"
    );
    // The load went on during the backup.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let after = acked.lock().unwrap().len();
    assert!(
        after > before.len(),
        "writes continued: {after} vs {}",
        before.len()
    );
    let live_next = c.status().await.unwrap().next_seq;
    assert!(
        live_next > durable + 1,
        "the server went past the backup's cut"
    );

    // Private files, an audit as tally-audit runs it.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Files 0600; the cold tier's directory 0700 and its files 0600.
    let cold = dest.join("cold");
    let entries = std::fs::read_dir(&dest)
        .unwrap()
        .chain(std::fs::read_dir(&cold).unwrap());
    for f in entries {
        let f = f.unwrap();
        let want = if f.path() == cold { 0o700 } else { 0o600 };
        assert_eq!(
            f.metadata().unwrap().permissions().mode() & 0o777,
            want,
            "{f:?}"
        );
    }
    assert!(
        cold.join("MANIFEST").exists(),
        "the copy has the cold tier's manifest"
    );
    let audit = tally_wal::audit::audit(&dest, None).unwrap();
    assert!(
        audit.clean && audit.warnings.is_empty(),
        "{:?} {:?}",
        audit.problems,
        audit.warnings
    );

    // Another tallyd on the copy serves every entry acknowledged before.
    let copy = Tallyd::start(&dest, &[]);
    let cc = copy.client().await;
    assert_eq!(cc.status().await.unwrap().next_seq, durable + 1);
    for id in before.iter().step_by(7).chain(before.iter().last()) {
        assert_eq!(
            cc.entry(*id).await.unwrap().status,
            STATUS_COMMITTED,
            "entry {id}"
        );
    }

    // Each backup ends its plan: more than MAX_BACKUPS_AT_ONCE in a row
    // succeed, and no partial directory is left behind.
    assert!(!dest.join(".partial").exists());
    for k in 2..=4 {
        let d = dir.path().join(format!("backup-{k}"));
        let (code, out, err) = tally(&server, &["backup", d.to_str().unwrap()]);
        assert_eq!(code, 0, "backup {k}: {out} {err}");
        assert!(out.contains("audit: clean"), "{out}");
    }

    // Never over an existing backup; never for a read-only client.
    let (code, _, err) = tally(&server, &["backup", &d]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty"), "{err}");
    let reader = server.client_with(server.reader_files()).await;
    let e = reader.backup().await.unwrap_err();
    assert_eq!(e.code, tally_engine::ErrorCode::PermissionDenied, "{e:?}");
    let e = c.backup_read(999, 0, 0, 10).await.unwrap_err();
    assert_eq!(e.code, tally_engine::ErrorCode::BackupNotFound, "{e:?}");
}

/// `--config FILE.toml`: its keys are the flags, flags override it, the
/// effective configuration prints, and a bad key stops the start (exit 2)
/// naming the key. `log-format = "json"` makes every stderr line a JSON
/// object with a timestamp, a level and the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_file_sets_what_the_flags_do_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tallyd.toml");
    std::fs::write(
        &file,
        "shards = 2\nlog-format = \"json\"\nsnapshot-every = 0\nsettlement-account = [\"USD=9000\"]\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let data = dir.path().join("data");
    let server = Tallyd::start(&data, &["--config", f]);
    let c = server.client().await;
    assert_eq!(c.status().await.unwrap().shards, 2, "from the file");
    assert!(server.said("listening") || server.said("recovered"));
    let log = server.stderr.lock().unwrap().clone();
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
    drop(server);

    let print = |extra: &[&str]| {
        let o = Process::new(tallyd_bin())
            .args(["--config", f, "--print-config"])
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, _) = print(&["--shards", "3"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("shards = 3\n"), "the flag wins: {out}");
    assert!(
        out.contains("settlement-account = [\"USD=9000\"]\n"),
        "{out}"
    );
    assert!(out.contains("log-format = \"json\"\n"), "{out}");
    // What it printed starts a server the same way.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &out).unwrap();
    let o = Process::new(tallyd_bin())
        .args(["--config", again.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), out);

    std::fs::write(&file, "shards = 2\nlisten-on = \"0.0.0.0:1\"\n").unwrap();
    let (code, _, err) = print(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown key \"listen-on\""), "{err}");
}

/// `--log-level` filters (here: warnings only, so the start says nothing),
/// and a level that is not one is refused before anything starts.
#[test]
fn log_levels_filter_and_nonsense_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &["--log-level", "warn"]);
    let said = server.stderr.lock().unwrap().clone();
    assert!(!said.contains("INFO"), "{said}");
    drop(server);
    let o = Process::new(tallyd_bin())
        .args(["--data-dir"])
        .arg(dir.path())
        .args([
            "--log-level",
            "loud",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"loud\" is not a level"));
}

/// `tallyd --hot-ids 16`: a shard keeps 16 id records per window, so the
/// first entries have long left memory (issue 14). Across a snapshot and a
/// `kill -9`, a retried first entry is still a duplicate with its first
/// outcome, `entry get` finds it with its record, its statement line is
/// there, reusing its id for other content is refused, and the metrics
/// show the cold tier answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_left_memory_answer_as_before_across_a_snapshot_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    // Ids and history postings both leave memory after a few dozen.
    let args = [
        "--hot-ids",
        "16",
        "--history-tail",
        "64",
        "--snapshot-every",
        "1",
    ];
    let server = Tallyd::start(dir.path(), &args);
    let c = server.client().await;
    setup(&c).await;
    let transfer =
        |id: u128, amount: u128| -> Command { Entry::transfer(id, 1, 2, amount, usd()).into() };
    let first = c.submit(transfer(10_000, 7)).await.unwrap();
    let first_seq = first.seq().expect("committed");
    for b in 0..20u128 {
        let batch = (0..100)
            .map(|i| transfer(20_000 + b * 100 + i, 1))
            .collect();
        let out = c.submit_batch(batch).await.unwrap();
        assert!(out.iter().all(Outcome::is_ok));
    }
    let check = |c: Client| async move {
        let again = c.submit(transfer(10_000, 7)).await.unwrap();
        assert_eq!(
            again,
            Outcome::Duplicate {
                seq: first_seq,
                code: None
            }
        );
        let other = c.submit(transfer(10_000, 8)).await.unwrap();
        assert!(
            matches!(&other, Outcome::Rejected { error, .. } if error.code == tally_engine::ErrorCode::IdReusedWithDifferentContent),
            "{other:?}"
        );
        let e = c.entry(10_000).await.unwrap();
        assert_eq!((e.status, e.seq), (STATUS_COMMITTED, first_seq));
        assert!(e.record.is_some(), "the deciding record comes with it");
        let st = c.statement(2, 0, 10).await.unwrap();
        assert_eq!(st.lines[0].record.seq, first_seq);
        assert_eq!(st.lines[0].credit, 7);
        // The whole statement, most of it read back from the history's
        // runs: every transfer once, in order, with its running balance.
        let (mut lines, mut from) = (Vec::new(), 0);
        loop {
            let page = c.statement(2, from, 300).await.unwrap();
            lines.extend(
                page.lines
                    .iter()
                    .map(|l| (l.record.seq, l.credit, l.balance)),
            );
            match page.next_from_seq {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(lines.len(), 2_001);
        assert!(lines.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(lines.last().unwrap().2, 2_007);
        c
    };
    let c = check(c).await;
    // The verifier samples old ids too: the cold tier answers for them.
    let report = c.verify(true).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Wait for a snapshot that left ids to the cold tier.
    let snapshots = || tally_wal::snapshot::list(&tally_wal::storage::RealDisk, dir.path()).len();
    for _ in 0..100 {
        if snapshots() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(snapshots() > 0, "a snapshot was taken");
    let disk = tally_wal::storage::RealDisk;
    let newest = tally_wal::snapshot::list(&disk, dir.path())
        .pop()
        .unwrap()
        .1;
    let (info, _) = tally_wal::snapshot::read(&disk, &newest).unwrap();
    assert!(
        info.cold_through > 0,
        "the snapshot left ids to the cold tier"
    );
    let metrics = server.metrics_addr().unwrap();
    let text = reqwest_like_get(metrics);
    let hits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tally_cold{what=\"hits\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        hits >= 1,
        "the retry was answered from the cold tier: {text}"
    );
    assert!(text.contains("structure=\"cold_index\""), "{text}");
    let runs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tally_history{what=\"runs\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(runs >= 2, "the history wrote runs: {text}");
    c.close().await;
    server.kill();
    let server = Tallyd::start(dir.path(), &args);
    let c = check(server.client().await).await;
    c.close().await;
    drop(server);
    let audit = tally_wal::audit::audit(dir.path(), None).unwrap();
    assert!(audit.clean, "{:?}", audit.problems);
}

/// The metrics page, read with a plain HTTP/1.0 request.
fn reqwest_like_get(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
