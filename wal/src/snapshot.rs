//! Snapshots: the whole ledger state at one global sequence, checksummed,
//! written atomically (temp file, fsync, rename, directory fsync).
//!
//! A snapshot is built by replaying the durable log into a separate ledger,
//! never by pausing the live shards: the state after sequence S is by
//! definition a consistent cut, and the write path is not stalled. Restart
//! loads the newest valid snapshot and replays only the records after it
//! (the records before it are still verified: checksums and hash chain).
//!
//! Layout: a 128-byte header (magic `TALLYSNP`, version, last sequence, last
//! timestamp, the log's chain value at that sequence, body length, BLAKE3 of
//! the body, CRC32C of the header), then the rkyv body (`LedgerImage`).

use crate::format::Hash;
use crate::problem::{file_label, Problem};
use crate::scan;
use crate::storage::{Storage, StorageFile};
use rkyv::rancor;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tally_engine::id::format_uuid;
use tally_engine::idindex::IdRecord;
use tally_engine::image::LedgerImage;
use tally_engine::Ledger;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"TALLYSNP";
/// The version written when every id record is in the image. Version 5 is
/// written when some are in the cold tier: it adds, at header bytes
/// 108..116, the sequence at or before which records may be there
/// (`cold_through`), with a CRC32C of those 8 bytes at 116..120.
pub const SNAPSHOT_VERSION: u32 = 4;
pub const SNAPSHOT_VERSION_COLD: u32 = 5;
const HEADER: usize = 128;

/// What a snapshot file says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub last_seq: u64,
    pub last_timestamp: u64,
    /// The log's chain value after record `last_seq`.
    pub chain: Hash,
    pub bytes: u64,
    /// Id records decided at or before this sequence may be absent from
    /// the image: they are in the cold tier (0: the image has them all).
    pub cold_through: u64,
}

/// Snapshots kept after a new one is written: the newest and one before it
/// (recovery falls back to it when the newest is damaged, as long as the
/// segments after it are kept: archiving removes those before the newest,
/// and `tallyd` never archives). Older ones are removed: each holds the
/// whole state, and a server taking one a minute would otherwise fill its
/// disk with them. The two kept are the newest by sequence, damaged or not.
pub const KEEP_SNAPSHOTS: usize = 2;

/// Removes all but the newest `keep` snapshots of `dir` (then syncs the
/// directory); returns those removed. Backups in progress keep the files
/// they planned open, so they still read them.
pub fn prune(store: &dyn Storage, dir: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let all = list(store, dir);
    let old = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (_, path) in all.into_iter().take(old) {
        store.remove(&path)?;
        removed.push(path);
    }
    if !removed.is_empty() {
        store.sync_dir(dir)?;
    }
    Ok(removed)
}

pub fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

/// Snapshot files of a directory, oldest first.
pub fn list(store: &dyn Storage, dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = store
        .list(dir)
        .into_iter()
        .flatten()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let seq = name
                .strip_prefix("snapshot-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()?;
            Some((seq, path))
        })
        .collect();
    v.sort();
    v
}

/// Writes `image` (the state after `image.last_seq`, whose log chain value is
/// `chain`) atomically into `dir`.
pub fn write(
    store: &dyn Storage,
    dir: &Path,
    image: &LedgerImage,
    chain: &Hash,
) -> std::io::Result<SnapshotInfo> {
    write_with(store, dir, image, chain, 0)
}

/// [`write`] of an image whose id records at or before `cold_through` may
/// be in the cold tier instead.
pub fn write_with(
    store: &dyn Storage,
    dir: &Path,
    image: &LedgerImage,
    chain: &Hash,
    cold_through: u64,
) -> std::io::Result<SnapshotInfo> {
    let body = rkyv::to_bytes::<rancor::Error>(image).map_err(std::io::Error::other)?;
    let mut header = [0u8; HEADER];
    header[0..8].copy_from_slice(SNAPSHOT_MAGIC);
    let version = if cold_through > 0 {
        SNAPSHOT_VERSION_COLD
    } else {
        SNAPSHOT_VERSION
    };
    header[8..12].copy_from_slice(&version.to_le_bytes());
    if cold_through > 0 {
        header[108..116].copy_from_slice(&cold_through.to_le_bytes());
        let crc = crc32c::crc32c(&header[108..116]);
        header[116..120].copy_from_slice(&crc.to_le_bytes());
    }
    header[16..24].copy_from_slice(&image.last_seq.to_le_bytes());
    header[24..32].copy_from_slice(&image.last_timestamp.to_le_bytes());
    header[32..64].copy_from_slice(chain);
    header[64..72].copy_from_slice(&(body.len() as u64).to_le_bytes());
    header[72..104].copy_from_slice(blake3::hash(&body).as_bytes());
    let crc = crc32c::crc32c(&header[0..104]);
    header[104..108].copy_from_slice(&crc.to_le_bytes());
    let path = dir.join(snapshot_name(image.last_seq));
    let tmp = TempFile::create(
        store,
        dir.join(format!("{}.tmp", snapshot_name(image.last_seq))),
    )?;
    tmp.write(&[&header, &body])?;
    tmp.rename_to(&path)?;
    store.sync_dir(dir)?;
    Ok(SnapshotInfo {
        path,
        last_seq: image.last_seq,
        last_timestamp: image.last_timestamp,
        chain: *chain,
        bytes: (HEADER + body.len()) as u64,
        cold_through,
    })
}

