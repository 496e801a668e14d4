//! Chains: ordered operations applied all-or-nothing, each seeing the effects
//! of the ones before it, possibly across shards.

use crate::entry::Entry;
use crate::id::ChainId;
use crate::lien::{CaptureLien, CreateLien, ReleaseLien};

/// One operation of a chain (also the shape of a single ledger write).
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Operation {
    Entry(Entry),
    CreateLien(CreateLien),
    CaptureLien(CaptureLien),
    ReleaseLien(ReleaseLien),
}

impl Operation {
    /// The operation's own id and its namespace, if it has one.
    pub fn id(&self) -> Option<(crate::command::IdSpace, u128)> {
        use crate::command::IdSpace;
        match self {
            Operation::Entry(e) => Some((IdSpace::Entry, e.id)),
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
