//! `tally`: the Tally command-line client.
//!
//! Exit status: 0 on success; 1 when the server refused the request (the
//! error code and message are on stderr, and with `--json` also on stdout as
//! `{"error":{"code":..,"message":..}}`), could not be reached, or `verify`
//! found errors; 2 for usage errors: anything wrong with the command line
//! itself, found here (a bad id, amount, currency code, duration,
//! `ACCOUNT=VALUE` pair, enum value, or flags that go together), reported
//! the same way (clap's own errors, such as an unknown flag or a bad
//! `--policy`, are reported by clap).
//!
//! Each command group is a module of `cmd` with `run(client, args) -> Out`;
//! `args` holds the value parsers they share, `output` what they produce.

#![forbid(unsafe_code)]

mod args;
mod cmd;
mod output;

use clap::{Parser, Subcommand};
use output::{Failure, Kind, Out, Verdict};
use std::error::Error as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tally_engine::ErrorCode;
use tally_net::client::{Client, ClientConfig};
use tally_net::tls::{self, TlsFiles};

/// Success (a duplicate of a committed entry is a success).
const EXIT_OK: u8 = 0;
/// Refused by the server, the server unreachable, or `verify` found errors.
const EXIT_REFUSED: u8 = 1;
/// Something wrong with the command line itself (clap uses 2 as well).
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Client for the Tally ledger server",
    after_help = "Exit status: 0 ok, 1 refused by the server or verify found errors, 2 usage error."
)]
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
    Currency(cmd::currency::CurrencyCmd),
    /// Create accounts, read them, change their state.
    #[command(subcommand)]
    Account(cmd::account::AccountCmd),
    /// Move AMOUNT from one account to another (a two-line entry).
    Transfer(cmd::transfer::TransferArgs),
    /// Post or look up journal entries.
    #[command(subcommand)]
    Entry(cmd::entry::EntryCmd),
    /// Reserve funds and capture or release them.
    #[command(subcommand)]
    Lien(cmd::lien::LienCmd),
    /// An account's postings with the balance after each.
    Statement(cmd::statement::StatementArgs),
    /// Find entries by reference or user data, or accounts by user data.
    Find(cmd::find::FindArgs),
    /// Print sequenced records from a sequence number as JSON lines.
    Subscribe(cmd::subscribe::SubscribeArgs),
    /// Chained transaction events: create, add steps, start, inspect,
    /// confirm or fail a step awaiting confirmation, list (stuck) events.
    #[command(subcommand)]
    Event(cmd::event::EventCmd),
    /// The server's position (next and durable sequence) and your role.
    Status,
    /// Run the consistency verifier: exit 0 when clean, 1 when errors are found.
    Verify(cmd::verify::VerifyArgs),
    /// Post a correction of a committed entry: its reversal (or explicit
    /// lines), linked to it by `corrects`, with the reason as its reference.
    Correct(cmd::correct::CorrectArgs),
    /// The most written accounts and the most version conflicts.
    Hotspots(cmd::hotspots::HotspotsArgs),
    /// An online backup into the new directory DEST while the server keeps
    /// serving (writers only): a snapshot and the log up to the durable
    /// sequence, audited once copied; `tallyd --data-dir DEST` starts from it.
    Backup(cmd::backup::BackupArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell), e.g. `tally completions bash > /etc/bash_completion.d/tally`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: unavailable: starting the async runtime: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    if let Cmd::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        // Into memory first: the generator panics on a failed write (a
        // closed pipe), which must not be a crash.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "tally", &mut script);
        use std::io::Write;
        let _ = std::io::stdout().write_all(&script);
        return ExitCode::from(EXIT_OK);
    }
    let as_json = cli.json;
    match rt.block_on(run(cli)) {
        Ok(report) => {
            output::print_report(&report, as_json);
            ExitCode::from(match report.verdict {
                Verdict::Ok => EXIT_OK,
                Verdict::ErrorsFound => EXIT_REFUSED,
            })
        }
        Err(f) => {
            output::print_failure(&f, as_json);
            ExitCode::from(match f.kind {
                Kind::Usage => EXIT_USAGE,
                Kind::Refused => EXIT_REFUSED,
            })
        }
    }
}

/// A command line clap did not accept. A value one of our parsers refused
/// is reported like every other failure (`error: CODE: message`, the JSON
/// error with `--json`); anything else (help, version, an unknown flag, a
/// value outside a list) clap prints itself, exiting 2 for errors.
fn clap_error(e: clap::Error) -> ExitCode {
    match e.source().and_then(|s| s.downcast_ref::<Failure>()) {
        Some(f) => {
            output::print_failure(f, json_requested());
            ExitCode::from(EXIT_USAGE)
        }
        None => e.exit(),
    }
}

/// Whether `--json` is on a command line that clap could not parse.
fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// The client's configuration: which certificates, which server.
fn client_config(cli: &Cli) -> Result<ClientConfig, Failure> {
    let files = match (&cli.ca, &cli.cert, &cli.key) {
        (Some(ca), Some(cert), Some(key)) => TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None, None) => tls::dev_client_files(&cli.data_dir),
        _ => {
            return Err(Failure::usage(
                ErrorCode::InvalidCommand,
                "--ca, --cert and --key go together",
            ))
        }
    };
    let mut config = ClientConfig::new(cli.server, files);
    config.server_name = cli.server_name.clone();
    config.timeout = Duration::from_secs(cli.timeout.max(1));
    config.streams = 1;
    Ok(config)
}

async fn run(cli: Cli) -> Out {
    let client = Client::connect(client_config(&cli)?).await?;
    let out = command(&client, cli.command).await;
    client.close().await;
    out
}

/// Runs one command group.
async fn command(client: &Client, command: Cmd) -> Out {
    use cmd::*;
    match command {
        Cmd::Currency(c) => currency::run(client, c).await,
        Cmd::Account(c) => account::run(client, c).await,
        Cmd::Transfer(c) => transfer::run(client, c).await,
        Cmd::Entry(c) => entry::run(client, c).await,
        Cmd::Lien(c) => lien::run(client, c).await,
        Cmd::Statement(c) => statement::run(client, c).await,
        Cmd::Find(c) => find::run(client, c).await,
        Cmd::Subscribe(c) => subscribe::run(client, c).await,
        Cmd::Event(c) => event::run(client, c).await,
        Cmd::Status => status::run(client).await,
        Cmd::Verify(c) => verify::run(client, c).await,
        Cmd::Correct(c) => correct::run(client, c).await,
        Cmd::Hotspots(c) => hotspots::run(client, c).await,
        Cmd::Backup(c) => backup::run(client, c).await,
        Cmd::Completions { .. } => unreachable!("answered before connecting"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
