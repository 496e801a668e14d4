//! The `tally` CLI against a real `tallyd`, as a user would run it.

use serde_json::Value;
#[path = "../support.rs"]
mod support;
use support::{tally, Tallyd};

fn ok(server: &Tallyd, args: &[&str]) -> String {
    let (code, out, err) = tally(server, args);
    assert_eq!(code, 0, "tally {args:?} failed: {err}");
    out
}

/// Runs `tally`, which must exit 1 (refused by the server) with
/// `error: CODE: ...` on stderr.
fn refused(server: &Tallyd, args: &[&str], code: &str) {
    let (status, _, err) = tally(server, args);
    assert_eq!(status, 1, "tally {args:?}: {err}");
    assert!(
        err.starts_with(&format!("error: {code}: ")),
        "tally {args:?}: {err}"
    );
}

/// Runs `tally`, which must exit 2 (a usage error: a bad value on the
/// command line) with `error: CODE: ...` on stderr, and with `--json` the
/// same code as a JSON error on stdout.
fn usage(server: &Tallyd, args: &[&str], code: &str) {
    let (status, out, err) = tally(server, args);
    assert_eq!(status, 2, "tally {args:?}: {err}");
    assert!(
        err.starts_with(&format!("error: {code}: ")),
        "tally {args:?}: {err}"
    );
    assert!(out.is_empty(), "tally {args:?}: {out}");
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (status, out, err) = tally(server, &a);
    assert_eq!(status, 2, "tally {a:?}: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["code"], code, "tally {a:?}: {out}");
}

/// USD at scale 2, the unrestricted account 1 and a wallet (no overdraft).
fn usd_bank_and_wallet(server: &Tallyd, wallet: &str) {
    ok(server, &["currency", "create", "USD", "--scale", "2"]);
    let bank = [
        "account",
        "create",
        "1",
        "--currency",
        "USD",
        "--policy",
        "unrestricted",
    ];
    ok(server, &bank);
    ok(server, &["account", "create", wallet, "--currency", "USD"]);
}

fn json(server: &Tallyd, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(ok(server, &a).trim()).unwrap()
}

#[test]
fn a_first_session_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    usd_bank_and_wallet(&server, "0x2");
    ok(
        &server,
        &[
            "account",
            "create",
            "00000000-0000-0000-0000-000000000003",
            "--currency",
            "USD",
            "--policy",
            "overdraft-limit=5.00",
        ],
    );
    let out = ok(
        &server,
        &[
            "transfer", "10", "--from", "1", "--to", "2", "--amount", "100.50",
        ],
    );
    assert!(out.contains("committed"), "{out}");

    let a = json(&server, &["account", "get", "2"]);
    assert_eq!(a["balance"], "100.50");
    assert_eq!(a["available"], "100.50");
    assert_eq!(a["version"], 1);
    assert_eq!(a["policy"], "no_overdraft");
    let a3 = json(&server, &["account", "get", "3"]);
    assert_eq!(a3["overdraft_limit"], "5.00");

    // Too many decimals: refused before anything is sent, a usage error.
    usage(
        &server,
        &[
            "transfer", "11", "--from", "2", "--to", "3", "--amount", "1.001",
        ],
        "invalid_amount",
    );
    // A rejection: non-zero, code on stderr, JSON error with --json.
    let (code, out, err) = tally(
        &server,
        &[
            "--json", "transfer", "12", "--from", "2", "--to", "3", "--amount", "500",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.starts_with("error: insufficient_funds: "), "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["code"], "insufficient_funds");
    // Optimistic concurrency.
    refused(
        &server,
        &[
            "transfer",
            "13",
            "--from",
            "2",
            "--to",
            "3",
            "--amount",
            "1",
            "--expect-version",
            "2=7",
        ],
        "version_conflict",
    );

    // Entry post with several lines, then entry get.
    ok(
        &server,
        &[
            "entry",
            "post",
            "20",
            "--debit",
            "2=10.00",
            "--credit",
            "3=7.50",
            "--credit",
            "1=2.50",
            "--reference",
            "split",
        ],
    );
    let e = json(&server, &["entry", "get", "20"]);
    assert_eq!(e["status"], "committed");
    assert_eq!(e["lines"].as_array().unwrap().len(), 3);
    assert_eq!(e["lines"][1]["amount"], "7.50");
    let r = json(&server, &["entry", "get", "12"]);
    assert_eq!(
        (r["status"].as_str(), r["code"].as_str()),
        (Some("rejected"), Some("insufficient_funds"))
    );
    assert_eq!(json(&server, &["entry", "get", "99"])["status"], "unknown");
    // Idempotent retry exits 0 and says duplicate.
    let v = json(
        &server,
        &[
            "transfer", "10", "--from", "1", "--to", "2", "--amount", "100.50",
        ],
    );
    assert_eq!(v["status"], "duplicate");

    // A correction.
    ok(
        &server,
        &[
            "entry",
            "post",
            "21",
            "--debit",
            "3=7.50",
            "--credit",
            "2=7.50",
            "--corrects",
            "20",
        ],
    );

    // Liens.
    ok(
        &server,
        &[
            "lien",
            "create",
            "30",
            "--account",
            "2",
            "--amount",
            "20",
            "--expires-in",
            "1h",
        ],
    );
    assert_eq!(json(&server, &["account", "get", "2"])["reserved"], "20.00");
    ok(
        &server,
        &[
            "lien", "capture", "30", "--entry", "31", "--to", "3", "--amount", "5.25",
        ],
    );
    let l = json(&server, &["lien", "get", "30"]);
    assert_eq!(
        (l["status"].as_str(), l["captured"].as_str()),
        (Some("captured"), Some("5.25"))
    );
    ok(
        &server,
        &["lien", "create", "32", "--account", "2", "--amount", "1"],
    );
    ok(&server, &["lien", "release", "32"]);
    assert_eq!(json(&server, &["lien", "get", "32"])["status"], "released");
    let a = json(&server, &["account", "get", "2"]);
    assert_eq!(
        (a["balance"].as_str(), a["reserved"].as_str()),
        (Some("92.75"), Some("0.00"))
    );

    // The statement: every posting with the balance after it.
    let s = json(&server, &["statement", "2"]);
    let balances: Vec<&str> = s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["balance"].as_str().unwrap())
        .collect();
    assert_eq!(balances, vec!["100.50", "90.50", "98.00", "92.75"]);

    // The feed, as JSON lines.
    let out = ok(&server, &["subscribe", "--from-seq", "1", "--limit", "3"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["kind"], "currency");

    // A read-only certificate cannot write.
    let certs = dir.path().join("certs");
    refused(
        &server,
        &[
            "--ca",
            certs.join("ca.pem").to_str().unwrap(),
            "--cert",
            certs.join("reader.pem").to_str().unwrap(),
            "--key",
            certs.join("reader.key").to_str().unwrap(),
            "transfer",
            "40",
            "--from",
            "2",
            "--to",
            "3",
            "--amount",
            "1",
        ],
        "permission_denied",
    );
}

#[test]
fn bad_values_are_usage_errors_and_refusals_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    usd_bank_and_wallet(&server, "2");
    let transfer = |amount: &'static str| {
        [
            "transfer", "10", "--from", "1", "--to", "2", "--amount", amount,
        ]
    };
    // An amount that is not a decimal, or has more decimals than USD's 2.
    usage(&server, &transfer("1,50"), "invalid_amount");
    usage(&server, &transfer("0"), "invalid_amount");
    usage(&server, &transfer("0.005"), "invalid_amount");
    usage(
        &server,
        &[
            "entry", "post", "11", "--debit", "1=1.005", "--credit", "2=1.005",
        ],
        "invalid_amount",
    );
    usage(
        &server,
        &[
            "account",
            "create",
            "3",
            "--currency",
            "USD",
            "--policy",
            "overdraft-limit=0.001",
        ],
        "invalid_amount",
    );
    // Ids, currency codes, pairs, durations, versions.
    usage(&server, &["account", "get", "not-an-id"], "invalid_id");
    usage(&server, &["account", "get", "0"], "invalid_id");
    usage(
        &server,
        &[
            "transfer", "12", "--from", "1", "--to", "x2", "--amount", "1",
        ],
        "invalid_id",
    );
    usage(&server, &["currency", "get", "usd"], "invalid_currency");
    usage(
        &server,
        &["entry", "post", "13", "--debit", "1:1", "--credit", "2=1"],
        "invalid_command",
    );
    usage(
        &server,
        &[
            "transfer",
            "14",
            "--from",
            "1",
            "--to",
            "2",
            "--amount",
            "1",
            "--expect-version",
            "2=new",
        ],
        "invalid_command",
    );
    usage(&server, &["hotspots", "--window", "5x"], "invalid_command");
    usage(
        &server,
        &[
            "lien",
            "create",
            "15",
            "--account",
            "2",
            "--amount",
            "1",
            "--expires-in",
            "soon",
        ],
        "invalid_expiry",
    );
    // Flags that go together.
    let ca = dir.path().join("certs").join("ca.pem");
    usage(
        &server,
        &["--ca", ca.to_str().unwrap(), "account", "get", "1"],
        "invalid_command",
    );
    // A bad enum value: clap's own error, listing the possible values.
    for (args, values) in [
        (
            &[
                "account",
                "create",
                "4",
                "--currency",
                "USD",
                "--policy",
                "overdraw",
            ][..],
            "[possible values: no-overdraft, unrestricted, overdraft-limit=AMOUNT]",
        ),
        (
            &["account", "state", "2", "melted"][..],
            "[possible values: active, frozen, closed]",
        ),
        (&["event", "list", "--state", "stuck"][..], "timed_out"),
    ] {
        let (code, _, err) = tally(&server, args);
        assert_eq!(code, 2, "tally {args:?}: {err}");
        assert!(
            err.starts_with("error: invalid value '") && err.contains(values),
            "tally {args:?}: {err}"
        );
    }
    // Nothing of the above reached the ledger.
    let a = json(&server, &["account", "get", "2"]);
    assert_eq!(
        (a["balance"].as_str(), a["version"].as_u64()),
        (Some("0.00"), Some(0))
    );
    // What the server refuses still exits 1, with the JSON error on stdout.
    let overdraw = [
        "transfer", "20", "--from", "2", "--to", "1", "--amount", "5",
    ];
    refused(&server, &overdraw, "insufficient_funds");
    let mut a = vec!["--json"];
    a.extend_from_slice(&overdraw);
    let (code, out, _) = tally(&server, &a);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["code"], "insufficient_funds");
    refused(&server, &["account", "get", "99"], "account_not_found");
}

