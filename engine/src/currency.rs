//! Currencies: a short code and a scale (digits after the point).

use crate::error::{Error, ErrorCode};
use crate::limits::{MAX_CURRENCIES, MAX_CURRENCY_CODE_LEN, MAX_CURRENCY_SCALE};
use hashbrown::HashMap;
use std::fmt;

/// A currency code: 1 to 8 characters from `A-Z0-9`, stored inline.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct CurrencyCode([u8; MAX_CURRENCY_CODE_LEN]);

impl CurrencyCode {
    /// Parses and validates a code (upper case letters and digits only).
    pub fn parse(text: &str) -> Result<CurrencyCode, Error> {
        let bytes = text.as_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_CURRENCY_CODE_LEN
            || !bytes
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(Error::new(ErrorCode::InvalidCurrency).with_text(format!("{text:?}")));
        }
        let mut code = [0u8; MAX_CURRENCY_CODE_LEN];
        code[..bytes.len()].copy_from_slice(bytes);
        Ok(CurrencyCode(code))
    }

    /// The code whose bytes these are, if they are a well-formed code (1 to
    /// 8 of A-Z 0-9, then zero bytes).
    #[inline]
    pub fn from_bytes(bytes: [u8; MAX_CURRENCY_CODE_LEN]) -> Option<CurrencyCode> {
        let c = CurrencyCode(bytes);
        c.is_valid().then_some(c)
    }

    /// Whether the code is well formed (a value built by `parse`, not `default`).
    /// Without early exits (it runs twice per transfer on the hot path): the
    /// non-zero bytes must be a non-empty prefix, each of A-Z 0-9.
    #[inline]
    pub fn is_valid(&self) -> bool {
        let mut nonzero = 0u32;
        let mut bad = false;
        for (i, &c) in self.0.iter().enumerate() {
            nonzero |= u32::from(c != 0) << i;
            bad |= (c != 0) & !(c.is_ascii_uppercase() | c.is_ascii_digit());
        }
        (nonzero != 0) & (nonzero & (nonzero + 1) == 0) & !bad
    }

    pub fn as_str(&self) -> &str {
        let len = self
            .0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MAX_CURRENCY_CODE_LEN);
        std::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }

    pub fn to_bytes(self) -> [u8; MAX_CURRENCY_CODE_LEN] {
        self.0
    }
}

impl fmt::Debug for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A currency definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Currency {
    pub code: CurrencyCode,
    pub scale: u8,
}

impl Currency {
    pub fn new(code: &str, scale: u8) -> Result<Currency, Error> {
        let c = Currency {
            code: CurrencyCode::parse(code)?,
            scale,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), Error> {
        if !self.code.is_valid() {
            return Err(Error::new(ErrorCode::InvalidCurrency).with_text("malformed code"));
        }
        if self.scale > MAX_CURRENCY_SCALE {
            return Err(Error::new(ErrorCode::InvalidCurrency)
                .with_text(format!("scale {} above 18", self.scale)));
        }
        Ok(())
    }
}

/// The currencies a shard knows (every shard holds all of them), addressed by
/// a dense `u16` index that accounts store instead of the code.
#[derive(Clone, Debug, Default)]
pub struct Currencies {
    list: Vec<Currency>,
    by_code: HashMap<CurrencyCode, u16>,
    seqs: Vec<u64>,
}

impl Currencies {
    pub fn get(&self, code: CurrencyCode) -> Option<(u16, Currency)> {
        self.by_code.get(&code).map(|&i| (i, self.list[i as usize]))
    }
    pub fn by_index(&self, index: u16) -> Currency {
        self.list[index as usize]
    }
    pub fn created_seq(&self, index: u16) -> u64 {
        self.seqs[index as usize]
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Currency> {
        self.list.iter()
    }
    pub(crate) fn is_full(&self) -> bool {
        self.list.len() >= MAX_CURRENCIES
    }
    pub(crate) fn insert(&mut self, currency: Currency, seq: u64) -> u16 {
        debug_assert!(!self.by_code.contains_key(&currency.code));
        let i = self.list.len() as u16;
        self.list.push(currency);
        self.seqs.push(seq);
        self.by_code.insert(currency.code, i);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(CurrencyCode::parse("USD").unwrap().as_str(), "USD");
        assert!(CurrencyCode::parse("USDT1234").is_ok());
        for bad in ["", "usd", "US D", "USDTUSDTX", "€"] {
            assert_eq!(
                CurrencyCode::parse(bad).unwrap_err().code,
                ErrorCode::InvalidCurrency,
                "{bad}"
            );
        }
        assert!(!CurrencyCode::default().is_valid());
        assert_eq!(
            Currency::new("BTC", 19).unwrap_err().code,
            ErrorCode::InvalidCurrency
        );
    }
}
