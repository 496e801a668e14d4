//! Files only this user may read: the data directory (0700) and private keys
//! (0600), created with their mode, never created open and then restricted.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory and of every directory the server creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of private keys.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its missing parents) with mode 0700. An existing
/// directory is left as it is; [`loose_mode`] says whether others can read it.
pub fn create_dir(dir: &Path) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// The mode of `path` if group or others have any access to it.
pub fn loose_mode(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Writes `path` whole with `mode`: the bytes go to a new temporary file
/// created with that mode, which is synced and renamed over `path`, and the
/// directory synced.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp-new");
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself durable: the directory's entry.
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
            _ => Ok(()),
        }
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_set_at_creation() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(loose_mode(&d), None);
        let k = d.join("k.key");
        write_new(&k, b"secret", 0o600).unwrap();
        assert_eq!(mode(&k), 0o600);
        assert_eq!(std::fs::read(&k).unwrap(), b"secret");
        write_new(&k, b"again", 0o600).unwrap();
        assert_eq!(std::fs::read(&k).unwrap(), b"again");
        assert_eq!(loose_mode(t.path()).is_some(), mode(t.path()) & 0o077 != 0);
    }
}
