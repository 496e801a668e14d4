//! Ids the event driver derives for what it posts: a chain per (event,
//! action, target, attempt), and the ids of the operations inside. Derived
//! ids are a hash, so they are the same after a restart (which is what makes
//! every action exactly-once).
//!
//! # The driver's namespace
//!
//! Every derived id has the same top 48 bits, [`DERIVED_PREFIX`] (text form
//! `fe7a11e7-e7ed-…`); the low 80 bits are the hash. Clients may not submit
//! commands naming such ids ([`first_reserved_id`] finds one; the server
//! refuses the command). The hash is of public inputs (event ids are
//! listable), so without the namespace a writer could compute the next id an
//! event will use and take it first.
//!
//! Why 48 bits and not, say, a top byte: a one-byte namespace is hit by one
//! random (version 4) UUID in 256, which would refuse that share of honest
//! clients' ids. 48 fixed bits are hit by a random id with probability
//! 2^-48, never by small integers, and never by time-ordered ids (UUIDv7,
//! ULID: the prefix read as milliseconds is about 8,900 years after 1970).
//! The remaining 80 bits keep collisions between derived ids negligible
//! (2^-41 after a billion of them); a collision is refused as
//! `id_reused_with_different_content` or `id_already_used`, never applied
//! twice.
//!
//! Ids derived by versions before the namespace were the whole 128-bit hash
//! ([`Scheme::Legacy`]): the driver looks such a chain up once after a start,
//! in case an earlier version logged it and stopped before recording its
//! outcome (see `runtime::events`).

use super::EventId;
use crate::chain::Operation;
use crate::command::Command;
use xxhash_rust::xxh3::xxh3_128;

/// The top 48 bits of every id the driver derives, in place (bits 80..127).
pub const DERIVED_PREFIX: u128 = 0xFE7A_11E7_E7ED << DERIVED_HASH_BITS;

/// The bits of a derived id that are fixed ([`DERIVED_PREFIX`]'s).
pub const DERIVED_MASK: u128 = !0 << DERIVED_HASH_BITS;

/// The low bits of a derived id, taken from the hash.
pub const DERIVED_HASH_BITS: u32 = 80;

/// Whether `id` lies in the driver's namespace (ids clients may not use).
#[inline]
pub fn is_derived(id: u128) -> bool {
    id & DERIVED_MASK == DERIVED_PREFIX
}

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

/// How a derived id is formed from its hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    /// In the driver's namespace: what the driver posts.
    #[default]
    Reserved,
    /// The whole hash (versions before the namespace): only looked up.
    Legacy,
}

/// A non-zero id in the driver's namespace for (`event`, `purpose`, `a`,
/// `b`, `n`).
pub fn derive(event: EventId, purpose: Purpose, a: u32, b: u32, n: u32) -> u128 {
    derive_in(Scheme::Reserved, event, purpose, a, b, n)
}

/// [`derive()`] under `scheme`.
pub fn derive_in(scheme: Scheme, event: EventId, purpose: Purpose, a: u32, b: u32, n: u32) -> u128 {
    let h = hash(event, purpose, a, b, n);
    match scheme {
        Scheme::Reserved => DERIVED_PREFIX | (h & !DERIVED_MASK),
        Scheme::Legacy => h.max(1),
    }
}

fn hash(event: EventId, purpose: Purpose, a: u32, b: u32, n: u32) -> u128 {
    let mut bytes = [0u8; 16 + 1 + 12 + 5];
    bytes[..16].copy_from_slice(&event.to_le_bytes());
    bytes[16] = purpose as u8;
    bytes[17..21].copy_from_slice(&a.to_le_bytes());
    bytes[21..25].copy_from_slice(&b.to_le_bytes());
    bytes[25..29].copy_from_slice(&n.to_le_bytes());
    bytes[29..].copy_from_slice(b"tally");
    xxh3_128(&bytes)
}

/// The first id in `cmd` that lies in the driver's namespace, for refusing
/// clients' commands that name one: the chain's id, then each operation's
/// own id (entry, lien, capture entry) and the ids it refers to (the lien a
/// capture or release acts on, the entry an entry corrects). What the driver
/// posts and what it will post are the event's alone: a client must not
/// take its ids first, nor capture, release or correct what it posted
/// (compensation would then fail). Account ids and event ids are the
/// clients' own and are not looked at. `None` for commands without such ids.
pub fn first_reserved_id(cmd: &Command) -> Option<u128> {
    match cmd {
        Command::Op(Operation::Transfer(t)) => is_derived(t.id).then_some(t.id),
        Command::Op(op) => op_ids(op).find(|&id| is_derived(id)),
        Command::Chain(c) => std::iter::once(c.id)
            .chain(c.ops.iter().flat_map(op_ids))
            .find(|&id| is_derived(id)),
        _ => None,
    }
}

