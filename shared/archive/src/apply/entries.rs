//! Creating each kind of entry: regular files, directories, symbolic links, devices and fifos,
//! hard links; and making room for an entry where something else is.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;

use crate::ArchiveError;
use crate::error::lossy;
use crate::pipeline::CHUNK;
use crate::sys::{self, XattrTarget, errno};

use super::metadata::{Meta, set_xattrs};
use super::paths::RelPath;
use super::{Extractor, Result, cstr, entry_err, invalid, remove_tree};

impl Extractor<'_> {
    /// Makes room for a new entry at `parent/name`: removes what is there, except a directory
    /// when `keep_dir` (returns true then).
    pub(super) fn clear_slot(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        raw: &[u8],
        keep_dir: bool,
    ) -> Result<bool> {
        let st = match sys::fstatat_nofollow(parent, name) {
            Ok(st) => st,
            Err(e) if errno(&e) == libc::ENOENT => return Ok(false),
            Err(e) => return Err(entry_err(raw, "inspecting existing entry", e)),
        };
        if sys::is_type(&st, libc::S_IFDIR) {
            if keep_dir {
                return Ok(true);
            }
            remove_tree(parent, name)
                .map_err(|e| entry_err(raw, "removing existing directory", e))?;
            self.invalidate();
        } else {
            sys::unlinkat(parent, name, 0)
                .map_err(|e| entry_err(raw, "removing existing entry", e))?;
            if !sys::is_type(&st, libc::S_IFREG) {
                self.invalidate();
            }
        }
        Ok(false)
    }

    pub(super) fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &RelPath,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<()> {
        let parent = self.parent_dir(path.parent(), raw)?;
        let name = cstr(raw, path.name())?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match sys::openat(parent.as_fd(), &name, flags, 0o600) {
            Ok(fd) => fd,
            Err(e) if errno(&e) == libc::EEXIST => {
                self.clear_slot(parent.as_fd(), &name, raw, false)?;
                sys::openat(parent.as_fd(), &name, flags, 0o600)
                    .map_err(|e| entry_err(raw, "creating file", e))?
            }
            Err(e) => return Err(entry_err(raw, "creating file", e)),
        };
        let mut file = File::from(fd);
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < CHUNK {
            buf.resize(CHUNK, 0);
        }
        let copied = loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    break Err(ArchiveError::MalformedTar {
                        context: format!("reading data of entry {:?}", lossy(raw)),
                        source: e,
                    });
                }
            };
            if let Err(e) = file.write_all(&buf[..n]) {
                break Err(entry_err(raw, "writing file", e));
            }
        };
        self.buf = buf;
        copied?;
        let fd = file.as_fd();
        sys::fchown(fd, meta.uid, meta.gid).map_err(|e| entry_err(raw, "chown", e))?;
        set_xattrs(XattrTarget::Fd(fd), meta, raw)?;
        sys::fchmod(fd, meta.mode).map_err(|e| entry_err(raw, "chmod", e))?;
        sys::futimens(fd, &meta.times).map_err(|e| entry_err(raw, "setting times", e))?;
        self.record_created(&path.full);
        Ok(())
    }

    pub(super) fn directory(&mut self, path: &RelPath, meta: &Meta, raw: &[u8]) -> Result<()> {
        let parent = self.parent_dir(path.parent(), raw)?;
        let name = cstr(raw, path.name())?;
        match sys::mkdirat(parent.as_fd(), &name, 0o700) {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => {
                // An existing directory is kept (only its metadata changes), as Docker and
                // containerd do; anything else is replaced.
                if !self.clear_slot(parent.as_fd(), &name, raw, true)? {
                    sys::mkdirat(parent.as_fd(), &name, 0o700)
                        .map_err(|e| entry_err(raw, "creating directory", e))?;
                }
            }
            Err(e) => return Err(entry_err(raw, "creating directory", e)),
        }
        let fd = sys::openat(
            parent.as_fd(),
            &name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| entry_err(raw, "opening directory", e))?;
        sys::fchown(fd.as_fd(), meta.uid, meta.gid).map_err(|e| entry_err(raw, "chown", e))?;
        set_xattrs(XattrTarget::Fd(fd.as_fd()), meta, raw)?;
        sys::fchmod(fd.as_fd(), meta.mode).map_err(|e| entry_err(raw, "chmod", e))?;
        // Times are set once the layer is done: creating children changes them.
        self.dir_times.push((path.full.clone(), meta.times));
        self.cache_put(path.full.clone(), Rc::new(fd));
        Ok(())
    }

    pub(super) fn symlink(
        &mut self,
        path: &RelPath,
        meta: &Meta,
        raw: &[u8],
        target: &[u8],
    ) -> Result<()> {
        if target.is_empty() {
            return Err(invalid(raw, "symbolic link with an empty target"));
        }
        let parent = self.parent_dir(path.parent(), raw)?;
        let name = cstr(raw, path.name())?;
        let target = cstr(raw, target)?;
        if let Err(e) = sys::symlinkat(&target, parent.as_fd(), &name) {
            if errno(&e) != libc::EEXIST {
                return Err(entry_err(raw, "creating symbolic link", e));
            }
            self.clear_slot(parent.as_fd(), &name, raw, false)?;
            sys::symlinkat(&target, parent.as_fd(), &name)
                .map_err(|e| entry_err(raw, "creating symbolic link", e))?;
        }
        self.set_meta_at(parent.as_fd(), &name, meta, raw, false)
    }

    pub(super) fn special(
        &mut self,
        path: &RelPath,
        meta: &Meta,
        raw: &[u8],
        kind: libc::mode_t,
        dev: libc::dev_t,
    ) -> Result<()> {
        let parent = self.parent_dir(path.parent(), raw)?;
        let name = cstr(raw, path.name())?;
        let mode = kind | (meta.mode & 0o777);
        if let Err(e) = sys::mknodat(parent.as_fd(), &name, mode, dev) {
            if errno(&e) != libc::EEXIST {
                return Err(entry_err(raw, "creating device or fifo", e));
            }
            self.clear_slot(parent.as_fd(), &name, raw, false)?;
            sys::mknodat(parent.as_fd(), &name, mode, dev)
                .map_err(|e| entry_err(raw, "creating device or fifo", e))?;
        }
        self.set_meta_at(parent.as_fd(), &name, meta, raw, true)
    }

    pub(super) fn hardlink(&mut self, path: &RelPath, raw: &[u8], target_raw: &[u8]) -> Result<()> {
        let target = RelPath::parse(target_raw).map_err(|reason| ArchiveError::Escape {
            path: lossy(raw),
            reason: format!("hard link target {:?}: {reason}", lossy(target_raw)),
        })?;
        if target.is_root() {
            return Err(invalid(
                raw,
                format!("hard link target {:?} is the root", lossy(target_raw)),
            ));
        }
        if target.full == path.full {
            return Ok(());
        }
        let parent = self.parent_dir(path.parent(), raw)?;
        let name = cstr(raw, path.name())?;
        let tname = cstr(raw, target.name())?;
        let (mut cleared, mut copied) = (false, false);
        loop {
            let res = match self.lookup_dir(target.parent()) {
                Ok(tparent) => sys::linkat(tparent.as_fd(), &tname, parent.as_fd(), &name),
                Err(e) => Err(e),
            };
            let e = match res {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match errno(&e) {
                libc::EEXIST if !cleared => {
                    cleared = true;
                    self.clear_slot(parent.as_fd(), &name, raw, false)?;
                }
                libc::ENOENT | libc::ENOTDIR if !copied && !self.lowers.is_empty() => {
                    copied = true;
                    if !self.copy_up(&target, raw)? {
                        return Err(invalid(
                            raw,
                            format!("hard link target {:?} not found", lossy(target_raw)),
                        ));
                    }
                }
                libc::ENOENT | libc::ENOTDIR => {
                    return Err(invalid(
                        raw,
                        format!("hard link target {:?} not found", lossy(target_raw)),
                    ));
                }
                libc::EPERM => {
                    return Err(invalid(
                        raw,
                        format!("cannot hard link to {:?}: {e}", lossy(target_raw)),
                    ));
                }
                _ => {
                    return Err(entry_err(
                        raw,
                        format!("hard linking to {:?}", lossy(target_raw)),
                        e,
                    ));
                }
            }
        }
    }
}
