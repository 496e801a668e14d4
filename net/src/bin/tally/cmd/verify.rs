//! `tally verify`: the consistency verifier. Errors found are not a failure
//! of the command: the report is printed as usual and its verdict decides
//! the exit status (main's business).

use crate::output::{Out, Report, Verdict};
use clap::Args;
use serde_json::Value;
use tally_net::client::Client;

#[derive(Args)]
pub struct VerifyArgs {
    /// Check every account and every logged id (default: samples).
    #[arg(long)]
    full: bool,
}

pub async fn run(client: &Client, a: VerifyArgs) -> Out {
    let r = client.verify(a.full).await?;
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
    Ok(Report {
        value: v,
        text,
        verdict: if r.clean {
            Verdict::Ok
        } else {
            Verdict::ErrorsFound
        },
    })
}
