//! Paths inside a container's root file system, resolved by file descriptor.
//!
//! An image is hostile input: any directory of it may be a symlink to a host path, and a
//! container sharing a volume may swap a path between a check and its use. So the runtime never
//! operates on a path string below the root: it holds the root open (`O_PATH`), resolves every
//! path with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (symlinks are followed as the
//! container would see them, `..` stops at the root), creates what is missing with `mkdirat`,
//! `mknodat` and friends relative to a directory it resolved that way, and mounts onto the file
//! descriptor it resolved (`/proc/self/fd/N` of the host's verified procfs, or the mount API's
//! `open_tree`/`move_mount`, which need no path at all).
//!
//! Writes under `/proc` go through [`write_proc`]: a descriptor of the procfs root, verified by
//! its file-system magic, and a resolution that may not cross a mount point, so a file bind
//! mounted over a procfs file cannot receive them.

use std::collections::VecDeque;
use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, mkdirat, mknodat};
use nix::sys::statfs::{FsType, PROC_SUPER_MAGIC, fstatfs};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, symlinkat, unlinkat};

use crate::error::{Error, Result};

/// The inode number of a procfs root (`PROC_ROOT_INO`).
const PROC_ROOT_INO: u64 = 1;
/// Symlinks followed at most while making one path (the kernel's limit per resolution).
const MAX_LINKS: usize = 40;
/// How often a resolution is retried when the kernel reports a concurrent rename (`EAGAIN`).
const RESOLVE_RETRIES: usize = 32;

/// The components of `p` below a root: `/`, `.` and empty parts dropped, `..` kept (the
/// kernel stops it at the root).
fn relative(p: &Path) -> PathBuf {
    let rel: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// Splits `p` into its parent (inside the root) and its last name; `None` when `p` does not
/// end in a name (the root itself, or a trailing `..`).
fn split_last(p: &Path) -> Option<(PathBuf, OsString)> {
    let rel = relative(p);
    match rel.components().next_back() {
        Some(Component::Normal(name)) => {
            let name = name.to_os_string();
            let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            Some((parent, name))
        }
        _ => None,
    }
}

/// `/proc/self/fd/N` for `fd`: a path the kernel resolves to exactly that file, for calls that
/// take only paths (`mount(2)`). Valid while `fd` is open; callers check [`host_proc`] first.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Checks that `/proc` of the calling process is a procfs root, so `/proc/self/fd/N` names our
/// own descriptors.
pub(crate) fn host_proc() -> Result<()> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd =
        openat2(nix::fcntl::AT_FDCWD, "/proc", how).map_err(|e| Error::sys("open", "/proc", e))?;
    verify_proc_root(&fd, "/proc")
}

fn verify_proc_root(fd: &OwnedFd, what: &str) -> Result<()> {
    let fs = fstatfs(fd).map_err(|e| Error::sys("statfs", what.to_string(), e))?;
    let st = fstat(fd).map_err(|e| Error::sys("stat", what.to_string(), e))?;
    if fs.filesystem_type() != PROC_SUPER_MAGIC || st.st_ino != PROC_ROOT_INO {
        return Err(Error::sys(
            "verify",
            format!("{what} is not the root of a procfs mount"),
            Errno::EXDEV,
        ));
    }
    Ok(())
}

/// Writes `value` to `/proc/<rel>` through a descriptor verified to be on procfs: `/proc` must
/// be a procfs root and `rel` is resolved beneath it without crossing a mount point or
/// following a magic link, so nothing mounted over a procfs file can receive the write.
pub(crate) fn write_proc(rel: &Path, value: &[u8]) -> Result<()> {
    let shown = Path::new("/proc").join(rel);
    let what = || shown.display().to_string();
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let proc =
        openat2(nix::fcntl::AT_FDCWD, "/proc", how).map_err(|e| Error::sys("open", "/proc", e))?;
    verify_proc_root(&proc, "/proc")?;
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = openat2(&proc, rel, how).map_err(|e| Error::sys("open", what(), e))?;
    let fs = fstatfs(&fd).map_err(|e| Error::sys("statfs", what(), e))?;
    if fs.filesystem_type() != PROC_SUPER_MAGIC {
        return Err(Error::sys(
            "verify",
            format!("{} is not on procfs", what()),
            Errno::EXDEV,
        ));
    }
    let mut buf = value;
    while !buf.is_empty() {
        match nix::unistd::write(&fd, buf) {
            Ok(0) => return Err(Error::sys("write", what(), Errno::EIO)),
            Ok(n) => buf = &buf[n.min(buf.len())..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("write", what(), e)),
        }
    }
    Ok(())
}

