//! Journal entries: two or more lines, balanced per currency.

use crate::amount::{Amount, Balance};
use crate::currency::CurrencyCode;
use crate::id::{AccountId, EntryId};
use smallvec::SmallVec;

/// Which side of the account a line posts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Side {
    Debit = 0,
    Credit = 1,
}

/// A condition on the account's state after the whole entry is applied.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum Condition {
    /// available >= value (minor units).
    AvailableAtLeast(Balance),
    /// posted balance <= value (minor units), e.g. a wallet cap.
    BalanceAtMost(Balance),
}

impl Condition {
    pub(crate) fn holds(self, balance: Balance, available: Balance) -> bool {
        match self {
            Condition::AvailableAtLeast(v) => available >= v,
            Condition::BalanceAtMost(v) => balance <= v,
        }
    }
}

/// One line of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Line {
    pub account: AccountId,
    pub side: Side,
    /// Positive, in minor units of `currency`.
    pub amount: Amount,
    /// Must equal the account's currency.
    pub currency: CurrencyCode,
    /// Optimistic concurrency: the account's version before this entry.
    pub expected_version: Option<u64>,
    pub condition: Option<Condition>,
}

impl Line {
    pub fn debit(account: AccountId, amount: Amount, currency: CurrencyCode) -> Line {
        Line {
            account,
            side: Side::Debit,
            amount,
            currency,
            expected_version: None,
            condition: None,
        }
    }
    pub fn credit(account: AccountId, amount: Amount, currency: CurrencyCode) -> Line {
        Line {
            account,
            side: Side::Credit,
            amount,
            currency,
            expected_version: None,
            condition: None,
        }
    }
    pub fn expect_version(mut self, version: u64) -> Line {
        self.expected_version = Some(version);
        self
    }
    pub fn with_condition(mut self, condition: Condition) -> Line {
        self.condition = Some(condition);
        self
    }
}

/// A journal entry. Its id is the client's idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Entry {
    pub id: EntryId,
    pub lines: SmallVec<[Line; 2]>,
    pub reference: Option<Box<str>>,
    pub user_data: u128,
    /// The committed entry this one corrects.
    pub corrects: Option<EntryId>,
    /// Allows correcting an entry that was already corrected (refused with
    /// `already_corrected` otherwise).
    pub allow_repeat_correction: bool,
}

impl Entry {
    pub fn new(id: EntryId, lines: impl IntoIterator<Item = Line>) -> Entry {
        Entry {
            id,
            lines: lines.into_iter().collect(),
            reference: None,
            user_data: 0,
            corrects: None,
            allow_repeat_correction: false,
        }
    }

    /// The common two-line transfer as a general entry: debit `from`, credit
    /// `to`. It is encoded in the general form (200 bytes); the same
    /// transfer as [`crate::Transfer`] (or through [`crate::Operation::entry`])
    /// takes the fixed 96-byte form, and means the same.
    pub fn transfer(
        id: EntryId,
        from: AccountId,
        to: AccountId,
        amount: Amount,
        currency: CurrencyCode,
    ) -> Entry {
        Entry::new(
            id,
            [
                Line::debit(from, amount, currency),
                Line::credit(to, amount, currency),
            ],
        )
    }

    pub fn with_reference(mut self, reference: impl Into<String>) -> Entry {
        self.reference = Some(reference.into().into_boxed_str());
        self
    }

    pub fn correcting(mut self, original: EntryId) -> Entry {
        self.corrects = Some(original);
        self
    }

    /// Permits this correction even if `corrects` was corrected before.
    pub fn allowing_repeat_correction(mut self) -> Entry {
        self.allow_repeat_correction = true;
        self
    }
}
