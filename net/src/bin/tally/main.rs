//! `tally`: the Tally command-line client.
//!
//! Exit status: 0 on success; 1 when the server refused the request (the
//! error code and message are on stderr, and with `--json` also on stdout as
//! `{"error":{"code":..,"message":..}}`) or could not be reached; 2 for
//! usage errors.

#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tally_engine::amount::{format_amount, format_balance, parse_amount};
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::id::{format_id, parse_id};
use tally_engine::lien::{CaptureLien, CreateLien, ReleaseLien};
use tally_engine::{
    AccountState, BalancePolicy, Command, Entry, ErrorCode, Line, NewAccount, Outcome,
};
use tally_net::client::{Client, ClientConfig, ClientError};
use tally_net::json;
use tally_net::message::{FindKey, STATUS_COMMITTED, STATUS_REJECTED};
use tally_net::tls::{self, TlsFiles};

#[derive(Parser)]
#[command(name = "tally", version, about = "Client for the Tally ledger server")]
struct Cli {
    /// The server's address.
    #[arg(long, global = true, default_value = "127.0.0.1:7400")]
    server: SocketAddr,
    /// Data directory of a local tallyd: its development client certificate
    /// (certs/client.pem) is used unless --ca/--cert/--key are given.
    #[arg(long, global = true, default_value = "./tally-data")]
    data_dir: PathBuf,
    /// CA certificate (PEM) that the server's certificate must be signed by.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// The name in the server's certificate.
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// Seconds to wait for an answer (`--timeout` of `event create` is the
    /// event's own timeout).
    #[arg(long = "request-timeout", global = true, default_value_t = 10)]
    timeout: u64,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create or look up currencies.
    #[command(subcommand)]
    Currency(CurrencyCmd),
    /// Create accounts, read them, change their state.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Move AMOUNT from one account to another (a two-line entry).
    Transfer(TransferArgs),
    /// Post or look up journal entries.
    #[command(subcommand)]
    Entry(EntryCmd),
    /// Reserve funds and capture or release them.
    #[command(subcommand)]
    Lien(LienCmd),
    /// An account's postings with the balance after each.
    Statement {
        account: String,
        #[arg(long, default_value_t = 0)]
        from_seq: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Find entries by reference or user data, or accounts by user data.
    Find(FindArgs),
    /// Print sequenced records from a sequence number as JSON lines.
    Subscribe {
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        /// Stop after this many records (default: follow forever).
        #[arg(long)]
        limit: Option<u64>,
        /// Include rejected and duplicate records (default: committed only).
        #[arg(long)]
        all: bool,
    },
    /// Chained transaction events: create, add steps, start, inspect,
    /// confirm or fail a step awaiting confirmation, list (stuck) events.
    #[command(subcommand)]
    Event(EventCmd),
    /// The server's position (next and durable sequence) and your role.
    Status,
    /// Run the consistency verifier: exit 0 when clean, 1 when errors are found.
    Verify {
        /// Check every account and every logged id (default: samples).
        #[arg(long)]
        full: bool,
    },
    /// Post a correction of a committed entry: its reversal (or explicit
    /// lines), linked to it by `corrects`, with the reason as its reference.
    Correct(CorrectArgs),
    /// The most written accounts and the most version conflicts.
    Hotspots {
        /// How far back, e.g. 30s, 1m, 1h (at most 1h).
        #[arg(long, default_value = "1m")]
        window: String,
        #[arg(long, default_value_t = 20)]
        top: u32,
    },
}

#[derive(Args)]
struct CorrectArgs {
    entry_id: String,
    /// Why (recorded as the correcting entry's reference).
    #[arg(long)]
    reason: String,
    /// The correcting entry's id (default: derived from the original's, so
    /// that retrying the same correction is idempotent).
    #[arg(long = "entry-id", value_name = "NEW_ID")]
    new_entry_id: Option<String>,
    /// Explicit correcting lines instead of the reversal (ACCOUNT=AMOUNT).
    #[arg(long, requires = "credit")]
    debit: Vec<String>,
    #[arg(long, requires = "debit")]
    credit: Vec<String>,
    /// Allow correcting an entry that was already corrected.
    #[arg(long)]
    allow_repeat: bool,
}

#[derive(Subcommand)]
enum CurrencyCmd {
    Create {
        code: String,
        #[arg(long)]
        scale: u8,
    },
    Get {
        code: String,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    Create {
        id: String,
        #[arg(long)]
        currency: String,
        /// no-overdraft (default), unrestricted, or overdraft-limit=AMOUNT.
        #[arg(long, default_value = "no-overdraft")]
        policy: String,
        #[arg(long, default_value = "0")]
        user_data: String,
    },
    Get {
        id: String,
    },
    /// Set the state: active, frozen or closed.
    State {
        id: String,
        state: String,
    },
}

#[derive(Args)]
struct TransferArgs {
    entry_id: String,
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    #[arg(long)]
    amount: String,
    /// ACCOUNT=VERSION: refuse unless the account is at this version.
    #[arg(long)]
    expect_version: Vec<String>,
    #[arg(long)]
    reference: Option<String>,
}

#[derive(Subcommand)]
enum EntryCmd {
    Post {
        entry_id: String,
        /// ACCOUNT=AMOUNT (repeat for more lines).
        #[arg(long)]
        debit: Vec<String>,
        /// ACCOUNT=AMOUNT (repeat for more lines).
        #[arg(long)]
        credit: Vec<String>,
        /// The committed entry this one corrects.
        #[arg(long)]
        corrects: Option<String>,
        #[arg(long)]
        reference: Option<String>,
        #[arg(long, default_value = "0")]
        user_data: String,
        /// ACCOUNT=VERSION: refuse unless the account is at this version.
        #[arg(long)]
        expect_version: Vec<String>,
    },
    Get {
        entry_id: String,
    },
}

#[derive(Subcommand)]
enum LienCmd {
    Create {
        lien_id: String,
        #[arg(long)]
        account: String,
        #[arg(long)]
        amount: String,
        /// Lifetime, e.g. 30s, 5m, 2h.
        #[arg(long)]
        expires_in: Option<String>,
    },
    Capture {
        lien_id: String,
        #[arg(long)]
        entry: String,
        #[arg(long)]
        to: String,
        /// Default: the whole lien.
        #[arg(long)]
        amount: Option<String>,
        #[arg(long)]
        reference: Option<String>,
    },
    Release {
        lien_id: String,
    },
    Get {
        lien_id: String,
    },
}

#[derive(Subcommand)]
enum EventCmd {
    /// Create an event (its id is its idempotency key).
    Create {
        event_id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// From start to timeout (log time), e.g. 30s, 5m; none by default.
        /// (Given after `create`, this is the event's timeout, not the
        /// client's request timeout.)
        #[arg(long = "timeout", id = "event_timeout")]
        event_timeout: Option<String>,
        /// Retries of a group refused with a retryable error.
        #[arg(long, default_value_t = 0)]
        retries: u8,
        /// Delay before the first retry (doubling after), e.g. 50ms.
        #[arg(long, default_value = "50ms")]
        retry_delay: String,
        /// Free JSON metadata.
        #[arg(long, default_value = "{}")]
        metadata: String,
    },
    /// Add a step (before start). Steps of equal --order form one atomic group.
    Add {
        event_id: String,
        #[arg(long)]
        step_name: String,
        /// The executor, e.g. wallet.transfer, wallet.deposit,
        /// wallet.withdrawal, wallet.exchange, batch.operation.
        #[arg(long = "type")]
        kind: String,
        #[arg(long)]
        order: u32,
        /// The step's JSON payload.
        #[arg(long)]
        payload: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Start an event (starting it again is harmless).
    Start {
        event_id: String,
        /// Wait until it ends or waits for a confirmation, and print it.
        #[arg(long)]
        wait: bool,
    },
    /// An event's state, steps with their results, and liens.
    Get { event_id: String },
    /// Confirm a step awaiting confirmation (a withdrawal: capture its lien).
    Confirm {
        event_id: String,
        step: String,
        /// Capture only this much (the rest is released).
        #[arg(long)]
        amount: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Report a step awaiting confirmation as failed: the event compensates.
    Fail {
        event_id: String,
        step: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        wait: bool,
    },
    /// List events, by state; --running-longer-than finds stuck ones.
    List {
        /// created, running, compensating, completed, compensated, failed, timed_out
        #[arg(long)]
        state: Option<String>,
        /// Only events started at least this long ago and not ended, e.g. 5m.
        #[arg(long, alias = "older-than")]
        running_longer_than: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Args)]
struct FindArgs {
    #[arg(long, conflicts_with_all = ["user_data", "account_user_data"])]
    reference: Option<String>,
    /// Entries with this user data.
    #[arg(long, conflicts_with = "account_user_data")]
    user_data: Option<String>,
    /// Accounts with this user data.
    #[arg(long)]
    account_user_data: Option<String>,
    /// From this time (ns since the epoch).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Up to this time (ns since the epoch).
    #[arg(long, default_value_t = u64::MAX)]
    to: u64,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// A failure to report: a stable code and a message.
struct Failure {
    code: String,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            code: e.code.as_str().into(),
            message: e.message,
        }
    }
}

impl From<tally_engine::Error> for Failure {
    fn from(e: tally_engine::Error) -> Failure {
        Failure {
            code: e.code.as_str().into(),
            message: e.message(),
        }
    }
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code: code.as_str().into(),
        message: message.into(),
    }
}

type Out = Result<(Value, String), Failure>;

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: unavailable: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let as_json = cli.json;
    match rt.block_on(run(cli)) {
        Ok((v, text)) => {
            if as_json {
                if !v.is_null() {
                    println!("{v}");
                }
            } else if !text.is_empty() {
                println!("{text}");
            }
        }
        Err(f) => {
            eprintln!("error: {}: {}", f.code, f.message);
            if as_json {
                println!("{}", json::error(&f.code, &f.message));
            }
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Out {
    let files = match (&cli.ca, &cli.cert, &cli.key) {
        (Some(ca), Some(cert), Some(key)) => TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None, None) => tls::dev_client_files(&cli.data_dir),
        _ => {
            return Err(fail(
                ErrorCode::InvalidCommand,
                "--ca, --cert and --key go together",
            ))
        }
    };
    let mut config = ClientConfig::new(cli.server, files);
    config.server_name = cli.server_name.clone();
    config.timeout = Duration::from_secs(cli.timeout.max(1));
    config.streams = 1;
    let client = Client::connect(config).await?;
    let out = dispatch(&client, cli.command, cli.json).await;
    client.close().await;
    out
}

fn id(text: &str) -> Result<u128, Failure> {
    parse_id(text).map_err(Failure::from)
}

fn currency_code(text: &str) -> Result<CurrencyCode, Failure> {
    CurrencyCode::parse(text).map_err(Failure::from)
}

/// Splits `ACCOUNT=VALUE`.
fn pair(text: &str) -> Result<(u128, &str), Failure> {
    let (a, v) = text.split_once('=').ok_or_else(|| {
        fail(
            ErrorCode::InvalidCommand,
            format!("expected ACCOUNT=VALUE, got {text:?}"),
        )
    })?;
    Ok((id(a)?, v))
}

async fn account_of(
    client: &Client,
    account: u128,
) -> Result<tally_net::message::WireAccount, Failure> {
    client.account(account).await?.ok_or_else(|| {
        fail(
            ErrorCode::AccountNotFound,
            format!("account {}", format_id(account)),
        )
    })
}

/// Submits one command. A rejection, now or originally (a duplicate of a
/// refused id), is a failure; a commit or a duplicate of one is not.
async fn settle(client: &Client, cmd: Command) -> Result<Outcome, Failure> {
    match client.submit(cmd).await? {
        Outcome::Duplicate { seq, code: Some(c) } => Err(Failure {
            code: c.as_str().into(),
            message: format!(
                "{} (this id was already refused at sequence {seq}; its first outcome is final)",
                c.description()
            ),
        }),
        Outcome::Rejected { error, .. } => Err(error.into()),
        o => Ok(o),
    }
}

/// Submits one command that has an id, reporting it as `what ID ...`.
async fn submit(client: &Client, subject: u128, cmd: Command, what: &str) -> Out {
    let o = settle(client, cmd).await?;
    let text = match &o {
        Outcome::Duplicate { seq, .. } => format!(
            "{what} {} was already committed at sequence {seq} (duplicate: nothing applied)",
            format_id(subject)
        ),
        _ => format!(
            "{what} {} committed at sequence {}",
            format_id(subject),
            o.seq().unwrap_or(0)
        ),
    };
    Ok((json::outcome(subject, &o), text))
}

fn version_conditions(expect: &[String]) -> Result<Vec<(u128, u64)>, Failure> {
    expect
        .iter()
        .map(|e| {
            let (a, v) = pair(e)?;
            let v = v.parse::<u64>().map_err(|_| {
                fail(
                    ErrorCode::InvalidCommand,
                    format!("version must be a number: {e}"),
                )
            })?;
            Ok((a, v))
        })
        .collect()
}

fn apply_versions(entry: &mut Entry, versions: &[(u128, u64)]) -> Result<(), Failure> {
    for (a, v) in versions {
        let line = entry
            .lines
            .iter_mut()
            .find(|l| l.account == *a)
            .ok_or_else(|| {
                fail(
                    ErrorCode::InvalidCommand,
                    format!(
                        "--expect-version names account {}, which is not in the entry",
                        format_id(*a)
                    ),
                )
            })?;
        line.expected_version = Some(*v);
    }
    Ok(())
}

async fn dispatch(client: &Client, cmd: Cmd, as_json: bool) -> Out {
    match cmd {
        Cmd::Currency(CurrencyCmd::Create { code, scale }) => {
            let c = Currency::new(&code, scale)?;
            let o = settle(client, Command::CreateCurrency(c)).await?;
            Ok((
                json!({"currency": c.code.as_str(), "scale": scale, "sequence": o.seq()}),
                format!("currency {} (scale {scale}) created", c.code),
            ))
        }
        Cmd::Currency(CurrencyCmd::Get { code }) => {
            let c = client
                .currency(currency_code(&code)?)
                .await?
                .ok_or_else(|| fail(ErrorCode::CurrencyNotFound, code.clone()))?;
            Ok((
                json!({"currency": c.code.as_str(), "scale": c.scale}),
                format!("{} scale {}", c.code, c.scale),
            ))
        }
        Cmd::Account(AccountCmd::Create {
            id: aid,
            currency,
            policy,
            user_data,
        }) => {
            let code = currency_code(&currency)?;
            let account = id(&aid)?;
            let policy = match policy.as_str() {
                "no-overdraft" | "no_overdraft" => BalancePolicy::NoOverdraft,
                "unrestricted" => BalancePolicy::Unrestricted,
                p => match p.strip_prefix("overdraft-limit=").or_else(|| p.strip_prefix("overdraft_limit=")) {
                    Some(limit) => {
                        let c = client.currency(code).await?.ok_or_else(|| fail(ErrorCode::CurrencyNotFound, currency.clone()))?;
                        BalancePolicy::OverdraftLimit(parse_amount(limit, c.scale)?)
                    }
                    None => {
                        return Err(fail(ErrorCode::InvalidCommand, format!("policy must be no-overdraft, unrestricted or overdraft-limit=AMOUNT, not {p:?}")))
                    }
                },
            };
            let user_data = if user_data == "0" { 0 } else { id(&user_data)? };
            let cmd = Command::CreateAccount(NewAccount {
                id: account,
                currency: code,
                policy,
                user_data,
            });
            submit(client, account, cmd, "account").await
        }
        Cmd::Account(AccountCmd::Get { id: aid }) => {
            let a = account_of(client, id(&aid)?).await?;
            let s = a.currency.scale;
            let acc = &a.account;
            let text = format!(
                "account {}\n  currency   {}\n  balance    {}\n  available  {}\n  reserved   {}\n  version    {}\n  policy     {}{}\n  state      {}",
                format_id(acc.id),
                a.currency.code,
                format_balance(acc.balance(), s),
                format_balance(acc.available(), s),
                format_amount(acc.reserved, s),
                acc.version,
                acc.policy.name(),
                match acc.policy {
                    BalancePolicy::OverdraftLimit(l) => format!(" ({})", format_amount(l, s)),
                    _ => String::new(),
                },
                acc.state.name()
            );
            Ok((json::account(&a), text))
        }
        Cmd::Account(AccountCmd::State { id: aid, state }) => {
            let account = id(&aid)?;
            let state = match state.as_str() {
                "active" => AccountState::Active,
                "frozen" => AccountState::Frozen,
                "closed" => AccountState::Closed,
                s => {
                    return Err(fail(
                        ErrorCode::InvalidCommand,
                        format!("state must be active, frozen or closed, not {s:?}"),
                    ))
                }
            };
            let o = settle(client, Command::SetAccountState { account, state }).await?;
            Ok((
                json::outcome(account, &o),
                format!("account {} is {}", format_id(account), state.name()),
            ))
        }
        Cmd::Transfer(t) => {
            let (entry_id, from, to) = (id(&t.entry_id)?, id(&t.from)?, id(&t.to)?);
            let a = account_of(client, from).await?;
            let amount = parse_amount(&t.amount, a.currency.scale)?;
            let mut e = Entry::transfer(entry_id, from, to, amount, a.currency.code);
            if let Some(r) = t.reference {
                e = e.with_reference(r);
            }
            apply_versions(&mut e, &version_conditions(&t.expect_version)?)?;
            submit(client, entry_id, e.into(), "entry").await
        }
        Cmd::Entry(EntryCmd::Post {
            entry_id,
            debit,
            credit,
            corrects,
            reference,
            user_data,
            expect_version,
        }) => {
            let entry_id = id(&entry_id)?;
            let lines = parse_lines(client, &debit, &credit).await?;
            let mut e = Entry::new(entry_id, lines);
            if let Some(r) = reference {
                e = e.with_reference(r);
            }
            if let Some(c) = corrects {
                e = e.correcting(id(&c)?);
            }
            if user_data != "0" {
                e.user_data = id(&user_data)?;
            }
            apply_versions(&mut e, &version_conditions(&expect_version)?)?;
            submit(client, entry_id, e.into(), "entry").await
        }
        Cmd::Entry(EntryCmd::Get { entry_id }) => {
            let eid = id(&entry_id)?;
            let info = client.entry(eid).await?;
            let status = match info.status {
                STATUS_COMMITTED => "committed",
                STATUS_REJECTED => "rejected",
                _ => "unknown",
            };
            let mut v = json!({"id": format_id(eid), "status": status});
            let mut text = format!("entry {} {status}", format_id(eid));
            if info.seq != 0 {
                v["sequence"] = json!(info.seq);
                text.push_str(&format!(" at sequence {}", info.seq));
            }
            if info.code != 0 {
                let c = ErrorCode::from_u16(info.code).map_or("unknown", |c| c.as_str());
                v["code"] = json!(c);
                text.push_str(&format!(": {c}"));
            }
            if let Some(r) = &info.record {
                let mut cache = ScaleCache::new(client);
                cache.fill(&r.command).await;
                let rec = json::record(r, &mut |c| cache.get(c));
                v["timestamp"] = json!(r.timestamp);
                v["record"] = rec.clone();
                if let Some(lines) = find_entry_lines(&rec, eid) {
                    for l in lines.as_array().into_iter().flatten() {
                        text.push_str(&format!(
                            "\n  {:<6} {:>20} {} account {}",
                            l["side"].as_str().unwrap_or(""),
                            l["amount"].as_str().unwrap_or(""),
                            l["currency"].as_str().unwrap_or(""),
                            l["account"].as_str().unwrap_or("")
                        ));
                    }
                    v["lines"] = lines;
                }
            }
            Ok((v, text))
        }
        Cmd::Lien(LienCmd::Create {
            lien_id,
            account,
            amount,
            expires_in,
        }) => {
            let (lid, account) = (id(&lien_id)?, id(&account)?);
            let a = account_of(client, account).await?;
            let expires_in_ns = match expires_in {
                Some(d) => Some(
                    humantime::parse_duration(&d)
                        .map_err(|e| fail(ErrorCode::InvalidExpiry, format!("{d:?}: {e}")))?
                        .as_nanos()
                        .try_into()
                        .map_err(|_| fail(ErrorCode::InvalidExpiry, d.clone()))?,
                ),
                None => None,
            };
            let c = CreateLien {
                id: lid,
                account,
                currency: a.currency.code,
                amount: parse_amount(&amount, a.currency.scale)?,
                expires_in_ns,
                owner: 0,
                user_data: 0,
            };
            submit(client, lid, c.into(), "lien").await
        }
        Cmd::Lien(LienCmd::Capture {
            lien_id,
            entry,
            to,
            amount,
            reference,
        }) => {
            let (lid, entry_id, to) = (id(&lien_id)?, id(&entry)?, id(&to)?);
            let l = client
                .lien(lid)
                .await?
                .ok_or_else(|| fail(ErrorCode::LienNotFound, format_id(lid)))?;
            let amount = match amount {
                Some(a) => parse_amount(&a, l.scale)?,
                None => l.lien.amount,
            };
            let c = CaptureLien {
                lien: lid,
                account: l.lien.account,
                entry_id,
                currency: l.lien.currency,
                credits: smallvec_one(to, amount),
                reference: reference.map(Into::into),
            };
            submit(client, entry_id, c.into(), "capture entry").await
        }
        Cmd::Lien(LienCmd::Release { lien_id }) => {
            let lid = id(&lien_id)?;
            let l = client
                .lien(lid)
                .await?
                .ok_or_else(|| fail(ErrorCode::LienNotFound, format_id(lid)))?;
            let release = ReleaseLien {
                lien: lid,
                account: l.lien.account,
            };
            let o = settle(client, release.into()).await?;
            Ok((
                json::outcome(lid, &o),
                format!("lien {} released", format_id(lid)),
            ))
        }
        Cmd::Lien(LienCmd::Get { lien_id }) => {
            let lid = id(&lien_id)?;
            let l = client
                .lien(lid)
                .await?
                .ok_or_else(|| fail(ErrorCode::LienNotFound, format_id(lid)))?;
            let s = l.scale;
            let text = format!(
                "lien {}\n  account    {}\n  amount     {} {}\n  captured   {}\n  status     {}",
                format_id(lid),
                format_id(l.lien.account),
                format_amount(l.lien.amount, s),
                l.lien.currency,
                format_amount(l.lien.captured, s),
                l.lien.status.name()
            );
            Ok((json::lien(&l), text))
        }
        Cmd::Statement {
            account,
            from_seq,
            limit,
        } => {
            let account = id(&account)?;
            let st = client.statement(account, from_seq, limit).await?;
            let scale = st.currency.map_or(0, |c| c.scale);
            let mut cache = ScaleCache::new(client);
            for l in &st.lines {
                cache.fill(&l.record.command).await;
            }
            let lines: Vec<Value> = st
                .lines
                .iter()
                .map(|l| json::statement_line(l, scale, |c| cache.get(c)))
                .collect();
            let mut text = format!(
                "{:>10}  {:<38} {:>18} {:>18} {:>20}",
                "sequence", "id", "debit", "credit", "balance"
            );
            for (l, v) in st.lines.iter().zip(&lines) {
                text.push_str(&format!(
                    "\n{:>10}  {:<38} {:>18} {:>18} {:>20}",
                    l.record.seq,
                    v["id"].as_str().unwrap_or(""),
                    format_amount(l.debit, scale),
                    format_amount(l.credit, scale),
                    format_balance(l.balance, scale)
                ));
                if let Some(c) = v["corrects"].as_str() {
                    text.push_str(&format!(
                        "  corrects {c}: {}",
                        v["reference"].as_str().unwrap_or("")
                    ));
                }
            }
            if let Some(n) = st.next_from_seq {
                text.push_str(&format!("\n(more: --from-seq {n})"));
            }
            Ok((
                json!({"account": format_id(account), "lines": lines, "next_from_seq": st.next_from_seq}),
                text,
            ))
        }
        Cmd::Find(f) => {
            let key = match (f.reference, f.user_data, f.account_user_data) {
                (Some(r), None, None) => FindKey::Reference(r),
                (None, Some(u), None) => FindKey::EntryUserData(id(&u)?),
                (None, None, Some(u)) => FindKey::AccountUserData(id(&u)?),
                _ => {
                    return Err(fail(
                        ErrorCode::InvalidCommand,
                        "give one of --reference, --user-data, --account-user-data",
                    ))
                }
            };
            let records = client.find(key, f.from, f.to, f.limit).await?;
            let mut cache = ScaleCache::new(client);
            for r in &records {
                cache.fill(&r.command).await;
            }
            let values: Vec<Value> = records
                .iter()
                .map(|r| json::record(r, &mut |c| cache.get(c)))
                .collect();
            let text = values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            Ok((json!(values), text))
        }
        Cmd::Subscribe {
            from_seq,
            limit,
            all,
        } => {
            let mut sub = client.subscribe(from_seq).await?;
            let mut cache = ScaleCache::new(client);
            let mut n = 0u64;
            while limit.is_none_or(|l| n < l) {
                let Some(r) = sub.next().await? else { break };
                if !all && r.outcome != tally_net::message::COMMITTED {
                    continue;
                }
                if matches!(r.command, Command::Tick) && !all {
                    continue;
                }
                cache.fill(&r.command).await;
                println!("{}", json::record(&r, &mut |c| cache.get(c)));
                n += 1;
            }
            let _ = as_json;
            Ok((Value::Null, String::new()))
        }
        Cmd::Verify { full } => {
            let r = client.verify(full).await?;
            let v = serde_json::to_value(&r).unwrap_or(Value::Null);
            let mut text = format!(
                "verified the cut after sequence {}: {} ({} accounts, {} checked against the log, the ids of {} logged records checked against the index; longest shard pause {} µs; {} ms)",
                r.cut_sequence,
                if r.clean { "clean" } else { "ERRORS FOUND" },
                r.accounts,
                r.accounts_checked_against_log,
                r.records_checked_against_index,
                r.max_shard_pause_us,
                r.duration_ms
            );
            for c in &r.currencies {
                text.push_str(&format!("\n  {} sums to {}", c.code, c.sum));
            }
            for e in &r.errors {
                text.push_str(&format!("\nerror: {}: {}", e.kind, e.message));
            }
            for w in &r.warnings {
                text.push_str(&format!("\nwarning: {}: {}", w.kind, w.message));
            }
            if r.clean {
                Ok((v, text))
            } else if as_json {
                // The report is the output; the exit status says the verdict.
                println!("{v}");
                std::process::exit(1)
            } else {
                println!("{text}");
                std::process::exit(1)
            }
        }
        Cmd::Correct(c) => {
            let original = id(&c.entry_id)?;
            let info = client.entry(original).await?;
            let record = match (&info.record, info.status) {
                (Some(r), STATUS_COMMITTED) => r,
                _ => {
                    return Err(fail(
                        ErrorCode::CorrectedEntryNotFound,
                        format!("entry {} is not committed", format_id(original)),
                    ))
                }
            };
            let lines = if c.debit.is_empty() {
                let posted = posted_lines(&record.command, original).ok_or_else(|| {
                    fail(
                        ErrorCode::CorrectedEntryNotFound,
                        format!("entry {} posted no lines", format_id(original)),
                    )
                })?;
                posted
                    .into_iter()
                    .map(|l| match l.side {
                        tally_engine::Side::Debit => Line::credit(l.account, l.amount, l.currency),
                        tally_engine::Side::Credit => Line::debit(l.account, l.amount, l.currency),
                    })
                    .collect()
            } else {
                parse_lines(client, &c.debit, &c.credit).await?
            };
            let new_id = match &c.new_entry_id {
                Some(n) => id(n)?,
                None => correction_id(original),
            };
            let mut e = Entry::new(new_id, lines)
                .correcting(original)
                .with_reference(c.reason.clone());
            if c.allow_repeat {
                e = e.allowing_repeat_correction();
            }
            let (mut v, _) = submit(client, new_id, e.into(), "correction").await?;
            v["corrects"] = json!(format_id(original));
            v["reason"] = json!(c.reason);
            let text = format!(
                "correction {} of entry {} committed at sequence {} (reason: {})",
                format_id(new_id),
                format_id(original),
                v["sequence"],
                c.reason
            );
            Ok((v, text))
        }
        Cmd::Event(e) => event_cmd(client, e).await,
        Cmd::Hotspots { window, top } => {
            let w = humantime::parse_duration(&window).map_err(|e| {
                fail(
                    ErrorCode::InvalidCommand,
                    format!("--window {window:?}: {e}"),
                )
            })?;
            let h = client.hotspots(w, top).await?;
            // Stuck events: running (or compensating) for longer than the window.
            let stuck: Vec<Value> = client
                .events(None, w.max(Duration::from_secs(1)), top)
                .await?
                .iter()
                .map(|e| json::event_summary(e, 0))
                .collect();
            let list = |v: &[(u128, u64)]| -> Vec<Value> {
                v.iter()
                    .map(|(a, n)| json!({"account": format_id(*a), "count": n}))
                    .collect()
            };
            let v = json!({
                "window_s": h.window_s, "writes": list(&h.writes), "conflicts": list(&h.conflicts),
                "total_writes": h.total_writes, "total_conflicts": h.total_conflicts,
                "stuck_events": stuck,
            });
            let mut text = format!(
                "over the last {} s: {} account writes, {} version conflicts\nmost written:",
                h.window_s, h.total_writes, h.total_conflicts
            );
            for (a, n) in &h.writes {
                text.push_str(&format!("\n  account {}: {n}", format_id(*a)));
            }
            text.push_str("\nmost conflicts:");
            for (a, n) in &h.conflicts {
                text.push_str(&format!("\n  account {}: {n}", format_id(*a)));
            }
            text.push_str(&format!("\nevents running longer than {} s:", w.as_secs()));
            for e in &stuck {
                text.push_str(&format!(
                    "\n  event {} ({}) {}",
                    e["id"].as_str().unwrap_or(""),
                    e["name"].as_str().unwrap_or(""),
                    e["state"].as_str().unwrap_or("")
                ));
            }
            Ok((v, text))
        }
        Cmd::Status => {
            let s = client.status().await?;
            let v = json!({
                "version": s.version, "shards": s.shards, "next_sequence": s.next_seq,
                "durable_sequence": s.durable_seq, "history_from": s.history_from,
                "role": if s.read_only { "read-only" } else { "writer" },
            });
            let text = format!(
                "tallyd {} with {} shard(s): durable up to sequence {}; you are a {}",
                s.version,
                s.shards,
                s.durable_seq,
                if s.read_only {
                    "read-only client"
                } else {
                    "writer"
                }
            );
            Ok((v, text))
        }
    }
}

/// Lines from `ACCOUNT=AMOUNT` texts, amounts in each account's scale.
async fn parse_lines(
    client: &Client,
    debit: &[String],
    credit: &[String],
) -> Result<Vec<Line>, Failure> {
    let mut lines = Vec::new();
    let mut scales: HashMap<u128, (u8, CurrencyCode)> = HashMap::new();
    for (side_debit, list) in [(true, debit), (false, credit)] {
        for d in list {
            let (account, amount) = pair(d)?;
            let (scale, code) = match scales.get(&account) {
                Some(x) => *x,
                None => {
                    let a = account_of(client, account).await?;
                    scales.insert(account, (a.currency.scale, a.currency.code));
                    (a.currency.scale, a.currency.code)
                }
            };
            let amount = parse_amount(amount, scale)?;
            lines.push(if side_debit {
                Line::debit(account, amount, code)
            } else {
                Line::credit(account, amount, code)
            });
        }
    }
    Ok(lines)
}

/// The lines that entry `id` posted, from the record that committed it (a
/// lone entry, an operation of a chain, or a lien capture).
fn posted_lines(cmd: &Command, id: u128) -> Option<Vec<Line>> {
    cmd.ops().iter().find_map(|op| match op {
        tally_engine::Operation::Entry(e) if e.id == id => Some(e.lines.to_vec()),
        tally_engine::Operation::CaptureLien(c) if c.entry_id == id => {
            let mut lines = vec![Line::debit(c.account, c.total()?, c.currency)];
            lines.extend(
                c.credits
                    .iter()
                    .map(|(a, amount)| Line::credit(*a, *amount, c.currency)),
            );
            Some(lines)
        }
        _ => None,
    })
}

/// The default id of a correction: derived from the original's, so that a
/// retried `tally correct` is idempotent.
fn correction_id(original: u128) -> u128 {
    let mut bytes = b"tally-correction:".to_vec();
    bytes.extend_from_slice(&original.to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&bytes).max(1)
}

fn smallvec_one(to: u128, amount: u128) -> smallvec::SmallVec<[(u128, u128); 1]> {
    let mut v = smallvec::SmallVec::new();
    v.push((to, amount));
    v
}

/// Finds the lines of entry `id` in a record's JSON (a lone entry or one
/// operation of a chain).
fn find_entry_lines(rec: &Value, id: u128) -> Option<Value> {
    let want = format_id(id);
    if rec["id"].as_str() == Some(want.as_str()) && rec.get("lines").is_some() {
        return Some(rec["lines"].clone());
    }
    rec["operations"]
        .as_array()?
        .iter()
        .find(|op| op["id"].as_str() == Some(want.as_str()) && op.get("lines").is_some())
        .map(|op| op["lines"].clone())
}

/// Currency scales, fetched once each.
struct ScaleCache<'a> {
    client: &'a Client,
    scales: HashMap<CurrencyCode, u8>,
}

impl<'a> ScaleCache<'a> {
    fn new(client: &'a Client) -> Self {
        ScaleCache {
            client,
            scales: HashMap::new(),
        }
    }

