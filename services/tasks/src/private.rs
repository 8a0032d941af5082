//! Files and directories only root may read. A task's state holds what its container is given
//! (config.json carries the environment, often secrets), its output and its root file system:
//! directories are made 0700 and files 0600 as they are created, never widened and narrowed
//! after (no window), and whatever the umask (it can only take bits away).

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of the directories below a service's state roots.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files in them.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a parent of a state root that this service creates: others may pass through (to
/// the services' sockets beside it) but not list it.
pub const PARENT_MODE: u32 = 0o711;

/// Creates `path` and any missing parents below it, each 0700.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Writes `data` to `path` (created 0600, or truncated).
pub fn write(path: &Path, data: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.write_all(data.as_ref())
}

/// Takes from `path`'s mode every permission bit `mode` does not have (a directory an older
/// version made wider than today's). Never widens it.
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    let now = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if now & !mode != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(now & mode))?;
    }
    Ok(())
}

/// Creates a service's state root `path` 0700 (its missing parents 0711, so the sockets the
/// services keep beside it stay reachable) and narrows an existing one to 0700 (an older
/// version made them 0711 and 0755), unless it is a shared directory (sticky or writable by
/// all, as /tmp): that one is left as it is, with a warning, and what strata creates in it is
/// private all the same.
pub fn create_root(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(PARENT_MODE)
            .create(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(e),
    }
    let now = std::fs::metadata(path)?.permissions().mode();
    if now & 0o1002 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", now & 0o7777), "a shared directory is used as a state root: it is left as it is");
        return Ok(());
    }
    restrict(path, DIR_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").mode() & 0o7777
    }

    #[test]
    fn roots_dirs_and_files_are_private_whatever_the_umask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // SAFETY: umask only sets this process's file creation mask (restored below); the
        // other tests of this binary create nothing whose mode they check.
        let old = unsafe { libc::umask(0) };
        let root = tmp.path().join("run/strata/tasks");
        create_root(&root).expect("root");
        let task = root.join("ns/id/bundle/rootfs");
        create_dir_all(&task).expect("dirs");
        write(&root.join("ns/id/bundle/config.json"), "{}").expect("file");
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        assert_eq!(mode(&tmp.path().join("run")), PARENT_MODE);
        assert_eq!(mode(&tmp.path().join("run/strata")), PARENT_MODE);
        assert_eq!(mode(&root), DIR_MODE);
        for d in ["ns", "ns/id", "ns/id/bundle", "ns/id/bundle/rootfs"] {
            assert_eq!(mode(&root.join(d)), DIR_MODE, "{d}");
        }
        assert_eq!(mode(&root.join("ns/id/bundle/config.json")), FILE_MODE);
        // An older, wider root is narrowed.
        std::fs::set_permissions(&root, Permissions::from_mode(0o755)).expect("chmod");
        create_root(&root).expect("again");
        assert_eq!(mode(&root), DIR_MODE);
        // A shared one (as /tmp) is left alone.
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, Permissions::from_mode(0o1777)).expect("chmod");
        create_root(&shared).expect("shared");
        assert_eq!(mode(&shared), 0o1777);
    }
}