/// The file-system type of `fd`.
pub(crate) fn fs_type(fd: BorrowedFd<'_>, what: &Path) -> Result<FsType> {
    fstatfs(fd)
        .map(|s| s.filesystem_type())
        .map_err(|e| Error::sys("statfs", what.display().to_string(), e))
}

/// `fstat` of `fd`, naming `what` on error.
pub(crate) fn stat(fd: BorrowedFd<'_>, what: &Path) -> Result<FileStat> {
    fstat(fd).map_err(|e| Error::sys("stat", what.display().to_string(), e))
}

/// Whether `st` is of file type `kind`.
pub(crate) fn is(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// A root file system held open; every path below it is resolved inside it.
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the directory `path` (a trusted path: the bundle's root, or `/` after
    /// `pivot_root`) as the root to resolve in.
    pub(crate) fn open(path: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open root", path.display().to_string(), e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `p` as an error message shows it: the path inside the root, and the root.
    pub(crate) fn show(&self, p: &Path) -> String {
        format!("{} in root {}", p.display(), self.path.display())
    }

    /// Opens `p` resolved inside the root: symlinks are followed as the container would see
    /// them (absolute ones from the root), `..` stops at the root, magic links are refused.
    pub(crate) fn resolve(&self, p: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let rel = relative(p);
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut attempt = 0;
        loop {
            match openat2(&self.fd, &rel, how) {
                Err(Errno::EAGAIN) if attempt < RESOLVE_RETRIES => attempt += 1,
                r => return r,
            }
        }
    }

    /// Like [`Root::resolve`] for an `O_PATH` descriptor, with the error naming `p`.
    pub(crate) fn open_path(&self, p: &Path) -> Result<OwnedFd> {
        self.resolve(p, OFlag::O_PATH)
            .map_err(|e| Error::sys("resolve", self.show(p), e))
    }

    /// Resolves the directory `p` inside the root, creating each missing component (mode
    /// 0755) in the directory its parent resolved to. A component that is a dangling symlink is
    /// followed as the container would follow it: what it names is made inside the root.
    pub(crate) fn mkdir_all(&self, p: &Path) -> Result<OwnedFd> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let root_dir = || {
            self.resolve(Path::new("."), dir_flags)
                .map_err(|e| Error::sys("open", self.show(Path::new("/")), e))
        };
        let mut cur = root_dir()?;
        // The path resolved so far (the kernel resolves it again at each step) and what is
        // left of `p`, in order.
        let mut done = PathBuf::new();
        let mut pending: VecDeque<OsString> = relative(p)
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            let next = done.join(&part);
            match self.resolve(&next, dir_flags) {
                Ok(fd) => {
                    cur = fd;
                    done = next;
                    continue;
                }
                Err(Errno::ENOENT) if part != ".." && part != "." => {}
                Err(e) => return Err(Error::sys("resolve directory", self.show(&next), e)),
            }
            match mkdirat(&cur, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys("create directory", self.show(&next), e)),
            }
            match self.resolve(&next, dir_flags) {
                Ok(fd) => {
                    cur = fd;
                    done = next;
                }
                Err(Errno::ENOENT) => {
                    // A dangling symlink: go on through its target, inside the root.
                    let target = self.dangling_target(&cur, &part, &next, &mut links)?;
                    if target.is_absolute() {
                        done = PathBuf::new();
                        cur = root_dir()?;
                    }
                    for c in relative(&target).components().rev() {
                        pending.push_front(c.as_os_str().to_os_string());
                    }
                }
                Err(e) => return Err(Error::sys("create directory", self.show(&next), e)),
            }
        }
        Ok(cur)
    }

    /// The target of the symlink `name` in `dir` (`shown` as `path`), counting it against the
    /// kernel's limit of 40 links per resolution.
    fn dangling_target(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &Path,
        links: &mut usize,
    ) -> Result<PathBuf> {
        *links += 1;
        if *links > MAX_LINKS {
            return Err(Error::sys("resolve", self.show(path), Errno::ELOOP));
        }
        readlinkat(dir, name)
            .map(PathBuf::from)
            .map_err(|e| Error::sys("read link", self.show(path), e))
    }

    /// The directory `p`'s last name is in (created as needed) and that name.
    pub(crate) fn parent_of(&self, p: &Path) -> Result<(OwnedFd, OsString)> {
        let (parent, name) = split_last(p).ok_or_else(|| {
            Error::InvalidSpec(format!("path {}: does not name a file", p.display()))
        })?;
        Ok((self.mkdir_all(&parent)?, name))
    }

    /// Resolves `p` inside the root, creating an empty regular file (mode 0644) when nothing
    /// is there (through a dangling symlink: where it points, inside the root); returns an
    /// `O_PATH` descriptor of what `p` names.
    pub(crate) fn create_file(&self, p: &Path) -> Result<OwnedFd> {
        let mut path = relative(p);
        let mut links = 0;
        loop {
            match self.resolve(&path, OFlag::O_PATH) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(Error::sys("resolve", self.show(&path), e)),
            }
            let (parent, name) = self.parent_of(&path)?;
            match openat(
                &parent,
                name.as_os_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(_) => {}
                Err(Errno::EEXIST) => {
                    // A dangling symlink (or a file made meanwhile: then the next round
                    // resolves it).
                    let target = match self.dangling_target(&parent, &name, &path, &mut links) {
                        Ok(target) => target,
                        Err(Error::Sys {
                            source: Errno::EINVAL,
                            ..
                        }) => continue,
                        Err(e) => return Err(e),
                    };
                    path = match split_last(&path) {
                        Some((dir, _)) if !target.is_absolute() => relative(&dir.join(target)),
                        _ => relative(&target),
                    };
                }
                Err(e) => return Err(Error::sys("create file", self.show(&path), e)),
            }
        }
    }

    /// Makes a device node or FIFO at `p`, replacing a file (or symlink: the link itself, not
    /// its target) of that name in the directory `p`'s parent resolves to.
    pub(crate) fn make_node(&self, p: &Path, kind: SFlag, mode: Mode, dev: u64) -> Result<()> {
        let (parent, name) = self.parent_of(p)?;
        let _ = unlinkat(&parent, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        mknodat(&parent, name.as_os_str(), kind, mode, dev)
            .map_err(|e| Error::sys("mknod", self.show(p), e))
    }

    /// Changes the owner of `p` (not following a final symlink) in its resolved parent.
    pub(crate) fn chown(&self, p: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let (parent, name) = self.parent_of(p)?;
        fchownat(
            &parent,
            name.as_os_str(),
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::sys("chown", self.show(p), e))
    }
}

