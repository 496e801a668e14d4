//! The retry check: the first entry commands of a run, submitted again at its
//! end, must each come back with their original outcome (SPEC §3.6: an id
//! keeps its first outcome for the life of the data directory, however much
//! history has been written since).

use tally_engine::{Command, ErrorCode, Outcome};

/// Commands each driver stream keeps to retry.
pub const KEEP_PER_STREAM: usize = 256;

/// Only requests that complete within this many seconds of the start are
/// kept: "a retried id from the first minute".
pub const KEEP_WITHIN_S: f64 = 60.0;

/// What the retry found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Retried {
    /// Commands submitted again.
    pub checked: u64,
    /// Of them, those that came back with their original outcome.
    pub same: u64,
    /// The first that did not: its id, what it got first and now.
    pub first_difference: Option<String>,
}

impl Retried {
    pub fn passed(&self) -> bool {
        self.same == self.checked
    }
}

/// Whether a command is worth keeping: it carries an entry id (so its
/// retry is answered from the id index, not re-executed).
pub fn keepable(cmd: &Command) -> bool {
    crate::workload::entry_ids(cmd).next().is_some()
}

/// Whether `again`, the outcome of a retry, is what the command's first
/// outcome `first` promises. A command refused before it was sequenced
/// (`seq: None`) left no trace: it is not checked (`None`).
pub fn same(first: &Outcome, again: &Outcome) -> Option<bool> {
    use Outcome::*;
    Some(match (first, again) {
        (Committed { seq, .. }, Duplicate { seq: s, code: None }) => seq == s,
        (Duplicate { seq, code }, Duplicate { seq: s, code: c }) => seq == s && code == c,
        (Rejected { seq: None, .. }, _) => return None,
        // The id belongs to another command: the retry is refused the same way.
        (Rejected { error, .. }, Rejected { error: e, .. })
            if matches!(
                error.code,
                ErrorCode::IdReusedWithDifferentContent | ErrorCode::IdAlreadyUsed
            ) =>
        {
            error.code == e.code
        }
        (
            Rejected {
                seq: Some(seq),
                error,
            },
            Duplicate { seq: s, code },
        ) => seq == s && *code == Some(error.code),
        _ => false,
    })
}

/// Compares the kept commands' first outcomes with their retries' (in the
/// same order).
pub fn check(kept: &[(Command, Outcome)], again: &[Outcome]) -> Retried {
    let mut r = Retried::default();
    for ((cmd, first), again) in kept.iter().zip(again) {
        let Some(ok) = same(first, again) else {
            continue;
        };
        r.checked += 1;
        if ok {
            r.same += 1;
        } else if r.first_difference.is_none() {
            let id = crate::workload::entry_ids(cmd).next().unwrap_or(0);
            r.first_difference = Some(format!(
                "entry {}: first {first:?}, retried {again:?}",
                tally_engine::id::format_id(id)
            ));
        }
    }
    // A retry that never came back counts as a difference.
    let missing = kept.len().saturating_sub(again.len()) as u64;
    if missing > 0 {
        r.checked += missing;
        r.first_difference
            .get_or_insert_with(|| format!("{missing} retries got no outcome"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_engine::Error;

    fn rejected(seq: Option<u64>, code: ErrorCode) -> Outcome {
        Outcome::Rejected {
            seq,
            error: Error::new(code),
        }
    }

    #[test]
    fn a_retry_must_carry_the_first_outcome() {
        let committed = Outcome::Committed {
            seq: 7,
            timestamp: 1,
        };
        let dup = |seq, code| Outcome::Duplicate { seq, code };
        assert_eq!(same(&committed, &dup(7, None)), Some(true));
        assert_eq!(same(&committed, &dup(8, None)), Some(false));
        assert_eq!(same(&committed, &committed), Some(false), "re-executed");
        let poor = rejected(Some(9), ErrorCode::InsufficientFunds);
        assert_eq!(
            same(&poor, &dup(9, Some(ErrorCode::InsufficientFunds))),
            Some(true)
        );
        assert_eq!(same(&poor, &dup(9, None)), Some(false));
        assert_eq!(same(&poor, &poor), Some(false), "decided again");
        let early = rejected(None, ErrorCode::InvalidAmount);
        assert_eq!(same(&early, &committed), None);
        let taken = rejected(Some(3), ErrorCode::IdReusedWithDifferentContent);
        assert_eq!(
            same(
                &taken,
                &rejected(Some(40), ErrorCode::IdReusedWithDifferentContent)
            ),
            Some(true)
        );
    }
}
