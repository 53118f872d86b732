//! The directories on disk: create, remove, archive, list, and free space.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::{Result, io};
use crate::paths::{self, ARCHIVE_PREFIX};

/// Volume directories are writable by any pod user, as with other hostPath provisioners:
/// the pod's `fsGroup` is not applied to hostPath or NFS volumes.
const VOLUME_DIR_MODE: u32 = 0o777;

/// Creates `base/name` (idempotent: an existing directory is reused after a restart).
pub fn create(base: &Path, name: &str) -> Result<()> {
    let dir = paths::join_checked(base, name)?;
    std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(VOLUME_DIR_MODE))
        .map_err(io("set permissions on", &dir))
}

/// Creates `base/name` unless it exists (a directory kubelet or an earlier run made is left as
/// it is); says whether it created it.
pub fn ensure(base: &Path, name: &str) -> Result<bool> {
    let dir = paths::join_checked(base, name)?;
    if dir.is_dir() {
        return Ok(false);
    }
    create(base, name)?;
    Ok(true)
}

/// Removes `base/name` and everything in it; a missing directory is already removed.
pub fn remove(base: &Path, name: &str) -> Result<()> {
    let dir = paths::join_checked(base, name)?;
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove directory", &dir)(e)),
        _ => Ok(()),
    }
}

/// Renames `base/name` to `base/archived-name`; a missing directory is already archived.
pub fn archive(base: &Path, name: &str) -> Result<()> {
    let dir = paths::join_checked(base, name)?;
    let to = paths::join_checked(base, &format!("{ARCHIVE_PREFIX}{name}"))?;
    match std::fs::rename(&dir, &to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("archive directory", &dir)(e)),
        _ => Ok(()),
    }
}

/// What `idle` found, or `remove_if_idle` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    Removed,
    /// Empty and unchanged for `min_age`.
    Empty,
    /// Holds data: kept.
    NotEmpty,
    /// Changed less than `min_age` ago: perhaps another instance is about to use it.
    Recent,
}

/// Removes `base/name` only when it is an empty directory unchanged for `min_age`.
pub fn remove_if_idle(base: &Path, name: &str, min_age: Duration) -> Result<Idle> {
    let found = idle(base, name, min_age)?;
    if found != Idle::Empty {
        return Ok(found);
    }
    let dir = paths::join_checked(base, name)?;
    std::fs::remove_dir(&dir).map_err(io("remove directory", &dir))?;
    Ok(Idle::Removed)
}

/// Whether `base/name` is an empty directory unchanged for `min_age`.
pub fn idle(base: &Path, name: &str, min_age: Duration) -> Result<Idle> {
    let dir = paths::join_checked(base, name)?;
    let modified = std::fs::metadata(&dir)
        .and_then(|m| m.modified())
        .map_err(io("read directory", &dir))?;
    if SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default()
        < min_age
    {
        return Ok(Idle::Recent);
    }
    let empty = std::fs::read_dir(&dir)
        .map_err(io("read directory", &dir))?
        .next()
        .is_none();
    Ok(if empty { Idle::Empty } else { Idle::NotEmpty })
}

/// Names of the directories directly under `base` (none when `base` does not exist yet).
pub fn list(base: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io("list directory", base)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("list directory", base))?;
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Bytes available to unprivileged users on the filesystem holding `base`.
pub fn free_bytes(base: &Path) -> Result<u64> {
    std::fs::create_dir_all(base).map_err(io("create directory", base))?;
    let st = rustix::fs::statvfs(base).map_err(|e| io("read free space of", base)(e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_reuses_and_removes_volume_directories() {
        let base = tempfile::tempdir().unwrap();
        create(base.path(), "pvc-1_ns_c").unwrap();
        std::fs::write(base.path().join("pvc-1_ns_c/data"), b"x").unwrap();
        create(base.path(), "pvc-1_ns_c").unwrap();
        assert!(
            base.path().join("pvc-1_ns_c/data").exists(),
            "reuse keeps data"
        );
        let mode = std::fs::metadata(base.path().join("pvc-1_ns_c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);
        assert_eq!(list(base.path()).unwrap(), vec!["pvc-1_ns_c".to_owned()]);
        remove(base.path(), "pvc-1_ns_c").unwrap();
        remove(base.path(), "pvc-1_ns_c").unwrap();
        assert!(list(base.path()).unwrap().is_empty());
    }

    #[test]
    fn archives_instead_of_deleting() {
        let base = tempfile::tempdir().unwrap();
        create(base.path(), "pvc-1_ns_c").unwrap();
        archive(base.path(), "pvc-1_ns_c").unwrap();
        assert_eq!(
            list(base.path()).unwrap(),
            vec!["archived-pvc-1_ns_c".to_owned()]
        );
    }

    #[test]
    fn removes_only_empty_directories_left_alone_for_a_while() {
        let base = tempfile::tempdir().unwrap();
        create(base.path(), "a_ns_c").unwrap();
        create(base.path(), "b_ns_c").unwrap();
        std::fs::write(base.path().join("b_ns_c/data"), b"x").unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            remove_if_idle(base.path(), "a_ns_c", minute).unwrap(),
            Idle::Recent
        );
        age(&base.path().join("a_ns_c"), 2 * minute);
        age(&base.path().join("b_ns_c"), 2 * minute);
        assert_eq!(
            remove_if_idle(base.path(), "a_ns_c", minute).unwrap(),
            Idle::Removed
        );
        assert_eq!(
            remove_if_idle(base.path(), "b_ns_c", minute).unwrap(),
            Idle::NotEmpty
        );
        assert_eq!(list(base.path()).unwrap(), vec!["b_ns_c".to_owned()]);
    }

    fn age(dir: &Path, by: Duration) {
        let f = std::fs::File::open(dir).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn refuses_to_touch_paths_outside_the_base() {
        let base = tempfile::tempdir().unwrap();
        assert!(remove(base.path(), "..").is_err());
        assert!(create(base.path(), "../escape").is_err());
        assert!(!base.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn reports_free_space_of_the_base_filesystem() {
        let base = tempfile::tempdir().unwrap();
        assert!(free_bytes(base.path()).unwrap() > 0);
    }
}
