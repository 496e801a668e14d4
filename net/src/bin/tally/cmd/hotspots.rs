//! `tally hotspots`: the most written accounts, the most version conflicts,
//! and the events running longer than the window.

use crate::args;
use crate::output::{Out, Report};
use clap::Args;
use serde_json::{json, Value};
use std::time::Duration;
use tally_engine::id::format_id;
use tally_net::client::Client;
use tally_net::json;

#[derive(Args)]
pub struct HotspotsArgs {
    /// How far back, e.g. 30s, 1m, 1h (at most 1h).
    #[arg(long, default_value = "1m", value_parser = |t: &str| args::duration("window", t))]
    window: Duration,
    #[arg(long, default_value_t = 20)]
    top: u32,
}

pub async fn run(client: &Client, a: HotspotsArgs) -> Out {
    let w = a.window;
    let h = client.hotspots(w, a.top).await?;
    // Stuck events: running (or compensating) for longer than the window.
    let stuck: Vec<Value> = client
        .events(None, w.max(Duration::from_secs(1)), a.top)
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
    Ok(Report::new(v, text))
}
