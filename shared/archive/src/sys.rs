//! Thin, safe wrappers over the `*at()` system calls extraction is built on. Every name passed
//! here is a single path component (or a path resolved by `openat2` inside a root), so nothing
//! below follows a symbolic link in the final component unless it says so.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

pub(crate) fn path_cstring(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

/// Opens a directory of the host (the root, a lower layer) for use as a `*at()` anchor.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = path_cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: every component of
/// `path`, symbolic links included, is resolved as if `root` were `/`, so the result is always
/// inside `root`.
pub(crate) fn openat2_in_root(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain C struct of integers, for which all zeroes is a valid value
    // (and what the kernel expects in fields we do not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::from((flags | libc::O_CLOEXEC).cast_unsigned());
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // The kernel answers EAGAIN when a concurrent rename could have let resolution escape;
    // retrying is what it asks for. Bound the retries so a busy tree cannot spin us forever.
    let mut tries = 0;
    loop {
        // SAFETY: `path` is NUL-terminated and `how` is a properly initialised open_how whose
        // size we pass; both outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &raw const how,
                size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            let fd =
                RawFd::try_from(r).map_err(|_| io::Error::other("openat2 returned a bad fd"))?;
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if tries < 64 => tries += 1,
            _ => return Err(e),
        }
    }
}

pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is a live descriptor.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: `fd` was just returned by openat() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// Hard-links `old_dir/old_name` (not following it if it is a symbolic link) as `new_dir/new_name`.
pub(crate) fn linkat(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call; flags 0 means the old path's
    // last component is not followed.
    cvt(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn fchownat_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// chmod of `dir/name` without following a symbolic link there (glibc implements the flag through
/// an `O_PATH` descriptor, or `fchmodat2` where the kernel has it).
pub(crate) fn fchmodat_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe {
        libc::fchmodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

pub(crate) fn utimensat_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    times: &[libc::timespec; 2],
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `times` points at two timespecs; both outlive the call.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `times` points at two timespecs that outlive the call.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

pub(crate) fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated; `st` is valid for writes of one `stat`.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// fstat that also works on `O_PATH` descriptors.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; `st` is valid for writes.
    cvt(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// The target of the symbolic link `fd` refers to (an `O_PATH | O_NOFOLLOW` descriptor).
pub(crate) fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the empty path names `fd`.
        let n = unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        let len = buf.len() * 2;
        buf.resize(len, 0);
    }
}

pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated, `value` is valid for reads of its length.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// setxattr on a path; `follow` picks setxattr over lsetxattr.
pub(crate) fn setxattr_path(
    path: &CStr,
    name: &CStr,
    value: &[u8],
    follow: bool,
) -> io::Result<()> {
    let f = if follow {
        libc::setxattr
    } else {
        libc::lsetxattr
    };
    // SAFETY: both strings are NUL-terminated, `value` is valid for reads of its length.
    cvt(unsafe {
        f(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Where an extended attribute operation should look.
#[derive(Clone, Copy)]
pub(crate) enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    /// A path; `follow` chooses the following variants (for `/proc/self/fd/N` magic links).
    Path(&'a CStr, bool),
}

fn xattr_call(t: XattrTarget<'_>, name: Option<&CStr>, buf: &mut [u8]) -> isize {
    let (ptr, len) = (buf.as_mut_ptr().cast::<libc::c_void>(), buf.len());
    let list_ptr = buf.as_mut_ptr().cast::<libc::c_char>();
    // SAFETY: `buf` is valid for writes of `len` bytes; `name` and the path are NUL-terminated
    // and outlive the call.
    unsafe {
        match (t, name) {
            (XattrTarget::Fd(fd), None) => libc::flistxattr(fd.as_raw_fd(), list_ptr, len),
            (XattrTarget::Fd(fd), Some(n)) => libc::fgetxattr(fd.as_raw_fd(), n.as_ptr(), ptr, len),
            (XattrTarget::Path(p, true), None) => libc::listxattr(p.as_ptr(), list_ptr, len),
            (XattrTarget::Path(p, false), None) => libc::llistxattr(p.as_ptr(), list_ptr, len),
            (XattrTarget::Path(p, true), Some(n)) => {
                libc::getxattr(p.as_ptr(), n.as_ptr(), ptr, len)
            }
            (XattrTarget::Path(p, false), Some(n)) => {
                libc::lgetxattr(p.as_ptr(), n.as_ptr(), ptr, len)
            }
        }
    }
}

/// Calls a list/get xattr function, growing the buffer on ERANGE.
fn xattr_read(t: XattrTarget<'_>, name: Option<&CStr>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = xattr_call(t, name, &mut buf);
        match usize::try_from(n) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ERANGE) || buf.len() > 1 << 20 {
                    return Err(e);
                }
                // Ask for the size needed, then retry with it.
                let need = xattr_call(t, name, &mut []);
                let need = usize::try_from(need).map_err(|_| io::Error::last_os_error())?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
        }
    }
}

/// One attribute's value, or None when it is absent.
pub(crate) fn get_xattr(t: XattrTarget<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    match xattr_read(t, Some(name)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// All extended attributes, sorted by name. File systems without xattr support have none.
pub(crate) fn list_xattrs(t: XattrTarget<'_>) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let names = match xattr_read(t, None) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = cstring(name)?;
        // An attribute removed between list and get is simply gone.
        if let Some(value) = get_xattr(t, &name)? {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

/// `/proc/self/fd/<dir>/<name>`: a path naming `name` inside the directory `dir` refers to,
/// for the calls that have no `*at()` form (l*xattr on non-regular files).
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    cstring(&p)
}

/// `/proc/self/fd/<fd>`: a magic link to the object `fd` refers to (use following calls).
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> io::Result<CString> {
    cstring(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
}

/// The entries of a directory (without `.` and `..`), with their `d_type`.
pub(crate) fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(CString, u8)>> {
    // A fresh descriptor: fdopendir takes ownership and needs a readable one (not O_PATH).
    let fd = openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: `raw` is an open directory descriptor we own; fdopendir takes it over.
    let d = unsafe { libc::fdopendir(raw) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; clearing it lets us tell end-of-directory from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `d` is a live DIR stream used by this thread only.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated; we copy it
        // before the next readdir call.
        let (name, ty) = unsafe { (CStr::from_ptr((*ent).d_name.as_ptr()), (*ent).d_type) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push((name.to_owned(), ty));
        }
    };
    // SAFETY: `d` is live and not used after this.
    unsafe { libc::closedir(d) };
    result.map(|()| out)
}

pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

pub(crate) fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

pub(crate) fn is_type(st: &libc::stat, ty: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == ty
}

/// An overlayfs whiteout: a character device with device number 0/0.
pub(crate) fn is_whiteout(st: &libc::stat) -> bool {
    is_type(st, libc::S_IFCHR) && st.st_rdev == 0
}

pub(crate) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}
