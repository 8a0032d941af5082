//! Root file system setup, run by the container's init inside its new mount namespace:
//! mounts in config order, device nodes, masked paths, `pivot_root`, read-only paths.
//!
//! Nothing below the root is touched by path string: every mount target, device node, link
//! and masked or read-only path is resolved inside the root by file descriptor (see
//! [`inroot`]), so an image's symlinks cannot lead the runtime onto the host.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev};
use nix::sys::statfs::{DEVPTS_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC};
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};

use crate::error::{Error, Result};
use crate::inroot::{self, Root};

type NoStr = Option<&'static str>;
const NONE: NoStr = None;

/// Mount options split into flags, propagation flags and file-system data.
struct Options {
    flags: MsFlags,
    propagation: MsFlags,
    data: String,
}

fn parse_options(opts: &[String]) -> Options {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in opts {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                propagation |= propagation_flag(o).unwrap_or(MsFlags::empty());
                continue;
            }
            _ => {
                data.push(o.as_str());
                continue;
            }
        };
        flags |= set;
        flags &= !clear;
    }
    Options {
        flags,
        propagation,
        data: data.join(","),
    }
}

fn propagation_flag(name: &str) -> Option<MsFlags> {
    let rec = MsFlags::MS_REC;
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// `mount(2)` on trusted host paths only (`/` and the bundle's root before anything of the
/// image is looked at).
fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        mount_error(
            source,
            &target.display().to_string(),
            fstype,
            flags,
            data,
            e,
        )
    })
}

fn mount_error(
    source: Option<&Path>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    e: Errno,
) -> Error {
    Error::sys(
        "mount",
        format!(
            "{} on {target} (type {}, flags {flags:?}, data {:?})",
            source.map_or("none".into(), |s| s.display().to_string()),
            fstype.unwrap_or("none"),
            data.unwrap_or("")
        ),
        e,
    )
}

/// `mount(2)` onto the file `target` refers to (through `/proc/self/fd/N` of the host's
/// procfs, checked by [`inroot::host_proc`]); `shown` names the target in errors.
fn mount_fd(
    source: Option<&Path>,
    target: BorrowedFd<'_>,
    shown: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, &inroot::fd_path(target), fstype, flags, data)
        .map_err(|e| mount_error(source, shown, fstype, flags, data, e))
}

/// Sets up the root file system at `rootfs` (a host path) and pivots into it. Runs in the
/// container's init, in its own mount namespace. The current directory ends up at the new `/`.
///
/// Every path below `rootfs` is resolved inside it by file descriptor ([`Root`]): a symlink of
/// the image naming a host path can never lead a mount, a device node or a link out of it.
pub(crate) fn setup(spec: &Spec, rootfs: &Path, cgroup_paths: &[PathBuf]) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(p) => propagation_flag(p)
            .ok_or_else(|| Error::InvalidSpec(format!("rootfsPropagation {p:?}")))?,
    };
    // Keep our mounts from propagating back to the host.
    do_mount(None, Path::new("/"), NONE, propagation, NONE)?;
    do_mount(
        Some(rootfs),
        rootfs,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )?;
    inroot::host_proc()?;
    let root = Root::open(rootfs)?;

    let mut dev_is_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind") {
            dev_is_tmpfs = true;
        }
        mount_one(&root, m, cgroup_paths)?;
    }
    if dev_is_tmpfs {
        create_default_devices(&root)?;
    }
    for d in linux.devices().iter().flatten() {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
        let (Ok(major), Ok(minor)) = (u64::try_from(d.major()), u64::try_from(d.minor())) else {
            return Err(Error::InvalidSpec(format!(
                "device {}: negative major/minor",
                d.path().display()
            )));
        };
        root.make_node(d.path(), kind, mode, makedev(major, minor))?;
        if d.uid().is_some() || d.gid().is_some() {
            root.chown(d.path(), d.uid(), d.gid())?;
        }
    }
    dev_symlinks(&root)?;
    // Masked paths now, while the host's /dev/null is still in reach to be bound from.
    mask_paths(&root, linux.masked_paths().as_deref().unwrap_or(&[]))?;
    pivot(&root)?;
    Ok(())
}

