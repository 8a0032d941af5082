//! Persistent network namespaces: a new namespace bind-mounted on a file, so it lives until
//! the file is unmounted, whatever becomes of the processes in it. The runtime joins it by path;
//! CNI's DEL finds it after the container died; later, one pod's containers can share it.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Makes a new network namespace, with `lo` up, and binds it on `path` (created, with its
/// parent directories). An existing namespace there is an AlreadyExists I/O error.
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
        loopback_up().map_err(|e| Error::io("bringing up lo in the namespace for", &target, e))?;
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

/// Sets `lo` of the calling thread's network namespace up (what the loopback plugin does,
/// without a process of its own).
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: socket() takes integer arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq naming "lo"; SIOCGIFFLAGS fills its flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // IFF_UP is 1: it fits the short the kernel uses for interface flags.
    let up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    // SAFETY: the union's flags member was just filled by SIOCGIFFLAGS.
    unsafe {
        req.ifr_ifru.ifru_flags |= up;
    }
    // SAFETY: req is a valid ifreq with the new flags; SIOCSIFFLAGS only reads it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