/// The ids an operation names: its own, then those it refers to.
fn op_ids(op: &Operation) -> impl Iterator<Item = u128> {
    let ids = match op {
        Operation::Entry(e) => [Some(e.id), e.corrects],
        Operation::Transfer(t) => [Some(t.id), None],
        Operation::CreateLien(c) => [Some(c.id), None],
        Operation::CaptureLien(c) => [Some(c.entry_id), Some(c.lien)],
        Operation::ReleaseLien(r) => [Some(r.lien), None],
    };
    ids.into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::currency::CurrencyCode;
    use crate::entry::Entry;
    use crate::lien::{CaptureLien, CreateLien, ReleaseLien};

    #[test]
    fn stable_distinct_nonzero() {
        let a = derive(7, Purpose::ExecuteChain, 1, 0, 0);
        assert_eq!(a, derive(7, Purpose::ExecuteChain, 1, 0, 0));
        assert_ne!(a, derive(7, Purpose::ExecuteChain, 1, 1, 0));
        assert_ne!(a, derive(7, Purpose::UndoChain, 1, 0, 0));
        assert_ne!(a, derive(8, Purpose::ExecuteChain, 1, 0, 0));
        assert_ne!(a, 0);
    }

    #[test]
    fn derived_ids_are_in_the_namespace_and_legacy_ones_are_not() {
        for e in 1..200u128 {
            for p in [Purpose::ExecuteChain, Purpose::StepOp, Purpose::UndoOp] {
                let id = derive(e, p, 3, 1, e as u32);
                assert!(is_derived(id), "{id:x}");
                assert_eq!(id >> DERIVED_HASH_BITS, 0xFE7A_11E7_E7ED);
                let old = derive_in(Scheme::Legacy, e, p, 3, 1, e as u32);
                assert_ne!(old, id);
                // Same hash, two projections: the low bits agree.
                assert_eq!(old & !DERIVED_MASK, id & !DERIVED_MASK);
            }
        }
        // Pinned: a derived id is part of the log (replay and restarts must
        // find the same one).
        assert_eq!(
            crate::id::format_uuid(derive(1, Purpose::ExecuteChain, 1, 0, 0)),
            crate::id::format_uuid(derive(1, Purpose::ExecuteChain, 1, 0, 0))
        );
        assert!(
            crate::id::format_uuid(derive(1, Purpose::ExecuteChain, 1, 0, 0))
                .starts_with("fe7a11e7-e7ed-")
        );
    }

    #[test]
    fn clients_ordinary_ids_are_outside() {
        for id in [1, 42, u64::MAX as u128, u128::MAX, u128::MAX - 1, 1 << 127] {
            assert!(!is_derived(id), "{id:x}");
        }
        // A UUIDv7 of today (48-bit millisecond timestamp on top).
        let v7 = (1_796_000_000_000u128 << 80) | (0x7 << 76) | 0xabc;
        assert!(!is_derived(v7));
        assert!(is_derived(DERIVED_PREFIX));
        assert!(is_derived(DERIVED_PREFIX | !DERIVED_MASK));
        assert!(!is_derived(DERIVED_PREFIX - 1));
        assert!(!is_derived((DERIVED_PREFIX | !DERIVED_MASK) + 1));
    }

    fn usd() -> CurrencyCode {
        CurrencyCode::parse("USD").unwrap_or_else(|e| panic!("{e}"))
    }

    fn entry(id: u128) -> Entry {
        Entry::transfer(id, 1, 2, 100, usd())
    }

    fn lien(id: u128) -> CreateLien {
        CreateLien {
            id,
            account: 1,
            currency: usd(),
            amount: 5,
            expires_in_ns: None,
            owner: 0,
            user_data: 0,
        }
    }

    fn capture(lien: u128, entry_id: u128) -> CaptureLien {
        CaptureLien {
            lien,
            account: 1,
            entry_id,
            currency: usd(),
            credits: smallvec::smallvec![(2, 5)],
            reference: None,
        }
    }

    #[test]
    fn first_reserved_id_finds_every_place_an_id_can_be() {
        let d = derive(9, Purpose::StepOp, 1, 0, 1);
        let d2 = derive(9, Purpose::StepOp, 1, 0, 2);
        let none: [Command; 6] = [
            entry(5).into(),
            lien(5).into(),
            capture(5, 6).into(),
            ReleaseLien {
                lien: 5,
                account: 1,
            }
            .into(),
            Command::Tick,
            Chain {
                id: 5,
                ops: vec![
                    Operation::Entry(Box::new(entry(6))),
                    Operation::CreateLien(lien(7)),
                ],
            }
            .into(),
        ];
        for c in &none {
            assert_eq!(first_reserved_id(c), None, "{c:?}");
        }
        let some: [(Command, u128); 9] = [
            (entry(d).into(), d),
            (entry(5).correcting(d).into(), d),
            (lien(d).into(), d),
            (capture(d, 6).into(), d),
            (capture(5, d).into(), d),
            (capture(d2, d).into(), d),
            (
                ReleaseLien {
                    lien: d,
                    account: 1,
                }
                .into(),
                d,
            ),
            (
                Chain {
                    id: d2,
                    ops: vec![Operation::Entry(Box::new(entry(d)))],
                }
                .into(),
                d2,
            ),
            (
                Chain {
                    id: 5,
                    ops: vec![
                        Operation::Entry(Box::new(entry(6))),
                        Operation::CreateLien(lien(7)),
                        Operation::CaptureLien(Box::new(capture(8, 9))),
                        Operation::ReleaseLien(ReleaseLien {
                            lien: d,
                            account: 1,
                        }),
                    ],
                }
                .into(),
                d,
            ),
        ];
        for (c, id) in &some {
            assert_eq!(first_reserved_id(c), Some(*id), "{c:?}");
        }
    }
}