/// Whether `dir` holds an entry `name` (of any type; a symlink is not followed).
pub(crate) fn has_entry(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

/// Creates the symlink `name` -> `target` in `dir`.
pub(crate) fn symlink_in(dir: BorrowedFd<'_>, name: &OsStr, target: &str) -> nix::Result<()> {
    symlinkat(target, dir, name)
}

/// Removes the non-directory entry `name` of `dir`.
pub(crate) fn unlink_in(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
}

fn owned(ret: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = RawFd::try_from(Errno::result(ret)?).map_err(|_| Errno::EBADF)?;
    // SAFETY: the system call returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const EMPTY: &CStr = c"";

/// A detached copy of the mount tree at `fd` (`open_tree(OPEN_TREE_CLONE)`), of the whole
/// subtree when `recursive`: a bind mount that is attached nowhere yet.
pub(crate) fn clone_tree(fd: BorrowedFd<'_>, recursive: bool) -> nix::Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: EMPTY is a valid NUL-terminated string; fd is open for the call.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), EMPTY.as_ptr(), flags) })
}

/// Attaches the mount `from` (from [`clone_tree`] or `fsmount`) onto what `to` refers to.
pub(crate) fn move_mount(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both paths are the valid empty string; both descriptors are open for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            EMPTY.as_ptr(),
            to.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
        )
    };
    Errno::result(ret).map(drop)
}

