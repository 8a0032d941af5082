//! Mounts [`Mount`] records the way containerd's mounter does, on Linux.
//!
//! Overlay chains: with absolute paths, the `lowerdir` option of a chain of about 45 snapshots
//! passes the kernel's limit for mount data (one page). Like containerd, which shortens the
//! paths, strata shortens them when needed: each lower directory is opened (`O_PATH`) and named
//! `/proc/self/fd/<n>`, which the kernel resolves while the mount is made; the descriptors are
//! closed right after. A 128-layer chain then needs about 2 KiB of options.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod inroot;

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use strata_core::mount::Mount;

/// Why mounting or unmounting failed. An unsupported option is the caller's error (invalid
/// argument); the rest are internal.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `mount(2)` failed.
    #[error("mount {kind} {device} on {target}: {errno}")]
    Mount {
        /// The record's file-system type (`overlay`, `bind`, …).
        kind: String,
        /// The record's source.
        device: String,
        /// Where it was to be mounted.
        target: PathBuf,
        /// What `mount(2)` failed with.
        errno: nix::Error,
    },
    /// `umount2(2)` failed, also when detaching a busy mount.
    #[error("unmount {target}: {errno}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// What `umount2(2)` failed with.
        errno: nix::Error,
    },
    /// An overlay lower directory could not be opened to shorten its path.
    #[error("opening lower directory {path}: {errno}")]
    Lower {
        /// The lower directory, as the `lowerdir` option named it.
        path: String,
        /// What `open(2)` failed with.
        errno: nix::Error,
    },
    /// The temporary directory of a [`TempMount`] could not be created.
    #[error("creating a temporary mount point: {0}")]
    TempDir(std::io::Error),
    /// File-system options on a bind mount, which takes none.
    #[error("unsupported mount option {option:?} for {kind} mount of {device}")]
    Option {
        /// The options left over, comma-separated.
        option: String,
        /// The record's file-system type.
        kind: String,
        /// The record's source.
        device: String,
    },
}

impl From<MountError> for strata_core::Error {
    fn from(e: MountError) -> Self {
        match e {
            MountError::Option { .. } => strata_core::Error::invalid_argument(e.to_string()),
            other => strata_core::Error::internal(other.to_string()),
        }
    }
}

/// Room kept below the page size for the rest of the options.
const DATA_LIMIT: usize = 4096 - 512;

/// Splits options into mount flags, propagation flags and the file-system data string.
fn parse_options(m: &Mount) -> (MsFlags, MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "async" => flags &= !MsFlags::MS_SYNCHRONOUS,
            "remount" => flags |= MsFlags::MS_REMOUNT,
            "private" => propagation |= MsFlags::MS_PRIVATE,
            "rprivate" => propagation |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "slave" => propagation |= MsFlags::MS_SLAVE,
            "rslave" => propagation |= MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "shared" => propagation |= MsFlags::MS_SHARED,
            "rshared" => propagation |= MsFlags::MS_SHARED | MsFlags::MS_REC,
            "unbindable" => propagation |= MsFlags::MS_UNBINDABLE,
            "runbindable" => propagation |= MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            "defaults" => {}
            other => data.push(other.to_owned()),
        }
    }
    if m.kind == "bind" || m.kind == "rbind" {
        flags |= MsFlags::MS_BIND;
        if m.kind == "rbind" {
            flags |= MsFlags::MS_REC;
        }
    }
    (flags, propagation, data)
}

/// Replaces long `lowerdir=` paths by `/proc/self/fd/<n>` names; the returned descriptors must
/// stay open until the mount call returns.
fn shorten_lowerdirs(data: &mut [String]) -> Result<Vec<OwnedFd>, MountError> {
    let total: usize = data.iter().map(|d| d.len() + 1).sum();
    if total <= DATA_LIMIT {
        return Ok(Vec::new());
    }
    let mut fds = Vec::new();
    for opt in data.iter_mut() {
        let Some(list) = opt.strip_prefix("lowerdir=") else {
            continue;
        };
        let mut short = Vec::new();
        for path in list.split(':') {
            let fd = open(
                path,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|errno| MountError::Lower {
                path: path.to_owned(),
                errno,
            })?;
            short.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            fds.push(fd);
        }
        *opt = format!("lowerdir={}", short.join(":"));
    }
    Ok(fds)
}

