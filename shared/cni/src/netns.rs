//! Persistent network namespaces: a new namespace bind-mounted on a file, so it lives until
//! the file is unmounted, whatever becomes of the processes in it. The runtime joins it by path;
//! CNI's DEL finds it after the container died; later, one pod's containers can share it.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Makes a new network namespace and binds it on `path` (created, with its parent
/// directories). An existing namespace there is an AlreadyExists I/O error.
pub fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("creating the namespace file", path, e))?;
    let target = path.to_owned();
    // The namespace is made by a thread of its own, which unshares only itself and ends:
    // no other thread of the caller changes namespace.
    let made = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::io("unsharing the network namespace for", &target, e.into()))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::io("binding the network namespace on", &target, e.into()))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(Error::io(
            "making the network namespace for",
            path,
            std::io::Error::other("the thread making it panicked"),
        ))
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Whether `path` has a network namespace bound on it.
pub fn exists(path: &Path) -> bool {
    // A bound namespace file is on nsfs; the bare file left by a crash is not.
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Unbinds and removes the namespace at `path`; nothing there is fine (idempotent).
pub fn remove(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::io("unmounting", path, e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path, e)),
    }
}
