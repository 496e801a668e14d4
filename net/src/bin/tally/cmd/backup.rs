//! `tally backup DEST`: an online backup into the new directory DEST while
//! the server keeps serving. The server plans a copy consistent at its
//! durable sequence (a snapshot and the log up to it); this fetches each
//! file's bytes in chunks, writes them private (0600, in a 0700 directory),
//! syncs them into `DEST/.partial`, and audits the copy as `tally-audit`
//! would. A clean audit ending at the planned sequence is the verdict: the
//! files are then moved into DEST; otherwise they stay in `DEST/.partial`
//! (or are removed when fetching failed) and the command exits 1.
//! `tallyd --data-dir DEST` starts from the copy.

use crate::output::{Failure, Out, Report, Verdict};
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use tally_engine::ErrorCode;
use tally_net::client::Client;
use tally_net::limits::MAX_BACKUP_CHUNK_BYTES;
use tally_net::message::{BackupFileInfo, BackupManifest};

#[derive(Args)]
pub struct BackupArgs {
    /// The directory to create (it must not exist, or be empty).
    dest: PathBuf,
}

pub async fn run(client: &Client, a: BackupArgs) -> Out {
    let partial = prepare(&a.dest)?;
    let remove = |why: Failure| {
        let _ = std::fs::remove_dir_all(&partial);
        why
    };
    let manifest = client.backup().await.map_err(|e| remove(e.into()))?;
    let fetched = fetch_all(client, &manifest, &partial).await;
    let _ = client.backup_end(manifest.backup).await;
    fetched.map_err(remove)?;
    let dir = partial.clone();
    let audit = tokio::task::spawn_blocking(move || tally_wal::audit::audit(&dir, None))
        .await
        .map_err(|e| remove(Failure::refused(ErrorCode::Unavailable, e.to_string())))?
        .map_err(|e| {
            remove(Failure::refused(
                ErrorCode::Unavailable,
                format!("auditing the copy: {e}"),
            ))
        })?;
    let complete = audit.last_sequence == manifest.durable_seq;
    let verified = audit.clean && complete;
    // A failed audit leaves the copy where it was fetched, for inspection.
    if verified {
        move_up(&partial, &a.dest, &manifest).map_err(|e| io_failure(&a.dest, e))?;
    }
    let at = if verified { &a.dest } else { &partial };
    let bytes: u64 = manifest.files.iter().map(|f| f.copy).sum();
    let value = json!({
        "backup": at.display().to_string(),
        "files": manifest.files.len(),
        "bytes": bytes,
        "durable_sequence": manifest.durable_seq,
        "snapshot_sequence": manifest.snapshot_seq,
        "last_sequence": audit.last_sequence,
        "records": audit.records,
        "verified": verified,
        "problems": audit.problems,
    });
    let mut text = format!(
        "backed up {} file(s), {bytes} bytes, to {}: the ledger as of sequence {} (snapshot at {}); audit: {}",
        manifest.files.len(),
        at.display(),
        manifest.durable_seq,
        manifest.snapshot_seq,
        if verified { "clean" } else { "ERRORS FOUND" },
    );
    if !complete {
        text.push_str(&format!(
            "\nerror: the copy ends at sequence {}, not {}",
            audit.last_sequence, manifest.durable_seq
        ));
    }
    for p in &audit.problems {
        text.push_str(&format!("\nerror: {p}"));
    }
    Ok(Report {
        value,
        text,
        verdict: if verified {
            Verdict::Ok
        } else {
            Verdict::ErrorsFound
        },
    })
}

/// The directory the copy is fetched into, inside DEST: `DEST/.partial`.
/// DEST must not exist (it is created, 0700) or be an empty directory (it is
/// made 0700); fetching inside it keeps the copy on DEST's filesystem (an
/// empty mount point works) and the final moves are renames within it.
/// Creating `.partial` is exclusive: two backups never share it.
fn prepare(dest: &Path) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let usage = |m: String| Failure::usage(ErrorCode::InvalidCommand, m);
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(usage(format!(
                    "{} is not empty: a backup never overwrites; name a new or empty directory",
                    dest.display()
                )));
            }
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| usage(format!("making {} private: {e}", dest.display())))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tally_wal::durable::create_private_dir(dest)
                .map_err(|e| usage(format!("creating {}: {e}", dest.display())))?;
        }
        Err(e) => return Err(usage(format!("{}: {e}", dest.display()))),
    }
    let partial = dest.join(PARTIAL);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&partial)
        .map_err(|e| usage(format!("creating {}: {e}", partial.display())))?;
    Ok(partial)
}

/// Where a copy is fetched inside DEST until it has been audited.
const PARTIAL: &str = ".partial";

