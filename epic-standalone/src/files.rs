//! How standalone mode writes its files: atomically (temporary file, fsync,
//! rename, directory fsync), secrets private from their first byte (0600
//! in a 0700 directory) and refused on read if group or others may read them.

use std::io::Write;
use std::path::Path;

use crate::config::{StandaloneError, file_error};

/// Refuses a secret file (`what`) whose mode lets group or others in.
pub(crate) fn check_private(what: &'static str, path: &Path) -> Result<(), StandaloneError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(file_error(what, path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(StandaloneError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Reads the secret file `path` (`None` if it does not exist), refusing it
/// if group or others may read it.
pub(crate) fn read_private(
    what: &'static str,
    path: &Path,
) -> Result<Option<String>, StandaloneError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_private(what, path)?;
            Ok(Some(text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error(what, path)(e)),
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub(crate) fn write_atomically(
    what: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StandaloneError> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(file_error(what, &tmp))?;
    file.write_all(bytes).map_err(file_error(what, &tmp))?;
    file.sync_all().map_err(file_error(what, &tmp))?;
    std::fs::rename(&tmp, path).map_err(file_error(what, path))?;
    sync_parent(what, path)
}

/// Writes the secret `bytes` to `path` atomically, the file 0600 from its
/// creation and its directory (created if missing) 0700.
pub(crate) fn write_private(
    what: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StandaloneError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(file_error(what, dir))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_error(what, &tmp))?;
    file.write_all(bytes).map_err(file_error(what, &tmp))?;
    file.sync_all().map_err(file_error(what, &tmp))?;
    std::fs::rename(&tmp, path).map_err(file_error(what, path))?;
    sync_parent(what, path)
}

/// Syncs the directory of `path`, so a rename into it survives a crash.
pub(crate) fn sync_parent(what: &'static str, path: &Path) -> Result<(), StandaloneError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error(what, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("epic-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn secrets_are_written_private_and_refused_when_others_may_read_them() {
        let d = dir("private");
        let path = d.join("sub").join("ca.key");
        write_private("test key", &path, b"secret").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(
            read_private("test key", &path).unwrap().as_deref(),
            Some("secret")
        );
        assert_eq!(read_private("test key", &d.join("none")).unwrap(), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private("test key", &path).unwrap_err();
        assert!(
            matches!(err, StandaloneError::KeyPermissions { mode: 0o644, .. }),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
