//! Reading a step's JSON payload: typed fields with clear `invalid_payload`
//! errors naming the executor and the field. Ids and amounts may be strings
//! or exact JSON numbers; unknown fields are refused (a typo must not pass
//! silently as a missing optional field).

use crate::amount::{parse_amount, Amount};
use crate::currency::CurrencyCode;
use crate::error::{Error, ErrorCode};
use crate::id::parse_id;
use crate::limits::{MAX_CURRENCY_SCALE, MAX_REFERENCE_BYTES};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::str::FromStr;

/// A payload object being read by the executor `kind`.
pub struct Fields<'a> {
    kind: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// The payload must be an object whose fields are all in `known`.
    pub fn of(kind: &'a str, v: &'a Value, known: &[&str]) -> Result<Fields<'a>, Error> {
        let Value::Object(map) = v else {
            return Err(payload_error(kind, "the payload must be a JSON object"));
        };
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(payload_error(
                kind,
                &format!("unknown field `{k}` (known: {})", known.join(", ")),
            ));
        }
        Ok(Fields { kind, map })
    }

    pub fn error(&self, key: &str, why: &str) -> Error {
        payload_error(self.kind, &format!("`{key}`: {why}"))
    }

    fn scalar(&self, key: &str) -> Result<Option<String>, Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.error(key, "must be a string or a number")),
        }
    }

    fn required(&self, key: &str) -> Result<String, Error> {
        self.scalar(key)?
            .ok_or_else(|| self.error(key, "is required"))
    }

    pub fn id(&self, key: &str) -> Result<u128, Error> {
        let t = self.required(key)?;
        parse_id(&t).map_err(|e| self.error(key, &e.message()))
    }

    pub fn opt_id(&self, key: &str) -> Result<Option<u128>, Error> {
        match self.scalar(key)? {
            None => Ok(None),
            Some(t) => parse_id(&t)
                .map(Some)
                .map_err(|e| self.error(key, &e.message())),
        }
    }

    pub fn currency(&self, key: &str) -> Result<CurrencyCode, Error> {
        let t = self.required(key)?;
        CurrencyCode::parse(&t).map_err(|e| self.error(key, &e.message()))
    }

    pub fn opt_currency(&self, key: &str) -> Result<Option<CurrencyCode>, Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.currency(key).map(Some),
        }
    }

    /// An amount in minor units of a currency with `scale` digits.
    pub fn amount(&self, key: &str, scale: u8) -> Result<Amount, Error> {
        let t = self.required(key)?;
        parse_amount(&t, scale).map_err(|e| self.error(key, &e.message()))
    }

    pub fn opt_amount(&self, key: &str, scale: u8) -> Result<Option<Amount>, Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.amount(key, scale).map(Some),
        }
    }

    /// Checks an amount's syntax before its currency's scale is known.
    pub fn amount_syntax(&self, key: &str) -> Result<(), Error> {
        self.amount(key, MAX_CURRENCY_SCALE).map(|_| ())
    }

    /// A positive decimal (an exchange rate), exact.
    pub fn decimal(&self, key: &str) -> Result<Decimal, Error> {
        let t = self.required(key)?;
        let d = Decimal::from_str_exact(t.trim())
            .or_else(|_| Decimal::from_str(t.trim()))
            .map_err(|_| self.error(key, "not a decimal number"))?;
        if Decimal::from_str_exact(t.trim()).is_err() {
            return Err(self.error(key, "too many digits"));
        }
        if d <= Decimal::ZERO {
            return Err(self.error(key, "must be greater than zero"));
        }
        Ok(d)
    }

    /// Optional text of at most `MAX_REFERENCE_BYTES`.
    pub fn text(&self, key: &str) -> Result<Option<&'a str>, Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_REFERENCE_BYTES => Ok(Some(s.as_str())),
            Some(Value::String(_)) => {
                Err(self.error(key, &format!("longer than {MAX_REFERENCE_BYTES} bytes")))
            }
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    pub fn flag(&self, key: &str) -> Result<bool, Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.error(key, "must be true or false")),
        }
    }

    pub fn array(&self, key: &str) -> Result<&'a Vec<Value>, Error> {
        match self.map.get(key) {
            Some(Value::Array(a)) => Ok(a),
            None | Some(Value::Null) => Err(self.error(key, "is required")),
            Some(_) => Err(self.error(key, "must be an array")),
        }
    }

    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }
}

pub fn payload_error(kind: &str, why: &str) -> Error {
    Error::new(ErrorCode::InvalidPayload).with_text(format!("{kind}: {why}"))
}

/// Parses payload text (already known to be JSON when it was logged).
pub fn parse(kind: &str, text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| payload_error(kind, &e.to_string()))
}
