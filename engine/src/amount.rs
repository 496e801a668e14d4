//! Exact money: integer minor units inside, decimal text (`rust_decimal`) at
//! the edges. Never floats, never rounding.

use crate::error::{Error, ErrorCode};
use crate::limits::{MAX_AMOUNT, MAX_CURRENCY_SCALE};
use rust_decimal::Decimal;
use std::str::FromStr;

/// An amount in minor units (always positive in commands).
pub type Amount = u128;
/// A signed balance in minor units.
pub type Balance = i128;

/// Parses a positive decimal amount into minor units of a currency with
/// `scale` digits after the point. More significant digits than the scale
/// allows are rejected (`invalid_amount`), never rounded; trailing zeros
/// (`1.50` at scale 1) carry no value and are accepted.
pub fn parse_amount(text: &str, scale: u8) -> Result<Amount, Error> {
    let t = text.trim();
    let bad = |why: &str| Error::new(ErrorCode::InvalidAmount).with_text(format!("{t:?}: {why}"));
    if scale > MAX_CURRENCY_SCALE {
        return Err(Error::new(ErrorCode::InvalidCurrency).with_text("scale above 18"));
    }
    if t.is_empty() || t.contains(['e', 'E']) {
        return Err(bad("not a plain decimal number"));
    }
    let d = Decimal::from_str_exact(t)
        .or_else(|_| Decimal::from_str(t))
        .map_err(|_| bad("not a decimal number"))?;
    // from_str would round silently beyond 28 digits; insist the text round-trips.
    if Decimal::from_str_exact(t).is_err() {
        return Err(bad("too many digits"));
    }
    if d.is_sign_negative() || d.is_zero() {
        return Err(bad("must be greater than zero"));
    }
    let d = d.normalize();
    if d.scale() > u32::from(scale) {
        return Err(bad(&format!("more than {scale} digits after the point")));
    }
    let mantissa = d.mantissa().unsigned_abs();
    let factor = 10u128
        .checked_pow(u32::from(scale) - d.scale())
        .ok_or_else(|| bad("too large"))?;
    let units = mantissa
        .checked_mul(factor)
        .ok_or_else(|| bad("too large"))?;
    if units > MAX_AMOUNT {
        return Err(bad("too large"));
    }
    Ok(units)
}

/// Formats minor units as a decimal with exactly `scale` digits after the point.
pub fn format_amount(units: Amount, scale: u8) -> String {
    format_digits(false, units, scale)
}

/// Formats a signed balance as a decimal with exactly `scale` digits after the point.
pub fn format_balance(value: Balance, scale: u8) -> String {
    format_digits(value < 0, value.unsigned_abs(), scale)
}

fn format_digits(negative: bool, units: u128, scale: u8) -> String {
    let sign = if negative { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{units}");
    }
    let factor = 10u128.pow(u32::from(scale.min(MAX_CURRENCY_SCALE)));
    format!(
        "{sign}{}.{:0width$}",
        units / factor,
        units % factor,
        width = scale as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_amount("100.50", 2).unwrap(), 10_050);
        assert_eq!(parse_amount("100.5", 2).unwrap(), 10_050);
        assert_eq!(parse_amount("100", 2).unwrap(), 10_000);
        assert_eq!(parse_amount("1.500", 2).unwrap(), 150);
        assert_eq!(parse_amount("0.000000000000000001", 18).unwrap(), 1);
        assert_eq!(parse_amount("7", 0).unwrap(), 7);
    }

    #[test]
    fn rejects_rounding_and_nonsense() {
        for (t, s) in [
            ("100.505", 2),
            ("0", 2),
            ("-1", 2),
            ("", 2),
            ("1e3", 2),
            ("abc", 2),
            ("0.1", 0),
            ("NaN", 2),
            ("1.2.3", 2),
        ] {
            assert_eq!(
                parse_amount(t, s).unwrap_err().code,
                ErrorCode::InvalidAmount,
                "{t}"
            );
        }
        assert_eq!(
            parse_amount("1", 19).unwrap_err().code,
            ErrorCode::InvalidCurrency
        );
        // 29 significant digits would be rounded by a lax parser.
        assert_eq!(
            parse_amount("1.0000000000000000000000000001", 18)
                .unwrap_err()
                .code,
            ErrorCode::InvalidAmount
        );
    }

    #[test]
    fn formats_with_scale() {
        assert_eq!(format_amount(10_050, 2), "100.50");
        assert_eq!(format_amount(5, 2), "0.05");
        assert_eq!(format_amount(5, 0), "5");
        assert_eq!(format_balance(-10_050, 2), "-100.50");
        assert_eq!(format_balance(i128::MIN + 1, 18).len(), 41);
    }
}
