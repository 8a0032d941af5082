//! Network namespace set-up: a private network namespace gets only `lo`, brought up.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// `IFF_UP` as the `c_short` that `ifreq` holds (libc exposes it as `c_int`).
const IFF_UP: libc::c_short = 0x1;

/// Sets IFF_UP on `lo` in the current network namespace.
pub(crate) fn loopback_up() -> Result<()> {
    // SAFETY: socket() takes integer arguments only.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::sys("socket", "for lo", nix::errno::Errno::last()));
    }
    // SAFETY: raw is a freshly created descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq naming "lo" that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::sys(
            "ioctl SIOCGIFFLAGS",
            "lo",
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled the ifru_flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= IFF_UP };
    // SAFETY: as above; SIOCSIFFLAGS reads the flags from req.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Error::sys(
            "ioctl SIOCSIFFLAGS",
            "lo",
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}
