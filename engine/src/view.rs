//! What queries return.

use crate::account::Account;
use crate::amount::Balance;
use crate::currency::Currency;
use crate::error::ErrorCode;

/// An account with its currency resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub account: Account,
    pub currency: Currency,
}

impl AccountView {
    pub fn balance(&self) -> Balance {
        self.account.balance()
    }
    pub fn available(&self) -> Balance {
        self.account.available()
    }
}

/// The status of an id (entry, lien creation or chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdStatus {
    Committed { seq: u64 },
    Rejected { seq: u64, code: ErrorCode },
    Unknown,
}

impl IdStatus {
    pub fn name(&self) -> &'static str {
        match self {
            IdStatus::Committed { .. } => "committed",
            IdStatus::Rejected { .. } => "rejected",
            IdStatus::Unknown => "unknown",
        }
    }
}
