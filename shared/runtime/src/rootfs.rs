//! Root file system setup, run by the container's init inside its new mount namespace:
//! mounts in config order, device nodes, `pivot_root`, masked and read-only paths.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};

use crate::error::{Error, Result};

type NoStr = Option<&'static str>;
const NONE: NoStr = None;

/// Resolves `unsafe_path` inside `root` the way the container would see it: symlinks are
/// followed relative to `root` and `..` never climbs above it.
pub(crate) fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut pending: Vec<PathBuf> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(PathBuf::from(p)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::InvalidSpec(format!(
                        "path {}: too many symlinks",
                        unsafe_path.display()
                    )));
                }
                let target = fs::read_link(&full).map_err(|e| Error::io("readlink", &full, e))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push(PathBuf::from(p)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

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

fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        Error::sys(
            "mount",
            format!(
                "{} on {} (type {}, flags {flags:?}, data {:?})",
                source.map_or("none".into(), |s| s.display().to_string()),
                target.display(),
                fstype.unwrap_or("none"),
                data.unwrap_or("")
            ),
            e,
        )
    })
}

fn mkdir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))
}

/// Creates a mount target matching the source: a file for a file source, else a directory.
fn create_target(target: &Path, source_is_dir: bool) -> Result<()> {
    if source_is_dir {
        return mkdir_all(target);
    }
    if let Some(parent) = target.parent() {
        mkdir_all(parent)?;
    }
    if !target.exists() {
        fs::File::create(target).map_err(|e| Error::io("create file", target, e))?;
    }
    Ok(())
}

/// Sets up the root file system at `rootfs` (a host path) and pivots into it. Runs in the
/// container's init, in its own mount namespace. The current directory ends up at the new `/`.
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

    let mut dev_is_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind") {
            dev_is_tmpfs = true;
        }
        mount_one(rootfs, m, cgroup_paths)?;
    }
    if dev_is_tmpfs {
        create_default_devices(rootfs)?;
    }
    for d in linux.devices().iter().flatten() {
        let path = secure_join(rootfs, d.path())?;
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
        make_node(&path, kind, mode, d.major(), d.minor())?;
        if d.uid().is_some() || d.gid().is_some() {
            std::os::unix::fs::chown(&path, d.uid(), d.gid())
                .map_err(|e| Error::io("chown", &path, e))?;
        }
    }
    dev_symlinks(rootfs)?;
    pivot(rootfs)?;
    Ok(())
}

fn make_node(path: &Path, kind: SFlag, mode: Mode, major: i64, minor: i64) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir_all(parent)?;
    }
    let _ = fs::remove_file(path);
    let (Ok(major), Ok(minor)) = (u64::try_from(major), u64::try_from(minor)) else {
        return Err(Error::InvalidSpec(format!(
            "device {}: negative major/minor",
            path.display()
        )));
    };
    mknod(path, kind, mode, makedev(major, minor))
        .map_err(|e| Error::sys("mknod", path.display().to_string(), e))
}

/// null, zero, full, random, urandom and tty in a tmpfs `/dev`; bind-mounted from the host
/// where mknod is refused.
fn create_default_devices(rootfs: &Path) -> Result<()> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = rootfs.join("dev").join(name);
        let mode = Mode::from_bits_truncate(0o666);
        if make_node(&path, SFlag::S_IFCHR, mode, major, minor).is_err() {
            create_target(&path, false)?;
            let host = Path::new("/dev").join(name);
            do_mount(Some(&host), &path, Some("bind"), MsFlags::MS_BIND, NONE)?;
        }
    }
    Ok(())
}

