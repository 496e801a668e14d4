//! `wallet.exchange`: one atomic multi-currency entry through FX position
//! accounts, at a decimal rate, with an optional fee leg.
//!
//! Rounding rule: the destination amount is `source_amount x exchange_rate`
//! computed exactly (`rust_decimal`), then rounded **toward zero** to the
//! destination currency's scale, so the customer never receives more than
//! the exact product. The remainder (exact minus paid, a fraction of one
//! destination minor unit) is not posted anywhere: it is reported in the
//! step's result as `remainder`, and it is the FX desk's (the position
//! account gave out that much less). Both currencies stay conserved.
//!
//! Lines (S = source currency, D = destination currency):
//! - debit source account S `source_amount` (+ fee when the fee is in S),
//!   credit FX position S `source_amount`, credit fee account S fee;
//! - debit FX position D `destination_amount`, credit destination account D
//!   `destination_amount` (- fee when the fee is in D), credit fee account D fee.
//!
//! With `"hold": true` the step first reserves the source side (amount plus
//! an S fee) with a lien owned by the event and waits for `event confirm`,
//! which releases the lien and posts the entry in one chain; `event fail` or
//! the timeout releases it.

use super::executor::{Executor, Plan, StepContext};
use super::payload::Fields;
use crate::amount::{format_amount, Amount};
use crate::chain::Operation;
use crate::currency::Currency;
use crate::entry::{Entry, Line};
use crate::error::Error;
use crate::id::{format_id, AccountId};
use crate::lien::{CreateLien, ReleaseLien};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};

pub struct Exchange;

const FIELDS: &[&str] = &[
    "source_account_id",
    "source_currency",
    "source_amount",
    "destination_account_id",
    "destination_currency",
    "exchange_rate",
    "fee_account_id",
    "fee_amount",
    "fee_currency",
    "reference",
    "description",
    "hold",
    "fx_source_account_id",
    "fx_destination_account_id",
];

const KIND: &str = "wallet.exchange";

/// The converted amount: exact product rounded toward zero to `dst.scale`,
/// and the remainder as decimal text (in destination currency units).
pub fn convert(
    source_units: Amount,
    src: Currency,
    rate: Decimal,
    dst: Currency,
) -> Option<(Amount, Decimal)> {
    let mantissa = i128::try_from(source_units).ok()?;
    let source = Decimal::try_from_i128_with_scale(mantissa, u32::from(src.scale)).ok()?;
    let exact = source.checked_mul(rate)?;
    let paid = exact.round_dp_with_strategy(u32::from(dst.scale), RoundingStrategy::ToZero);
    let remainder = exact.checked_sub(paid)?;
    // paid has at most dst.scale decimals: rescale to exactly that many.
    let mut units = paid;
    units.rescale(u32::from(dst.scale));
    if units.scale() != u32::from(dst.scale) {
        return None;
    }
    let m = units.mantissa();
    if m <= 0 {
        return Some((0, remainder));
    }
    Some((m as u128, remainder))
}

struct Quote {
    source: AccountId,
    destination: AccountId,
    src: Currency,
    dst: Currency,
    source_amount: Amount,
    destination_amount: Amount,
    remainder: Decimal,
    rate: Decimal,
    fee: Option<(AccountId, Amount, Currency)>,
    fx_src: AccountId,
    fx_dst: AccountId,
}

impl Quote {
    fn read(cx: &mut StepContext<'_>, f: &Fields) -> Result<Quote, Error> {
        let src = cx.currency(f.currency("source_currency")?)?;
        let dst = cx.currency(f.currency("destination_currency")?)?;
        let source_amount = f.amount("source_amount", src.scale)?;
        let rate = f.decimal("exchange_rate")?;
        let (destination_amount, remainder) = convert(source_amount, src, rate, dst)
            .ok_or_else(|| f.error("exchange_rate", "the converted amount is out of range"))?;
        if destination_amount == 0 {
            return Err(f.error(
                "source_amount",
                "converts to less than one minor unit of the destination currency",
            ));
        }
        let fee = match f.opt_currency("fee_currency")? {
            None => None,
            Some(code) => {
                let c = cx.currency(code)?;
                let amount = f.amount("fee_amount", c.scale)?;
                let account = f.id("fee_account_id")?;
                if c.code != src.code && c.code != dst.code {
                    return Err(f.error(
                        "fee_currency",
                        "must be the source or the destination currency",
                    ));
                }
                if c.code == dst.code && amount >= destination_amount {
                    return Err(f.error("fee_amount", "is not less than the converted amount"));
                }
                Some((account, amount, c))
            }
        };
        Ok(Quote {
            source: f.id("source_account_id")?,
            destination: f.id("destination_account_id")?,
            fx_src: cx
                .config
                .fx_account(src.code, f.opt_id("fx_source_account_id")?)?,
            fx_dst: cx
                .config
                .fx_account(dst.code, f.opt_id("fx_destination_account_id")?)?,
            src,
            dst,
            source_amount,
            destination_amount,
            remainder,
            rate,
            fee,
        })
    }