    async fn fill(&mut self, cmd: &Command) {
        let mut codes = Vec::new();
        for op in cmd.ops() {
            match op {
                tally_engine::Operation::Entry(e) => {
                    codes.extend(e.lines.iter().map(|l| l.currency))
                }
                tally_engine::Operation::CreateLien(c) => codes.push(c.currency),
                tally_engine::Operation::CaptureLien(c) => codes.push(c.currency),
                tally_engine::Operation::ReleaseLien(_) => {}
            }
        }
        for c in codes {
            if !self.scales.contains_key(&c) {
                if let Ok(Some(cur)) = self.client.currency(c).await {
                    self.scales.insert(c, cur.scale);
                }
            }
        }
    }

    fn get(&self, c: CurrencyCode) -> u8 {
        self.scales.get(&c).copied().unwrap_or(0)
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(text)
        .map_err(|e| fail(ErrorCode::InvalidCommand, format!("--{flag} {text:?}: {e}")))
}

/// Text for `event get`.
fn event_text(v: &Value) -> String {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let mut t = format!(
        "event {} ({}): {}",
        s(&v["id"]),
        s(&v["name"]),
        s(&v["state"])
    );
    if let Some(f) = v.get("failure") {
        t.push_str(&format!(
            "\n  failure: {}: {}",
            s(&f["code"]),
            s(&f["message"])
        ));
    }
    if let Some(f) = v.get("compensation_error") {
        t.push_str(&format!(
            "\n  compensation failed: {}: {} (needs an operator)",
            s(&f["code"]),
            s(&f["message"])
        ));
    }
    for step in v["steps"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "\n  step {} [{}, order {}]: {}",
            s(&step["name"]),
            s(&step["type"]),
            step["order"],
            s(&step["status"])
        ));
        if !step["result"].is_null() {
            t.push_str(&format!("\n    result: {}", step["result"]));
        }
        if let Some(e) = step.get("error") {
            t.push_str(&format!(
                "\n    error: {}: {}",
                s(&e["code"]),
                s(&e["message"])
            ));
        }
    }
    for l in v["liens"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "\n  lien {} on account {}: {} {} {}",
            s(&l["id"]),
            s(&l["account"]),
            s(&l["amount"]),
            s(&l["currency"]),
            s(&l["status"])
        ));
    }
    t
}

