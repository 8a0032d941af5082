//! Resolving parent directories inside the root (with `openat2(RESOLVE_IN_ROOT)`), creating
//! missing ones, and the cache of resolved parents.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use crate::error::lossy;
use crate::sys::{self, errno};

use super::paths::{RelPath, clamp_join, split_parent};
use super::{Extractor, Result, cstr, entry_err, invalid};

/// Resolved parent directories kept open at most (the cache is emptied when full).
const CACHE_LIMIT: usize = 512;
/// Symbolic links followed at most while creating missing parents.
const MAX_LINK_DEPTH: u32 = 40;

impl Extractor<'_> {
    pub(super) fn cache_put(&mut self, path: Vec<u8>, fd: Rc<OwnedFd>) {
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(path, fd);
    }

    /// Forgets every resolved parent: called after removing a directory or symbolic link.
    pub(super) fn invalidate(&mut self) {
        self.cache.clear();
    }

    /// Resolves an existing directory inside the root (no creation).
    pub(super) fn lookup_dir(&mut self, rel: &[u8]) -> io::Result<Rc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.cache.get(rel) {
            return Ok(fd.clone());
        }
        let c = sys::cstring(rel)?;
        let fd = Rc::new(sys::openat2_in_root(
            self.root.as_fd(),
            &c,
            libc::O_PATH | libc::O_DIRECTORY,
        )?);
        self.cache_put(rel.to_vec(), fd.clone());
        Ok(fd)
    }

    /// Resolves the directory `rel` inside the root, creating what is missing (mode 0755, owned
    /// by root, as containerd does for parents a layer does not list).
    pub(super) fn parent_dir(&mut self, rel: &[u8], raw: &[u8]) -> Result<Rc<OwnedFd>> {
        match self.lookup_dir(rel) {
            Ok(fd) => Ok(fd),
            Err(e) if errno(&e) == libc::ENOENT => self.mkdir_all(rel, raw, 0),
            Err(e) if errno(&e) == libc::ENOTDIR => Err(invalid(
                raw,
                format!("parent {:?} is not a directory", lossy(rel)),
            )),
            Err(e) => Err(entry_err(
                raw,
                format!("resolving parent {:?}", lossy(rel)),
                e,
            )),
        }
    }

    fn mkdir_all(&mut self, rel: &[u8], raw: &[u8], depth: u32) -> Result<Rc<OwnedFd>> {
        if depth > MAX_LINK_DEPTH {
            return Err(invalid(
                raw,
                "too many levels of symbolic links in its parents",
            ));
        }
        let mut dir = self.root.clone();
        let mut start = 0;
        for end in RelPath::component_ends(rel).collect::<Vec<_>>() {
            let prefix = &rel[..end];
            let comp = &rel[start..end];
            start = end + 1;
            match self.lookup_dir(prefix) {
                Ok(fd) => {
                    dir = fd;
                    continue;
                }
                Err(e) if errno(&e) == libc::ENOENT => {}
                Err(e) if errno(&e) == libc::ENOTDIR => {
                    return Err(invalid(
                        raw,
                        format!("parent {:?} is not a directory", lossy(prefix)),
                    ));
                }
                Err(e) => {
                    return Err(entry_err(
                        raw,
                        format!("resolving parent {:?}", lossy(prefix)),
                        e,
                    ));
                }
            }
            let name = cstr(raw, comp)?;
            match sys::mkdirat(dir.as_fd(), &name, 0o755) {
                Ok(()) => sys::fchmodat_nofollow(dir.as_fd(), &name, 0o755).map_err(|e| {
                    entry_err(raw, format!("creating parent {:?}", lossy(prefix)), e)
                })?,
                Err(e) if errno(&e) == libc::EEXIST => {
                    // Something that does not resolve to a directory is there: a symbolic link to
                    // a missing directory is followed (inside the root) and its target created,
                    // as containerd does; anything else is an error.
                    let st = sys::fstatat_nofollow(dir.as_fd(), &name).map_err(|e| {
                        entry_err(raw, format!("inspecting parent {:?}", lossy(prefix)), e)
                    })?;
                    if !sys::is_type(&st, libc::S_IFLNK) {
                        return Err(invalid(
                            raw,
                            format!("parent {:?} is not a directory", lossy(prefix)),
                        ));
                    }
                    let c = cstr(raw, prefix)?;
                    let link = sys::openat2_in_root(
                        self.root.as_fd(),
                        &c,
                        libc::O_PATH | libc::O_NOFOLLOW,
                    )
                    .and_then(|fd| sys::readlink_fd(fd.as_fd()))
                    .map_err(|e| entry_err(raw, format!("reading link {:?}", lossy(prefix)), e))?;
                    let base = if link.starts_with(b"/") {
                        &[][..]
                    } else {
                        split_parent(prefix).0
                    };
                    let target = clamp_join(base, &link);
                    self.mkdir_all(&target, raw, depth + 1)?;
                }
                Err(e) => {
                    return Err(entry_err(
                        raw,
                        format!("creating parent {:?}", lossy(prefix)),
                        e,
                    ));
                }
            }
            dir = self.lookup_dir(prefix).map_err(|e| {
                if errno(&e) == libc::ENOTDIR || errno(&e) == libc::ENOENT {
                    invalid(
                        raw,
                        format!("parent {:?} is not a directory", lossy(prefix)),
                    )
                } else {
                    entry_err(raw, format!("resolving parent {:?}", lossy(prefix)), e)
                }
            })?;
        }
        Ok(dir)
    }
}