    /// What the source account gives up (the lien amount when held).
    fn source_total(&self) -> Amount {
        match self.fee {
            Some((_, fee, c)) if c.code == self.src.code => self.source_amount + fee,
            _ => self.source_amount,
        }
    }

    fn entry(&self, id: u128, reference: String) -> Entry {
        let (s, d) = (self.src.code, self.dst.code);
        let mut lines = vec![
            Line::debit(self.source, self.source_total(), s),
            Line::credit(self.fx_src, self.source_amount, s),
            Line::debit(self.fx_dst, self.destination_amount, d),
        ];
        match self.fee {
            Some((account, fee, c)) if c.code == s => {
                lines.push(Line::credit(account, fee, s));
                lines.push(Line::credit(self.destination, self.destination_amount, d));
            }
            Some((account, fee, _)) => {
                lines.push(Line::credit(
                    self.destination,
                    self.destination_amount - fee,
                    d,
                ));
                lines.push(Line::credit(account, fee, d));
            }
            None => lines.push(Line::credit(self.destination, self.destination_amount, d)),
        }
        Entry::new(id, lines).with_reference(reference)
    }

    fn result(&self, extra: Value) -> Value {
        let mut v = json!({
            "source_amount": format_amount(self.source_amount, self.src.scale),
            "source_currency": self.src.code.as_str(),
            "destination_amount": format_amount(self.destination_amount, self.dst.scale),
            "destination_currency": self.dst.code.as_str(),
            "exchange_rate": self.rate.to_string(),
            "rounding": "toward_zero",
            "remainder": self.remainder.normalize().to_string(),
        });
        if let Some((account, fee, c)) = self.fee {
            v["fee_amount"] = json!(format_amount(fee, c.scale));
            v["fee_currency"] = json!(c.code.as_str());
            v["fee_account_id"] = json!(format_id(account));
        }
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v
    }
}

fn reference(cx: &StepContext<'_>, f: &Fields) -> Result<String, Error> {
    Ok(f.text("reference")?
        .map(str::to_string)
        .unwrap_or_else(|| format!("event {} exchange", format_id(cx.event))))
}

impl Executor for Exchange {
    fn validate(&self, payload: &Value) -> Result<(), Error> {
        let f = Fields::of(KIND, payload, FIELDS)?;
        let (s, d) = (f.id("source_account_id")?, f.id("destination_account_id")?);
        let (sc, dc) = (
            f.currency("source_currency")?,
            f.currency("destination_currency")?,
        );
        if sc == dc {
            return Err(f.error(
                "destination_currency",
                "must differ from the source currency",
            ));
        }
        let _ = (s, d);
        f.amount_syntax("source_amount")?;
        f.decimal("exchange_rate")?;
        let fee = [
            f.raw("fee_account_id").is_some(),
            f.raw("fee_amount").is_some(),
            f.raw("fee_currency").is_some(),
        ];
        if fee.iter().any(|&b| b) && !fee.iter().all(|&b| b) {
            return Err(f.error(
                "fee_amount",
                "fee_account_id, fee_amount and fee_currency go together",
            ));
        }
        if fee[0] {
            f.id("fee_account_id")?;
            f.amount_syntax("fee_amount")?;
            f.currency("fee_currency")?;
        }
        f.text("reference")?;
        f.text("description")?;
        f.flag("hold")?;
        f.opt_id("fx_source_account_id")?;
        f.opt_id("fx_destination_account_id")?;
        Ok(())
    }

