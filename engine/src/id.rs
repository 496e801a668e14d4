//! 128-bit identifiers, their text forms, and their placement on shards.
//!
//! Entry, lien and chain ids whose top 48 bits are
//! [`crate::event::ids::DERIVED_PREFIX`] (text form `fe7a11e7-e7ed-…`) belong
//! to the event driver: clients may not use them
//! ([`crate::event::ids::first_reserved_id`]).

use crate::error::{Error, ErrorCode};

/// An id as text for output: decimal below 2^64, a UUID above (both are
/// accepted back by [`parse_id`]).
pub fn format_id(id: u128) -> String {
    if id <= u64::MAX as u128 {
        id.to_string()
    } else {
        format_uuid(id)
    }
}

/// An account id.
pub type AccountId = u128;
/// An entry id (the client's idempotency key).
pub type EntryId = u128;
/// A lien id (idempotency key of the lien's creation).
pub type LienId = u128;
/// A chain id (idempotency key of the chain).
pub type ChainId = u128;

/// Parses an id written in decimal, `0x` hexadecimal, or UUID form.
/// Zero is reserved and rejected.
pub fn parse_id(text: &str) -> Result<u128, Error> {
    let t = text.trim();
    let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u128::from_str_radix(hex, 16).ok()
    } else if t.len() == 36 && t.as_bytes().get(8) == Some(&b'-') {
        uuid::Uuid::parse_str(t).ok().map(|u| u.as_u128())
    } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u128>().ok()
    } else {
        None
    };
    match parsed {
        Some(0) => Err(Error::new(ErrorCode::InvalidId).with_text("id 0 is reserved")),
        Some(v) => Ok(v),
        None => Err(Error::new(ErrorCode::InvalidId).with_text(t)),
    }
}

/// Formats an id as a UUID (the canonical text form of the CLI and JSON).
pub fn format_uuid(id: u128) -> String {
    uuid::Uuid::from_u128(id).hyphenated().to_string()
}

/// A fixed 64-bit mix of an id (splitmix64 finaliser over both halves).
/// Placement must not change between builds or restarts, so it is not a
/// randomly seeded hash; it only spreads load, it guards no secret.
#[inline]
pub fn mix(id: u128) -> u64 {
    let mut z = (id as u64) ^ ((id >> 64) as u64).rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard that owns an account, or an id's idempotency record.
#[inline]
pub fn shard_of(id: u128, shards: usize) -> usize {
    debug_assert!((1..=crate::limits::MAX_SHARDS).contains(&shards));
    // Multiply-shift maps the hash onto 0..shards without a division.
    ((mix(id) as u128 * shards as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        assert_eq!(parse_id("42").unwrap(), 42);
        assert_eq!(parse_id("0x2a").unwrap(), 42);
        assert_eq!(
            parse_id("00000000-0000-0000-0000-00000000002a").unwrap(),
            42
        );
        assert_eq!(parse_id("0").unwrap_err().code, ErrorCode::InvalidId);
        assert_eq!(parse_id("-1").unwrap_err().code, ErrorCode::InvalidId);
        assert_eq!(parse_id("").unwrap_err().code, ErrorCode::InvalidId);
        assert_eq!(parse_id("0xzz").unwrap_err().code, ErrorCode::InvalidId);
        assert_eq!(
            parse_id("340282366920938463463374607431768211456")
                .unwrap_err()
                .code,
            ErrorCode::InvalidId
        );
        assert_eq!(format_uuid(42), "00000000-0000-0000-0000-00000000002a");
    }

    #[test]
    fn placement_is_stable_and_spread() {
        assert_eq!(shard_of(1, 1), 0);
        let mut counts = [0usize; 4];
        for id in 1..=40_000u128 {
            counts[shard_of(id, 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        // Pinned: placement is part of the on-disk contract (replay routes the same way).
        assert_eq!(mix(1), mix(1));
        assert_eq!(shard_of(123_456_789, 8), shard_of(123_456_789, 8));
    }
}