#[test]
fn no_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &[]);
    let addr = server.addr;
    drop(server);
    let out = std::process::Command::new(support::tally_bin())
        .args([
            "--server",
            &addr.to_string(),
            "--request-timeout",
            "2",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["account", "get", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: timeout") || err.starts_with("error: unavailable"),
        "{err}"
    );
    // A bad id is a usage error found before connecting, server or not.
    let out = std::process::Command::new(support::tally_bin())
        .args(["--server", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .args(["account", "get", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: invalid_id: "), "{err}");
}

#[test]
fn the_operators_routine_verify_investigate_correct() {
    let dir = tempfile::tempdir().unwrap();
    let server = Tallyd::start(dir.path(), &["--verify-every", "1s"]);
    ok(&server, &["currency", "create", "EUR", "--scale", "2"]);
    ok(
        &server,
        &[
            "account",
            "create",
            "1",
            "--currency",
            "EUR",
            "--policy",
            "unrestricted",
        ],
    );
    for a in ["2", "3", "4", "5"] {
        ok(&server, &["account", "create", a, "--currency", "EUR"]);
    }
    ok(
        &server,
        &[
            "entry", "post", "10", "--debit", "1=400.00", "--credit", "2=100.00", "--credit",
            "3=100.00", "--credit", "4=100.00", "--credit", "5=100.00",
        ],
    );
    // A known workload: account 2 written 6 more times, 3 three times; two
    // stale-version writes on account 4.
    for i in 0..3 {
        ok(
            &server,
            &[
                "transfer",
                &format!("{}", 20 + i),
                "--from",
                "2",
                "--to",
                "3",
                "--amount",
                "1",
            ],
        );
    }
    for i in 0..3 {
        ok(
            &server,
            &[
                "transfer",
                &format!("{}", 30 + i),
                "--from",
                "2",
                "--to",
                "5",
                "--amount",
                "1",
            ],
        );
    }
    for i in 0..2 {
        let (code, _, err) = tally(
            &server,
            &[
                "transfer",
                &format!("{}", 40 + i),
                "--from",
                "4",
                "--to",
                "5",
                "--amount",
                "1",
                "--expect-version",
                "4=99",
            ],
        );
        assert_eq!(code, 1, "{err}");
    }
    let h = json(&server, &["hotspots", "--window", "1m", "--top", "3"]);
    let top: Vec<(String, u64)> = h["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["account"].as_str().unwrap().to_string(),
                w["count"].as_u64().unwrap(),
            )
        })
        .collect();
    // Writes per account: 1 by entry 10 (once); 2: 1 + 6 = 7; 3: 1 + 3 = 4; 5: 1 + 3 = 4.
    assert_eq!(
        top,
        vec![
            ("2".to_string(), 7),
            ("3".to_string(), 4),
            ("5".to_string(), 4)
        ]
    );
    assert_eq!(h["conflicts"][0]["account"], "4");
    assert_eq!(h["conflicts"][0]["count"], 2);

    // Verify: clean.
    let v = json(&server, &["verify", "--full"]);
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["currencies"][0]["sum"], "0.00");
    let (code, out, _) = tally(&server, &["verify"]);
    assert_eq!(code, 0);
    assert!(out.contains("clean"), "{out}");

    // Correct entry 20 (2 -> 3, 1.00): its reversal, linked, with the reason.
    let c = json(&server, &["correct", "20", "--reason", "duplicate payout"]);
    assert_eq!(
        (c["status"].as_str(), c["corrects"].as_str()),
        (Some("committed"), Some("20"))
    );
    assert_eq!(json(&server, &["account", "get", "2"])["balance"], "95.00");
    // Retrying the same correction is idempotent; a second one is refused...
    assert_eq!(
        json(&server, &["correct", "20", "--reason", "duplicate payout"])["status"],
        "duplicate"
    );
    refused(
        &server,
        &["correct", "20", "--reason", "again", "--entry-id", "77"],
        "already_corrected",
    );
    // ...unless explicitly allowed: here with explicit lines.
    ok(
        &server,
        &[
            "correct",
            "20",
            "--reason",
            "partial",
            "--entry-id",
            "78",
            "--allow-repeat",
            "--debit",
            "3=0.50",
            "--credit",
            "2=0.50",
        ],
    );
    assert_eq!(json(&server, &["account", "get", "2"])["balance"], "95.50");
    // Correcting a rejected or unknown entry is refused.
    refused(
        &server,
        &["correct", "40", "--reason", "x"],
        "corrected_entry_not_found",
    );
    // The statement shows the corrections and what they correct.
    let (_, text, _) = tally(&server, &["statement", "2"]);
    assert!(
        text.contains("corrects 20: duplicate payout") && text.contains("corrects 20: partial"),
        "{text}"
    );
    let s = json(&server, &["statement", "2"]);
    assert!(s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["corrects"] == "20" && l["reference"] == "duplicate payout"));

    // The background verifier ran and reported through the metrics.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let addr = server.metrics_addr().unwrap();
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(metrics.contains("tally_verify_errors 0"), "{metrics}");
    assert!(
        metrics.contains("tally_hot_account_writes{account=\"2\"}"),
        "{metrics}"
    );
    assert!(server.said(": clean ("));

    // Offline, the audit shows the corrections too.
    let status = server.terminate().unwrap();
    assert!(status.success());
    let report = tally_wal::audit::audit(dir.path(), Some(2)).unwrap();
    assert!(report.clean, "{:?}", report.problems);
    let st = report.statement.unwrap();
    let corrections: Vec<_> = st.iter().filter(|l| l.kind == "correction").collect();
    assert_eq!(corrections.len(), 2);
    assert!(corrections
        .iter()
        .all(|l| l.corrects.as_deref() == Some(&tally_engine::id::format_uuid(20)[..])));
}

#[test]
fn help_describes_each_command_under_its_own_name() {
    let out = std::process::Command::new(support::tally_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        help.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("status").contains("position"), "{help}");
    assert!(
        help.contains(
            "Exit status: 0 ok, 1 refused by the server or verify found errors, 2 usage error"
        ),
        "{help}"
    );
    assert!(line("event").contains("events"), "{help}");
    assert!(!line("event").contains("position"), "{help}");
}