/// Sets (`set`) and clears (`clear`) `MOUNT_ATTR_*` flags on the mount `fd` is the root of,
/// and every mount below it when `recursive`.
pub(crate) fn set_mount_attr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clear: u64,
) -> nix::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: attr is a live mount_attr of the size passed; EMPTY is a valid string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(ret).map(drop)
}

/// A new read-only tmpfs mount, detached (`fsopen`, `fsmount`), to attach with
/// [`move_mount`].
pub(crate) fn readonly_tmpfs() -> nix::Result<OwnedFd> {
    // SAFETY: the file-system name is a valid NUL-terminated string.
    let ctx =
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or auxiliary argument.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    Errno::result(ret)?;
    // SAFETY: ctx is a configured file-system context; the flags are plain integers.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            libc::MOUNT_ATTR_RDONLY
                | libc::MOUNT_ATTR_NOSUID
                | libc::MOUNT_ATTR_NODEV
                | libc::MOUNT_ATTR_NOEXEC,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolution_stays_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let root_path = dir.path();
        fs::create_dir(root_path.join("a")).expect("mkdir");
        fs::create_dir(root_path.join("etc")).expect("mkdir");
        fs::write(root_path.join("etc/passwd"), "inside").expect("write");
        fs::write(outside.path().join("passwd"), "outside").expect("write");
        symlink(outside.path(), root_path.join("abs")).expect("symlink");
        symlink("../../../../../../../..", root_path.join("a/up")).expect("symlink");
        symlink("/etc", root_path.join("etc-link")).expect("symlink");
        let root = Root::open(root_path).expect("root");

        let read = |p: &str| {
            let fd = root
                .resolve(Path::new(p), OFlag::O_RDONLY)
                .expect("resolve");
            let mut s = String::new();
            std::io::Read::read_to_string(&mut fs::File::from(fd), &mut s).expect("read");
            s
        };
        assert_eq!(read("/etc-link/passwd"), "inside");
        assert_eq!(read("/a/up/etc/passwd"), "inside");
        assert_eq!(read("../../etc/passwd"), "inside");
        // The absolute link names a host directory: inside the root it dangles.
        assert_eq!(
            root.resolve(Path::new("/abs/passwd"), OFlag::O_RDONLY)
                .expect_err("dangling"),
            Errno::ENOENT
        );
        // Creating through it creates what it names inside the root, nothing on the host.
        let inside = root_path.join(outside.path().strip_prefix("/").expect("absolute"));
        root.mkdir_all(Path::new("/abs/sub"))
            .expect("mkdir through a dangling link");
        assert!(inside.join("sub").is_dir());
        symlink(outside.path().join("file"), root_path.join("file-link")).expect("symlink");
        root.create_file(Path::new("/file-link"))
            .expect("create through a dangling link");
        assert!(inside.join("file").is_file());
        root.make_node(
            Path::new("/abs/passwd"),
            SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .expect("mknod");
        assert!(inside.join("passwd").exists());
        // A loop of links is refused.
        symlink("/loop-b", root_path.join("loop-a")).expect("symlink");
        symlink("/loop-a", root_path.join("loop-b")).expect("symlink");
        assert!(root.mkdir_all(Path::new("/loop-a/x")).is_err());
        assert!(root.create_file(Path::new("/loop-a")).is_err());
        let names: Vec<_> = fs::read_dir(outside.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("passwd")]);
        assert_eq!(
            fs::read_to_string(outside.path().join("passwd")).expect("read"),
            "outside"
        );

        // Missing directories are made where the container would see them.
        root.mkdir_all(Path::new("/a/up/new/dir"))
            .expect("mkdir_all");
        assert!(root_path.join("new/dir").is_dir());
        root.create_file(Path::new("/etc-link/file"))
            .expect("create");
        assert!(root_path.join("etc/file").is_file());
    }

    #[test]
    fn split() {
        assert_eq!(
            split_last(Path::new("/dev/null")),
            Some((PathBuf::from("dev"), OsString::from("null")))
        );
        assert_eq!(
            split_last(Path::new("null")),
            Some((PathBuf::new(), OsString::from("null")))
        );
        assert_eq!(split_last(Path::new("/")), None);
        assert_eq!(split_last(Path::new("/a/..")), None);
    }
}