fn dev_symlinks(rootfs: &Path) -> Result<()> {
    let dev = rootfs.join("dev");
    if !dev.is_dir() {
        return Ok(());
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        if link == "ptmx" && !dev.join("pts/ptmx").exists() {
            continue;
        }
        if fs::symlink_metadata(&path).is_ok() {
            if link != "ptmx" {
                continue;
            }
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
        symlink(target, &path).map_err(|e| Error::io("symlink", &path, e))?;
    }
    Ok(())
}

fn mount_one(rootfs: &Path, m: &Mount, cgroup_paths: &[PathBuf]) -> Result<()> {
    let target = secure_join(rootfs, m.destination())?;
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());

    if typ == "bind" || opts.flags.contains(MsFlags::MS_BIND) {
        let source = m.source().as_ref().ok_or_else(|| {
            Error::InvalidSpec(format!(
                "bind mount {}: no source",
                m.destination().display()
            ))
        })?;
        let md = fs::metadata(source).map_err(|e| Error::io("stat bind source", source, e))?;
        create_target(&target, md.is_dir())?;
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        do_mount(Some(source), &target, NONE, bind, NONE)?;
        let rest = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            do_mount(
                None,
                &target,
                NONE,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                NONE,
            )?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(&target, &opts, cgroup_paths)?;
    } else {
        mkdir_all(&target)?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        match do_mount(Some(&source), &target, Some(typ), opts.flags, data) {
            Ok(()) => {}
            // sysfs cannot be mounted while sharing the host's network namespace: bind the
            // host's /sys instead, like runc.
            Err(Error::Sys {
                source: nix::errno::Errno::EPERM,
                ..
            }) if typ == "sysfs" => {
                do_mount(
                    Some(Path::new("/sys")),
                    &target,
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    NONE,
                )?;
                do_mount(
                    None,
                    &target,
                    NONE,
                    opts.flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    NONE,
                )?;
            }
            Err(e) => return Err(e),
        }
    }
    if !opts.propagation.is_empty() {
        do_mount(None, &target, NONE, opts.propagation, NONE)?;
    }
    Ok(())
}

/// A `cgroup` mount: on a v2 host a cgroup2 mount; on v1 a tmpfs holding a bind mount of the
/// container's own directory in each controller hierarchy.
fn mount_cgroup(target: &Path, opts: &Options, cgroup_paths: &[PathBuf]) -> Result<()> {
    mkdir_all(target)?;
    let flags = opts.flags & !MsFlags::MS_RDONLY;
    if crate::cgroups::host_is_v2() {
        return do_mount(
            Some(Path::new("cgroup2")),
            target,
            Some("cgroup2"),
            opts.flags,
            NONE,
        );
    }
    do_mount(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )?;
    for (mountpoint, _) in crate::cgroups::v1_mounts()? {
        let Some(name) = mountpoint.file_name() else {
            continue;
        };
        let Some(source) = cgroup_paths.iter().find(|p| p.starts_with(&mountpoint)) else {
            continue;
        };
        let dest = target.join(name);
        mkdir_all(&dest)?;
        do_mount(Some(source), &dest, NONE, MsFlags::MS_BIND, NONE)?;
        if opts.flags.contains(MsFlags::MS_RDONLY) {
            do_mount(
                None,
                &dest,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                NONE,
            )?;
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        do_mount(
            None,
            target,
            NONE,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            Some("mode=755"),
        )?;
    }
    Ok(())
}

/// `pivot_root` into `rootfs` and detach the old root.
fn pivot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(|e| Error::sys("chdir", rootfs.display().to_string(), e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| Error::sys("pivot_root", rootfs.display().to_string(), e))?;
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

/// After `pivot_root`: masked paths, read-only paths, then the read-only root.
pub(crate) fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for p in linux.readonly_paths().iter().flatten() {
        let path = Path::new(p);
        if !path.exists() {
            continue;
        }
        do_mount(
            Some(path),
            path,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )?;
        do_mount(
            None,
            path,
            NONE,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            NONE,
        )
        .or_else(|_| {
            do_mount(
                None,
                path,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                NONE,
            )
        })?;
    }
    for p in linux.masked_paths().iter().flatten() {
        let path = Path::new(p);
        let Ok(md) = fs::metadata(path) else {
            continue;
        };
        if md.is_dir() {
            do_mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                NONE,
            )?;
        } else {
            do_mount(
                Some(Path::new("/dev/null")),
                path,
                NONE,
                MsFlags::MS_BIND,
                NONE,
            )?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir(root.join("a")).expect("mkdir");
        symlink("/etc", root.join("abs")).expect("symlink");
        symlink("../../..", root.join("a/up")).expect("symlink");
        assert_eq!(
            secure_join(root, Path::new("/abs/passwd")).expect("join"),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/up/x")).expect("join"),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("../../y")).expect("join"),
            root.join("y")
        );
    }

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
