//! The common entry in a compact, fixed form: debit one account, credit
//! another, the same amount in one currency, nothing else.
//!
//! A [`Transfer`] means exactly what the two-line [`Entry`] of
//! [`Transfer::to_entry`] means: the same checks, outcomes and effects, and
//! the same fingerprint (so a retry in either form is a duplicate). It exists
//! because it is what clients send by the thousand: 96 bytes on the wire and
//! in the log, 96 bytes in memory (a general entry is boxed), validated with
//! a handful of comparisons and evaluated without building lines on the heap.

use crate::amount::Amount;
use crate::currency::CurrencyCode;
use crate::entry::{Entry, Line, Side};
use crate::id::{AccountId, EntryId};

/// Debit `debit_account`, credit `credit_account`, `amount` minor units of
/// `currency`. Its id is the client's idempotency key, in the entries' space.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Transfer {
    pub id: EntryId,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    /// Positive, in minor units of `currency`.
    pub amount: Amount,
    pub currency: CurrencyCode,
    pub user_data: u128,
}

impl Transfer {
    pub fn new(
        id: EntryId,
        debit_account: AccountId,
        credit_account: AccountId,
        amount: Amount,
        currency: CurrencyCode,
    ) -> Transfer {
        Transfer {
            id,
            debit_account,
            credit_account,
            amount,
            currency,
            user_data: 0,
        }
    }

    pub fn with_user_data(mut self, user_data: u128) -> Transfer {
        self.user_data = user_data;
        self
    }

    /// Its two lines, debit first (on the stack).
    pub fn lines(&self) -> [Line; 2] {
        [
            Line::debit(self.debit_account, self.amount, self.currency),
            Line::credit(self.credit_account, self.amount, self.currency),
        ]
    }

    /// The general entry it means.
    pub fn to_entry(&self) -> Entry {
        let mut e = Entry::new(self.id, self.lines());
        e.user_data = self.user_data;
        e
    }

    /// The transfer an entry is, when it has exactly a transfer's shape: a
    /// debit line then a credit line of the same amount and currency, with no
    /// expected version, condition, reference or correction.
    pub fn from_entry(e: &Entry) -> Option<Transfer> {
        let [d, c] = &e.lines[..] else { return None };
        let plain = |l: &Line| l.expected_version.is_none() && l.condition.is_none();
        (d.side == Side::Debit
            && c.side == Side::Credit
            && d.amount == c.amount
            && d.currency == c.currency
            && plain(d)
            && plain(c)
            && e.reference.is_none()
            && e.corrects.is_none()
            && !e.allow_repeat_correction)
            .then_some(Transfer {
                id: e.id,
                debit_account: d.account,
                credit_account: c.account,
                amount: d.amount,
                currency: d.currency,
                user_data: e.user_data,
            })
    }

    /// The accounts it touches, debited first.
    pub fn accounts(&self) -> [AccountId; 2] {
        [self.debit_account, self.credit_account]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_of_a_transfers_shape_round_trips_and_others_do_not() {
        let usd = CurrencyCode::parse("USD").unwrap();
        let t = Transfer::new(7, 1, 2, 500, usd).with_user_data(9);
        assert_eq!(Transfer::from_entry(&t.to_entry()), Some(t));
        assert!(std::mem::size_of::<Transfer>() <= 96);
        let reversed = Entry::new(7, [Line::credit(1, 500, usd), Line::debit(2, 500, usd)]);
        assert_eq!(Transfer::from_entry(&reversed), None);
        assert_eq!(
            Transfer::from_entry(&t.to_entry().with_reference("r")),
            None
        );
        assert_eq!(Transfer::from_entry(&t.to_entry().correcting(3)), None);
        let mut versioned = t.to_entry();
        versioned.lines[0].expected_version = Some(1);
        assert_eq!(Transfer::from_entry(&versioned), None);
    }
}