/// Mounts one record on `target`.
pub fn mount(m: &Mount, target: &Path) -> Result<(), MountError> {
    let (flags, propagation, mut data) = parse_options(m);
    let target_full = if m.target.is_empty() {
        target.to_owned()
    } else {
        target.join(m.target.trim_start_matches('/'))
    };
    let fail = |errno| MountError::Mount {
        kind: m.kind.clone(),
        device: m.source.clone(),
        target: target_full.clone(),
        errno,
    };
    let _fds = if m.kind == "overlay" {
        shorten_lowerdirs(&mut data)?
    } else {
        Vec::new()
    };
    let data = data.join(",");
    let kind = if flags.contains(MsFlags::MS_BIND) {
        None
    } else {
        Some(m.kind.as_str())
    };
    let data_arg = (!data.is_empty()).then_some(data.as_str());
    if flags.contains(MsFlags::MS_BIND) && !data.is_empty() {
        return Err(MountError::Option {
            option: data,
            kind: m.kind.clone(),
            device: m.source.clone(),
        });
    }
    nix::mount::mount(Some(m.source.as_str()), &target_full, kind, flags, data_arg)
        .map_err(fail)?;
    // A bind mount ignores MS_RDONLY and friends until remounted.
    let remount_bits =
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if flags.contains(MsFlags::MS_BIND) && flags.intersects(remount_bits) {
        nix::mount::mount(
            None::<&str>,
            &target_full,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | (flags & remount_bits),
            None::<&str>,
        )
        .map_err(fail)?;
    }
    if !propagation.is_empty() {
        nix::mount::mount(
            None::<&str>,
            &target_full,
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// Mounts every record in order on `target`; on failure, what was mounted is undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount(m, target) {
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts `target` (lazily detaching if it is busy).
pub fn unmount(target: &Path) -> Result<(), MountError> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::Error::EBUSY) => {
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|errno| MountError::Unmount {
                target: target.to_owned(),
                errno,
            })
        }
        Err(errno) => Err(MountError::Unmount {
            target: target.to_owned(),
            errno,
        }),
    }
}

/// Mounts records on a fresh temporary directory, unmounted and removed when dropped.
pub struct TempMount {
    dir: Option<tempfile::TempDir>,
    layers: usize,
}

impl TempMount {
    /// Mounts `mounts` on a new directory under `parent`.
    pub fn new(mounts: &[Mount], parent: &Path) -> Result<Self, MountError> {
        let dir = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(parent)
            .map_err(MountError::TempDir)?;
        mount_all(mounts, dir.path())?;
        Ok(Self {
            dir: Some(dir),
            layers: mounts.len(),
        })
    }

    /// The directory the records are mounted on.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            for _ in 0..self.layers {
                if let Err(e) = unmount(dir.path()) {
                    tracing::warn!(error = %e, "leaving a temporary mount behind");
                    // Never remove a directory that may still show a mounted tree.
                    let _ = dir.keep();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn long_overlay_chains_mount() {
        let tmp = tempfile::tempdir().unwrap();
        // Long absolute paths, as a snapshotter under /var/lib makes them.
        let base = tmp
            .path()
            .join("a-rather-long-directory-name-for-snapshots/snapshots");
        let mut lowers = Vec::new();
        for i in 0..128 {
            let fs = base.join(format!("{i}")).join("fs");
            std::fs::create_dir_all(&fs).unwrap();
            std::fs::write(fs.join(format!("file-{i}")), i.to_string()).unwrap();
            lowers.push(fs.display().to_string());
        }
        lowers.reverse(); // topmost first
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![format!("lowerdir={}", lowers.join(":"))],
        };
        assert!(
            m.options[0].len() > 4096,
            "the chain must pass the page limit"
        );
        let mnt = TempMount::new(&[m], tmp.path()).unwrap();
        for i in 0..128 {
            let got = std::fs::read_to_string(mnt.path().join(format!("file-{i}"))).unwrap();
            assert_eq!(got, i.to_string());
        }
    }

    #[test]
    fn read_only_bind() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), "x").unwrap();
        let m = Mount {
            kind: "bind".into(),
            source: src.display().to_string(),
            target: String::new(),
            options: vec!["ro".into(), "rbind".into()],
        };
        let mnt = TempMount::new(&[m], tmp.path()).unwrap();
        assert_eq!(std::fs::read_to_string(mnt.path().join("f")).unwrap(), "x");
        let err = std::fs::write(mnt.path().join("g"), "y").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_erofs()));
    }

    fn libc_erofs() -> i32 {
        nix::Error::EROFS as i32
    }
}
