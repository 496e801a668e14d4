//! The byte layout of segment files and records (see `wal/FORMAT.md`).
//! Pure functions over byte slices: no I/O here.

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TALLYWAL";
/// Bumped on any incompatible change of this layout. Version 4 logs one
/// record per sequenced batch, its commands in the wire encoding.
pub const FORMAT_VERSION: u32 = 4;
/// Bytes reserved for the segment header (one page).
pub const SEGMENT_HEADER_BYTES: usize = 4096;
/// Bytes of a record header; the body follows, 16-aligned.
pub const RECORD_HEADER_BYTES: usize = 80;
/// Records start at 16-byte boundaries.
pub const RECORD_ALIGN: usize = 16;
/// Largest record body. A batch whose commands take more is logged as
/// several records; one command (at most `MAX_COMMAND_BYTES`, checked before
/// sequencing) always fits one record with room for its exception.
pub const MAX_RECORD_BODY: usize = 4 << 20;
/// Largest record body a reader accepts.
pub const MAX_READ_RECORD_BODY: usize = MAX_RECORD_BODY;
/// Bytes of one exception (a command that did not commit) in a record body.
pub const EXCEPTION_BYTES: usize = 16;
const _: () = assert!(
    tally_engine::limits::MAX_COMMAND_BYTES + EXCEPTION_BYTES <= MAX_RECORD_BODY,
    "one command always fits a record"
);
/// Smallest and default segment sizes.
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Record kinds: `1` was version 3's single command; `2` is a batch.
pub const KIND_BATCH: u8 = 2;

/// Outcome kinds stored with each command record.
pub const OUTCOME_COMMITTED: u8 = 0;
pub const OUTCOME_DUPLICATE: u8 = 1;
pub const OUTCOME_REJECTED: u8 = 2;

pub type Hash = [u8; 32];

/// The chain value before the first record of a log.
pub fn genesis() -> Hash {
    *blake3::hash(b"tally-wal genesis v1").as_bytes()
}

/// Segment file name for an index.
pub fn segment_name(index: u64) -> String {
    format!("segment-{index:010}.wal")
}

/// Parses a segment file name back into its index.
pub fn segment_index(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

pub fn align(n: usize) -> usize {
    n.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub index: u64,
    pub first_seq: u64,
    pub prev_chain: Hash,
    pub size: u64,
}

impl SegmentHeader {
    pub fn encode(&self, out: &mut [u8]) {
        out[..SEGMENT_HEADER_BYTES].fill(0);
        out[0..8].copy_from_slice(SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.index.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        out[32..64].copy_from_slice(&self.prev_chain);
        out[64..72].copy_from_slice(&self.size.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..72]);
        out[72..76].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(format!(
                "file is {} bytes, shorter than a segment header",
                b.len()
            ));
        }
        if &b[0..8] != SEGMENT_MAGIC {
            return Err("not a Tally log segment (bad magic)".into());
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "log format version {version}; this build reads version {FORMAT_VERSION} only \
                 (a data directory written by another Tally release: serve it with that \
                 release, or start a new directory)"
            ));
        }
        if crc32c::crc32c(&b[0..72]) != u32_at(b, 72) {
            return Err("segment header checksum mismatch".into());
        }
        if u32_at(b, 12) as usize != SEGMENT_HEADER_BYTES {
            return Err(format!(
                "segment header length {}, expected {SEGMENT_HEADER_BYTES}",
                u32_at(b, 12)
            ));
        }
        if b[76..SEGMENT_HEADER_BYTES].iter().any(|&x| x != 0) {
            return Err("nonzero bytes in the segment header's reserved space".into());
        }
        let mut prev_chain = [0u8; 32];
        prev_chain.copy_from_slice(&b[32..64]);
        Ok(SegmentHeader {
            index: u64_at(b, 16),
            first_seq: u64_at(b, 24),
            prev_chain,
            size: u64_at(b, 64),
        })
    }
}

/// A record header: one sequenced batch of `count` commands at sequences
/// `first_seq..first_seq + count` and timestamps `first_timestamp..`, with
/// the log's durable sequence when it was appended. `chain` =
/// BLAKE3(previous chain ‖ header bytes 0..40 ‖ body); `crc` =
/// CRC32C(header bytes 0..40 ‖ chain ‖ body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub body_len: u32,
    pub kind: u8,
    pub first_seq: u64,
    pub first_timestamp: u64,
    pub count: u32,
    pub exceptions: u32,
    /// The last sequence known durable (acknowledged) when this record was
    /// appended: every record up to it was synced before this one was written.
    pub watermark: u64,
    pub chain: Hash,
    pub crc: u32,
}

/// Bytes of the part of a record header the chain and the CRC cover.
const FIXED: usize = 40;

