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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    blocks: Vec<[u64; 8]>,
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
    /// An empty filter sized for `keys` keys.
    pub fn with_keys(keys: usize) -> Bloom {
        let bits = keys.max(1) * BITS_PER_KEY;
        let blocks = bits.div_ceil(BLOCK_BYTES * 8);
        Bloom {
            blocks: vec![[0; 8]; blocks],
        }
    }

    #[inline]
    fn block(&self, h: u64) -> usize {
        (((h >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    #[inline]
    fn bits(h: u64) -> impl Iterator<Item = u32> {
        let h1 = h as u32;
        let h2 = (h.rotate_left(21) as u32) | 1;
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & 511)
    }

    pub fn insert(&mut self, h: u64) {
        let b = self.block(h);
        for bit in Self::bits(h) {
            self.blocks[b][(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    #[inline]
    pub fn may_contain(&self, h: u64) -> bool {
        let block = &self.blocks[self.block(h)];
        Self::bits(h).all(|bit| block[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
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
    /// blocks, at least one).
    pub fn from_bytes(bytes: &[u8]) -> Option<Bloom> {
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
        Some(Bloom { blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let n = 100_000u128;
        let mut b = Bloom::with_keys(n as usize);
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
        assert_eq!(Bloom::from_bytes(&bytes), Some(b));
        assert_eq!(Bloom::from_bytes(&bytes[1..]), None);
    }
}