    fn configured(
        &self,
        payload: &Value,
        config: &super::executor::EventConfig,
    ) -> Result<(), Error> {
        let f = Fields::of(KIND, payload, FIELDS)?;
        let source = f.currency("source_currency")?;
        let destination = f.currency("destination_currency")?;
        config.fx_account(source, f.opt_id("fx_source_account_id")?)?;
        config.fx_account(destination, f.opt_id("fx_destination_account_id")?)?;
        Ok(())
    }

    fn execute(&self, cx: &mut StepContext<'_>, payload: &Value) -> Result<Plan, Error> {
        self.validate(payload)?;
        let f = Fields::of(KIND, payload, FIELDS)?;
        let q = Quote::read(cx, &f)?;
        if f.flag("hold")? {
            let lien = cx.new_id();
            return Ok(Plan {
                ops: vec![Operation::CreateLien(CreateLien {
                    id: lien,
                    account: q.source,
                    currency: q.src.code,
                    amount: q.source_total(),
                    expires_in_ns: cx.lien_lifetime(),
                    owner: cx.event,
                    user_data: 0,
                })],
                result: q.result(json!({"lien_id": format_id(lien), "held": true})),
                awaiting: true,
            });
        }
        let id = cx.new_id();
        let e = q.entry(id, reference(cx, &f)?);
        Ok(Plan {
            ops: vec![Operation::Entry(Box::new(e))],
            result: q.result(json!({"entry_id": format_id(id)})),
            awaiting: false,
        })
    }

    fn confirm(
        &self,
        cx: &mut StepContext<'_>,
        payload: &Value,
        applied: &[Operation],
        amount: Option<crate::amount::Amount>,
    ) -> Result<Plan, Error> {
        let f = Fields::of(KIND, payload, FIELDS)?;
        if amount.is_some() {
            return Err(f.error("source_amount", "an exchange is confirmed in full"));
        }
        let Some(Operation::CreateLien(lien)) = applied.first() else {
            return Err(f.error("hold", "the step has no lien to confirm"));
        };
        let q = Quote::read(cx, &f)?;
        let id = cx.new_id();
        let e = q.entry(id, reference(cx, &f)?);
        Ok(Plan {
            ops: vec![
                Operation::ReleaseLien(ReleaseLien {
                    lien: lien.id,
                    account: lien.account,
                }),
                Operation::Entry(Box::new(e)),
            ],
            result: q.result(json!({"lien_id": format_id(lien.id), "entry_id": format_id(id)})),
            awaiting: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str, scale: u8) -> Currency {
        Currency::new(code, scale).unwrap()
    }

    #[test]
    fn rounds_toward_zero_and_reports_the_remainder() {
        // 10.00 USD at 0.923456 = 9.23456 EUR -> 9.23, remainder 0.00456.
        let (units, rem) =
            convert(1000, c("USD", 2), "0.923456".parse().unwrap(), c("EUR", 2)).unwrap();
        assert_eq!(units, 923);
        assert_eq!(rem.normalize().to_string(), "0.00456");
        // To a scale-0 currency: 1.99 USD at 150.5 = 299.495 JPY -> 299.
        let (units, rem) =
            convert(199, c("USD", 2), "150.5".parse().unwrap(), c("JPY", 0)).unwrap();
        assert_eq!(units, 299);
        assert_eq!(rem.normalize().to_string(), "0.495");
        // Exact products have no remainder.
        let (units, rem) = convert(250, c("USD", 2), "2".parse().unwrap(), c("EUR", 2)).unwrap();
        assert_eq!((units, rem.is_zero()), (500, true));
        // To a finer scale: 1 EUR at 1.1 = 1.1 USD at scale 6 = 1100000.
        let (units, _) = convert(100, c("EUR", 2), "1.1".parse().unwrap(), c("USDC", 6)).unwrap();
        assert_eq!(units, 1_100_000);
    }

    #[test]
    fn out_of_range_is_none_not_a_panic() {
        let big = crate::limits::MAX_AMOUNT;
        assert!(convert(
            big,
            c("USD", 0),
            "1000000000".parse().unwrap(),
            c("EUR", 18)
        )
        .is_none());
    }
}
