//! A hash table from 128-bit ids that never stops the world to grow.
//!
//! An open-addressing table (hashbrown's, like every other) grows by
//! allocating one twice as large and moving every entry at once: at 10 M ids
//! that is a shard standing still for half a second. [`IdTable`] is a
//! directory of segments instead (extendible hashing on the low bits of a
//! slice of the hash). Each segment is a hashbrown table of at most
//! [`SEGMENT_ENTRIES`] entries. A full segment is split in two, which moves
//! at most that many entries (a few hundred microseconds); when a split needs
//! a deeper directory the directory doubles, which copies one `u32` per slot
//! (16,384 slots at 100 M ids). Nothing else ever moves, so the longest pause
//! growth can cause is bounded by the segment size, not by the table's.
//!
//! Each segment splits at its own limit (60% to 100% of [`SEGMENT_ENTRIES`]),
//! so that the segments of a uniform hash do not all split at once. The
//! price is memory: buckets are `size_of::<(u128, V)>() + 1` bytes and fuller
//! on average in one hashbrown table (an id record: 72 bytes per id here
//! against 55 in hashbrown at 20 M ids, `examples/growth_pause`). The hash is
//! hashbrown's default (foldhash), keyed randomly per table: a client chooses
//! its ids but cannot compute where they land without the key (foldhash does
//! not claim resistance to an attacker who can observe timings interactively).

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

/// The most entries a segment holds before it is split: 7/8 of 16,384
/// buckets, so a segment never grows past one hashbrown allocation of that
/// size.
pub const SEGMENT_ENTRIES: usize = 14_336;
/// The least: each segment splits at its own limit, drawn between this and
/// [`SEGMENT_ENTRIES`]. With one limit for all, a uniform hash fills every
/// segment at about the same moment and the splits come in a wave (a
/// thousand of them within a few batches: the pause a whole-table rehash
/// would have been, only spread over 25 ms batches); staggered limits spread
/// them over the growth.
const SEGMENT_ENTRIES_LOW: usize = SEGMENT_ENTRIES * 3 / 5;
/// The directory is indexed by the hash's bits from this one up. Below it
/// are the bits hashbrown uses for a segment's bucket index (a segment has at
/// most 2^14 buckets); its top 7 bits are hashbrown's tags.
const DIRECTORY_SHIFT: u32 = 20;
/// The deepest directory: 2^24 slots (64 MiB of `u32`s, a billion entries
/// and more). A segment whose entries agree on all of these bits (only ids
/// chosen to collide could) grows inside hashbrown instead of splitting.
const MAX_DEPTH: u32 = 24;

struct Segment<V> {
    entries: HashTable<(u128, V)>,
    /// Bits of the directory index its entries agree on.
    depth: u32,
    /// Entries at which it splits.
    limit: usize,
}

/// A map from ids to small values that grows one segment at a time.
pub struct IdTable<V> {
    /// Segment index per slot; slot = the hash's directory bits, low
    /// `depth` of them.
    directory: Vec<u32>,
    segments: Vec<Segment<V>>,
    depth: u32,
    len: usize,
    hasher: DefaultHashBuilder,
}

