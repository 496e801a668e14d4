//! Ids the event driver derives for what it posts: a chain per (event,
//! action, target, attempt), and the ids of the operations inside. Derived
//! ids are a hash, so they are the same after a restart (which is what makes
//! every action exactly-once), and they do not collide with clients' ids
//! except with negligible probability (a collision is refused as
//! `id_reused_with_different_content`, never applied twice).

use super::EventId;
use xxhash_rust::xxh3::xxh3_128;

/// What a derived id is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    ExecuteChain = 1,
    CaptureChain = 2,
    UndoChain = 3,
    FinishChain = 4,
    /// An id inside a step's operations (entry or lien).
    StepOp = 5,
    /// An id inside a compensation (reversal entries).
    UndoOp = 6,
    CaptureOp = 7,
}

/// A non-zero id for (`event`, `purpose`, `a`, `b`, `n`).
pub fn derive(event: EventId, purpose: Purpose, a: u32, b: u32, n: u32) -> u128 {
    let mut bytes = [0u8; 16 + 1 + 12 + 5];
    bytes[..16].copy_from_slice(&event.to_le_bytes());
    bytes[16] = purpose as u8;
    bytes[17..21].copy_from_slice(&a.to_le_bytes());
    bytes[21..25].copy_from_slice(&b.to_le_bytes());
    bytes[25..29].copy_from_slice(&n.to_le_bytes());
    bytes[29..].copy_from_slice(b"tally");
    xxh3_128(&bytes).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_distinct_nonzero() {
        let a = derive(7, Purpose::ExecuteChain, 1, 0, 0);
        assert_eq!(a, derive(7, Purpose::ExecuteChain, 1, 0, 0));
        assert_ne!(a, derive(7, Purpose::ExecuteChain, 1, 1, 0));
        assert_ne!(a, derive(7, Purpose::UndoChain, 1, 0, 0));
        assert_ne!(a, derive(8, Purpose::ExecuteChain, 1, 0, 0));
        assert_ne!(a, 0);
    }
}
