//! Extraction of one layer tar into a directory, confined to it.
//!
//! Every parent directory is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! relative to the root, so `..` and symbolic links (absolute or relative) can never lead outside
//! it; the last component is then created, replaced or removed with `*at()` calls relative to the
//! parent's descriptor that never follow a symbolic link there. Resolved parents are cached by
//! path; the cache is dropped whenever a directory or symbolic link is removed, the only changes
//! that can alter what a path resolves to.

mod copy_up;
mod entries;
mod metadata;
mod paths;
mod resolution;
mod whiteouts;

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;
use tracing::debug;

use crate::bounds::Bounded;
use crate::error::lossy;
use crate::pipeline::ChannelReader;
use crate::sys::{self, errno};
use crate::{ApplyOptions, ArchiveError, WhiteoutMode};

use metadata::Meta;
use paths::{RelPath, split_parent};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OVERLAY_OPAQUE: &CStr = c"trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

fn entry_err(raw: &[u8], op: impl Into<String>, source: io::Error) -> ArchiveError {
    ArchiveError::Entry {
        path: lossy(raw),
        op: op.into(),
        source,
    }
}

fn invalid(raw: &[u8], reason: impl Into<String>) -> ArchiveError {
    ArchiveError::InvalidEntry {
        path: lossy(raw),
        reason: reason.into(),
    }
}

fn cstr(raw: &[u8], bytes: &[u8]) -> Result<CString> {
    sys::cstring(bytes).map_err(|e| invalid(raw, e.to_string()))
}

pub(crate) struct Extractor<'a> {
    root: Rc<OwnedFd>,
    root_path: &'a Path,
    mode: WhiteoutMode,
    lowers: Vec<(PathBuf, OwnedFd)>,
    cache: HashMap<Vec<u8>, Rc<OwnedFd>>,
    dir_times: Vec<(Vec<u8>, [libc::timespec; 2])>,
    /// Delete mode: every path this layer created (and their parents), which an opaque whiteout
    /// of a directory keeps.
    created: HashSet<Vec<u8>>,
    buf: Vec<u8>,
    pub(crate) entries: u64,
}

impl<'a> Extractor<'a> {
    pub(crate) fn new(root_path: &'a Path, opts: &ApplyOptions) -> Result<Self> {
        let root =
            sys::open_dir(root_path).map_err(|e| ArchiveError::io(root_path, "opening root", e))?;
        let lowers = match opts.whiteouts {
            WhiteoutMode::Overlay => opts
                .parents
                .iter()
                .map(|p| {
                    sys::open_dir(p)
                        .map(|fd| (p.clone(), fd))
                        .map_err(|e| ArchiveError::io(p, "opening lower layer", e))
                })
                .collect::<Result<_>>()?,
            WhiteoutMode::Delete => Vec::new(),
        };
        Ok(Self {
            root: Rc::new(root),
            root_path,
            mode: opts.whiteouts,
            lowers,
            cache: HashMap::new(),
            dir_times: Vec::new(),
            created: HashSet::new(),
            buf: Vec::new(),
            entries: 0,
        })
    }

    pub(crate) fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Extracts every entry, then consumes the rest of the stream and fixes directory times.
    pub(crate) fn extract(&mut self, reader: ChannelReader) -> Result<()> {
        // Extension headers are bounded before the parser reads them into memory.
        let mut archive = tar::Archive::new(Bounded::new(reader));
        let mut last: Vec<u8> = Vec::new();
        let after = |last: &[u8]| {
            if last.is_empty() {
                "at its start".to_owned()
            } else {
                format!("after entry {:?}", lossy(last))
            }
        };
        {
            let entries = archive.entries().map_err(|e| ArchiveError::MalformedTar {
                context: after(&last),
                source: e,
            })?;
            for entry in entries {
                let mut entry = entry.map_err(|e| ArchiveError::MalformedTar {
                    context: after(&last),
                    source: e,
                })?;
                self.entries += 1;
                last.clear();
                last.extend_from_slice(&entry.path_bytes());
                self.apply_entry(&mut entry, &last)?;
            }
        }
        archive
            .into_inner()
            .into_inner()
            .drain()
            .map_err(|e| ArchiveError::MalformedTar {
                context: "after its end".to_owned(),
                source: e,
            })?;
        self.fix_dir_times()
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<()> {
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            debug!(entry = %lossy(raw), "ignoring PAX global header");
            return Ok(());
        }
        let path = RelPath::parse(raw).map_err(|reason| ArchiveError::Escape {
            path: lossy(raw),
            reason,
        })?;
        let meta = Meta::read(entry, raw)?;
        if path.is_root() {
            // Like containerd: the root belongs to the snapshotter.
            debug!(entry = %lossy(raw), "ignoring entry for the root directory");
            return Ok(());
        }
        if let Some(target) = path.name().strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&path, target, &meta, raw);
        }
        let r = match etype {
            EntryType::Directory => self.directory(&path, &meta, raw),
            EntryType::Regular if raw.ends_with(b"/") => self.directory(&path, &meta, raw),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                return self.regular(entry, &path, &meta, raw);
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.symlink(&path, &meta, raw, &target)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(&path, raw, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let num = |v: io::Result<Option<u32>>| {
                    v.map(Option::unwrap_or_default)
                        .map_err(|e| invalid(raw, format!("bad device number: {e}")))
                };
                let (kind, dev) = match etype {
                    EntryType::Char => (
                        libc::S_IFCHR,
                        sys::makedev(num(h.device_major())?, num(h.device_minor())?),
                    ),
                    EntryType::Block => (
                        libc::S_IFBLK,
                        sys::makedev(num(h.device_major())?, num(h.device_minor())?),
                    ),
                    _ => (libc::S_IFIFO, 0),
                };
                self.special(&path, &meta, raw, kind, dev)
            }
            other => Err(invalid(
                raw,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            )),
        };
        r?;
        self.record_created(&path.full);
        Ok(())
    }

    fn record_created(&mut self, path: &[u8]) {
        if self.mode != WhiteoutMode::Delete {
            return;
        }
        let mut p = path;
        while !p.is_empty() && self.created.insert(p.to_vec()) {
            p = split_parent(p).0;
        }
    }
}

/// Removes `dir/name` and, if it is a directory, everything below it, never following a
/// symbolic link.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match sys::unlinkat(dir, name, 0) {
        Ok(()) => return Ok(()),
        Err(e) if errno(&e) == libc::EISDIR => {}
        Err(e) => return Err(e),
    }
    let sub = sys::openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    for (child, _) in sys::read_dir(sub.as_fd())? {
        remove_tree(sub.as_fd(), &child)?;
    }
    drop(sub);
    sys::unlinkat(dir, name, libc::AT_REMOVEDIR)
}
