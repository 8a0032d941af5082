//! Overlay mode: copying a hard link's target up from the lower layers into the root.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;

use tracing::{debug, warn};

use crate::error::lossy;
use crate::sys::{self, XattrTarget, errno};

use super::metadata::ts;
use super::paths::RelPath;
use super::{Extractor, OVERLAY_OPAQUE, OVERLAY_XATTR_PREFIX, Result, cstr, entry_err};

impl Extractor<'_> {
    /// Finds `target` in the overlay stack below the root (honouring whiteouts and opaque
    /// directories of the root and of each lower) and copies it up into the root. False when the
    /// stack does not have it.
    pub(super) fn copy_up(&mut self, target: &RelPath, raw: &[u8]) -> Result<bool> {
        let Some(layer) = self.find_in_lowers(target, raw)? else {
            return Ok(false);
        };
        let (lower_path, lower) = &self.lowers[layer];
        let lower_err = |op: &str, p: &[u8], e: io::Error| {
            entry_err(
                raw,
                format!(
                    "{op} {:?} in lower layer {}",
                    lossy(p),
                    lower_path.display()
                ),
                e,
            )
        };
        // Parents first, with the lower's metadata so the merged view does not change.
        let mut created_dirs = Vec::new();
        let mut dir = self.root.clone();
        let mut start = 0;
        let parent_rel = target.parent();
        for end in RelPath::component_ends(parent_rel) {
            let prefix = &parent_rel[..end];
            let comp = &parent_rel[start..end];
            start = end + 1;
            let c = cstr(raw, prefix)?;
            match sys::openat2_in_root(self.root.as_fd(), &c, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(fd) => {
                    dir = Rc::new(fd);
                    continue;
                }
                Err(e) if errno(&e) == libc::ENOENT => {}
                Err(e) => return Err(entry_err(raw, format!("resolving {:?}", lossy(prefix)), e)),
            }
            let src = sys::openat2_in_root(lower.as_fd(), &c, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| lower_err("opening", prefix, e))?;
            let st = sys::fstat(src.as_fd()).map_err(|e| lower_err("inspecting", prefix, e))?;
            let xattrs = sys::list_xattrs(XattrTarget::Fd(src.as_fd()))
                .map_err(|e| lower_err("reading xattrs of", prefix, e))?;
            let name = cstr(raw, comp)?;
            sys::mkdirat(dir.as_fd(), &name, 0o700)
                .map_err(|e| entry_err(raw, format!("copying up {:?}", lossy(prefix)), e))?;
            let fd = sys::openat(
                dir.as_fd(),
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| entry_err(raw, format!("copying up {:?}", lossy(prefix)), e))?;
            copy_meta_fd(fd.as_fd(), &st, &xattrs)
                .map_err(|e| entry_err(raw, format!("copying up {:?}", lossy(prefix)), e))?;
            created_dirs.push((prefix.to_vec(), stat_times(&st)));
            dir = Rc::new(fd);
        }
        let c = cstr(raw, &target.full)?;
        let name = cstr(raw, target.name())?;
        let src = sys::openat2_in_root(lower.as_fd(), &c, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|e| lower_err("opening", &target.full, e))?;
        let st = sys::fstat(src.as_fd()).map_err(|e| lower_err("inspecting", &target.full, e))?;
        let up = |e: io::Error| entry_err(raw, format!("copying up {:?}", lossy(&target.full)), e);
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let mut from = File::from(
                    sys::openat2_in_root(lower.as_fd(), &c, libc::O_RDONLY | libc::O_NOFOLLOW)
                        .map_err(|e| lower_err("opening", &target.full, e))?,
                );
                let xattrs = sys::list_xattrs(XattrTarget::Fd(from.as_fd()))
                    .map_err(|e| lower_err("reading xattrs of", &target.full, e))?;
                let mut to = File::from(
                    sys::openat(
                        dir.as_fd(),
                        &name,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                        0o600,
                    )
                    .map_err(up)?,
                );
                io::copy(&mut from, &mut to).map_err(up)?;
                copy_meta_fd(to.as_fd(), &st, &xattrs).map_err(up)?;
                sys::futimens(to.as_fd(), &stat_times(&st)).map_err(up)?;
            }
            kind => copy_up_node(
                raw,
                &target.full,
                src.as_fd(),
                &st,
                kind,
                dir.as_fd(),
                &name,
            )?,
        }
        debug!(entry = %lossy(raw), target = %lossy(&target.full), lower = %lower_path.display(), "copied up hard link target");
        // Creating the file changed the new parents' times: fix them at the end.
        self.dir_times.extend(created_dirs);
        Ok(true)
    }

    /// The index in `lowers` of the topmost layer that shows `target`, following overlayfs: a
    /// whiteout hides it, an opaque directory on its path hides the layers below.
    fn find_in_lowers(&self, target: &RelPath, raw: &[u8]) -> Result<Option<usize>> {
        let layers =
            std::iter::once(self.root.as_fd()).chain(self.lowers.iter().map(|(_, fd)| fd.as_fd()));
        for (i, layer) in layers.enumerate() {
            let mut opaque = false;
            let mut found = true;
            for end in RelPath::component_ends(&target.full) {
                let prefix = &target.full[..end];
                let c = cstr(raw, prefix)?;
                let fd = match sys::openat2_in_root(layer, &c, libc::O_PATH | libc::O_NOFOLLOW) {
                    Ok(fd) => fd,
                    Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => {
                        found = false;
                        break;
                    }
                    Err(e) => {
                        return Err(entry_err(
                            raw,
                            format!("looking up {:?} in lower layers", lossy(prefix)),
                            e,
                        ));
                    }
                };
                let st = sys::fstat(fd.as_fd())
                    .map_err(|e| entry_err(raw, "looking up hard link target", e))?;
                if sys::is_whiteout(&st) {
                    return Ok(None);
                }
                if end < target.full.len() && sys::is_type(&st, libc::S_IFDIR) {
                    let p = sys::proc_fd_path(fd.as_fd())
                        .map_err(|e| entry_err(raw, "looking up hard link target", e))?;
                    if sys::get_xattr(XattrTarget::Path(&p, true), OVERLAY_OPAQUE)
                        .map_err(|e| entry_err(raw, "looking up hard link target", e))?
                        .is_some_and(|v| v == b"y")
                    {
                        opaque = true;
                    }
                }
            }
            if found {
                return Ok(i.checked_sub(1));
            }
            if opaque {
                return Ok(None);
            }
        }
        Ok(None)
    }
}

