//! Liens: funds reserved on an account, later captured (into an entry),
//! released, or expired at a deadline measured in command time.

use crate::amount::Amount;
use crate::currency::CurrencyCode;
use crate::id::{AccountId, EntryId, LienId};
use smallvec::SmallVec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum LienStatus {
    Active = 0,
    Captured = 1,
    Released = 2,
    Expired = 3,
}

impl LienStatus {
    pub fn name(self) -> &'static str {
        match self {
            LienStatus::Active => "active",
            LienStatus::Captured => "captured",
            LienStatus::Released => "released",
            LienStatus::Expired => "expired",
        }
    }
}

/// Reserve `amount` on `account`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CreateLien {
    pub id: LienId,
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub amount: Amount,
    /// Lifetime from the command's timestamp; `None` never expires.
    pub expires_in_ns: Option<u64>,
    /// The event that owns the lien (0 = none).
    pub owner: u128,
    pub user_data: u128,
}

/// Capture some or all of an active lien as an entry `entry_id` that debits
/// the lien's account and credits `credits`; the rest of the lien is released.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CaptureLien {
    pub lien: LienId,
    /// The lien's account (where the lien lives; clients resolve it by
    /// looking the lien up). A lien on another account is `lien_not_found`.
    pub account: AccountId,
    pub entry_id: EntryId,
    pub currency: CurrencyCode,
    /// Destinations and amounts; their sum is the captured amount.
    pub credits: SmallVec<[(AccountId, Amount); 1]>,
    pub reference: Option<Box<str>>,
}

impl CaptureLien {
    pub fn total(&self) -> Option<Amount> {
        self.credits
            .iter()
            .try_fold(0u128, |acc, &(_, a)| acc.checked_add(a))
    }
}

/// Release an active lien in full (releasing a released lien is a no-op).
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReleaseLien {
    pub lien: LienId,
    /// The lien's account, as for [`CaptureLien::account`].
    pub account: AccountId,
}

/// A lien as its shard stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Lien {
    pub id: LienId,
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub amount: Amount,
    /// What a capture took (0 unless captured).
    pub captured: Amount,
    pub status: LienStatus,
    pub owner: u128,
    pub user_data: u128,
    pub created_seq: u64,
    pub created_ts: u64,
    /// Command time at and after which the lien is expired.
    pub deadline: Option<u64>,
}
