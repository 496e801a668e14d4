//! A custom event executor in a few lines: `fee.collect` charges a fee in
//! basis points of an amount, and the server is built with it registered
//! next to the built-ins.
//!
//! ```text
//! cargo run --release -p tally-net --example fee_executor -- ./tally-data 127.0.0.1:7400
//! tally event add 900 --step-name fee --type fee.collect --order 2 \
//!   --payload '{"account_id":"2","fee_account_id":"9200","amount":"120.00","basis_points":150,"currency":"USD"}'
//! ```

use serde_json::{json, Value};
use tally_engine::amount::format_amount;
use tally_engine::event::payload::Fields;
use tally_engine::event::{Executor, Plan, Registry, StepContext};
use tally_engine::{Entry, Error, Operation};
use tally_net::server::{Server, ServerConfig};

/// `fee.collect {account_id, fee_account_id, amount, basis_points, currency}`.
struct FeeCollection;

const FIELDS: &[&str] = &[
    "account_id",
    "fee_account_id",
    "amount",
    "basis_points",
    "currency",
];

impl Executor for FeeCollection {
    fn validate(&self, payload: &Value) -> Result<(), Error> {
        let f = Fields::of("fee.collect", payload, FIELDS)?;
        f.id("account_id")?;
        f.id("fee_account_id")?;
        f.amount_syntax("amount")?;
        f.currency("currency")?;
        match payload.get("basis_points").and_then(Value::as_u64) {
            Some(1..=10_000) => Ok(()),
            _ => Err(f.error("basis_points", "must be an integer from 1 to 10000")),
        }
    }

    fn execute(&self, cx: &mut StepContext<'_>, payload: &Value) -> Result<Plan, Error> {
        self.validate(payload)?;
        let f = Fields::of("fee.collect", payload, FIELDS)?;
        let currency = cx.currency(f.currency("currency")?)?;
        let base = f.amount("amount", currency.scale)?;
        let bp = payload["basis_points"].as_u64().unwrap_or(0) as u128;
        // Rounded down to the minor unit: the customer never pays more.
        let fee = base.saturating_mul(bp) / 10_000;
        if fee == 0 {
            return Ok(Plan {
                ops: vec![],
                result: json!({"fee": "0"}),
                awaiting: false,
            });
        }
        let id = cx.new_id();
        let entry = Entry::transfer(
            id,
            f.id("account_id")?,
            f.id("fee_account_id")?,
            fee,
            currency.code,
        )
        .with_reference("fee");
        Ok(Plan {
            ops: vec![Operation::Entry(Box::new(entry))],
            result: json!({"entry_id": id.to_string(), "fee": format_amount(fee, currency.scale)}),
            awaiting: false,
        })
    }
    // `compensate` is inherited: a reversal entry pointing at the fee entry.
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut config = ServerConfig::default();
    if let Some(dir) = args.next() {
        config.data_dir = dir.into();
    }
    if let Some(listen) = args.next() {
        config.listen = listen.parse().map_err(|e| format!("listen address: {e}"))?;
    }
    let mut registry = Registry::with_builtins();
    registry.register("fee.collect", FeeCollection);
    config.registry = registry;
    let server = Server::start(config).await?;
    println!(
        "tallyd (with fee.collect) listening on {}",
        server.local_addr()
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    server.shutdown().await;
    Ok(())
}
