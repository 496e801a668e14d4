//! Accounts: balances, policy, state, version; and the shard's account table.

use crate::amount::{Amount, Balance};
use crate::currency::CurrencyCode;
use crate::id::AccountId;

/// What an account's available balance may fall to.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum BalancePolicy {
    /// available >= 0 after every debit or reservation (the wallet default).
    #[default]
    NoOverdraft,
    /// available >= -limit after every debit or reservation.
    OverdraftLimit(Amount),
    /// No bound: system, settlement, fee and external accounts.
    Unrestricted,
}

impl BalancePolicy {
    /// Whether an available balance is allowed under this policy.
    #[inline]
    pub fn permits(self, available: Balance) -> bool {
        match self {
            BalancePolicy::NoOverdraft => available >= 0,
            // limit <= MAX_AMOUNT (validated), so the negation cannot overflow.
            BalancePolicy::OverdraftLimit(limit) => available >= -(limit as i128),
            BalancePolicy::Unrestricted => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BalancePolicy::NoOverdraft => "no_overdraft",
            BalancePolicy::OverdraftLimit(_) => "overdraft_limit",
            BalancePolicy::Unrestricted => "unrestricted",
        }
    }
}

/// An account's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum AccountState {
    #[default]
    Active = 0,
    /// No postings and no new liens; existing liens may still be released.
    Frozen = 1,
    /// Terminal; only possible with zero balance and nothing reserved.
    Closed = 2,
}

impl AccountState {
    pub fn name(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Frozen => "frozen",
            AccountState::Closed => "closed",
        }
    }
}

/// A request to open an account.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NewAccount {
    pub id: AccountId,
    pub currency: CurrencyCode,
    pub policy: BalancePolicy,
    pub user_data: u128,
}

/// An account as a shard stores it (144 bytes, see `tests::size`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Account {
    pub id: AccountId,
    pub debits_posted: Amount,
    pub credits_posted: Amount,
    /// Sum of active liens.
    pub reserved: Amount,
    pub user_data: u128,
    pub policy: BalancePolicy,
    pub version: u64,
    pub created_seq: u64,
    pub created_ts: u64,
    /// Index into the shard's currency table.
    pub currency: u16,
    pub state: AccountState,
}

impl Account {
    /// Posted balance, credit-normal: credits - debits. Both totals are kept
    /// at or below `MAX_AMOUNT` (= `i128::MAX`), so this cannot overflow.
    #[inline]
    pub fn balance(&self) -> Balance {
        self.credits_posted as i128 - self.debits_posted as i128
    }

    /// Posted balance minus reserved. Saturates at `i128::MIN` (only reachable
    /// by an unrestricted account reserving near the maximum), which every
    /// policy but `unrestricted` refuses anyway.
    #[inline]
    pub fn available(&self) -> Balance {
        self.balance().saturating_sub(self.reserved as i128)
    }
}

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A shard's accounts: a hash index from id to slot, and fixed-size chunks of
/// slots, so growth never copies or doubles the account storage.
#[derive(Default)]
pub struct AccountTable {
    /// Grows a segment at a time ([`crate::table::IdTable`]).
    index: crate::table::IdTable<u32>,
    chunks: Vec<Box<[Account]>>,
    len: u32,
}

impl AccountTable {
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserves index capacity up front (avoids rehash pauses and halves the
    /// index's memory per account compared with organic growth).
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
    }

    #[inline]
    pub fn slot(&self, id: AccountId) -> Option<u32> {
        self.index.get(id).copied()
    }

    #[inline]
    pub fn at(&self, slot: u32) -> &Account {
        &self.chunks[(slot >> CHUNK_BITS) as usize][(slot as usize) & (CHUNK - 1)]
    }

    #[inline]
    pub fn at_mut(&mut self, slot: u32) -> &mut Account {
        &mut self.chunks[(slot >> CHUNK_BITS) as usize][(slot as usize) & (CHUNK - 1)]
    }

    pub fn get(&self, id: AccountId) -> Option<&Account> {
        self.slot(id).map(|s| self.at(s))
    }

    pub(crate) fn insert(&mut self, account: Account) -> u32 {
        debug_assert!(!self.index.contains(account.id));
        let slot = self.len;
        if (slot as usize) / CHUNK == self.chunks.len() {
            self.chunks
                .push(vec![Account::default(); CHUNK].into_boxed_slice());
        }
        *self.at_mut(slot) = account;
        self.index.insert_new(account.id, slot);
        self.len += 1;
        slot
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        (0..self.len).map(move |s| self.at(s))
    }

    /// Bytes held by this table (index buckets and account chunks).
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_bytes() + self.chunks.len() * CHUNK * std::mem::size_of::<Account>()
    }

    /// Test-only: mutable access by id, to plant inconsistencies.
    #[doc(hidden)]
    pub fn get_mut_for_test(&mut self, id: AccountId) -> Option<&mut Account> {
        self.slot(id).map(|s| self.at_mut(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size() {
        assert_eq!(std::mem::size_of::<Account>(), 144);
    }

    #[test]
    fn policy() {
        assert!(BalancePolicy::NoOverdraft.permits(0));
        assert!(!BalancePolicy::NoOverdraft.permits(-1));
        assert!(BalancePolicy::OverdraftLimit(5).permits(-5));
        assert!(!BalancePolicy::OverdraftLimit(5).permits(-6));
        assert!(BalancePolicy::Unrestricted.permits(i128::MIN));
    }

    #[test]
    fn table_grows_by_chunks() {
        let mut t = AccountTable::default();
        for id in 1..=(CHUNK as u128 + 10) {
            t.insert(Account {
                id,
                ..Account::default()
            });
        }
        assert_eq!(t.len(), CHUNK + 10);
        assert_eq!(t.get(CHUNK as u128 + 5).unwrap().id, CHUNK as u128 + 5);
        assert!(t.get(0).is_none());
        assert_eq!(t.iter().count(), CHUNK + 10);
    }
}