/// Moves the audited copy from `partial` into `dest`, then removes
/// `partial`. Segments go first, the highest first, then the other files,
/// the snapshot last: a move interrupted half way leaves a log that starts
/// after segment 0 with no snapshot to cover it, which recovery refuses
/// (`segment_missing`), or the whole log; never a shorter ledger.
fn move_up(partial: &Path, dest: &Path, m: &BackupManifest) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let cold = m.files.iter().any(|f| f.name.starts_with("cold/"));
    if cold {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dest.join("cold"))?;
    }
    for name in move_order(m.files.iter().map(|f| f.name.as_str()).collect()) {
        std::fs::rename(partial.join(name), dest.join(name))?;
    }
    if cold {
        tally_wal::segment::sync_dir(&dest.join("cold"))?;
        std::fs::remove_dir(partial.join("cold"))?;
    }
    std::fs::remove_dir(partial)?;
    tally_wal::segment::sync_dir(dest)
}

/// Segments, the highest first; then other files; snapshots last.
fn move_order(mut names: Vec<&str>) -> Vec<&str> {
    let rank = |n: &str| {
        if tally_wal::format::segment_index(n).is_some() {
            0
        } else if n.starts_with("snapshot-") {
            2
        } else {
            1
        }
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| b.cmp(a)));
    names
}

/// A name the server gave: a plain file name, or one inside the cold
/// tier's directory (`cold/NAME`); never any other path.
fn safe_name(name: &str) -> bool {
    match name.strip_prefix("cold/") {
        Some(rest) => plain_name(rest),
        None => plain_name(name),
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

async fn fetch_all(client: &Client, m: &BackupManifest, dest: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    for (k, f) in m.files.iter().enumerate() {
        if !safe_name(&f.name) || f.copy > f.size {
            return Err(Failure::refused(
                ErrorCode::MalformedRequest,
                format!(
                    "the server named a backup file {:?} ({} of {} bytes): refused",
                    f.name, f.copy, f.size
                ),
            ));
        }
        let path = dest.join(&f.name);
        if let Some(parent) = path.parent().filter(|p| *p != dest && !p.exists()) {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(parent)
                .map_err(|e| io_failure(parent, e))?;
        }
        fetch(client, m.backup, k as u32, f, &path).await?;
    }
    let cold = dest.join("cold");
    if cold.exists() {
        tally_wal::segment::sync_dir(&cold).map_err(|e| io_failure(&cold, e))?;
    }
    tally_wal::segment::sync_dir(dest).map_err(|e| io_failure(dest, e))
}

fn io_failure(path: &Path, e: std::io::Error) -> Failure {
    Failure::refused(
        ErrorCode::Unavailable,
        format!("writing {}: {e}", path.display()),
    )
}

/// One file: its planned bytes in chunks, then zeros to its size, synced.
async fn fetch(
    client: &Client,
    backup: u64,
    k: u32,
    f: &BackupFileInfo,
    path: &Path,
) -> Result<(), Failure> {
    let mut out = tally_wal::backup::create_private(path).map_err(|e| io_failure(path, e))?;
    let mut at = 0u64;
    while at < f.copy {
        let want = (f.copy - at).min(MAX_BACKUP_CHUNK_BYTES as u64) as u32;
        let chunk = client.backup_read(backup, k, at, want).await?;
        if chunk.is_empty() || chunk.len() > want as usize {
            return Err(Failure::refused(
                ErrorCode::Unavailable,
                format!(
                    "{}: the server sent {} bytes at offset {at} of {}",
                    f.name,
                    chunk.len(),
                    f.copy
                ),
            ));
        }
        out.write_all(&chunk).map_err(|e| io_failure(path, e))?;
        at += chunk.len() as u64;
    }
    tally_wal::backup::finish_file(&out, f.copy, f.size).map_err(|e| io_failure(path, e))
}

#[cfg(test)]
mod tests {
    use super::{move_order, safe_name};

    #[test]
    fn the_snapshot_moves_last_and_segment_zero_just_before_the_rest() {
        let names = vec![
            "segment-0000000000.wal",
            "snapshot-00000000000000000042.snap",
            "id-namespace",
            "segment-0000000002.wal",
            "segment-0000000001.wal",
        ];
        assert_eq!(
            move_order(names),
            [
                "segment-0000000002.wal",
                "segment-0000000001.wal",
                "segment-0000000000.wal",
                "id-namespace",
                "snapshot-00000000000000000042.snap",
            ]
        );
    }

    #[test]
    fn only_plain_file_names_are_written() {
        for ok in [
            "segment-0000000000.wal",
            "snapshot-00000000000000000042.snap",
            "id-namespace",
        ] {
            assert!(safe_name(ok), "{ok}");
        }
        assert!(safe_name(
            "cold/ids-00000000000000000000-00000000000000000042.run"
        ));
        assert!(safe_name("cold/MANIFEST"));
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/etc/passwd",
            "a/b",
            "a\0b",
            "é",
            "cold/",
            "cold/..",
            "cold/a/b",
            "cold//x",
        ] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
