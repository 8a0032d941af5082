//! Entry metadata: reading it from the tar headers (PAX times, xattrs), setting owner, xattrs,
//! mode and times, and directory times once the layer is done.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

use tracing::{debug, warn};

use crate::ArchiveError;
use crate::error::lossy;
use crate::sys::{self, XattrTarget, errno};

use super::paths::split_parent;
use super::{Extractor, OVERLAY_XATTR_PREFIX, Result, cstr, entry_err};

pub(super) fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Parses a PAX time (`1700000000.123456789`, possibly negative).
fn parse_pax_time(v: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nsec += i64::from(c - b'0') * 10i64.pow(8 - u32::try_from(i).ok()?);
    }
    Some(if !neg {
        ts(sec, nsec)
    } else if nsec == 0 {
        ts(-sec, 0)
    } else {
        ts(-sec - 1, 1_000_000_000 - nsec)
    })
}

/// The metadata one entry carries.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// atime, mtime.
    pub(super) times: [libc::timespec; 2],
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    pub(super) fn read<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Self> {
        let bad = |field: &str, e: String| ArchiveError::InvalidEntry {
            path: lossy(raw),
            reason: format!("bad {field}: {e}"),
        };
        let h = entry.header();
        let mode = h.mode().map_err(|e| bad("mode", e.to_string()))? & 0o7777;
        let uid = h.uid().map_err(|e| bad("uid", e.to_string()))?;
        let uid = u32::try_from(uid).map_err(|_| bad("uid", format!("{uid} is out of range")))?;
        let gid = h.gid().map_err(|e| bad("gid", e.to_string()))?;
        let gid = u32::try_from(gid).map_err(|_| bad("gid", format!("{gid} is out of range")))?;
        let mtime = h.mtime().map_err(|e| bad("mtime", e.to_string()))?;
        let mtime =
            i64::try_from(mtime).map_err(|_| bad("mtime", format!("{mtime} is out of range")))?;
        let mut mtime = ts(mtime, 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| bad("PAX header", e.to_string()))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| bad("PAX record", e.to_string()))?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    let name = sys::cstring(name).map_err(|e| bad("xattr name", e.to_string()))?;
                    xattrs.push((name, ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    mtime = parse_pax_time(ext.value_bytes()).unwrap_or(mtime);
                } else if key == b"atime" {
                    atime = parse_pax_time(ext.value_bytes());
                }
            }
        }
        Ok(Self {
            mode,
            uid,
            gid,
            times: [atime.unwrap_or(mtime), mtime],
            xattrs,
        })
    }
}

impl Extractor<'_> {
    /// Owner, xattrs, mode (unless a symbolic link) and times of `parent/name`, not following it.
    pub(super) fn set_meta_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        raw: &[u8],
        chmod: bool,
    ) -> Result<()> {
        sys::fchownat_nofollow(parent, name, meta.uid, meta.gid)
            .map_err(|e| entry_err(raw, "chown", e))?;
        if !meta.xattrs.is_empty() {
            let p =
                sys::proc_path(parent, name).map_err(|e| entry_err(raw, "setting xattrs", e))?;
            set_xattrs(XattrTarget::Path(&p, false), meta, raw)?;
        }
        if chmod {
            sys::fchmodat_nofollow(parent, name, meta.mode)
                .map_err(|e| entry_err(raw, "chmod", e))?;
        }
        sys::utimensat_nofollow(parent, name, &meta.times)
            .map_err(|e| entry_err(raw, "setting times", e))
    }

    pub(super) fn fix_dir_times(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        for (rel, t) in &times {
            let (parent, name) = split_parent(rel);
            let parent = match self.lookup_dir(parent) {
                Ok(p) => p,
                // Removed or replaced later in the layer.
                Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => continue,
                Err(e) => return Err(entry_err(rel, "setting directory times", e)),
            };
            let name = cstr(rel, name)?;
            match sys::utimensat_nofollow(parent.as_fd(), &name, t) {
                Ok(()) => {}
                Err(e) if errno(&e) == libc::ENOENT => {}
                Err(e) => return Err(entry_err(rel, "setting directory times", e)),
            }
        }
        debug!(root = %self.root_path.display(), dirs = times.len(), "directory times set");
        Ok(())
    }
}

/// Sets an entry's xattrs. overlayfs' private `trusted.overlay.*` attributes are never taken from
/// a layer (they would change how the overlay resolves paths). A file system that does not support
/// an attribute only earns a warning, except for `security.*` ones (capabilities, labels), which
/// the image needs.
pub(super) fn set_xattrs(target: XattrTarget<'_>, meta: &Meta, raw: &[u8]) -> Result<()> {
    for (name, value) in &meta.xattrs {
        let n = name.to_bytes();
        if n.starts_with(OVERLAY_XATTR_PREFIX) {
            warn!(entry = %lossy(raw), xattr = %lossy(n), "ignoring overlayfs-private xattr in layer");
            continue;
        }
        let r = match target {
            XattrTarget::Fd(fd) => sys::fsetxattr(fd, name, value),
            XattrTarget::Path(p, follow) => sys::setxattr_path(p, name, value, follow),
        };
        let Err(e) = r else { continue };
        let lenient = match errno(&e) {
            libc::EOPNOTSUPP => !n.starts_with(b"security."),
            // user.* attributes are not allowed on symbolic links and device files.
            libc::EPERM => n.starts_with(b"user."),
            _ => false,
        };
        if !lenient {
            return Err(entry_err(raw, format!("setting xattr {:?}", lossy(n)), e));
        }
        warn!(entry = %lossy(raw), xattr = %lossy(n), error = %e, "xattr not supported here, skipped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.5").expect("valid");
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12").expect("valid");
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        let t = parse_pax_time(b"-1.25").expect("valid");
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
        assert!(parse_pax_time(b"x").is_none());
    }
}