/// Copies up a lower layer's symlink or special file `src` (of type `kind`, with stat `st`) as
/// `name` in `dir`, with its owner, xattrs, mode and times; `raw` is the entry, `full` the
/// target's path.
fn copy_up_node(
    raw: &[u8],
    full: &[u8],
    src: BorrowedFd<'_>,
    st: &libc::stat,
    kind: libc::mode_t,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> Result<()> {
    let up = |e: io::Error| entry_err(raw, format!("copying up {:?}", lossy(full)), e);
    let proc = sys::proc_fd_path(src).map_err(up)?;
    let xattrs = sys::list_xattrs(XattrTarget::Path(&proc, true)).unwrap_or_default();
    if kind == libc::S_IFLNK {
        let link = sys::readlink_fd(src).map_err(up)?;
        sys::symlinkat(&cstr(raw, &link)?, dir, name).map_err(up)?;
    } else {
        sys::mknodat(dir, name, st.st_mode, st.st_rdev).map_err(up)?;
    }
    sys::fchownat_nofollow(dir, name, st.st_uid, st.st_gid).map_err(up)?;
    let dst = sys::proc_path(dir, name).map_err(up)?;
    for (k, v) in xattrs
        .iter()
        .filter(|(k, _)| !k.to_bytes().starts_with(OVERLAY_XATTR_PREFIX))
    {
        if let Err(e) = sys::setxattr_path(&dst, k, v, false) {
            warn!(entry = %lossy(raw), xattr = ?k, error = %e, "xattr not copied up");
        }
    }
    if kind != libc::S_IFLNK {
        sys::fchmodat_nofollow(dir, name, st.st_mode & 0o7777).map_err(up)?;
    }
    sys::utimensat_nofollow(dir, name, &stat_times(st)).map_err(up)?;
    Ok(())
}

fn stat_times(st: &libc::stat) -> [libc::timespec; 2] {
    [
        ts(st.st_atime, st.st_atime_nsec),
        ts(st.st_mtime, st.st_mtime_nsec),
    ]
}

/// Owner, xattrs (without overlayfs' private ones) and mode of a copied-up object.
fn copy_meta_fd(
    fd: BorrowedFd<'_>,
    st: &libc::stat,
    xattrs: &[(CString, Vec<u8>)],
) -> io::Result<()> {
    sys::fchown(fd, st.st_uid, st.st_gid)?;
    for (k, v) in xattrs
        .iter()
        .filter(|(k, _)| !k.to_bytes().starts_with(OVERLAY_XATTR_PREFIX))
    {
        if let Err(e) = sys::fsetxattr(fd, k, v) {
            warn!(xattr = ?k, error = %e, "xattr not copied up");
        }
    }
    sys::fchmod(fd, st.st_mode & 0o7777)
}