impl RecordHeader {
    fn fixed(&self) -> [u8; FIXED] {
        let mut f = [0u8; FIXED];
        f[0..4].copy_from_slice(&self.body_len.to_le_bytes());
        f[4] = self.kind;
        f[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        f[16..24].copy_from_slice(&self.first_timestamp.to_le_bytes());
        f[24..28].copy_from_slice(&self.count.to_le_bytes());
        f[28..32].copy_from_slice(&self.exceptions.to_le_bytes());
        f[32..40].copy_from_slice(&self.watermark.to_le_bytes());
        f
    }

    /// The sequence of the record's last command.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count.max(1)) - 1
    }

    /// Fills in `chain` and `crc` for a body that follows `prev`.
    pub fn seal(&mut self, prev: &Hash, body: &[u8]) {
        let fixed = self.fixed();
        self.chain = chain(prev, &fixed, body);
        self.crc = crc(&fixed, &self.chain, body);
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..FIXED].copy_from_slice(&self.fixed());
        out[40..72].copy_from_slice(&self.chain);
        out[72..76].copy_from_slice(&self.crc.to_le_bytes());
        out[76..RECORD_HEADER_BYTES].fill(0);
    }

    pub fn decode(b: &[u8]) -> RecordHeader {
        let mut chain = [0u8; 32];
        chain.copy_from_slice(&b[40..72]);
        RecordHeader {
            body_len: u32_at(b, 0),
            kind: b[4],
            first_seq: u64_at(b, 8),
            first_timestamp: u64_at(b, 16),
            count: u32_at(b, 24),
            exceptions: u32_at(b, 28),
            watermark: u64_at(b, 32),
            chain,
            crc: u32_at(b, 72),
        }
    }

    /// Whether the fields that must be zero are, and the kind is known.
    pub fn well_formed(b: &[u8]) -> bool {
        b[4] == KIND_BATCH && b[5..8] == [0; 3] && b[76..80] == [0; 4]
    }

    pub fn crc_ok(&self, body: &[u8]) -> bool {
        crc(&self.fixed(), &self.chain, body) == self.crc
    }

    pub fn chain_ok(&self, prev: &Hash, body: &[u8]) -> bool {
        chain(prev, &self.fixed(), body) == self.chain
    }

    /// Bytes the whole record occupies, padding included.
    pub fn total_len(&self) -> usize {
        align(RECORD_HEADER_BYTES + self.body_len as usize)
    }
}

/// One command of a record, as readers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandHeader {
    pub seq: u64,
    pub timestamp: u64,
    /// `OUTCOME_COMMITTED`, `OUTCOME_DUPLICATE` or `OUTCOME_REJECTED`.
    pub outcome: u8,
    pub code: u16,
    /// For duplicates: the sequence number of the original.
    pub original_seq: u64,
    /// The chain value after the record that holds the command.
    pub chain: Hash,
    /// Whether it is the last command of its record (`chain` is then the
    /// chain value at this sequence).
    pub last_in_record: bool,
    /// Bytes of the command's encoding.
    pub body_len: u32,
}

fn chain(prev: &Hash, fixed: &[u8; FIXED], body: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(fixed);
    h.update(body);
    *h.finalize().as_bytes()
}

fn crc(fixed: &[u8; FIXED], chain: &Hash, body: &[u8]) -> u32 {
    let c = crc32c::crc32c(fixed);
    let c = crc32c::crc32c_append(c, chain);
    crc32c::crc32c_append(c, body)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            index: 3,
            first_seq: 77,
            prev_chain: genesis(),
            size: 1 << 20,
        };
        let mut b = vec![0u8; SEGMENT_HEADER_BYTES];
        h.encode(&mut b);
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        b[20] ^= 1;
        assert!(SegmentHeader::decode(&b).unwrap_err().contains("checksum"));
        // A segment of the previous format names its version.
        h.encode(&mut b);
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..72]);
        b[72..76].copy_from_slice(&crc.to_le_bytes());
        let e = SegmentHeader::decode(&b).unwrap_err();
        assert!(e.contains("version 3") && e.contains("version 4"), "{e}");
        // The reserved space must be zero (it is outside the checksum).
        h.encode(&mut b);
        b[100] = 1;
        assert!(SegmentHeader::decode(&b).unwrap_err().contains("reserved"));
        assert_eq!(segment_index(&segment_name(42)), Some(42));
    }

    #[test]
    fn record_header_seals_and_checks() {
        let body = b"hello";
        let mut h = RecordHeader {
            body_len: 5,
            kind: KIND_BATCH,
            first_seq: 9,
            first_timestamp: 10,
            count: 1,
            exceptions: 0,
            watermark: 8,
            chain: [0; 32],
            crc: 0,
        };
        h.seal(&genesis(), body);
        let mut b = [0u8; RECORD_HEADER_BYTES];
        h.encode(&mut b);
        let d = RecordHeader::decode(&b);
        assert_eq!(d, h);
        assert!(RecordHeader::well_formed(&b));
        assert!(d.crc_ok(body) && d.chain_ok(&genesis(), body));
        assert!(!d.crc_ok(b"hellp"));
        assert!(!d.chain_ok(&[1; 32], body));
        assert_eq!(d.total_len(), 96);
        let mut w = d;
        w.watermark = 9;
        assert!(!w.crc_ok(body), "the watermark is covered by the checksum");
    }
}
