//! A blocked Bloom filter: each key sets [`PROBES`] bits inside one 64-byte
//! block (one cache line), so a check costs one cache miss. At
//! [`BITS_PER_KEY`] bits a key the false-positive rate is about 0.3%: the
//! share of new ids whose check reads a block of a run from storage, per
//! run. A new id is checked against every run (a dozen or more after a few
//! hundred million ids), so the rate is paid that many times over: at 10
//! bits (1–2%) a fifth of new ids read and walked a block, 15% of the
//! server's time in a soak's profile.
//! Filters of older runs keep their size (it is read from the file); only
//! [`PROBES`] is fixed by the format.

/// Bits of filter per key.
pub const BITS_PER_KEY: usize = 14;
/// Bits set (and tested) per key, all in one block.
const PROBES: u32 = 7;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 64;

/// Where a key's bits inside its block come from (part of a file's format:
/// its version says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probes {
    /// Runs of versions 1 and 2: the step between a key's bits is taken
    /// from hash bits 43..52, which in a filter of 2^13 blocks or more also
    /// choose the block, so the keys of one block share (some of) their
    /// step and cover runs of neighbouring bits: in runs of tens of
    /// millions of keys the false-positive rate is several times the
    /// nominal one (test `keys_of_one_block_do_not_share_their_bits`).
    Shared,
    /// Version 3 on: the first bit and the step come from hash bits 0..18,
    /// which the block (chosen by bits 32..64) never uses.
    Independent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    blocks: Vec<[u64; 8]>,
    probes: Probes,
}

/// The 64-bit hash a key is filed under.
#[inline]
pub fn hash(space: u8, id: u128) -> u64 {
    let mut b = [0u8; 17];
    b[0] = space;
    b[1..].copy_from_slice(&id.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

impl Bloom {
    /// An empty filter sized for `keys` keys, probed as `probes` says (the
    /// layout of the file it is written in).
    pub fn with_keys(keys: usize, probes: Probes) -> Bloom {
        let bits = keys.max(1) * BITS_PER_KEY;
        let blocks = bits.div_ceil(BLOCK_BYTES * 8);
        Bloom {
            blocks: vec![[0; 8]; blocks],
            probes,
        }
    }

    #[inline]
    fn block(&self, h: u64) -> usize {
        (((h >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    /// A key's bits in its block: `PROBES` distinct ones (the step is odd
    /// and the block has 512 bits).
    #[inline]
    fn bits(probes: Probes, h: u64) -> impl Iterator<Item = u32> {
        let (h1, h2) = match probes {
            Probes::Shared => (h as u32, (h.rotate_left(21) as u32) | 1),
            Probes::Independent => (h as u32 & 511, ((h >> 9) as u32 & 511) | 1),
        };
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & 511)
    }

    pub fn insert(&mut self, h: u64) {
        let b = self.block(h);
        for bit in Self::bits(self.probes, h) {
            self.blocks[b][(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    #[inline]
    pub fn may_contain(&self, h: u64) -> bool {
        let block = &self.blocks[self.block(h)];
        Self::bits(self.probes, h).all(|bit| block[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    pub fn byte_len(&self) -> usize {
        self.blocks.len() * BLOCK_BYTES
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        for block in &self.blocks {
            for w in block {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
    }

    /// Reads a filter written by [`Bloom::write_to`] (a whole number of
    /// blocks, at least one), probed as its file's layout says.
    pub fn from_bytes(bytes: &[u8], probes: Probes) -> Option<Bloom> {
        if bytes.is_empty() || bytes.len() % BLOCK_BYTES != 0 {
            return None;
        }
        let blocks = bytes
            .chunks_exact(BLOCK_BYTES)
            .map(|c| {
                let mut block = [0u64; 8];
                for (w, b) in block.iter_mut().zip(c.chunks_exact(8)) {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(b);
                    *w = u64::from_le_bytes(x);
                }
                block
            })
            .collect();
        Some(Bloom { blocks, probes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let n = 100_000u128;
        let mut b = Bloom::with_keys(n as usize, Probes::Independent);
        for id in 0..n {
            b.insert(hash(0, id * 7 + 1));
        }
        assert!((0..n).all(|id| b.may_contain(hash(0, id * 7 + 1))));
        let positives = (0..n)
            .filter(|id| b.may_contain(hash(0, id * 7 + 2)) || b.may_contain(hash(1, id * 7 + 1)))
            .count();
        // Two checks per id: at 14 bits a key, about 0.3% each (10 bits,
        // the first version's, gave 1-2%).
        let rate = positives as f64 / (2 * n) as f64;
        assert!(rate < 0.006, "false-positive rate {rate}");
        let mut bytes = Vec::new();
        b.write_to(&mut bytes);
        assert_eq!(Bloom::from_bytes(&bytes, Probes::Independent), Some(b));
        assert_eq!(Bloom::from_bytes(&bytes[1..], Probes::Independent), None);
    }

    /// A key's block comes from the hash's high half; in a large filter
    /// those bits are the whole of it, and the keys of one block agree on
    /// them. Keys made to agree on bits 43..64 land in one block of even a
    /// small filter with the same high bits a large filter's block-mates
    /// have: the first probing shares their step, the second does not.
    #[test]
    fn keys_of_one_block_do_not_share_their_bits() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let high = 0x1d5u64 << 43;
        let mut key = || high | (next() & ((1 << 43) - 1));
        // A block's fair share of keys at 14 bits a key: 512 / 14.
        let members: Vec<u64> = (0..37).map(|_| key()).collect();
        let queries: Vec<u64> = (0..20_000).map(|_| key()).collect();
        let rate = |probes| {
            let mut b = Bloom::with_keys(1_000, probes);
            let block = b.block(members[0]);
            assert!(members.iter().all(|&h| b.block(h) == block));
            members.iter().for_each(|&h| b.insert(h));
            assert!(members.iter().all(|&h| b.may_contain(h)));
            let hits = queries.iter().filter(|&&h| b.may_contain(h)).count();
            hits as f64 / queries.len() as f64
        };
        let (shared, independent) = (rate(Probes::Shared), rate(Probes::Independent));
        // About (1 - e^(-37·7/512))^7 ≈ 0.2% at random; runs of bits cover
        // a query's run far more often.
        assert!(independent < 0.01, "independent probes: {independent}");
        assert!(
            shared > 0.03,
            "shared steps: {shared} (the flaw this guards against)"
        );
    }
}
