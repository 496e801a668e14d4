//! `tally entry`: post or look up journal entries; the lines and version
//! conditions that `transfer` and `correct` share.

use super::{account_of, submit, ScaleCache};
use crate::args::{self, LineArg, VersionArg};
use crate::output::{Failure, Out, Report};
use clap::Subcommand;
use serde_json::{json, Value};
use std::collections::HashMap;
use tally_engine::currency::CurrencyCode;
use tally_engine::id::format_id;
use tally_engine::{Entry, ErrorCode, Line};
use tally_net::client::Client;
use tally_net::message::{EntryInfo, STATUS_COMMITTED, STATUS_REJECTED};

#[derive(Subcommand)]
pub enum EntryCmd {
    Post {
        #[arg(value_parser = args::id)]
        entry_id: u128,
        /// ACCOUNT=AMOUNT (repeat for more lines).
        #[arg(long, value_parser = args::line)]
        debit: Vec<LineArg>,
        /// ACCOUNT=AMOUNT (repeat for more lines).
        #[arg(long, value_parser = args::line)]
        credit: Vec<LineArg>,
        /// The committed entry this one corrects.
        #[arg(long, value_parser = args::id)]
        corrects: Option<u128>,
        #[arg(long)]
        reference: Option<String>,
        #[arg(long, default_value = "0", value_parser = args::user_data)]
        user_data: u128,
        /// ACCOUNT=VERSION: refuse unless the account is at this version.
        #[arg(long, value_parser = args::version)]
        expect_version: Vec<VersionArg>,
    },
    Get {
        #[arg(value_parser = args::id)]
        entry_id: u128,
    },
}

pub async fn run(client: &Client, cmd: EntryCmd) -> Out {
    match cmd {
        EntryCmd::Post {
            entry_id,
            debit,
            credit,
            corrects,
            reference,
            user_data,
            expect_version,
        } => {
            let lines = lines(client, &debit, &credit).await?;
            let mut e = Entry::new(entry_id, lines);
            if let Some(r) = reference {
                e = e.with_reference(r);
            }
            if let Some(c) = corrects {
                e = e.correcting(c);
            }
            e.user_data = user_data;
            apply_versions(&mut e, &expect_version)?;
            submit(client, entry_id, e.into(), "entry").await
        }
        EntryCmd::Get { entry_id } => get(client, entry_id).await,
    }
}

/// Lines from `ACCOUNT=AMOUNT` arguments, amounts in each account's scale.
pub async fn lines(
    client: &Client,
    debit: &[LineArg],
    credit: &[LineArg],
) -> Result<Vec<Line>, Failure> {
    let mut lines = Vec::new();
    let mut scales: HashMap<u128, (u8, CurrencyCode)> = HashMap::new();
    for (side_debit, list) in [(true, debit), (false, credit)] {
        for l in list {
            let (scale, code) = match scales.get(&l.account) {
                Some(x) => *x,
                None => {
                    let a = account_of(client, l.account).await?;
                    scales.insert(l.account, (a.currency.scale, a.currency.code));
                    (a.currency.scale, a.currency.code)
                }
            };
            let amount = args::amount(&l.amount, scale)?;
            lines.push(if side_debit {
                Line::debit(l.account, amount, code)
            } else {
                Line::credit(l.account, amount, code)
            });
        }
    }
    Ok(lines)
}

/// Puts each `--expect-version` on the entry's line of that account.
pub fn apply_versions(entry: &mut Entry, versions: &[VersionArg]) -> Result<(), Failure> {
    for v in versions {
        let line = entry
            .lines
            .iter_mut()
            .find(|l| l.account == v.account)
            .ok_or_else(|| {
                Failure::usage(
                    ErrorCode::InvalidCommand,
                    format!(
                        "--expect-version names account {}, which is not in the entry",
                        format_id(v.account)
                    ),
                )
            })?;
        line.expected_version = Some(v.version);
    }
    Ok(())
}

async fn get(client: &Client, eid: u128) -> Out {
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
    add_record(client, eid, &info, &mut v, &mut text).await;
    Ok(Report::new(v, text))
}

/// Adds the record that decided entry `eid` (and its lines) to `entry get`.
async fn add_record(
    client: &Client,
    eid: u128,
    info: &EntryInfo,
    v: &mut Value,
    text: &mut String,
) {
    let Some(r) = &info.record else { return };
    let mut cache = ScaleCache::new(client);
    cache.fill(&r.command).await;
    let rec = tally_net::json::record(r, &mut |c| cache.get(c));
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
