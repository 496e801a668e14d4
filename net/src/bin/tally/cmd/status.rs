//! `tally status`: the server's position and your role.

use crate::output::{Out, Report};
use serde_json::json;
use tally_net::client::Client;

pub async fn run(client: &Client) -> Out {
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
    Ok(Report::new(v, text))
}
