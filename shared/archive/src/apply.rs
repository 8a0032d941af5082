//! Extraction of one layer tar into a directory, confined to it.
//!
//! Every parent directory is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! relative to the root, so `..` and symbolic links (absolute or relative) can never lead outside
//! it; the last component is then created, replaced or removed with `*at()` calls relative to the
//! parent's descriptor that never follow a symbolic link there. Resolved parents are cached by
//! path; the cache is dropped whenever a directory or symbolic link is removed, the only changes
//! that can alter what a path resolves to.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;
use tracing::{debug, warn};

use crate::bounds::Bounded;
use crate::error::lossy;
use crate::pipeline::{CHUNK, ChannelReader};
use crate::sys::{self, XattrTarget, errno};
use crate::{ApplyOptions, ArchiveError, WhiteoutMode};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE: &CStr = c"trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
/// Resolved parent directories kept open at most (the cache is emptied when full).
const CACHE_LIMIT: usize = 512;
/// Symbolic links followed at most while creating missing parents.
const MAX_LINK_DEPTH: u32 = 40;

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// A tar path made relative to the root: no leading `/`, no `.` or empty components, `..`
/// resolved lexically (and refused when it would climb above the root).
pub(crate) struct RelPath {
    full: Vec<u8>,
    /// Where the last component starts in `full`.
    name_start: usize,
}

impl RelPath {
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut comps: Vec<&[u8]> = Vec::new();
        for comp in raw.split(|b| *b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    if comps.pop().is_none() {
                        return Err("\"..\" climbs above the root".to_owned());
                    }
                }
                c => comps.push(c),
            }
        }
        let full = comps.join(&b'/');
        let name_start = comps.last().map_or(0, |last| full.len() - last.len());
        Ok(Self { full, name_start })
    }

    fn is_root(&self) -> bool {
        self.full.is_empty()
    }

    fn parent(&self) -> &[u8] {
        &self.full[..self.name_start.saturating_sub(1)]
    }

    fn name(&self) -> &[u8] {
        &self.full[self.name_start..]
    }

    /// Byte offsets where each component ends (exclusive), for walking prefixes.
    fn component_ends(path: &[u8]) -> impl Iterator<Item = usize> + '_ {
        path.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| i)
            .chain((!path.is_empty()).then_some(path.len()))
    }
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    if !parent.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
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
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    /// atime, mtime.
    times: [libc::timespec; 2],
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Self> {
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

    // ----- parent resolution -----

    fn cache_put(&mut self, path: Vec<u8>, fd: Rc<OwnedFd>) {
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(path, fd);
    }

    /// Forgets every resolved parent: called after removing a directory or symbolic link.
    fn invalidate(&mut self) {
        self.cache.clear();
    }

    /// Resolves an existing directory inside the root (no creation).
    fn lookup_dir(&mut self, rel: &[u8]) -> io::Result<Rc<OwnedFd>> {
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
    fn parent_dir(&mut self, rel: &[u8], raw: &[u8]) -> Result<Rc<OwnedFd>> {
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

    /// Makes room for a new entry at `parent/name`: removes what is there, except a directory
    /// when `keep_dir` (returns true then).
    fn clear_slot(
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

    // ----- entry kinds -----

    fn regular<R: Read>(
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

    fn directory(&mut self, path: &RelPath, meta: &Meta, raw: &[u8]) -> Result<()> {
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

    fn symlink(&mut self, path: &RelPath, meta: &Meta, raw: &[u8], target: &[u8]) -> Result<()> {
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

    fn special(
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

    /// Owner, xattrs, mode (unless a symbolic link) and times of `parent/name`, not following it.
    fn set_meta_at(
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

    fn hardlink(&mut self, path: &RelPath, raw: &[u8], target_raw: &[u8]) -> Result<()> {
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

    fn whiteout(&mut self, path: &RelPath, target: &[u8], meta: &Meta, raw: &[u8]) -> Result<()> {
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

    // ----- hard links into lower layers (Overlay mode) -----

    /// Finds `target` in the overlay stack below the root (honouring whiteouts and opaque
    /// directories of the root and of each lower) and copies it up into the root. False when the
    /// stack does not have it.
    fn copy_up(&mut self, target: &RelPath, raw: &[u8]) -> Result<bool> {
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
            kind => {
                let proc = sys::proc_fd_path(src.as_fd()).map_err(up)?;
                let xattrs = sys::list_xattrs(XattrTarget::Path(&proc, true)).unwrap_or_default();
                if kind == libc::S_IFLNK {
                    let link = sys::readlink_fd(src.as_fd()).map_err(up)?;
                    sys::symlinkat(&cstr(raw, &link)?, dir.as_fd(), &name).map_err(up)?;
                } else {
                    sys::mknodat(dir.as_fd(), &name, st.st_mode, st.st_rdev).map_err(up)?;
                }
                sys::fchownat_nofollow(dir.as_fd(), &name, st.st_uid, st.st_gid).map_err(up)?;
                let dst = sys::proc_path(dir.as_fd(), &name).map_err(up)?;
                for (k, v) in xattrs
                    .iter()
                    .filter(|(k, _)| !k.to_bytes().starts_with(OVERLAY_XATTR_PREFIX))
                {
                    if let Err(e) = sys::setxattr_path(&dst, k, v, false) {
                        warn!(entry = %lossy(raw), xattr = ?k, error = %e, "xattr not copied up");
                    }
                }
                if kind != libc::S_IFLNK {
                    sys::fchmodat_nofollow(dir.as_fd(), &name, st.st_mode & 0o7777).map_err(up)?;
                }
                sys::utimensat_nofollow(dir.as_fd(), &name, &stat_times(&st)).map_err(up)?;
            }
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

    // ----- the end -----

    fn fix_dir_times(&mut self) -> Result<()> {
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

/// Joins a symbolic link's target to the directory holding the link, resolving `..` lexically and
/// stopping at the root (as `RESOLVE_IN_ROOT` does).
fn clamp_join(base: &[u8], link: &[u8]) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = base
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for c in link.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    comps.join(&b'/')
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

/// Sets an entry's xattrs. overlayfs' private `trusted.overlay.*` attributes are never taken from
/// a layer (they would change how the overlay resolves paths). A file system that does not support
/// an attribute only earns a warning, except for `security.*` ones (capabilities, labels), which
/// the image needs.
fn set_xattrs(target: XattrTarget<'_>, meta: &Meta, raw: &[u8]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        let p = RelPath::parse(b"/a//./b/../c/d").expect("valid");
        assert_eq!(p.full, b"a/c/d");
        assert_eq!(p.parent(), b"a/c");
        assert_eq!(p.name(), b"d");
        let p = RelPath::parse(b"./x").expect("valid");
        assert_eq!((p.parent(), p.name()), (&b""[..], &b"x"[..]));
        assert!(RelPath::parse(b"./").expect("valid").is_root());
        assert!(RelPath::parse(b"a/../../x").is_err());
        assert!(RelPath::parse(b"/../x").is_err());
        assert_eq!(
            RelPath::component_ends(b"a/bc/d").collect::<Vec<_>>(),
            vec![1, 4, 6]
        );
        assert_eq!(RelPath::component_ends(b"").count(), 0);
    }

    #[test]
    fn link_targets_clamp_at_root() {
        assert_eq!(clamp_join(b"a/b", b"../../../x"), b"x");
        assert_eq!(clamp_join(b"a/b", b"c/./d"), b"a/b/c/d");
        assert_eq!(clamp_join(b"", b"/etc/"), b"etc");
    }

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
