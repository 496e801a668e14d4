//! `tally statement`: an account's postings with the balance after each.

use super::ScaleCache;
use crate::args;
use crate::output::{Out, Report};
use clap::Args;
use serde_json::{json, Value};
use tally_engine::amount::{format_amount, format_balance};
use tally_engine::id::format_id;
use tally_net::client::Client;
use tally_net::json;

#[derive(Args)]
pub struct StatementArgs {
    #[arg(value_parser = args::id)]
    account: u128,
    #[arg(long, default_value_t = 0)]
    from_seq: u64,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub async fn run(client: &Client, a: StatementArgs) -> Out {
    let st = client.statement(a.account, a.from_seq, a.limit).await?;
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
    Ok(Report::new(
        json!({"account": format_id(a.account), "lines": lines, "next_from_seq": st.next_from_seq}),
        text,
    ))
}
