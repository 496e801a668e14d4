//! One module per command group, each with `run(client, cmd) -> Out`, and
//! the requests they share: submitting a command, looking up an account,
//! the scales of the currencies a record names.

pub mod account;
pub mod backup;
pub mod correct;
pub mod currency;
pub mod entry;
pub mod event;
pub mod find;
pub mod hotspots;
pub mod lien;
pub mod statement;
pub mod status;
pub mod subscribe;
pub mod transfer;
pub mod verify;

use crate::output::{Failure, Report};
use std::collections::HashMap;
use tally_engine::currency::CurrencyCode;
use tally_engine::id::format_id;
use tally_engine::{Command, ErrorCode, Operation, Outcome};
use tally_net::client::Client;
use tally_net::json;
use tally_net::message::WireAccount;

/// An account, or `account_not_found`.
pub async fn account_of(client: &Client, account: u128) -> Result<WireAccount, Failure> {
    client.account(account).await?.ok_or_else(|| {
        Failure::refused(
            ErrorCode::AccountNotFound,
            format!("account {}", format_id(account)),
        )
    })
}

/// Submits one command. A rejection, now or originally (a duplicate of a
/// refused id), is a failure; a commit or a duplicate of one is not.
pub async fn settle(client: &Client, cmd: Command) -> Result<Outcome, Failure> {
    match client.submit(cmd).await? {
        Outcome::Duplicate { seq, code: Some(c) } => Err(Failure::refused(
            c,
            format!(
                "{} (this id was already refused at sequence {seq}; its first outcome is final)",
                c.description()
            ),
        )),
        Outcome::Rejected { error, .. } => Err(Failure::rejection(error)),
        o => Ok(o),
    }
}

/// Submits one command that has an id, reporting it as `what ID ...`.
pub async fn submit(
    client: &Client,
    subject: u128,
    cmd: Command,
    what: &str,
) -> Result<Report, Failure> {
    let o = settle(client, cmd).await?;
    let text = match &o {
        Outcome::Duplicate { seq, .. } => format!(
            "{what} {} was already committed at sequence {seq} (duplicate: nothing applied)",
            format_id(subject)
        ),
        _ => format!(
            "{what} {} committed at sequence {}",
            format_id(subject),
            o.seq().unwrap_or(0)
        ),
    };
    Ok(Report::new(json::outcome(subject, &o), text))
}

/// Currency scales, fetched once each.
pub struct ScaleCache<'a> {
    client: &'a Client,
    scales: HashMap<CurrencyCode, u8>,
}

impl<'a> ScaleCache<'a> {
    pub fn new(client: &'a Client) -> Self {
        ScaleCache {
            client,
            scales: HashMap::new(),
        }
    }

    /// Fetches the scales of the currencies `cmd` names that are not known yet.
    pub async fn fill(&mut self, cmd: &Command) {
        let mut codes = Vec::new();
        for op in cmd.ops() {
            match op {
                Operation::Entry(e) => codes.extend(e.lines.iter().map(|l| l.currency)),
                Operation::Transfer(t) => codes.push(t.currency),
                Operation::CreateLien(c) => codes.push(c.currency),
                Operation::CaptureLien(c) => codes.push(c.currency),
                Operation::ReleaseLien(_) => {}
            }
        }
        for c in codes {
            if !self.scales.contains_key(&c) {
                if let Ok(Some(cur)) = self.client.currency(c).await {
                    self.scales.insert(c, cur.scale);
                }
            }
        }
    }

    pub fn get(&self, c: CurrencyCode) -> u8 {
        self.scales.get(&c).copied().unwrap_or(0)
    }
}
