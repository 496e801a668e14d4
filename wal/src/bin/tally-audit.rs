//! `tally-audit DATA_DIR [--json] [--account ID]`: offline, read-only audit of
//! a (copy of a) Tally data directory. Exit 0 when clean, 1 when any problem
//! is found, 2 when the input cannot be read.

#![forbid(unsafe_code)]

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tally-audit",
    version,
    about = "Verify a Tally data directory offline: log integrity, replay, conservation"
)]
struct Args {
    /// The data directory (or a copy of it).
    data_dir: PathBuf,
    /// Print one JSON document instead of the human report.
    #[arg(long)]
    json: bool,
    /// Also print this account's statement (entries with running balance).
    #[arg(long, value_name = "ID")]
    account: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let account = match args
        .account
        .as_deref()
        .map(tally_engine::id::parse_id)
        .transpose()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}: {}", e.code, e.message());
            return ExitCode::from(2);
        }
    };
    match tally_wal::audit::audit(&args.data_dir, account) {
        Err(msg) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "error": { "code": "unreadable", "message": msg } })
                );
            }
            eprintln!("error: unreadable: {msg}");
            ExitCode::from(2)
        }
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", tally_wal::audit::render(&report));
            }
            if report.clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
