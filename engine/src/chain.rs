//! Chains: ordered operations applied all-or-nothing, each seeing the effects
//! of the ones before it, possibly across shards.

use crate::entry::Entry;
use crate::id::ChainId;
use crate::lien::{CaptureLien, CreateLien, ReleaseLien};
use crate::transfer::Transfer;

/// One operation of a chain (also the shape of a single ledger write).
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
///
/// Kept small (a test bounds its size): a transfer, the operation clients
/// send by the thousand, is inline; the general entry and the capture, which
/// carry lines and text, are boxed.
pub enum Operation {
    Entry(Box<Entry>),
    CreateLien(CreateLien),
    CaptureLien(Box<CaptureLien>),
    ReleaseLien(ReleaseLien),
    /// The two-line entry in its fixed form ([`crate::transfer`]): means
    /// exactly what `Entry(transfer.to_entry())` means.
    Transfer(Transfer),
}

impl Operation {
    /// The operation for an entry: the fixed-form transfer when the entry has
    /// exactly a transfer's shape, the general entry otherwise.
    pub fn entry(e: Entry) -> Operation {
        match Transfer::from_entry(&e) {
            Some(t) => Operation::Transfer(t),
            None => Operation::Entry(Box::new(e)),
        }
    }

    /// The general entry this operation posts, if it is one (a transfer as
    /// its two-line entry, built for readers off the hot path).
    pub fn as_entry(&self) -> Option<std::borrow::Cow<'_, Entry>> {
        match self {
            Operation::Entry(e) => Some(std::borrow::Cow::Borrowed(e)),
            Operation::Transfer(t) => Some(std::borrow::Cow::Owned(t.to_entry())),
            _ => None,
        }
    }

    /// The operation's own id and its namespace, if it has one.
    pub fn id(&self) -> Option<(crate::command::IdSpace, u128)> {
        use crate::command::IdSpace;
        match self {
            Operation::Entry(e) => Some((IdSpace::Entry, e.id)),
            Operation::Transfer(t) => Some((IdSpace::Entry, t.id)),
            Operation::CreateLien(c) => Some((IdSpace::Lien, c.id)),
            Operation::CaptureLien(c) => Some((IdSpace::Entry, c.entry_id)),
            Operation::ReleaseLien(_) => None,
        }
    }
}

/// An ordered, atomic list of operations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Chain {
    pub id: ChainId,
    pub ops: Vec<Operation>,
}
