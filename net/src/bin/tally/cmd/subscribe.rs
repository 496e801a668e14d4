//! `tally subscribe`: sequenced records from a sequence number as JSON lines.

use super::ScaleCache;
use crate::output::{Out, Report};
use clap::Args;
use serde_json::Value;
use tally_engine::Command;
use tally_net::client::Client;
use tally_net::json;
use tally_net::message::COMMITTED;

#[derive(Args)]
pub struct SubscribeArgs {
    #[arg(long, default_value_t = 1)]
    from_seq: u64,
    /// Stop after this many records (default: follow forever).
    #[arg(long)]
    limit: Option<u64>,
    /// Include rejected and duplicate records (default: committed only).
    #[arg(long)]
    all: bool,
}

/// Prints each record as it arrives (JSON lines with or without `--json`);
/// the report itself is empty.
pub async fn run(client: &Client, a: SubscribeArgs) -> Out {
    let mut sub = client.subscribe(a.from_seq).await?;
    let mut cache = ScaleCache::new(client);
    let mut n = 0u64;
    while a.limit.is_none_or(|l| n < l) {
        let Some(r) = sub.next().await? else { break };
        if !a.all && r.outcome != COMMITTED {
            continue;
        }
        if matches!(r.command, Command::Tick) && !a.all {
            continue;
        }
        cache.fill(&r.command).await;
        println!("{}", json::record(&r, &mut |c| cache.get(c)));
        n += 1;
    }
    Ok(Report::new(Value::Null, String::new()))
}