impl<V> Default for IdTable<V> {
    fn default() -> IdTable<V> {
        IdTable {
            directory: vec![0],
            segments: vec![Segment {
                entries: HashTable::new(),
                depth: 0,
                limit: SEGMENT_ENTRIES,
            }],
            depth: 0,
            len: 0,
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<V> IdTable<V> {
    pub fn new() -> IdTable<V> {
        IdTable::default()
    }

    #[inline]
    fn hash(&self, id: u128) -> u64 {
        self.hasher.hash_one(id)
    }

    /// A split limit for the segment at `index`, spread over
    /// `SEGMENT_ENTRIES_LOW..=SEGMENT_ENTRIES` by the table's keyed hash.
    fn limit(&self, index: usize, depth: u32) -> usize {
        let h = self
            .hasher
            .hash_one((index as u128) << 32 | u128::from(depth));
        SEGMENT_ENTRIES_LOW + (h % (SEGMENT_ENTRIES - SEGMENT_ENTRIES_LOW + 1) as u64) as usize
    }

    #[inline]
    fn slot(&self, hash: u64) -> usize {
        ((hash >> DIRECTORY_SHIFT) as usize) & ((1usize << self.depth) - 1)
    }

    #[inline]
    fn segment_of(&self, hash: u64) -> usize {
        self.directory[self.slot(hash)] as usize
    }

    #[inline]
    pub fn get(&self, id: u128) -> Option<&V> {
        let h = self.hash(id);
        self.segments[self.segment_of(h)]
            .entries
            .find(h, |e| e.0 == id)
            .map(|e| &e.1)
    }

    #[inline]
    pub fn get_mut(&mut self, id: u128) -> Option<&mut V> {
        let h = self.hash(id);
        let s = self.segment_of(h);
        self.segments[s]
            .entries
            .find_mut(h, |e| e.0 == id)
            .map(|e| &mut e.1)
    }

    #[inline]
    pub fn contains(&self, id: u128) -> bool {
        self.get(id).is_some()
    }

    /// Inserts or replaces `id`'s value; the value it replaced, if any.
    pub fn insert(&mut self, id: u128, value: V) -> Option<V> {
        if let Some(v) = self.get_mut(id) {
            return Some(std::mem::replace(v, value));
        }
        self.insert_new(id, value);
        None
    }

    /// Inserts an id known to be absent (checked in debug builds): one hash
    /// and one probe, where [`IdTable::insert`] looks first.
    pub fn insert_new(&mut self, id: u128, value: V) {
        debug_assert!(!self.contains(id), "{id} is in the table already");
        let h = self.hash(id);
        let mut s = self.segment_of(h);
        while self.segments[s].entries.len() >= self.segments[s].limit && self.split(s) {
            s = self.segment_of(h);
        }
        let hasher = &self.hasher;
        self.segments[s]
            .entries
            .insert_unique(h, (id, value), |e| hasher.hash_one(e.0));
        self.len += 1;
    }

    /// Removes `id`; its value, if it was there.
    pub fn remove(&mut self, id: u128) -> Option<V> {
        let h = self.hash(id);
        let s = self.segment_of(h);
        let (entry, _) = self.segments[s]
            .entries
            .find_entry(h, |e| e.0 == id)
            .ok()?
            .remove();
        self.len -= 1;
        Some(entry.1)
    }

    /// Splits segment `s` on its next directory bit (doubling the directory
    /// first when the segment is as deep as it). False when it is as deep as
    /// a directory may be (it then grows in place).
    fn split(&mut self, s: usize) -> bool {
        let depth = self.segments[s].depth;
        if depth >= MAX_DEPTH {
            return false;
        }
        if depth == self.depth {
            self.directory.extend_from_within(..);
            self.depth += 1;
        }
        let bit = 1u64 << (DIRECTORY_SHIFT + depth);
        let new_index = self.segments.len();
        let high_limit = self.limit(new_index, depth + 1);
        // The entries whose new bit is set move to a new segment, allocated
        // once for its limit; the rest stay where they are (the low half
        // keeps its allocation, so its limit is at most what that holds).
        // Neither half ever grows in place: a segment's allocation is made
        // when it is split off (tried: halves sized for their entries and
        // grown by hashbrown save the memory but bring back 100-160 ms
        // stalls at 10 M ids, the halves' in-place growth coming in waves).
        let mut high = HashTable::with_capacity(high_limit);
        let hasher = &self.hasher;
        let low = &mut self.segments[s].entries;
        for e in low.extract_if(|e| hasher.hash_one(e.0) & bit != 0) {
            high.insert_unique(hasher.hash_one(e.0), e, |e| hasher.hash_one(e.0));
        }
        let low_limit = self
            .limit(s, depth + 1)
            .min(self.segments[s].entries.capacity());
        let new = u32::try_from(new_index).unwrap_or(u32::MAX);
        debug_assert!(new != u32::MAX, "at most 2^24 segments");
        self.segments[s].depth = depth + 1;
        self.segments[s].limit = low_limit;
        self.segments.push(Segment {
            entries: high,
            depth: depth + 1,
            limit: high_limit,
        });
        // Slots that pointed at `s` and have the new bit set now point at
        // the new segment: those are `slot & (2^depth - 1) == pattern`.
        let pattern = self.directory.iter().position(|&d| d as usize == s);
        if let Some(first) = pattern {
            let step = 1usize << depth;
            let low_bits = first & (step - 1);
            let mut slot = low_bits;
            while slot < self.directory.len() {
                if slot & step != 0 {
                    self.directory[slot] = new;
                }
                slot += step;
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Prepares an empty table for `additional` entries: as many segments
    /// as they need, each allocated once, so filling it splits nothing. A
    /// table that holds entries already is left as it is (it grows one
    /// segment at a time anyway).
    pub fn reserve(&mut self, additional: usize) {
        if self.len != 0 || additional == 0 {
            return;
        }
        // Segments fill to 7/8 of SEGMENT_ENTRIES' buckets; aim at 3/4.
        let per_segment = SEGMENT_ENTRIES * 3 / 4;
        let segments = additional.div_ceil(per_segment).next_power_of_two();
        let depth = segments.trailing_zeros().min(MAX_DEPTH);
        // Room for the spread of a uniform hash around the mean; each
        // segment splits only once it holds what its allocation holds.
        let mean = additional.div_ceil(1 << depth);
        let capacity = (mean + mean / 8).min(SEGMENT_ENTRIES);
        self.depth = depth;
        self.directory = (0..1u32 << depth).collect();
        self.segments = (0..1usize << depth)
            .map(|_| {
                let entries = HashTable::with_capacity(capacity);
                let limit = entries.capacity().min(SEGMENT_ENTRIES);
                Segment {
                    entries,
                    depth,
                    limit,
                }
            })
            .collect();
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, &V)> + '_ {
        self.segments
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| (e.0, &e.1)))
    }

    /// Bytes held: every segment's buckets (a bucket is an entry plus a
    /// control byte) and the directory.
    pub fn memory_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(u128, V)>() + 1;
        self.segments
            .iter()
            .map(|s| crate::idindex::buckets(s.entries.capacity()) * bucket)
            .sum::<usize>()
            + self.directory.len() * std::mem::size_of::<u32>()
    }

    /// The largest segment's entry count (what one split or one in-place
    /// growth can move at most).
    pub fn largest_segment(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.entries.len())
            .max()
            .unwrap_or(0)
    }

    /// Checks the directory's invariants (tests and debug checks): every
    /// segment of depth d is named by exactly 2^(depth - d) slots, which
    /// agree on their low d bits, and every entry lives in the segment its
    /// hash's slot names.
    pub fn check(&self) -> Result<(), String> {
        let mut named = vec![0usize; self.segments.len()];
        for (slot, &s) in self.directory.iter().enumerate() {
            let seg = self
                .segments
                .get(s as usize)
                .ok_or(format!("slot {slot} names segment {s}, which is not there"))?;
            named[s as usize] += 1;
            let mask = (1usize << seg.depth) - 1;
            let first = self.directory.iter().position(|&d| d == s).unwrap_or(slot);
            if first & mask != slot & mask {
                return Err(format!("slots {first} and {slot} of segment {s} disagree"));
            }
        }
        let mut total = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.depth > self.depth || named[i] != 1 << (self.depth - seg.depth) {
                return Err(format!(
                    "segment {i} of depth {} named {} times",
                    seg.depth, named[i]
                ));
            }
            for e in seg.entries.iter() {
                if self.segment_of(self.hash(e.0)) != i {
                    return Err(format!("id {} is in segment {i}, not its own", e.0));
                }
            }
            total += seg.entries.len();
        }
        if total != self.len {
            return Err(format!("{total} entries, len says {}", self.len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn growth_splits_segments_and_never_one_larger_than_its_bound() {
        let mut t = IdTable::new();
        for i in 0..200_000u128 {
            assert_eq!(t.insert(i * 7919, i as u32), None);
        }
        assert_eq!(t.len(), 200_000);
        assert!(t.largest_segment() <= SEGMENT_ENTRIES);
        assert!(t.segments.len() >= 200_000 / SEGMENT_ENTRIES);
        t.check().unwrap();
        for i in 0..200_000u128 {
            assert_eq!(t.get(i * 7919), Some(&(i as u32)));
        }
        assert_eq!(t.get(1), None);
        assert_eq!(t.iter().count(), 200_000);
        // Every segment is one allocation of at most 16,384 buckets (the
        // segment count itself depends on the randomly drawn limits).
        let bucket = std::mem::size_of::<(u128, u32)>() + 1;
        let most = t.segments.len() * 16_384 * bucket + t.directory.len() * 4;
        assert!(t.memory_bytes() <= most, "{} > {most}", t.memory_bytes());
        assert!(t
            .segments
            .iter()
            .all(|s| s.entries.capacity() <= SEGMENT_ENTRIES));
    }

    #[test]
    fn a_reserved_table_does_not_split_while_it_fills() {
        for n in [100_000, 16 * 10_752] {
            let mut t = IdTable::new();
            t.reserve(n);
            let segments = t.segments.len();
            for i in 0..n as u128 {
                t.insert(i, ());
            }
            assert_eq!(t.segments.len(), segments, "{n}");
            t.check().unwrap();
        }
        let mut t = IdTable::new();
        t.reserve(100_000);
        let segments = t.segments.len();
        for i in 0..100_000u128 {
            t.insert(i, ());
        }
        assert_eq!(t.segments.len(), segments);
        t.check().unwrap();
    }

    proptest! {
        /// The table is a map: the same answers as std's for any mix of
        /// inserts, replacements, removals and lookups, across splits
        /// (small ids and many of them).
        #[test]
        fn behaves_as_a_map(ops in prop::collection::vec((0..3u8, 0..40_000u128), 1..60_000)) {
            let mut t = IdTable::new();
            let mut m = HashMap::new();
            for (k, (op, id)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => prop_assert_eq!(t.insert(id, k), m.insert(id, k)),
                    _ => prop_assert_eq!(t.remove(id), m.remove(&id)),
                }
                prop_assert_eq!(t.get(id), m.get(&id));
            }
            prop_assert_eq!(t.len(), m.len());
            t.check().map_err(TestCaseError::fail)?;
            let mut all: Vec<_> = t.iter().map(|(k, v)| (k, *v)).collect();
            all.sort_unstable();
            let mut want: Vec<_> = m.into_iter().collect();
            want.sort_unstable();
            prop_assert_eq!(all, want);
        }
    }
}
