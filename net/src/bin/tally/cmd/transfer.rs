//! `tally transfer`: move an amount from one account to another.

use super::entry::apply_versions;
use super::{account_of, submit};
use crate::args::{self, VersionArg};
use crate::output::Out;
use clap::Args;
use tally_engine::{Command, Entry};
use tally_net::client::Client;

// No doc comment here: the `transfer` variant's is the command's help.
#[derive(Args)]
pub struct TransferArgs {
    #[arg(value_parser = args::id)]
    entry_id: u128,
    #[arg(long, value_parser = args::id)]
    from: u128,
    #[arg(long, value_parser = args::id)]
    to: u128,
    #[arg(long)]
    amount: String,
    /// ACCOUNT=VERSION: refuse unless the account is at this version.
    #[arg(long, value_parser = args::version)]
    expect_version: Vec<VersionArg>,
    #[arg(long)]
    reference: Option<String>,
}

/// A two-line entry in the currency of the account the money leaves.
pub async fn run(client: &Client, t: TransferArgs) -> Out {
    let a = account_of(client, t.from).await?;
    let amount = args::amount(&t.amount, a.currency.scale)?;
    let mut e = Entry::transfer(t.entry_id, t.from, t.to, amount, a.currency.code);
    if let Some(r) = t.reference {
        e = e.with_reference(r);
    }
    apply_versions(&mut e, &t.expect_version)?;
    // The fixed 96-byte form unless a reference or a version needs the general one.
    let cmd = Command::Op(tally_engine::Operation::entry(e));
    submit(client, t.entry_id, cmd, "entry").await
}
