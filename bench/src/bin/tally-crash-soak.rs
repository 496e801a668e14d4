//! `tally-crash-soak`: kills a loaded `tallyd` with SIGKILL at random moments,
//! round after round on one data directory, and after each restart checks
//! that nothing acknowledged was lost (issue 16, item 4; not run by CI: see
//! docs/RELIABILITY.md for the figures and how to reproduce them).
//!
//! Each round: start `tallyd` on the directory, submit batches of
//! 1..=`--max-batch` one-unit transfers from account 1 to account 2 from
//! `--clients` concurrent clients, kill the process after a random
//! 20..=`--max-kill-ms` ms, start it again and check:
//! - every transfer whose batch was acknowledged is committed;
//! - every batch that was sent but not acknowledged is all or nothing
//!   (each of its transfers committed, or none);
//! - account 2's balance equals the number of committed transfers, at least
//!   every acknowledged one and at most every one sent, and money is
//!   conserved (account 1's balance is its negation).
//!
//! Exit 1 on the first violation, naming the round and the seed.

#![forbid(unsafe_code)]

use clap::Parser;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{BalancePolicy, Command, Entry, NewAccount, Outcome};
use tally_net::client::{Client, ClientConfig};

#[derive(Parser)]
#[command(
    name = "tally-crash-soak",
    about = "SIGKILL a loaded tallyd, restart, check nothing acknowledged was lost"
)]
struct Args {
    /// Rounds (kill + restart + check).
    #[arg(long, default_value_t = 1000)]
    rounds: u64,
    /// The tallyd binary (default: beside this one).
    #[arg(long)]
    tallyd: Option<PathBuf>,
    /// The data directory (default: a fresh temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of the kill times and batch sizes (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Extra argument for tallyd (repeatable), e.g. --tallyd-arg=--shards=2.
    #[arg(long = "tallyd-arg", allow_hyphen_values = true)]
    tallyd_arg: Vec<String>,
    /// Print one JSON line at the end instead of text.
    #[arg(long)]
    json: bool,
    /// Concurrent clients submitting.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Largest batch (each batch has 1..=this many transfers).
    #[arg(long, default_value_t = 64)]
    max_batch: u64,
    /// The kill comes 20 ms..=this many ms after the load starts.
    #[arg(long, default_value_t = 400)]
    max_kill_ms: u64,
}

/// xorshift64*: kill times and batch sizes, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap_or_else(|_| unreachable!("USD is a valid code"))
}

/// A running tallyd and where it listens.
struct Server {
    child: Child,
    addr: SocketAddr,
}

fn start(tallyd: &Path, dir: &Path, extra: &[String]) -> Result<(Server, Duration), String> {
    let t = Instant::now();
    let mut child = Process::new(tallyd)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--log-level",
            "warn",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", tallyd.display()))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.strip_prefix("tallyd listening on ") {
                    break a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
                }
            }
            _ => {
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(format!("tallyd exited before listening: {status}"));
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((Server { child, addr }, t.elapsed()))
}

async fn connect(addr: SocketAddr, dir: &Path) -> Result<Client, String> {
    let mut config = ClientConfig::new(addr, tally_net::tls::dev_client_files(dir));
    config.timeout = Duration::from_secs(30);
    Client::connect(config).await.map_err(|e| e.to_string())
}

/// What the clients sent in a round: each batch's ids, and whether it was
/// acknowledged (every outcome committed).
type Sent = Arc<Mutex<Vec<(Vec<u128>, bool)>>>;

