//! A terminal's size: the `TIOCSWINSZ` and `TIOCGWINSZ` ioctls, once for the runtime (a new
//! console's slave), the supervisor (a resize on the master) and the CLI (its own terminal).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

/// Sets the size of the terminal `fd` refers to (a pty's master or slave). A dimension above
/// `u16::MAX`, the kernel's limit, is clamped to it.
pub fn set_size(fd: impl AsFd, size: Size) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: u16::try_from(size.height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(size.width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live local
    // for the duration of the call; the descriptor is borrowed, so open, and one that is not a
    // terminal makes the call fail with ENOTTY, nothing worse.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The size of the terminal `fd` refers to; ENOTTY when it is no terminal.
pub fn size(fd: impl AsFd) -> io::Result<Size> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, a live local for the
    // duration of the call; the descriptor is borrowed, so open, and one that is not a terminal
    // makes the call fail with ENOTTY, nothing worse.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Size {
        width: u32::from(ws.ws_col),
        height: u32::from(ws.ws_row),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd as _;

    #[test]
    fn a_file_is_no_terminal() {
        let f = std::fs::File::open("/dev/null").expect("open /dev/null");
        let err = size(&f).expect_err("refused");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        let err = set_size(
            &f,
            Size {
                width: 80,
                height: 24,
            },
        )
        .expect_err("refused");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }

    #[test]
    fn a_size_set_on_a_pty_is_read_back() {
        // SAFETY: posix_openpt takes no pointers; the descriptor it returns is owned below.
        let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "posix_openpt: {}", io::Error::last_os_error());
        // SAFETY: fd was just opened and is owned by nothing else.
        let master = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let want = Size {
            width: 132,
            height: 43,
        };
        set_size(&master, want).expect("TIOCSWINSZ on the master");
        assert_eq!(size(&master).expect("TIOCGWINSZ"), want);
        // Clamped, not wrapped.
        set_size(
            &master,
            Size {
                width: 70_000,
                height: 1,
            },
        )
        .expect("TIOCSWINSZ");
        assert_eq!(
            size(&master).expect("TIOCGWINSZ").width,
            u32::from(u16::MAX)
        );
    }
}
