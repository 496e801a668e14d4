//! The idempotency index: for every id a shard is home of, the fingerprint of
//! the content first submitted under it and that command's outcome.

use crate::error::ErrorCode;
use crate::table::IdTable;

/// 16 bytes: the top 48 bits of the content fingerprint with the outcome code
/// in the low 16 bits (0 = committed), and the deciding sequence number.
/// Two different contents collide with probability 2^-48 per reuse attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRecord {
    fp_code: u64,
    pub seq: u64,
}

const FP_MASK: u64 = !0xffff;
const CODE_MASK: u64 = 0xffff;

impl IdRecord {
    pub fn new(fingerprint: u64, seq: u64, code: Option<ErrorCode>) -> IdRecord {
        IdRecord {
            fp_code: (fingerprint & FP_MASK) | code.map_or(0, |c| c as u64),
            seq,
        }
    }
    #[inline]
    pub fn matches(&self, fingerprint: u64) -> bool {
        self.fp_code & FP_MASK == fingerprint & FP_MASK
    }
    /// `None` when the command committed.
    pub fn code(&self) -> Option<ErrorCode> {
        // Every stored code came from an ErrorCode (`new`, or a packed form
        // checked by `try_from_raw`): an unknown number cannot occur.
        ErrorCode::from_u16(self.raw_code())
    }
    /// The packed form (for snapshots): (fingerprint bits | code, seq).
    pub fn to_raw(self) -> (u64, u64) {
        (self.fp_code, self.seq)
    }

    /// Rebuilds a record from a packed form known to come from `to_raw`.
    /// For a packed form read from outside (a snapshot file), use
    /// [`IdRecord::try_from_raw`].
    pub fn from_raw(fp_code: u64, seq: u64) -> IdRecord {
        IdRecord { fp_code, seq }
    }

    /// Rebuilds a record from a packed form read from outside, refusing an
    /// outcome code that no [`ErrorCode`] has: `code()` would read such a
    /// record as committed. The message names the code.
    pub fn try_from_raw(fp_code: u64, seq: u64) -> Result<IdRecord, String> {
        let record = IdRecord { fp_code, seq };
        let code = record.raw_code();
        if code != 0 && ErrorCode::from_u16(code).is_none() {
            return Err(format!(
                "unknown outcome code {code} in the id record decided at sequence {seq}"
            ));
        }
        Ok(record)
    }

    pub fn committed(&self) -> bool {
        self.raw_code() == 0
    }

    fn raw_code(&self) -> u16 {
        (self.fp_code & CODE_MASK) as u16
    }
}

/// One namespace of ids on one shard. It grows a segment at a time
/// ([`IdTable`]): never a whole-table rehash on the write path.
///
/// With a window ([`IdIndex::set_window`]) it keeps only recent ids: the
/// records go into the current generation until it holds `window` of them;
/// then it is retained as it is and a new one begins. A retained generation
/// is dropped once the cold tier holds every record of it
/// ([`IdIndex::release`], called with the cold tier's watermark), so the
/// index holds between one and two windows of ids however long the history.
/// Without a window (the default) every id stays here.
pub struct IdIndex {
    current: IdTable<IdRecord>,
    /// The highest deciding sequence in `current`.
    current_max_seq: u64,
    /// Full generations not yet in the cold tier, oldest first, each with
    /// the highest deciding sequence it holds.
    retained: std::collections::VecDeque<(u64, IdTable<IdRecord>)>,
    /// Records per generation (`usize::MAX`: one generation forever).
    window: usize,
    /// Every record decided at or before this sequence may have left the
    /// index (0: none has).
    released_through: u64,
}

impl Default for IdIndex {
    fn default() -> IdIndex {
        IdIndex {
            current: IdTable::new(),
            current_max_seq: 0,
            retained: Default::default(),
            window: usize::MAX,
            released_through: 0,
        }
    }
}

