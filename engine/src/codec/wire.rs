//! The building blocks of `PROTOCOL.md`'s layouts: little-endian integers,
//! currency codes, `str`, `opt<T>` and `list<T>`, written to a `Vec<u8>` and
//! read with every bound checked. Nothing here panics on any input.

use crate::currency::CurrencyCode;
use crate::error::ErrorCode;
use crate::limits::MAX_CURRENCY_CODE_LEN;

/// Why bytes are not a message: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset from the start of the body.
    pub offset: usize,
    pub what: String,
    /// The code to answer with: `malformed_request`, or the limit broken
    /// (`batch_too_large`, `too_many_operations`, `frame_too_large`).
    pub code: ErrorCode,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for DecodeError {}

pub type Result<T> = std::result::Result<T, DecodeError>;

/// A cursor over untrusted bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Bytes of memory what was decoded so far takes (an estimate from the
    /// types' sizes), and the most it may take.
    charged: usize,
    charge_limit: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader::with_limit(buf, usize::MAX)
    }

    /// A reader that refuses (`frame_too_large`) once what it decoded would
    /// take more than `limit` bytes of memory: a small input cannot expand
    /// into a large allocation.
    pub fn with_limit(buf: &'a [u8], limit: usize) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            charged: 0,
            charge_limit: limit,
        }
    }

    /// Memory the decoded values take, as charged.
    pub fn charged(&self) -> usize {
        self.charged
    }

    /// Charges `bytes` of decoded memory against the limit.
    #[inline]
    pub fn charge(&mut self, bytes: usize) -> Result<()> {
        self.charged = self.charged.saturating_add(bytes);
        if self.charged > self.charge_limit {
            return Err(DecodeError {
                offset: self.pos,
                what: format!(
                    "the request would take more than {} bytes of memory once decoded",
                    self.charge_limit
                ),
                code: ErrorCode::FrameTooLarge,
            });
        }
        Ok(())
    }

    #[inline]
    pub fn offset(&self) -> usize {
        self.pos
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn error<T>(&self, what: impl Into<String>) -> Result<T> {
        Err(DecodeError {
            offset: self.pos,
            what: what.into(),
            code: crate::error::ErrorCode::MalformedRequest,
        })
    }

    /// The bytes not read yet.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// The next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return self.error(format!(
                "{n} bytes needed, {} left (the body is truncated)",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    #[inline]
    pub fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_le_bytes)
    }
    #[inline]
    pub fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }
    #[inline]
    pub fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }
    #[inline]
    pub fn u128(&mut self) -> Result<u128> {
        self.array().map(u128::from_le_bytes)
    }
    #[inline]
    pub fn i128(&mut self) -> Result<i128> {
        self.array().map(i128::from_le_bytes)
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => {
                self.pos -= 1;
                self.error(format!("a bool is 0 or 1, not {b}"))
            }
        }
    }

    /// `n` reserved bytes, which must be zero.
    #[inline]
    pub fn reserved(&mut self, n: usize) -> Result<()> {
        let at = self.pos;
        if self.take(n)?.iter().any(|&b| b != 0) {
            return Err(DecodeError {
                offset: at,
                what: format!("{n} reserved bytes must be zero"),
                code: crate::error::ErrorCode::MalformedRequest,
            });
        }
        Ok(())
    }

    /// A `code8` currency code (validated).
    #[inline]
    pub fn code(&mut self) -> Result<CurrencyCode> {
        let at = self.pos;
        let raw: [u8; MAX_CURRENCY_CODE_LEN] = self.array()?;
        match CurrencyCode::from_bytes(raw) {
            Some(c) => Ok(c),
            None => Err(DecodeError {
                offset: at,
                what: "a currency code is 1 to 8 of A-Z 0-9, then zero bytes".into(),
                code: crate::error::ErrorCode::MalformedRequest,
            }),
        }
    }

    /// `n` bytes of UTF-8.
    pub fn text(&mut self, n: usize) -> Result<&'a str> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| DecodeError {
            offset: at,
            what: "text is not valid UTF-8".into(),
            code: crate::error::ErrorCode::MalformedRequest,
        })
    }

    /// A `str`: u32 length, then UTF-8.
    pub fn str(&mut self) -> Result<&'a str> {
        let n = self.u32()? as usize;
        self.text(n)
    }

    pub fn boxed_str(&mut self) -> Result<Box<str>> {
        let s = self.str()?;
        self.charge(s.len())?;
        Ok(s.into())
    }

    /// An `opt<T>`.
    pub fn opt<T>(&mut self, f: impl FnOnce(&mut Reader<'a>) -> Result<T>) -> Result<Option<T>> {
        if self.bool()? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A `list<T>` whose items take at least `min_item` bytes each (checked
    /// against what remains before anything is allocated).
    pub fn list<T>(
        &mut self,
        min_item: usize,
        mut f: impl FnMut(&mut Reader<'a>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.u32()? as usize;
        self.check_count(n, min_item)?;
        // Grown as items decode (each charged): a count alone reserves
        // little.
        let mut out = Vec::with_capacity(n.min(256));
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }

    /// `count` items of at least `min_item` bytes must fit what remains.
    pub fn check_count(&self, count: usize, min_item: usize) -> Result<()> {
        if count.saturating_mul(min_item.max(1)) > self.remaining() {
            return self.error(format!(
                "a count of {count} does not fit the {} bytes left",
                self.remaining()
            ));
        }
        Ok(())
    }

    /// The body must end here.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return self.error(format!("{} bytes after the end", self.remaining()));
        }
        Ok(())
    }
}

/// Appends the layouts' building blocks.
pub trait Writer {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn u64(&mut self, v: u64);
    fn u128(&mut self, v: u128);
    fn i128(&mut self, v: i128);
    fn zeros(&mut self, n: usize);
    fn code(&mut self, c: CurrencyCode);
    fn str(&mut self, s: &str);
    fn bool(&mut self, b: bool) {
        self.u8(b as u8)
    }
    /// Overwrites a u32 written earlier at `at` (a count known later).
    fn patch_u32(&mut self, at: usize, v: u32);
}

impl Writer for Vec<u8> {
    #[inline]
    fn u8(&mut self, v: u8) {
        self.push(v)
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    #[inline]
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    #[inline]
    fn u128(&mut self, v: u128) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    #[inline]
    fn i128(&mut self, v: i128) {
        self.extend_from_slice(&v.to_le_bytes())
    }
    #[inline]
    fn zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0)
    }
    #[inline]
    fn code(&mut self, c: CurrencyCode) {
        self.extend_from_slice(&c.to_bytes())
    }
    fn str(&mut self, s: &str) {
        // Text on the wire is bounded by the frame limit (8 MiB) well below
        // u32::MAX; saturate rather than wrap if that ever changed.
        self.u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.extend_from_slice(s.as_bytes())
    }
    fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(b) = self.get_mut(at..at + 4) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Writes an `opt<T>`.
pub fn put_opt<T>(w: &mut Vec<u8>, v: &Option<T>, f: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        Some(v) => {
            w.u8(1);
            f(w, v)
        }
        None => w.u8(0),
    }
}

