//! The wallet executors: transfer, deposit, withdrawal (lien-backed).

use super::executor::{EventConfig, Executor, Plan, StepContext};
use super::payload::Fields;
use crate::amount::{format_amount, Amount};
use crate::chain::Operation;
use crate::entry::Entry;
use crate::error::Error;
use crate::id::format_id;
use crate::lien::{CaptureLien, CreateLien};
use serde_json::{json, Value};
use smallvec::smallvec;

fn entry(
    id: u128,
    from: u128,
    to: u128,
    amount: Amount,
    f: &Fields,
    cx: &mut StepContext<'_>,
    currency: crate::currency::CurrencyCode,
) -> Result<Entry, Error> {
    let mut e = Entry::transfer(id, from, to, amount, currency);
    if let Some(r) = f.text("reference")? {
        e = e.with_reference(r);
    } else {
        e = e.with_reference(format!("event {}", format_id(cx.event)));
    }
    Ok(e)
}

/// What a deposit or a withdrawal moves: an amount between an account and
/// the settlement account of its currency.
struct AccountMove {
    currency: crate::currency::Currency,
    amount: Amount,
    account: u128,
    settlement: u128,
}

impl AccountMove {
    fn read<'a>(
        kind: &'a str,
        cx: &mut StepContext<'_>,
        payload: &'a Value,
    ) -> Result<(Fields<'a>, AccountMove), Error> {
        let f = Fields::of(kind, payload, DEPOSIT_FIELDS)?;
        let currency = cx.currency(f.currency("currency")?)?;
        let amount = f.amount("amount", currency.scale)?;
        let account = f.id("account_id")?;
        let settlement = cx
            .config
            .settlement_account(currency.code, f.opt_id("settlement_account_id")?)?;
        if settlement == account {
            return Err(f.error("account_id", "is the settlement account itself"));
        }
        let m = AccountMove {
            currency,
            amount,
            account,
            settlement,
        };
        Ok((f, m))
    }
}

/// The payload of a deposit or a withdrawal: one account, an amount, and
/// optionally the settlement account.
fn validate_account_payload(kind: &str, payload: &Value) -> Result<(), Error> {
    let f = Fields::of(kind, payload, DEPOSIT_FIELDS)?;
    f.id("account_id")?;
    f.currency("currency")?;
    f.amount_syntax("amount")?;
    f.text("reference")?;
    f.text("description")?;
    f.opt_id("settlement_account_id")?;
    Ok(())
}

/// A deposit's or a withdrawal's settlement account: named in the payload
/// or configured for its currency.
fn settlement_configured(kind: &str, payload: &Value, config: &EventConfig) -> Result<(), Error> {
    let f = Fields::of(kind, payload, DEPOSIT_FIELDS)?;
    config
        .settlement_account(f.currency("currency")?, f.opt_id("settlement_account_id")?)
        .map(|_| ())
}

/// `wallet.transfer {source_account_id, destination_account_id, amount,
/// currency, reference?, description?}`: one two-line entry.
pub struct Transfer;

const TRANSFER_FIELDS: &[&str] = &[
    "source_account_id",
    "destination_account_id",
    "amount",
    "currency",
    "reference",
    "description",
];

impl Executor for Transfer {
    fn validate(&self, payload: &Value) -> Result<(), Error> {
        let f = Fields::of("wallet.transfer", payload, TRANSFER_FIELDS)?;
        let (s, d) = (f.id("source_account_id")?, f.id("destination_account_id")?);
        if s == d {
            return Err(f.error("destination_account_id", "must differ from the source"));
        }
        f.currency("currency")?;
        f.amount_syntax("amount")?;
        f.text("reference")?;
        f.text("description")?;
        Ok(())
    }

    fn execute(&self, cx: &mut StepContext<'_>, payload: &Value) -> Result<Plan, Error> {
        self.validate(payload)?;
        let f = Fields::of("wallet.transfer", payload, TRANSFER_FIELDS)?;
        let currency = cx.currency(f.currency("currency")?)?;
        let amount = f.amount("amount", currency.scale)?;
        let id = cx.new_id();
        let e = entry(
            id,
            f.id("source_account_id")?,
            f.id("destination_account_id")?,
            amount,
            &f,
            cx,
            currency.code,
        )?;
        Ok(Plan {
            ops: vec![Operation::Entry(Box::new(e))],
            result: json!({
                "entry_id": format_id(id),
                "amount": format_amount(amount, currency.scale),
                "currency": currency.code.as_str(),
            }),
            awaiting: false,
        })
    }
}

/// `wallet.deposit {account_id, amount, currency, reference?, description?,
/// settlement_account_id?}`: from the settlement account (configured per
/// currency, or named) to the account.
pub struct Deposit;

