//! A ledger's whole state as plain data, independent of the shard count:
//! what a snapshot stores. `Ledger::export` makes one at the ledger's current
//! position; `Ledger::import` rebuilds a ledger (with any shard count) from it.

use crate::account::Account;
use crate::currency::{Currency, CurrencyCode};
use crate::lien::Lien;

#[derive(
    Clone, Debug, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LedgerImage {
    /// The last sequence number applied (0 for an empty ledger).
    pub last_seq: u64,
    pub last_timestamp: u64,
    /// In creation order, with the sequence each was created at.
    pub currencies: Vec<(Currency, u64)>,
    /// Accounts (their `currency` field is rewritten on import) and codes.
    pub accounts: Vec<(Account, CurrencyCode)>,
    pub liens: Vec<Lien>,
    /// (space: 0 entry, 1 lien, 2 chain; id; packed record; seq).
    pub ids: Vec<(u8, u128, u64, u64)>,
    /// Lien id -> the account its creation named.
    pub lien_accounts: Vec<(u128, u128)>,
    /// Entries that have been corrected (by a committed `corrects`).
    pub corrected: Vec<u128>,
    /// Chained transaction events, by id.
    pub events: Vec<crate::event::Event>,
}
