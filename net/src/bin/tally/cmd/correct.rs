//! `tally correct`: post the correction of a committed entry, its reversal
//! (or explicit lines), linked to it by `corrects`, the reason its reference.

use super::entry::lines;
use super::submit;
use crate::args::{self, LineArg};
use crate::output::{Failure, Out, Report};
use clap::Args;
use serde_json::json;
use tally_engine::id::format_id;
use tally_engine::{Command, Entry, ErrorCode, Line, Operation, Side};
use tally_net::client::Client;
use tally_net::message::STATUS_COMMITTED;

#[derive(Args)]
pub struct CorrectArgs {
    #[arg(value_parser = args::id)]
    entry_id: u128,
    /// Why (recorded as the correcting entry's reference).
    #[arg(long)]
    reason: String,
    /// The correcting entry's id (default: derived from the original's, so
    /// that retrying the same correction is idempotent).
    #[arg(long = "entry-id", value_name = "NEW_ID", value_parser = args::id)]
    new_entry_id: Option<u128>,
    /// Explicit correcting lines instead of the reversal (ACCOUNT=AMOUNT).
    #[arg(long, requires = "credit", value_parser = args::line)]
    debit: Vec<LineArg>,
    #[arg(long, requires = "debit", value_parser = args::line)]
    credit: Vec<LineArg>,
    /// Allow correcting an entry that was already corrected.
    #[arg(long)]
    allow_repeat: bool,
}

pub async fn run(client: &Client, c: CorrectArgs) -> Out {
    let original = c.entry_id;
    let lines = if c.debit.is_empty() {
        reversal(client, original).await?
    } else {
        // Still only a committed entry can be corrected.
        committed_record(client, original).await?;
        lines(client, &c.debit, &c.credit).await?
    };
    let new_id = c.new_entry_id.unwrap_or_else(|| correction_id(original));
    let mut e = Entry::new(new_id, lines)
        .correcting(original)
        .with_reference(c.reason.clone());
    if c.allow_repeat {
        e = e.allowing_repeat_correction();
    }
    let mut v = submit(client, new_id, e.into(), "correction").await?.value;
    v["corrects"] = json!(format_id(original));
    v["reason"] = json!(c.reason);
    let text = format!(
        "correction {} of entry {} committed at sequence {} (reason: {})",
        format_id(new_id),
        format_id(original),
        v["sequence"],
        c.reason
    );
    Ok(Report::new(v, text))
}

/// The command of the record that committed entry `original`.
async fn committed_record(client: &Client, original: u128) -> Result<Command, Failure> {
    let info = client.entry(original).await?;
    match (info.record, info.status) {
        (Some(r), STATUS_COMMITTED) => Ok(r.command),
        _ => Err(Failure::refused(
            ErrorCode::CorrectedEntryNotFound,
            format!("entry {} is not committed", format_id(original)),
        )),
    }
}

/// The lines that undo what entry `original` posted.
async fn reversal(client: &Client, original: u128) -> Result<Vec<Line>, Failure> {
    let command = committed_record(client, original).await?;
    let posted = posted_lines(&command, original).ok_or_else(|| {
        Failure::refused(
            ErrorCode::CorrectedEntryNotFound,
            format!("entry {} posted no lines", format_id(original)),
        )
    })?;
    Ok(posted
        .into_iter()
        .map(|l| match l.side {
            Side::Debit => Line::credit(l.account, l.amount, l.currency),
            Side::Credit => Line::debit(l.account, l.amount, l.currency),
        })
        .collect())
}

/// The lines that entry `id` posted, from the record that committed it (a
/// lone entry, an operation of a chain, or a lien capture).
fn posted_lines(cmd: &Command, id: u128) -> Option<Vec<Line>> {
    cmd.ops().iter().find_map(|op| match op {
        Operation::Entry(e) if e.id == id => Some(e.lines.to_vec()),
        Operation::Transfer(t) if t.id == id => Some(t.lines().to_vec()),
        Operation::CaptureLien(c) if c.entry_id == id => {
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