impl IdIndex {
    #[inline]
    pub fn get(&self, id: u128) -> Option<&IdRecord> {
        match self.current.get(id) {
            Some(r) => Some(r),
            None if self.retained.is_empty() => None,
            None => self.retained.iter().rev().find_map(|(_, t)| t.get(id)),
        }
    }
    #[inline]
    pub fn contains(&self, id: u128) -> bool {
        self.get(id).is_some()
    }
    pub(crate) fn insert(&mut self, id: u128, record: IdRecord) {
        // An id's first outcome is final: it is never there already.
        debug_assert!(!self.contains(id), "an id is recorded once");
        self.current.insert_new(id, record);
        self.current_max_seq = self.current_max_seq.max(record.seq);
        if self.current.len() >= self.window {
            let full = std::mem::take(&mut self.current);
            self.retained.push_back((self.current_max_seq, full));
            self.current_max_seq = 0;
        }
    }
    #[cfg(feature = "test-hooks")]
    pub(crate) fn replace_for_test(&mut self, id: u128, record: IdRecord) {
        self.current.insert(id, record);
    }
    /// Keeps generations of at most `window` records (at least 1).
    pub fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }
    /// Drops the retained generations whose every record was decided at or
    /// before `covered`: the cold tier answers for them now.
    pub fn release(&mut self, covered: u64) {
        while let Some((max_seq, _)) = self.retained.front() {
            if *max_seq > covered {
                break;
            }
            self.released_through = self.released_through.max(*max_seq);
            self.retained.pop_front();
        }
    }
    /// Records decided at or before this sequence may be absent (they are
    /// in the cold tier); 0 when the index holds every record.
    pub fn released_through(&self) -> u64 {
        self.released_through
    }
    pub(crate) fn restore_released_through(&mut self, seq: u64) {
        self.released_through = self.released_through.max(seq);
    }
    /// Generations retained beside the current one.
    pub fn retained(&self) -> usize {
        self.retained.len()
    }
    pub fn len(&self) -> usize {
        self.current.len() + self.retained.iter().map(|(_, t)| t.len()).sum::<usize>()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn reserve(&mut self, additional: usize) {
        self.current.reserve(additional.min(self.window));
    }
    pub fn iter(&self) -> impl Iterator<Item = (u128, IdRecord)> + '_ {
        self.retained
            .iter()
            .flat_map(|(_, t)| t.iter())
            .chain(self.current.iter())
            .map(|(k, v)| (k, *v))
    }
    /// Bytes held by the tables: every bucket (a power of two of them per
    /// segment, at most 7/8 full) is 32 bytes plus a control byte.
    pub fn memory_bytes(&self) -> usize {
        self.current.memory_bytes()
            + self
                .retained
                .iter()
                .map(|(_, t)| t.memory_bytes())
                .sum::<usize>()
    }
    /// The most entries one growth step can move (see [`IdTable`]).
    pub fn largest_segment(&self) -> usize {
        self.current.largest_segment()
    }
}

/// Id records looked up in the cold tier for one batch, before its shards
/// run it (the prefetch stage): the shards never wait on storage. `covered`
/// is the cold tier's watermark when it was asked: every record decided at
/// or before it was there to be found.
#[derive(Debug, Default, Clone)]
pub struct ColdAnswers {
    pub covered: u64,
    /// Sorted by (space, id); one record per key, the earliest decided.
    found: Vec<(u8, u128, IdRecord)>,
}

impl ColdAnswers {
    pub fn new(covered: u64, mut found: Vec<(u8, u128, IdRecord)>) -> ColdAnswers {
        found.sort_unstable_by_key(|(s, id, r)| (*s, *id, r.seq));
        found.dedup_by_key(|(s, id, _)| (*s, *id));
        ColdAnswers { covered, found }
    }
    #[inline]
    pub fn get(&self, space: u8, id: u128) -> Option<IdRecord> {
        if self.found.is_empty() {
            return None;
        }
        self.found
            .binary_search_by_key(&(space, id), |(s, i, _)| (*s, *i))
            .ok()
            .map(|k| self.found[k].2)
    }
    /// These answers and `newer` (a lookup of what a later watermark
    /// added), at the later watermark.
    pub fn with(mut self, newer: ColdAnswers) -> ColdAnswers {
        self.found.extend(newer.found);
        ColdAnswers::new(newer.covered.max(self.covered), self.found)
    }

    /// The answers for a command at sequence `seq` replayed behind the
    /// cold tier: only the records decided before it.
    pub fn before(mut self, seq: u64) -> ColdAnswers {
        self.found.retain(|(_, _, r)| r.seq < seq);
        self
    }
    pub fn len(&self) -> usize {
        self.found.len()
    }
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

/// hashbrown's bucket count for a usable capacity (7/8 of the buckets).
pub(crate) fn buckets(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_packs_code_and_fingerprint() {
        let r = IdRecord::new(0xdead_beef_0000_ffff, 7, Some(ErrorCode::InsufficientFunds));
        assert!(r.matches(0xdead_beef_0000_0000));
        assert!(!r.matches(0xdead_beef_0001_0000));
        assert_eq!(r.code(), Some(ErrorCode::InsufficientFunds));
        assert!(!r.committed());
        assert!(IdRecord::new(1 << 20, 1, None).committed());
        assert_eq!(std::mem::size_of::<(u128, IdRecord)>(), 32);
    }

    #[test]
    fn packed_form_with_an_unknown_code_is_refused() {
        let r = IdRecord::new(0xdead_beef_0000_0000, 7, Some(ErrorCode::InsufficientFunds));
        let (fp_code, seq) = r.to_raw();
        assert_eq!(IdRecord::try_from_raw(fp_code, seq), Ok(r));
        let committed = IdRecord::new(0xdead_beef_0000_0000, 8, None).to_raw();
        assert!(IdRecord::try_from_raw(committed.0, committed.1).is_ok_and(|r| r.committed()));
        // A code no ErrorCode has: not committed, not anything; refused.
        let unknown = 0xfffe;
        assert_eq!(ErrorCode::from_u16(unknown), None);
        let crafted = (fp_code & FP_MASK) | unknown as u64;
        let err = IdRecord::try_from_raw(crafted, 9).unwrap_err();
        assert!(err.contains("unknown outcome code 65534"), "{err}");
    }
}