/// null, zero, full, random, urandom and tty in a tmpfs `/dev`; bound from the host's nodes
/// where mknod is refused.
fn create_default_devices(root: &Root) -> Result<()> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = Path::new("/dev").join(name);
        let mode = Mode::from_bits_truncate(0o666);
        match root.make_node(&path, SFlag::S_IFCHR, mode, makedev(major, minor)) {
            Ok(()) => {}
            Err(Error::Sys {
                op: "mknod",
                source: Errno::EPERM,
                ..
            }) => {
                let host = Path::new("/dev").join(name);
                let node = host_device(&host, major, minor)?;
                let target = root.create_file(&path)?;
                let tree = inroot::clone_tree(node.as_fd(), false)
                    .map_err(|e| Error::sys("clone mount", host.display().to_string(), e))?;
                inroot::move_mount(tree.as_fd(), target.as_fd())
                    .map_err(|e| Error::sys("mount", root.show(&path), e))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens the host's device node `path`, verified to be the character device `major:minor`
/// (not a link to one, not anything else).
fn host_device(path: &Path, major: u64, minor: u64) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys("open", path.display().to_string(), e))?;
    let st = inroot::stat(fd.as_fd(), path)?;
    if !inroot::is(&st, SFlag::S_IFCHR) || st.st_rdev != makedev(major, minor) {
        return Err(Error::sys(
            "verify",
            format!(
                "{} is not the character device {major}:{minor}",
                path.display()
            ),
            Errno::ENODEV,
        ));
    }
    Ok(fd)
}

/// `/dev/fd`, `/dev/std{in,out,err}` and `/dev/ptmx` links in the `/dev` the container sees.
fn dev_symlinks(root: &Root) -> Result<()> {
    let dev_path = Path::new("/dev");
    let dev = match root.resolve(dev_path, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
        Err(e) => return Err(Error::sys("resolve", root.show(dev_path), e)),
    };
    let has_ptmx = root
        .resolve(Path::new("/dev/pts/ptmx"), OFlag::O_PATH)
        .is_ok();
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let name = OsStr::new(link);
        let shown = || root.show(&dev_path.join(link));
        if link == "ptmx" && !has_ptmx {
            continue;
        }
        if inroot::has_entry(dev.as_fd(), name) {
            if link != "ptmx" {
                continue;
            }
            inroot::unlink_in(dev.as_fd(), name).map_err(|e| Error::sys("remove", shown(), e))?;
        }
        inroot::symlink_in(dev.as_fd(), name, target)
            .map_err(|e| Error::sys("symlink", shown(), e))?;
    }
    Ok(())
}

fn mount_one(root: &Root, m: &Mount, cgroup_paths: &[PathBuf]) -> Result<()> {
    let dest = m.destination();
    let shown = root.show(dest);
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());

    if typ == "bind" || opts.flags.contains(MsFlags::MS_BIND) {
        let source = m.source().as_ref().ok_or_else(|| {
            Error::InvalidSpec(format!("bind mount {}: no source", dest.display()))
        })?;
        let md = fs::metadata(source).map_err(|e| Error::io("stat bind source", source, e))?;
        let target = if md.is_dir() {
            root.mkdir_all(dest)?
        } else {
            root.create_file(dest)?
        };
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount_fd(Some(source), target.as_fd(), &shown, NONE, bind, NONE)?;
        let rest = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            // Resolved again: the descriptor now names the new mount, not what it covers.
            let target = root.open_path(dest)?;
            mount_fd(
                None,
                target.as_fd(),
                &shown,
                NONE,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                NONE,
            )?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(root, dest, &opts, cgroup_paths)?;
    } else {
        let mut target = root.mkdir_all(dest)?;
        if typ == "proc" || typ == "sysfs" {
            target = kernel_fs_target(root, dest, typ)?;
        }
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        match mount_fd(
            Some(&source),
            target.as_fd(),
            &shown,
            Some(typ),
            opts.flags,
            data,
        ) {
            Ok(()) => {}
            // sysfs cannot be mounted while sharing the host's network namespace: bind the
            // host's /sys instead, like runc.
            Err(Error::Sys {
                source: Errno::EPERM,
                ..
            }) if typ == "sysfs" => {
                mount_fd(
                    Some(Path::new("/sys")),
                    target.as_fd(),
                    &shown,
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    NONE,
                )?;
                let target = root.open_path(dest)?;
                mount_fd(
                    None,
                    target.as_fd(),
                    &shown,
                    NONE,
                    opts.flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    NONE,
                )?;
            }
            Err(e) => return Err(e),
        }
    }
    if !opts.propagation.is_empty() {
        let target = root.open_path(dest)?;
        mount_fd(None, target.as_fd(), &shown, NONE, opts.propagation, NONE)?;
    }
    Ok(())
}

