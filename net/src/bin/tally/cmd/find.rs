//! `tally find`: entries by reference or user data, accounts by user data.

use super::ScaleCache;
use crate::args;
use crate::output::{Failure, Out, Report};
use clap::Args;
use serde_json::{json, Value};
use tally_engine::ErrorCode;
use tally_net::client::Client;
use tally_net::json;
use tally_net::message::FindKey;

#[derive(Args)]
pub struct FindArgs {
    #[arg(long, conflicts_with_all = ["user_data", "account_user_data"])]
    reference: Option<String>,
    /// Entries with this user data.
    #[arg(long, conflicts_with = "account_user_data", value_parser = args::id)]
    user_data: Option<u128>,
    /// Accounts with this user data.
    #[arg(long, value_parser = args::id)]
    account_user_data: Option<u128>,
    /// From this time (ns since the epoch).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Up to this time (ns since the epoch).
    #[arg(long, default_value_t = u64::MAX)]
    to: u64,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub async fn run(client: &Client, f: FindArgs) -> Out {
    let key = match (f.reference, f.user_data, f.account_user_data) {
        (Some(r), None, None) => FindKey::Reference(r),
        (None, Some(u), None) => FindKey::EntryUserData(u),
        (None, None, Some(u)) => FindKey::AccountUserData(u),
        _ => {
            return Err(Failure::usage(
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
    Ok(Report::new(json!(values), text))
}
