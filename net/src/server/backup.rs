//! Online backup (`tally backup DEST`): `Backup` takes a snapshot and plans
//! a copy consistent at the durable sequence (`tally_wal::backup`), held
//! here under an id; `BackupRead` serves the planned bytes of one file in
//! chunks. Nothing pauses: the planned bytes are durable and never change.
//! Writers only (a backup holds every account and entry).

use super::*;
use tally_wal::backup::BackupFile;

/// The backups in progress.
#[derive(Default)]
pub(super) struct Backups {
    next: u64,
    open: Vec<Open>,
}

struct Open {
    id: u64,
    files: Vec<BackupFile>,
    used: Instant,
}

impl Backups {
    fn forget_idle(&mut self, now: Instant) {
        self.open
            .retain(|b| now.duration_since(b.used) < BACKUP_IDLE_TIMEOUT);
    }

    /// `busy` when `MAX_BACKUPS_AT_ONCE` backups are open (idle ones
    /// forgotten first).
    fn room(&mut self, now: Instant) -> Result<(), WireError> {
        self.forget_idle(now);
        if self.open.len() >= MAX_BACKUPS_AT_ONCE {
            return Err(WireError::new(
                ErrorCode::Busy,
                format!("{MAX_BACKUPS_AT_ONCE} backups are in progress; retry when one is done"),
            ));
        }
        Ok(())
    }

    /// The file `file` of backup `id`, marked used now.
    fn file(&mut self, id: u64, file: u32, now: Instant) -> Result<BackupFile, WireError> {
        self.forget_idle(now);
        let b = self
            .open
            .iter_mut()
            .find(|b| b.id == id)
            .ok_or_else(|| WireError::new(ErrorCode::BackupNotFound, format!("backup {id}")))?;
        b.used = now;
        let n = b.files.len();
        b.files.get(file as usize).cloned().ok_or_else(|| {
            WireError::new(
                ErrorCode::MalformedRequest,
                format!("backup {id} has {n} files; there is no file {file}"),
            )
        })
    }
}

fn writers_only(role: Role) -> Result<(), WireError> {
    if role == Role::ReadOnly {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            "a backup copies the whole ledger: writers only",
        ));
    }
    Ok(())
}

/// `Backup`: snapshot, plan, remember.
pub(super) async fn on_backup(state: &Arc<State>, role: Role) -> Result<Response, Response> {
    writers_only(role).map_err(Response::Error)?;
    state
        .backups
        .lock()
        .room(Instant::now())
        .map_err(Response::Error)?;
    let planned = with_durable(state, |d| {
        let mut plan = d.backup_plan()?;
        let namespace = d.dir().join(NAMESPACE_FILE);
        if namespace.exists() {
            plan.files
                .push(BackupFile::open(&tally_wal::storage::RealDisk, &namespace)?);
        }
        Ok::<_, tally_wal::Problem>(plan)
    })
    .await?
    .map_err(|p| {
        err(
            ErrorCode::Unavailable,
            format!("the backup could not be planned: {p}"),
        )
    })?;
    let manifest_files = planned
        .files
        .iter()
        .map(|f| BackupFileInfo {
            name: f.name.clone(),
            size: f.size,
            copy: f.copy,
        })
        .collect();
    let mut b = state.backups.lock();
    // Checked again: another backup may have been planned meanwhile.
    b.room(Instant::now()).map_err(Response::Error)?;
    b.next += 1;
    let id = b.next;
    b.open.push(Open {
        id,
        files: planned.files,
        used: Instant::now(),
    });
    Ok(Response::Backup(BackupManifest {
        backup: id,
        durable_seq: planned.durable_seq,
        snapshot_seq: planned.snapshot_seq.unwrap_or(0),
        files: manifest_files,
    }))
}

/// `BackupRead`: up to `len` planned bytes of one file from `offset`.
pub(super) async fn on_backup_read(
    state: &Arc<State>,
    role: Role,
    backup: u64,
    file: u32,
    offset: u64,
    len: u32,
) -> Result<Response, Response> {
    writers_only(role).map_err(Response::Error)?;
    let f = state
        .backups
        .lock()
        .file(backup, file, Instant::now())
        .map_err(Response::Error)?;
    let n = (len as usize)
        .min(MAX_BACKUP_CHUNK_BYTES)
        .min(f.copy.saturating_sub(offset) as usize);
    if n == 0 {
        return Ok(Response::BackupChunk(Vec::new()));
    }
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; n];
        // The snapshot through the file opened when the backup was
        // planned: it reads the same bytes even if it was pruned since.
        f.read_exact_at(&tally_wal::storage::RealDisk, &mut buf, offset)
            .map(|()| buf)
            .map_err(|e| format!("reading {} at offset {offset}: {e}", f.name))
    })
    .await
    .map_err(|e| err(ErrorCode::Unavailable, e.to_string()))?;
    read.map(Response::BackupChunk)
        .map_err(|e| err(ErrorCode::Unavailable, e))
}

/// `BackupEnd`: forgets the plan (an unknown id is `backup_not_found`).
pub(super) fn on_backup_end(state: &Arc<State>, role: Role, backup: u64) -> Response {
    if let Err(e) = writers_only(role) {
        return Response::Error(e);
    }
    let mut b = state.backups.lock();
    let before = b.open.len();
    b.open.retain(|o| o.id != backup);
    if b.open.len() == before {
        return err(ErrorCode::BackupNotFound, format!("backup {backup}"));
    }
    Response::BackupChunk(Vec::new())
}