struct Totals {
    acked: u64,
    sent: u64,
    unacked_batches_committed: u64,
    unacked_batches_absent: u64,
    restart_max: Duration,
    restart_sum: Duration,
    committed_total: u64,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tally-crash-soak: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(a)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally-crash-soak: FAILED: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(a: Args) -> Result<(), String> {
    let tallyd = match a.tallyd.clone() {
        Some(t) => t,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("tallyd"),
    };
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let mut rng = Rng(seed);
    eprintln!(
        "tally-crash-soak: seed {seed}, {} rounds, {}",
        a.rounds,
        dir.display()
    );
    let (mut server, _) = start(&tallyd, &dir, &a.tallyd_arg)?;
    {
        let c = connect(server.addr, &dir).await?;
        let mut setup = vec![Command::CreateCurrency(Currency {
            code: usd(),
            scale: 2,
        })];
        for id in [1, 2] {
            setup.push(Command::CreateAccount(NewAccount {
                id,
                currency: usd(),
                policy: BalancePolicy::Unrestricted,
                user_data: 0,
            }));
        }
        let out = c.submit_batch(setup).await.map_err(|e| e.to_string())?;
        if !out.iter().all(Outcome::is_ok) {
            return Err(format!("setup: {out:?}"));
        }
        c.close().await;
    }
    let mut totals = Totals {
        acked: 0,
        sent: 0,
        unacked_batches_committed: 0,
        unacked_batches_absent: 0,
        restart_max: Duration::ZERO,
        restart_sum: Duration::ZERO,
        committed_total: 0,
    };
    let mut next_id: u128 = 1_000;
    let began = Instant::now();
    for round in 1..=a.rounds {
        let from = {
            let c = connect(server.addr, &dir).await?;
            let s = c.status().await.map_err(|e| e.to_string())?;
            c.close().await;
            s.next_seq
        };
        let sent: Sent = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..a.clients.max(1) {
            let c = connect(server.addr, &dir).await?;
            let sent = sent.clone();
            let sizes: Vec<u128> = (0..10_000)
                .map(|_| u128::from(rng.between(1, 64) as u8))
                .collect();
            let base = next_id;
            next_id += 1 << 32;
            tasks.push(tokio::spawn(async move {
                let mut id = base;
                for n in sizes {
                    let ids: Vec<u128> = (id..id + n).collect();
                    id += n;
                    let k = {
                        let mut s = sent.lock().unwrap_or_else(|p| p.into_inner());
                        s.push((ids.clone(), false));
                        s.len() - 1
                    };
                    let batch: Vec<Command> = ids
                        .iter()
                        .map(|&i| Entry::transfer(i, 1, 2, 1, usd()).into())
                        .collect();
                    match c.submit_batch(batch).await {
                        Ok(out) if out.iter().all(|o| matches!(o, Outcome::Committed { .. })) => {
                            sent.lock().unwrap_or_else(|p| p.into_inner())[k].1 = true;
                        }
                        Ok(out) => {
                            return Err(format!("a batch was not committed: {:?}", out.first()))
                        }
                        Err(_) => return Ok(()),
                    }
                }
                Ok(())
            }));
        }
        let kill_at = rng.between(20, a.max_kill_ms.max(20));
        tokio::time::sleep(Duration::from_millis(kill_at)).await;
        let _ = server.child.kill();
        let _ = server.child.wait();
        // The server is gone: no acknowledgement can arrive any more. One
        // that arrived but was not yet seen by its task counts as not
        // acknowledged, which only weakens the check for that batch to all
        // or nothing.
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            if let Ok(Err(e)) = t.await {
                return Err(format!("round {round} (seed {seed}): {e}"));
            }
        }
        let (again, took) = start(&tallyd, &dir, &a.tallyd_arg)?;
        server = again;
        totals.restart_max = totals.restart_max.max(took);
        totals.restart_sum += took;
        let c = connect(server.addr, &dir).await?;
        let batches = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
        check(&c, from, &batches, &mut totals)
            .await
            .map_err(|e| format!("round {round} (seed {seed}): {e}"))?;
        c.close().await;
        if round % 50 == 0 {
            eprintln!(
                "round {round}: {} acknowledged transfers checked, none lost ({:.0} s)",
                totals.acked,
                began.elapsed().as_secs_f64()
            );
        }
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    let summary = serde_json::json!({
        "seed": seed,
        "rounds": a.rounds,
        "acknowledged_transfers": totals.acked,
        "sent_transfers": totals.sent,
        "committed_transfers": totals.committed_total,
        "lost": 0,
        "unacknowledged_batches_committed": totals.unacked_batches_committed,
        "unacknowledged_batches_absent": totals.unacked_batches_absent,
        "restart_mean_ms": totals.restart_sum.as_millis() as u64 / a.rounds.max(1),
        "restart_max_ms": totals.restart_max.as_millis() as u64,
        "seconds": began.elapsed().as_secs(),
        "clients": a.clients,
        "max_batch": a.max_batch,
        "max_kill_ms": a.max_kill_ms,
    });
    if a.json {
        println!("{summary}");
    } else {
        println!(
            "{} rounds, {} acknowledged transfers, none lost; unacknowledged batches: {} committed whole, {} absent whole; restart mean {} ms, max {} ms (seed {seed})",
            a.rounds,
            totals.acked,
            totals.unacked_batches_committed,
            totals.unacked_batches_absent,
            summary["restart_mean_ms"],
            summary["restart_max_ms"]
        );
    }
    Ok(())
}

/// The entry ids committed to account 2 from sequence `from` on (its
/// statement, page by page).
async fn committed_since(c: &Client, from: u64) -> Result<BTreeSet<u128>, String> {
    let mut ids = BTreeSet::new();
    let mut at = from;
    loop {
        let page = c.statement(2, at, 1_000).await.map_err(|e| e.to_string())?;
        for line in &page.lines {
            if let Command::Op(op) = &line.record.command {
                if let Some((_, id)) = op.id() {
                    ids.insert(id);
                }
            }
        }
        match page.next_from_seq {
            Some(next) if next > at => at = next,
            _ => return Ok(ids),
        }
    }
}

/// The checks after a restart (see the module docs). `from`: the next
/// sequence when the round began.
async fn check(
    c: &Client,
    from: u64,
    batches: &[(Vec<u128>, bool)],
    t: &mut Totals,
) -> Result<(), String> {
    let committed = committed_since(c, from).await?;
    let mut in_batches = 0u64;
    for (ids, acked) in batches {
        t.sent += ids.len() as u64;
        let present = ids.iter().filter(|id| committed.contains(id)).count();
        in_batches += present as u64;
        if *acked {
            if present != ids.len() {
                let lost = ids.iter().find(|id| !committed.contains(id));
                return Err(format!(
                    "{} of {} acknowledged transfers of a batch are lost (first: {lost:?})",
                    ids.len() - present,
                    ids.len()
                ));
            }
            t.acked += ids.len() as u64;
        } else if present == ids.len() {
            t.unacked_batches_committed += 1;
        } else if present == 0 {
            t.unacked_batches_absent += 1;
        } else {
            return Err(format!(
                "an unacknowledged batch survived in part: {present} of {} (ids {}..)",
                ids.len(),
                ids[0]
            ));
        }
    }
    if in_batches != committed.len() as u64 {
        return Err(format!(
            "account 2 was credited by {} entries this round, {in_batches} of them sent",
            committed.len()
        ));
    }
    let to = c
        .account(2)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("account 2 is gone")?;
    let from = c
        .account(1)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("account 1 is gone")?;
    let credited = to.account.balance();
    if credited != -from.account.balance() {
        return Err(format!(
            "money not conserved: {credited} vs {}",
            from.account.balance()
        ));
    }
    t.committed_total += committed.len() as u64;
    if credited != t.committed_total as i128 {
        return Err(format!(
            "account 2 holds {credited}, but {} transfers were found committed over the rounds",
            t.committed_total
        ));
    }
    Ok(())
}