const DEPOSIT_FIELDS: &[&str] = &[
    "account_id",
    "amount",
    "currency",
    "reference",
    "description",
    "settlement_account_id",
];

impl Executor for Deposit {
    fn validate(&self, payload: &Value) -> Result<(), Error> {
        validate_account_payload("wallet.deposit", payload)
    }

    fn configured(&self, payload: &Value, config: &EventConfig) -> Result<(), Error> {
        settlement_configured("wallet.deposit", payload, config)
    }

    fn execute(&self, cx: &mut StepContext<'_>, payload: &Value) -> Result<Plan, Error> {
        self.validate(payload)?;
        let (f, m) = AccountMove::read("wallet.deposit", cx, payload)?;
        let (currency, amount, account, settlement) =
            (m.currency, m.amount, m.account, m.settlement);
        let id = cx.new_id();
        let e = entry(id, settlement, account, amount, &f, cx, currency.code)?;
        Ok(Plan {
            ops: vec![Operation::Entry(Box::new(e))],
            result: json!({
                "entry_id": format_id(id),
                "settlement_account_id": format_id(settlement),
                "amount": format_amount(amount, currency.scale),
                "currency": currency.code.as_str(),
            }),
            awaiting: false,
        })
    }
}

/// `wallet.withdrawal {account_id, amount, currency, reference?,
/// settlement_account_id?}`: reserves the amount with a lien owned by the
/// event (expiring at the event's timeout) and waits. `event confirm`
/// captures it (in full, or `--amount` of it, the rest released) to the
/// settlement account; `event fail` or the timeout releases it.
pub struct Withdrawal;

/// A withdrawal's payload has the same fields as a deposit's.
const WITHDRAWAL_FIELDS: &[&str] = DEPOSIT_FIELDS;

impl Executor for Withdrawal {
    fn validate(&self, payload: &Value) -> Result<(), Error> {
        validate_account_payload("wallet.withdrawal", payload)
    }

    fn configured(&self, payload: &Value, config: &EventConfig) -> Result<(), Error> {
        settlement_configured("wallet.withdrawal", payload, config)
    }

    fn execute(&self, cx: &mut StepContext<'_>, payload: &Value) -> Result<Plan, Error> {
        self.validate(payload)?;
        // Resolves the settlement account now, not at confirmation: with
        // nowhere to pay out to, the step fails before reserving anything.
        let (_, m) = AccountMove::read("wallet.withdrawal", cx, payload)?;
        let (currency, amount, account, settlement) =
            (m.currency, m.amount, m.account, m.settlement);
        let lien = cx.new_id();
        Ok(Plan {
            ops: vec![Operation::CreateLien(CreateLien {
                id: lien,
                account,
                currency: currency.code,
                amount,
                expires_in_ns: cx.lien_lifetime(),
                owner: cx.event,
                user_data: 0,
            })],
            result: json!({
                "lien_id": format_id(lien),
                "amount": format_amount(amount, currency.scale),
                "currency": currency.code.as_str(),
                "settlement_account_id": format_id(settlement),
            }),
            awaiting: true,
        })
    }

    fn confirm(
        &self,
        cx: &mut StepContext<'_>,
        payload: &Value,
        applied: &[Operation],
        amount: Option<Amount>,
    ) -> Result<Plan, Error> {
        let f = Fields::of("wallet.withdrawal", payload, WITHDRAWAL_FIELDS)?;
        let Some(Operation::CreateLien(lien)) = applied.first() else {
            return Err(f.error("account_id", "the step has no lien to capture"));
        };
        let currency = cx.currency(lien.currency)?;
        let settlement = cx
            .config
            .settlement_account(lien.currency, f.opt_id("settlement_account_id")?)?;
        let take = amount.unwrap_or(lien.amount);
        let entry_id = cx.new_id();
        let reference = f
            .text("reference")?
            .map(str::to_string)
            .unwrap_or_else(|| format!("event {} withdrawal", format_id(cx.event)));
        Ok(Plan {
            ops: vec![Operation::CaptureLien(Box::new(CaptureLien {
                lien: lien.id,
                account: lien.account,
                entry_id,
                currency: lien.currency,
                credits: smallvec![(settlement, take)],
                reference: Some(reference.into_boxed_str()),
            }))],
            result: json!({
                "lien_id": format_id(lien.id),
                "entry_id": format_id(entry_id),
                "captured": format_amount(take, currency.scale),
                "released": format_amount(lien.amount.saturating_sub(take), currency.scale),
                "currency": currency.code.as_str(),
                "settlement_account_id": format_id(settlement),
            }),
            awaiting: false,
        })
    }
}
