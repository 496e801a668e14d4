//! `tally currency`: create or look up currencies.

use super::settle;
use crate::args;
use crate::output::{Failure, Out, Report};
use clap::Subcommand;
use serde_json::json;
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{Command, ErrorCode};
use tally_net::client::Client;

#[derive(Subcommand)]
pub enum CurrencyCmd {
    Create {
        #[arg(value_parser = args::currency_code)]
        code: CurrencyCode,
        #[arg(long)]
        scale: u8,
    },
    Get {
        #[arg(value_parser = args::currency_code)]
        code: CurrencyCode,
    },
}

pub async fn run(client: &Client, cmd: CurrencyCmd) -> Out {
    match cmd {
        CurrencyCmd::Create { code, scale } => {
            // The scale (at most 18) is checked with the code.
            let c = Currency::new(code.as_str(), scale).map_err(Failure::bad_input)?;
            let o = settle(client, Command::CreateCurrency(c)).await?;
            Ok(Report::new(
                json!({"currency": c.code.as_str(), "scale": scale, "sequence": o.seq()}),
                format!("currency {} (scale {scale}) created", c.code),
            ))
        }
        CurrencyCmd::Get { code } => {
            let c = client
                .currency(code)
                .await?
                .ok_or_else(|| Failure::refused(ErrorCode::CurrencyNotFound, code.as_str()))?;
            Ok(Report::new(
                json!({"currency": c.code.as_str(), "scale": c.scale}),
                format!("{} scale {}", c.code, c.scale),
            ))
        }
    }
}