async fn get_event(client: &Client, event: u128) -> Result<tally_net::message::WireEvent, Failure> {
    client.event(event).await?.ok_or_else(|| {
        fail(
            ErrorCode::EventNotFound,
            format!("event {}", format_id(event)),
        )
    })
}

/// Waits (up to the client timeout) until the event ended or waits for a
/// client, then shows it.
async fn wait_event(client: &Client, event: u128, timeout: Duration) -> Out {
    let until = std::time::Instant::now() + timeout;
    loop {
        let w = get_event(client, event).await?;
        let e = &w.event;
        let settled = e.state.is_terminal()
            || (e.state == tally_engine::event::EventState::Running
                && matches!(
                    e.next_action(w.now),
                    tally_engine::event::Action::Wait { .. }
                ));
        if settled || std::time::Instant::now() >= until {
            let v = json::event(&w);
            let text = event_text(&v);
            return Ok((v, text));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event_cmd(client: &Client, cmd: EventCmd) -> Out {
    use tally_engine::event::{NewEvent, Step};
    let wait_for = Duration::from_secs(10);
    match cmd {
        EventCmd::Create {
            event_id,
            name,
            description,
            event_timeout,
            retries,
            retry_delay,
            metadata,
        } => {
            let event = id(&event_id)?;
            let mut spec = NewEvent::new(event, &name);
            spec.description = description.into();
            spec.timeout_ns = match event_timeout {
                Some(t) => Some(duration("timeout", &t)?.as_nanos().min(u64::MAX as u128) as u64),
                None => None,
            };
            spec.retries = retries;
            spec.retry_delay_ns = duration("retry-delay", &retry_delay)?
                .as_nanos()
                .min(u64::MAX as u128) as u64;
            spec.metadata = metadata.into();
            submit(
                client,
                event,
                Command::Event(tally_engine::event::EventCommand::Create(spec)),
                "event",
            )
            .await
        }
        EventCmd::Add {
            event_id,
            step_name,
            kind,
            order,
            payload,
            description,
        } => {
            let event = id(&event_id)?;
            let step = Step {
                name: step_name.clone().into(),
                description: description.into(),
                kind: kind.into(),
                order,
                payload: payload.into(),
            };
            let o = settle(
                client,
                Command::Event(tally_engine::event::EventCommand::AddStep { event, step }),
            )
            .await?;
            let text = format!(
                "step {step_name} of event {} {} at sequence {}",
                format_id(event),
                if matches!(o, Outcome::Duplicate { .. }) {
                    "was already added"
                } else {
                    "added"
                },
                o.seq().unwrap_or(0)
            );
            Ok((json::outcome(event, &o), text))
        }
        EventCmd::Start { event_id, wait } => {
            let event = id(&event_id)?;
            let (v, text) = submit(
                client,
                event,
                Command::Event(tally_engine::event::EventCommand::Start { event }),
                "event start of",
            )
            .await?;
            if wait {
                return wait_event(client, event, wait_for).await;
            }
            Ok((v, text))
        }
        EventCmd::Get { event_id } => {
            let w = get_event(client, id(&event_id)?).await?;
            let v = json::event(&w);
            let text = event_text(&v);
            Ok((v, text))
        }
        EventCmd::Confirm {
            event_id,
            step,
            amount,
            wait,
        } => {
            let event = id(&event_id)?;
            let amount = match amount {
                None => None,
                Some(a) => {
                    // The amount is in the currency of the step's lien.
                    let w = get_event(client, event).await?;
                    let i = w
                        .event
                        .step_index(&step)
                        .ok_or_else(|| fail(ErrorCode::StepNotFound, format!("{step:?}")))?;
                    let lien = w.event.steps[i as usize]
                        .ops
                        .iter()
                        .find_map(|op| match op {
                            tally_engine::Operation::CreateLien(c) => Some(c.currency),
                            _ => None,
                        });
                    let code = lien.ok_or_else(|| {
                        fail(
                            ErrorCode::InvalidEventState,
                            format!("step {step} holds no lien"),
                        )
                    })?;
                    let scale = w
                        .currencies
                        .iter()
                        .find(|c| c.code == code)
                        .map_or(0, |c| c.scale);
                    Some(parse_amount(&a, scale)?)
                }
            };
            let (v, text) = submit(
                client,
                event,
                Command::Event(tally_engine::event::EventCommand::Confirm {
                    event,
                    step: step.into(),
                    amount,
                }),
                "confirmation of event",
            )
            .await?;
            if wait {
                return wait_event(client, event, wait_for).await;
            }
            Ok((v, text))
        }
        EventCmd::Fail {
            event_id,
            step,
            reason,
            wait,
        } => {
            let event = id(&event_id)?;
            let (v, text) = submit(
                client,
                event,
                Command::Event(tally_engine::event::EventCommand::Fail {
                    event,
                    step: step.into(),
                    reason: reason.into(),
                }),
                "failure report of event",
            )
            .await?;
            if wait {
                return wait_event(client, event, wait_for).await;
            }
            Ok((v, text))
        }
        EventCmd::List {
            state,
            running_longer_than,
            limit,
        } => {
            let state = match state {
                None => None,
                Some(s) => Some(tally_engine::event::EventState::from_name(&s).ok_or_else(|| {
                    fail(
                        ErrorCode::InvalidCommand,
                        format!("--state {s:?}: one of created, running, compensating, completed, compensated, failed, timed_out"),
                    )
                })?),
            };
            let older = match running_longer_than {
                Some(t) => duration("running-longer-than", &t)?,
                None => Duration::ZERO,
            };
            let list = client.events(state, older, limit).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let items: Vec<Value> = list.iter().map(|e| json::event_summary(e, now)).collect();
            let mut text = format!("{} event(s)", items.len());
            for v in &items {
                let mut line = format!(
                    "\n  {} {} {} ({} steps)",
                    v["id"].as_str().unwrap_or(""),
                    v["name"].as_str().unwrap_or(""),
                    v["state"].as_str().unwrap_or(""),
                    v["steps"]
                );
                if let Some(r) = v.get("running_for_s") {
                    line.push_str(&format!(", running for {r} s"));
                }
                if let Some(f) = v.get("failure") {
                    line.push_str(&format!(", failure {}", f.as_str().unwrap_or("")));
                }
                text.push_str(&line);
            }
            Ok((json!({"events": items}), text))
        }
    }
}