/// The directory a `proc` or `sysfs` mount goes on: its last component must be an ordinary
/// directory, not a symlink (as runc requires), so the runtime's later writes under `/proc`
/// and the container's view of `/proc` and `/sys` are where the spec says.
fn kernel_fs_target(root: &Root, dest: &Path, typ: &str) -> Result<OwnedFd> {
    let (parent, name) = root.parent_of(dest)?;
    openat(
        parent.as_fd(),
        name.as_os_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::sys(
            "mount",
            format!(
                "{typ} on {}: the destination must be an ordinary directory",
                root.show(dest)
            ),
            e,
        )
    })
}

/// A `cgroup` mount: on a v2 host a cgroup2 mount; on v1 a tmpfs holding a bind mount of the
/// container's own directory in each controller hierarchy.
fn mount_cgroup(root: &Root, dest: &Path, opts: &Options, cgroup_paths: &[PathBuf]) -> Result<()> {
    let shown = root.show(dest);
    let target = root.mkdir_all(dest)?;
    let flags = opts.flags & !MsFlags::MS_RDONLY;
    if strata_cgroup::host_is_v2() {
        return mount_fd(
            Some(Path::new("cgroup2")),
            target.as_fd(),
            &shown,
            Some("cgroup2"),
            opts.flags,
            NONE,
        );
    }
    mount_fd(
        Some(Path::new("tmpfs")),
        target.as_fd(),
        &shown,
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )?;
    for (mountpoint, _) in strata_cgroup::v1_mounts()? {
        let Some(name) = mountpoint.file_name() else {
            continue;
        };
        let Some(source) = cgroup_paths.iter().find(|p| p.starts_with(&mountpoint)) else {
            continue;
        };
        let sub = dest.join(name);
        let sub_shown = root.show(&sub);
        let dir = root.mkdir_all(&sub)?;
        mount_fd(
            Some(source),
            dir.as_fd(),
            &sub_shown,
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )?;
        if opts.flags.contains(MsFlags::MS_RDONLY) {
            let dir = root.open_path(&sub)?;
            mount_fd(
                None,
                dir.as_fd(),
                &sub_shown,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                NONE,
            )?;
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let target = root.open_path(dest)?;
        mount_fd(
            None,
            target.as_fd(),
            &shown,
            NONE,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            Some("mode=755"),
        )?;
    }
    Ok(())
}

/// Opens the host's `/dev/null`, verified to be the null character device (1:3).
fn host_dev_null() -> Result<OwnedFd> {
    host_device(Path::new("/dev/null"), 1, 3)
}

/// Masks each path that exists in the container: a directory with an empty read-only tmpfs,
/// anything else with the host's verified `/dev/null` bound by descriptor (never the
/// container's `/dev/null`, which the image or a racing container may have replaced).
fn mask_paths(root: &Root, paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let null = host_dev_null()?;
    for p in paths {
        let path = Path::new(p);
        let target = match root.resolve(path, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
            Err(e) => return Err(Error::sys("resolve masked path", root.show(path), e)),
        };
        let st = inroot::stat(target.as_fd(), path)?;
        let mask = if inroot::is(&st, SFlag::S_IFDIR) {
            inroot::readonly_tmpfs()
        } else {
            inroot::clone_tree(null.as_fd(), false)
        }
        .map_err(|e| Error::sys("make mask", root.show(path), e))?;
        inroot::move_mount(mask.as_fd(), target.as_fd())
            .map_err(|e| Error::sys("mask", root.show(path), e))?;
    }
    Ok(())
}

/// `pivot_root` into `root` and detach the old root.
fn pivot(root: &Root) -> Result<()> {
    let shown = root.show(Path::new("/"));
    nix::unistd::fchdir(root.fd()).map_err(|e| Error::sys("chdir", shown.clone(), e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::sys("pivot_root", shown, e))?;
    // The old root now sits on top of "."; make it a slave so the unmount stays here.
    do_mount(
        None,
        Path::new("."),
        NONE,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        NONE,
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("unmount", "old root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir", "/", e))
}

/// After `pivot_root`: read-only paths, then the read-only root. Each read-only path is a
/// recursive bind clone of what it resolves to, made read-only before it is attached on the
/// same descriptor (the mount API: no path is looked up twice).
pub(crate) fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let root = Root::open(Path::new("/"))?;
    for p in linux.readonly_paths().iter().flatten() {
        let path = Path::new(p);
        let target = match root.resolve(path, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
            Err(e) => return Err(Error::sys("resolve read-only path", root.show(path), e)),
        };
        let tree = inroot::clone_tree(target.as_fd(), true)
            .map_err(|e| Error::sys("clone mount", root.show(path), e))?;
        let all = libc::MOUNT_ATTR_RDONLY
            | libc::MOUNT_ATTR_NOSUID
            | libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOEXEC;
        inroot::set_mount_attr(tree.as_fd(), true, all, 0)
            .or_else(|_| inroot::set_mount_attr(tree.as_fd(), true, libc::MOUNT_ATTR_RDONLY, 0))
            .map_err(|e| Error::sys("make read-only", root.show(path), e))?;
        inroot::move_mount(tree.as_fd(), target.as_fd())
            .map_err(|e| Error::sys("mount read-only", root.show(path), e))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        do_mount(
            None,
            Path::new("/"),
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            NONE,
        )?;
    }
    Ok(())
}

/// Binds the terminal `slave` (a pty of the container's devpts, checked) on `/dev/console`
/// of the container, after `pivot_root`. The console entry is resolved in its `/dev`
/// directory without following it: a symlink there is replaced by a file, and a target on
/// procfs or sysfs is refused, so the bind cannot land on anything but the console.
pub(crate) fn bind_console(slave: BorrowedFd<'_>) -> Result<()> {
    let console = Path::new("/dev/console");
    let st = inroot::stat(slave, Path::new("console pty"))?;
    if !inroot::is(&st, SFlag::S_IFCHR)
        || inroot::fs_type(slave, Path::new("console pty"))? != DEVPTS_SUPER_MAGIC
    {
        return Err(Error::sys(
            "verify",
            "console pty is not a devpts terminal",
            Errno::ENOTTY,
        ));
    }
    let root = Root::open(Path::new("/"))?;
    let (dev, name) = root.parent_of(console)?;
    let shown = root.show(console);
    let open = || {
        openat(
            dev.as_fd(),
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let existing = match open() {
        Ok(fd) => {
            let st = inroot::stat(fd.as_fd(), console)?;
            if inroot::is(&st, SFlag::S_IFREG) || inroot::is(&st, SFlag::S_IFCHR) {
                Some(fd)
            } else {
                inroot::unlink_in(dev.as_fd(), name.as_os_str())
                    .map_err(|e| Error::sys("remove", shown.clone(), e))?;
                None
            }
        }
        Err(Errno::ENOENT) => None,
        Err(e) => return Err(Error::sys("open", shown, e)),
    };
    let target = match existing {
        Some(fd) => fd,
        None => {
            openat(
                dev.as_fd(),
                name.as_os_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| Error::sys("create", shown.clone(), e))?;
            open().map_err(|e| Error::sys("open", shown.clone(), e))?
        }
    };
    let st = inroot::stat(target.as_fd(), console)?;
    let fs = inroot::fs_type(target.as_fd(), console)?;
    if !(inroot::is(&st, SFlag::S_IFREG) || inroot::is(&st, SFlag::S_IFCHR))
        || fs == PROC_SUPER_MAGIC
        || fs == SYSFS_MAGIC
    {
        return Err(Error::sys(
            "verify",
            format!("{shown} is not a file to bind the console on"),
            Errno::EINVAL,
        ));
    }
    let tree = inroot::clone_tree(slave, false)
        .map_err(|e| Error::sys("clone mount", "console pty", e))?;
    inroot::move_mount(tree.as_fd(), target.as_fd()).map_err(|e| Error::sys("mount", shown, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "ro".into(),
            "rbind".into(),
            "rslave".into(),
            "size=1k".into(),
        ]);
        assert!(
            o.flags
                .contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC)
        );
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, "size=1k");
    }
}
