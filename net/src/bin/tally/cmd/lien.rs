//! `tally lien`: reserve funds and capture or release them.

use super::{account_of, settle, submit};
use crate::args;
use crate::output::{Failure, Out, Report};
use clap::Subcommand;
use tally_engine::amount::format_amount;
use tally_engine::id::format_id;
use tally_engine::lien::{CaptureLien, CreateLien, ReleaseLien};
use tally_engine::ErrorCode;
use tally_net::client::Client;
use tally_net::json;
use tally_net::message::WireLien;

#[derive(Subcommand)]
pub enum LienCmd {
    Create {
        #[arg(value_parser = args::id)]
        lien_id: u128,
        #[arg(long, value_parser = args::id)]
        account: u128,
        #[arg(long)]
        amount: String,
        /// Lifetime, e.g. 30s, 5m, 2h.
        #[arg(long, value_parser = args::expiry)]
        expires_in: Option<u64>,
    },
    Capture {
        #[arg(value_parser = args::id)]
        lien_id: u128,
        #[arg(long, value_parser = args::id)]
        entry: u128,
        #[arg(long, value_parser = args::id)]
        to: u128,
        /// Default: the whole lien.
        #[arg(long)]
        amount: Option<String>,
        #[arg(long)]
        reference: Option<String>,
    },
    Release {
        #[arg(value_parser = args::id)]
        lien_id: u128,
    },
    Get {
        #[arg(value_parser = args::id)]
        lien_id: u128,
    },
}

pub async fn run(client: &Client, cmd: LienCmd) -> Out {
    match cmd {
        LienCmd::Create {
            lien_id,
            account,
            amount,
            expires_in,
        } => {
            let a = account_of(client, account).await?;
            let c = CreateLien {
                id: lien_id,
                account,
                currency: a.currency.code,
                amount: args::amount(&amount, a.currency.scale)?,
                expires_in_ns: expires_in,
                owner: 0,
                user_data: 0,
            };
            submit(client, lien_id, c.into(), "lien").await
        }
        LienCmd::Capture {
            lien_id,
            entry,
            to,
            amount,
            reference,
        } => {
            let l = lien_of(client, lien_id).await?;
            let amount = match amount {
                Some(a) => args::amount(&a, l.scale)?,
                None => l.lien.amount,
            };
            let mut credits = smallvec::SmallVec::new();
            credits.push((to, amount));
            let c = CaptureLien {
                lien: lien_id,
                account: l.lien.account,
                entry_id: entry,
                currency: l.lien.currency,
                credits,
                reference: reference.map(Into::into),
            };
            submit(client, entry, c.into(), "capture entry").await
        }
        LienCmd::Release { lien_id } => {
            let l = lien_of(client, lien_id).await?;
            let release = ReleaseLien {
                lien: lien_id,
                account: l.lien.account,
            };
            let o = settle(client, release.into()).await?;
            Ok(Report::new(
                json::outcome(lien_id, &o),
                format!("lien {} released", format_id(lien_id)),
            ))
        }
        LienCmd::Get { lien_id } => get(client, lien_id).await,
    }
}

/// A lien, or `lien_not_found`.
async fn lien_of(client: &Client, lien: u128) -> Result<WireLien, Failure> {
    client
        .lien(lien)
        .await?
        .ok_or_else(|| Failure::refused(ErrorCode::LienNotFound, format_id(lien)))
}

async fn get(client: &Client, lien: u128) -> Out {
    let l = lien_of(client, lien).await?;
    let s = l.scale;
    let text = format!(
        "lien {}\n  account    {}\n  amount     {} {}\n  captured   {}\n  status     {}",
        format_id(lien),
        format_id(l.lien.account),
        format_amount(l.lien.amount, s),
        l.lien.currency,
        format_amount(l.lien.captured, s),
        l.lien.status.name()
    );
    Ok(Report::new(json::lien(&l), text))
}