/// Writes a `list<T>`.
pub fn put_list<T>(w: &mut Vec<u8>, items: &[T], mut f: impl FnMut(&mut Vec<u8>, &T)) {
    w.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
    for i in items {
        f(w, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip_and_bounds_are_checked() {
        let mut w = Vec::new();
        w.u8(7);
        w.u16(0xBEEF);
        w.u32(1);
        w.u64(u64::MAX);
        w.u128(u128::MAX - 1);
        w.i128(-5);
        w.code(CurrencyCode::parse("USD").unwrap());
        w.str("héllo");
        w.bool(true);
        w.zeros(3);
        let mut r = Reader::new(&w);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0xBEEF);
        assert_eq!(r.u32().unwrap(), 1);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.u128().unwrap(), u128::MAX - 1);
        assert_eq!(r.i128().unwrap(), -5);
        assert_eq!(r.code().unwrap().as_str(), "USD");
        assert_eq!(r.str().unwrap(), "héllo");
        assert!(r.bool().unwrap());
        r.reserved(3).unwrap();
        r.finish().unwrap();
        assert!(r.u8().is_err());
    }

    #[test]
    fn bad_values_name_their_offset() {
        assert_eq!(Reader::new(&[2]).bool().unwrap_err().offset, 0);
        assert_eq!(Reader::new(&[0, 1]).reserved(2).unwrap_err().offset, 0);
        let e = Reader::new(&[b'u', b's', 0, 0, 0, 0, 0, 0])
            .code()
            .unwrap_err();
        assert!(e.what.contains("currency"), "{e}");
        assert!(Reader::new(&[b'U', 0, b'S', 0, 0, 0, 0, 0]).code().is_err());
        // A string longer than what is left is truncation, not an allocation.
        assert!(Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF]).str().is_err());
        assert!(Reader::new(&[2, 0, 0, 0, 0xC3, 0x28]).str().is_err());
        let mut r = Reader::new(&[0xFF, 0xFF, 0xFF, 0x7F, 0]);
        assert!(r.list(1, |r| r.u8()).is_err());
    }
}
