//! Whiteouts and opaque directories: overlayfs whiteouts and opaque markers in Overlay mode,
//! deletions in Delete mode.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use tracing::debug;

use crate::WhiteoutMode;
use crate::error::lossy;
use crate::sys::{self, errno};

use super::metadata::Meta;
use super::paths::{RelPath, join};
use super::{
    Extractor, OVERLAY_OPAQUE, Result, WHITEOUT_PREFIX, cstr, entry_err, invalid, remove_tree,
};

const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

impl Extractor<'_> {
    pub(super) fn whiteout(
        &mut self,
        path: &RelPath,
        target: &[u8],
        meta: &Meta,
        raw: &[u8],
    ) -> Result<()> {
        if path.name() == OPAQUE_WHITEOUT {
            return match self.mode {
                WhiteoutMode::Overlay => {
                    let dir = self.parent_dir(path.parent(), raw)?;
                    let fd = sys::openat(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                        .map_err(|e| entry_err(raw, "opening opaque directory", e))?;
                    sys::fsetxattr(fd.as_fd(), OVERLAY_OPAQUE, b"y")
                        .map_err(|e| entry_err(raw, "marking directory opaque", e))
                }
                WhiteoutMode::Delete => {
                    let dir = match self.lookup_dir(path.parent()) {
                        Ok(d) => d,
                        Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => {
                            return Ok(());
                        }
                        Err(e) => return Err(entry_err(raw, "resolving opaque directory", e)),
                    };
                    let r = self.clear_opaque(dir.as_fd(), path.parent().to_vec());
                    self.invalidate();
                    r.map_err(|e| entry_err(raw, "clearing opaque directory", e))
                }
            };
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.` names are aufs bookkeeping (`.wh..wh.plnk`, ...): not content.
            debug!(entry = %lossy(raw), "ignoring aufs metadata entry");
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(invalid(raw, "whiteout names no file"));
        }
        let name = cstr(raw, target)?;
        match self.mode {
            WhiteoutMode::Overlay => {
                let parent = self.parent_dir(path.parent(), raw)?;
                let mode = libc::S_IFCHR;
                if let Err(e) = sys::mknodat(parent.as_fd(), &name, mode, 0) {
                    if errno(&e) != libc::EEXIST {
                        return Err(entry_err(raw, "creating whiteout device", e));
                    }
                    self.clear_slot(parent.as_fd(), &name, raw, false)?;
                    sys::mknodat(parent.as_fd(), &name, mode, 0)
                        .map_err(|e| entry_err(raw, "creating whiteout device", e))?;
                }
                sys::fchownat_nofollow(parent.as_fd(), &name, meta.uid, meta.gid)
                    .map_err(|e| entry_err(raw, "chown", e))
            }
            WhiteoutMode::Delete => {
                let parent = match self.lookup_dir(path.parent()) {
                    Ok(d) => d,
                    Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => return Ok(()),
                    Err(e) => return Err(entry_err(raw, "resolving whiteout parent", e)),
                };
                let r = remove_tree(parent.as_fd(), &name);
                self.invalidate();
                match r {
                    Ok(()) => Ok(()),
                    Err(e) if errno(&e) == libc::ENOENT => Ok(()),
                    Err(e) => Err(entry_err(raw, "removing whited-out entry", e)),
                }
            }
        }
    }

    /// Delete mode, opaque whiteout: removes everything below `dir` this layer did not create.
    fn clear_opaque(&self, dir: BorrowedFd<'_>, rel: Vec<u8>) -> io::Result<()> {
        for (name, dtype) in sys::read_dir(dir)? {
            let child = join(&rel, name.to_bytes());
            if !self.created.contains(&child) {
                remove_tree(dir, &name)?;
                continue;
            }
            let is_dir = match dtype {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => {
                    sys::is_type(&sys::fstatat_nofollow(dir, &name)?, libc::S_IFDIR)
                }
                _ => false,
            };
            if is_dir {
                let sub = sys::openat(
                    dir,
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                self.clear_opaque(sub.as_fd(), child)?;
            }
        }
        Ok(())
    }
}