/// A snapshot's temporary file: removed when dropped unless it was renamed
/// into place, so that no error path leaves a `.tmp` behind.
struct TempFile<'a> {
    store: &'a dyn Storage,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    renamed: bool,
}

impl<'a> TempFile<'a> {
    /// Creates `path` private to its owner (mode 0600), replacing the
    /// remains of an earlier attempt (a crash between create and rename).
    fn create(store: &'a dyn Storage, path: PathBuf) -> io::Result<TempFile<'a>> {
        match store.remove(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = store.create_new(&path)?;
        Ok(TempFile {
            store,
            path,
            file,
            renamed: false,
        })
    }

    /// Writes `parts` in order and makes them durable, synced as they go
    /// every few megabytes ([`crate::storage::write_behind`]).
    fn write(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut at = 0u64;
        for part in parts {
            crate::storage::write_behind(&*self.file, part, at)?;
            at += part.len() as u64;
        }
        self.file.sync_data()
    }

    fn rename_to(mut self, path: &Path) -> io::Result<()> {
        self.store.rename(&self.path, path)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            // Best effort: the error being returned matters more.
            let _ = self.store.remove(&self.path);
        }
    }
}

/// Reads and verifies a snapshot file.
pub fn read(store: &dyn Storage, path: &Path) -> Result<(SnapshotInfo, LedgerImage), Problem> {
    let name = file_label(path);
    let bad = |offset: u64, msg: String| Problem::new("bad_snapshot", name.clone(), offset, 0, msg);
    let bytes =
        crate::storage::read_all(store, path).map_err(|e| bad(0, format!("cannot read: {e}")))?;
    if bytes.len() < HEADER || &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(bad(0, "not a Tally snapshot".into()));
    }
    if crc32c::crc32c(&bytes[0..104])
        != u32::from_le_bytes([bytes[104], bytes[105], bytes[106], bytes[107]])
    {
        return Err(bad(104, "header checksum mismatch".into()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    // Bytes 108..128 are reserved (written as zeros) and outside the header
    // checksum, but for version 5's cold watermark and its own checksum:
    // anything else there is damage.
    let (reserved, cold_through) = match version {
        SNAPSHOT_VERSION => (108, 0),
        SNAPSHOT_VERSION_COLD => {
            let crc = u32::from_le_bytes([bytes[116], bytes[117], bytes[118], bytes[119]]);
            if crc32c::crc32c(&bytes[108..116]) != crc {
                return Err(bad(108, "the cold watermark's checksum is wrong".into()));
            }
            (120, u64_at(108))
        }
        _ => {
            return Err(bad(
                8,
                format!("snapshot version {version}, this build reads {SNAPSHOT_VERSION} and {SNAPSHOT_VERSION_COLD}"),
            ))
        }
    };
    if let Some(at) = (reserved..HEADER).find(|&i| bytes[i] != 0) {
        return Err(bad(at as u64, "nonzero reserved header bytes".into()));
    }
    let body_len = u64_at(64) as usize;
    if HEADER.checked_add(body_len) != Some(bytes.len()) {
        return Err(bad(
            64,
            format!(
                "body is {} bytes, header says {body_len}",
                bytes.len() - HEADER
            ),
        ));
    }
    let body = &bytes[HEADER..];
    if blake3::hash(body).as_bytes() != &bytes[72..104] {
        return Err(bad(HEADER as u64, "body checksum mismatch".into()));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let image = rkyv::from_bytes::<LedgerImage, rancor::Error>(&aligned)
        .map_err(|e| bad(HEADER as u64, format!("invalid body: {e}")))?;
    check_ids(&image).map_err(|m| bad(HEADER as u64, m))?;
    let mut chain = [0u8; 32];
    chain.copy_from_slice(&bytes[32..64]);
    let info = SnapshotInfo {
        path: path.to_path_buf(),
        last_seq: u64_at(16),
        last_timestamp: u64_at(24),
        chain,
        bytes: bytes.len() as u64,
        cold_through,
    };
    if info.last_seq != image.last_seq || info.last_timestamp != image.last_timestamp {
        return Err(bad(16, "header and body disagree on the sequence".into()));
    }
    Ok((info, image))
}

/// Checks what the engine's import takes on trust in the id records: every
/// outcome code must be one the engine knows (an unknown one would read as
/// committed).
fn check_ids(image: &LedgerImage) -> Result<(), String> {
    for &(_, id, fp_code, seq) in &image.ids {
        IdRecord::try_from_raw(fp_code, seq).map_err(|m| format!("id {}: {m}", format_uuid(id)))?;
    }
    Ok(())
}

/// Builds and writes a snapshot of the log in `dir` up to sequence `until`
/// (only what is durable: the caller passes the last synced sequence), by
/// replaying it, starting from the newest valid snapshot when there is one.
/// Touches no live state; safe to run beside a running ledger.
pub fn take(store: &dyn Storage, dir: &Path, until: u64) -> Result<Option<SnapshotInfo>, Problem> {
    take_with(store, dir, until, None)
}

/// [`take`] for a data directory with a cold tier (and the window of id
/// records a shard keeps): the snapshot holds only the records still in
/// memory, and says from which sequence down the rest is in the cold tier,
/// whose runs are made durable before the snapshot is written.
pub fn take_with(
    store: &dyn Storage,
    dir: &Path,
    until: u64,
    cold: Option<(&crate::cold::ColdStore, usize)>,
) -> Result<Option<SnapshotInfo>, Problem> {
    let base = list(store, dir)
        .into_iter()
        .rev()
        .find_map(|(_, p)| read(store, &p).ok());
    let mut ledger = match &base {
        Some((info, image)) => {
            crate::durable::check_cold(info, cold.map(|(c, _)| c))?;
            let mut ledger = Ledger::import(image, 1).map_err(|m| {
                Problem::new("bad_snapshot", file_label(&info.path), 0, image.last_seq, m)
            })?;
            ledger.restore_released_through(info.cold_through);
            ledger
        }
        None => Ledger::new(1),
    };
    if let Some((_, window)) = cold {
        ledger.set_id_window(window);
    }
    let cold_ids = cold.map(|(c, _)| c as &dyn tally_engine::runtime::ColdIds);
    let from = ledger.sequencer().next_seq();
    if until < from {
        return Ok(None);
    }
    let mut chain_at_until = None;
    // Only the log after the base snapshot is read (the segments before it
    // may have been archived): a snapshot costs the state and what is new.
    let first = crate::durable::start_at(store, dir, from)?;
    let end = scan::scan_pipelined(
        store,
        dir,
        first,
        until,
        |_| {},
        |rec| {
            if rec.header.seq >= from {
                crate::durable::replay_record_with(&mut ledger, rec, cold_ids)?;
                if cold_ids.is_some() {
                    // The live shards report their records; these are the same.
                    ledger.take_id_records();
                }
            }
            // The chain has a value at record ends only; durable sequences
            // are record ends (a group's sync covers whole records).
            if rec.header.seq == until && rec.header.last_in_record {
                chain_at_until = Some(rec.header.chain);
            }
            Ok(())
        },
    )?;
    let Some(chain) = chain_at_until else {
        let msg = format!(
            "the log ends at sequence {}, or {until} is inside a record (a snapshot ends where a record does)",
            end.last_seq
        );
        return Err(Problem::new("snapshot_mismatch", "", 0, until, msg));
    };
    let image = ledger.export();
    let cold_through = ledger.released_through();
    if let Some((c, _)) = cold {
        // The records the image leaves out must be durable in the cold tier
        // before a snapshot relies on them.
        let persisted = c.persist()?;
        if persisted < cold_through {
            let msg = format!("the cold tier persisted records up to {persisted}, the snapshot leaves out records up to {cold_through}");
            return Err(Problem::new("snapshot_mismatch", "", 0, until, msg));
        }
    }
    write_with(store, dir, &image, &chain, cold_through)
        .map(Some)
        .map_err(|e| {
            Problem::new(
                "unwritable",
                dir.display().to_string(),
                0,
                until,
                e.to_string(),
            )
        })
}
