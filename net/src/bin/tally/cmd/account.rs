//! `tally account`: create accounts, read them, change their state.

use super::{account_of, settle, submit};
use crate::args::{self, Policy, PolicyParser, StateArg};
use crate::output::{Failure, Out, Report};
use clap::Subcommand;
use tally_engine::amount::{format_amount, format_balance};
use tally_engine::currency::CurrencyCode;
use tally_engine::id::format_id;
use tally_engine::{AccountState, BalancePolicy, Command, ErrorCode, NewAccount};
use tally_net::client::Client;
use tally_net::json;

#[derive(Subcommand)]
pub enum AccountCmd {
    Create {
        #[arg(value_parser = args::id)]
        id: u128,
        #[arg(long, value_parser = args::currency_code)]
        currency: CurrencyCode,
        /// no-overdraft (default), unrestricted, or overdraft-limit=AMOUNT.
        #[arg(long, default_value = "no-overdraft", value_parser = PolicyParser)]
        policy: Policy,
        #[arg(long, default_value = "0", value_parser = args::user_data)]
        user_data: u128,
    },
    Get {
        #[arg(value_parser = args::id)]
        id: u128,
    },
    /// Set the state: active, frozen or closed.
    State {
        #[arg(value_parser = args::id)]
        id: u128,
        #[arg(value_enum)]
        state: StateArg,
    },
}

pub async fn run(client: &Client, cmd: AccountCmd) -> Out {
    match cmd {
        AccountCmd::Create {
            id,
            currency,
            policy,
            user_data,
        } => create(client, id, currency, policy, user_data).await,
        AccountCmd::Get { id } => get(client, id).await,
        AccountCmd::State { id, state } => set_state(client, id, state.into()).await,
    }
}

async fn create(
    client: &Client,
    account: u128,
    code: CurrencyCode,
    policy: Policy,
    user_data: u128,
) -> Out {
    let policy = match policy {
        Policy::NoOverdraft => BalancePolicy::NoOverdraft,
        Policy::Unrestricted => BalancePolicy::Unrestricted,
        Policy::OverdraftLimit(limit) => {
            // The limit is in the currency's scale.
            let c = client
                .currency(code)
                .await?
                .ok_or_else(|| Failure::refused(ErrorCode::CurrencyNotFound, code.as_str()))?;
            BalancePolicy::OverdraftLimit(args::amount(&limit, c.scale)?)
        }
    };
    let cmd = Command::CreateAccount(NewAccount {
        id: account,
        currency: code,
        policy,
        user_data,
    });
    submit(client, account, cmd, "account").await
}

async fn get(client: &Client, account: u128) -> Out {
    let a = account_of(client, account).await?;
    let s = a.currency.scale;
    let acc = &a.account;
    let text = format!(
        "account {}\n  currency   {}\n  balance    {}\n  available  {}\n  reserved   {}\n  version    {}\n  policy     {}{}\n  state      {}",
        format_id(acc.id),
        a.currency.code,
        format_balance(acc.balance(), s),
        format_balance(acc.available(), s),
        format_amount(acc.reserved, s),
        acc.version,
        acc.policy.name(),
        match acc.policy {
            BalancePolicy::OverdraftLimit(l) => format!(" ({})", format_amount(l, s)),
            _ => String::new(),
        },
        acc.state.name()
    );
    Ok(Report::new(json::account(&a), text))
}

async fn set_state(client: &Client, account: u128, state: AccountState) -> Out {
    let o = settle(client, Command::SetAccountState { account, state }).await?;
    Ok(Report::new(
        json::outcome(account, &o),
        format!("account {} is {}", format_id(account), state.name()),
    ))
}
