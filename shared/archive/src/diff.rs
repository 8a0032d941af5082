//! Producing layer tars: the changes between two trees ([`write_diff`]) or the content of an
//! overlayfs upper directory ([`write_overlay_diff`]).
//!
//! Output format: ustar headers with PAX extended headers where needed (long paths and link
//! names, `SCHILY.xattr.*`), numeric owners only, mtimes truncated to whole seconds (as containerd
//! writes them, so a layer does not depend on sub-second timing), entries in depth-first order with
//! the children of each directory sorted by name bytes. Every directory above a change is
//! written too (with its current metadata) so that applying the layer restores it.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_core::Digest;
use tar::{EntryType, Header};
use tracing::debug;

use crate::ArchiveError;
use crate::sys::{self, XattrTarget};

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

const BLOCK: usize = 512;
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// What [`write_diff`] and [`write_overlay_diff`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// sha256 of the tar written (its diff ID).
    pub diff_id: Digest,
    /// Bytes written.
    pub size: u64,
}

/// Writes a layer tar (uncompressed; wrap `out` in a compressor if wanted) of the changes that
/// turn the tree `lower` into the tree `upper`: added and modified entries with their metadata,
/// hard links within the layer as tar hard links, and deletions as `.wh.name` whiteouts (one for a
/// deleted directory). `lower` may be an empty directory. Unchanged directories above a change are
/// included. The order is deterministic (see the module docs).
pub fn write_diff(lower: &Path, upper: &Path, out: impl Write) -> Result<DiffStats> {
    let mut d = Differ {
        tar: TarWriter::new(out),
        pending: Vec::new(),
    };
    d.walk(Some(lower), upper, b"")?;
    let stats = d.tar.finish(upper)?;
    debug!(lower = %lower.display(), upper = %upper.display(), size = stats.size, diff_id = %stats.diff_id, "wrote diff");
    Ok(stats)
}

/// Writes a layer tar of an overlayfs upper directory: character devices 0/0 become `.wh.name`
/// whiteouts, directories marked `trusted.overlay.opaque=y` get a `.wh..wh..opq` entry (right after
/// the directory's own entry), everything else is written with its metadata. overlayfs' private
/// xattrs are not written. Upper directories that use `redirect_dir` or `metacopy` cannot be
/// described without their lower layers and are refused.
pub fn write_overlay_diff(upper_dir: &Path, out: impl Write) -> Result<DiffStats> {
    let mut tar = TarWriter::new(out);
    walk_overlay(&mut tar, upper_dir, b"")?;
    let stats = tar.finish(upper_dir)?;
    debug!(upper = %upper_dir.display(), size = stats.size, diff_id = %stats.diff_id, "wrote overlay diff");
    Ok(stats)
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |e| ArchiveError::io(path, op, e)
}

/// Names in a directory, sorted by their bytes.
fn list(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(io_err(dir, "reading directory"))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn lstat(path: &Path) -> Result<Metadata> {
    fs::symlink_metadata(path).map_err(io_err(path, "inspecting"))
}

/// All xattrs of `path` (not following a symbolic link), overlayfs' private ones included.
fn raw_xattrs(path: &Path) -> Result<Vec<(CString, Vec<u8>)>> {
    let c = sys::path_cstring(path).map_err(io_err(path, "reading xattrs of"))?;
    sys::list_xattrs(XattrTarget::Path(&c, false)).map_err(io_err(path, "reading xattrs of"))
}

/// The xattrs a layer carries: all but overlayfs' private ones.
fn layer_xattrs(path: &Path) -> Result<Vec<(CString, Vec<u8>)>> {
    let mut x = raw_xattrs(path)?;
    x.retain(|(k, _)| !k.to_bytes().starts_with(OVERLAY_XATTR_PREFIX));
    Ok(x)
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

struct Pending {
    rel: Vec<u8>,
    path: PathBuf,
    emitted: bool,
}

struct Differ<W: Write> {
    tar: TarWriter<W>,
    /// Directories being walked whose entry is written only once something below them changes.
    pending: Vec<Pending>,
}

impl<W: Write> Differ<W> {
    fn walk(&mut self, lower: Option<&Path>, upper: &Path, rel: &[u8]) -> Result<()> {
        let up = list(upper)?;
        let low = match lower {
            Some(l) => list(l)?,
            None => Vec::new(),
        };
        let (mut i, mut j) = (0, 0);
        while i < up.len() || j < low.len() {
            let order = match (up.get(i), low.get(j)) {
                (Some(u), Some(l)) => u.as_bytes().cmp(l.as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let name = &up[i];
                    self.add(&upper.join(name), join(rel, name.as_bytes()))?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.flush_pending()?;
                    self.tar.whiteout(rel, low[j].as_bytes())?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let name = &up[i];
                    // Both sides exist, so `lower` is Some here.
                    let lpath = lower.map(|l| l.join(name)).unwrap_or_default();
                    self.compare(&lpath, &upper.join(name), join(rel, name.as_bytes()))?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// `path` is new (or replaces something of another kind): write it and all below it.
    fn add(&mut self, path: &Path, rel: Vec<u8>) -> Result<()> {
        let md = lstat(path)?;
        self.flush_pending()?;
        let xattrs = layer_xattrs(path)?;
        self.tar.entry(&rel, path, &md, &xattrs)?;
        if md.is_dir() {
            self.pending.push(Pending {
                rel: rel.clone(),
                path: path.to_owned(),
                emitted: true,
            });
            self.walk(None, path, &rel)?;
            self.pending.pop();
        }
        Ok(())
    }

    fn compare(&mut self, lpath: &Path, upath: &Path, rel: Vec<u8>) -> Result<()> {
        let l = lstat(lpath)?;
        let u = lstat(upath)?;
        if l.is_dir() && u.is_dir() {
            // Size and mtime of directories say nothing useful (moby/moby#9874).
            let changed = l.mode() != u.mode()
                || l.uid() != u.uid()
                || l.gid() != u.gid()
                || layer_xattrs(lpath)? != layer_xattrs(upath)?;
            if changed {
                self.flush_pending()?;
                self.tar.entry(&rel, upath, &u, &layer_xattrs(upath)?)?;
            }
            self.pending.push(Pending {
                rel: rel.clone(),
                path: upath.to_owned(),
                emitted: changed,
            });
            self.walk(Some(lpath), upath, &rel)?;
            self.pending.pop();
            return Ok(());
        }
        if l.file_type() == u.file_type() && !file_changed(lpath, &l, upath, &u)? {
            return Ok(());
        }
        self.add(upath, rel)
    }

    fn flush_pending(&mut self) -> Result<()> {
        for i in 0..self.pending.len() {
            if self.pending[i].emitted {
                continue;
            }
            let p = &self.pending[i];
            let md = lstat(&p.path)?;
            let xattrs = layer_xattrs(&p.path)?;
            self.tar.entry(&p.rel, &p.path, &md, &xattrs)?;
            self.pending[i].emitted = true;
        }
        Ok(())
    }
}

/// Whether a non-directory differs between the trees (same file type on both sides).
fn file_changed(lpath: &Path, l: &Metadata, upath: &Path, u: &Metadata) -> Result<bool> {
    if l.mode() != u.mode()
        || l.uid() != u.uid()
        || l.gid() != u.gid()
        || l.rdev() != u.rdev()
        || l.size() != u.size()
        || l.mtime() != u.mtime()
        || l.mtime_nsec() != u.mtime_nsec()
    {
        return Ok(true);
    }
    if l.file_type().is_symlink() {
        let a = fs::read_link(lpath).map_err(io_err(lpath, "reading link"))?;
        let b = fs::read_link(upath).map_err(io_err(upath, "reading link"))?;
        if a != b {
            return Ok(true);
        }
    }
    if layer_xattrs(lpath)? != layer_xattrs(upath)? {
        return Ok(true);
    }
    // Equal metadata with a whole-second mtime is ambiguous (a file system or copy without
    // sub-second times): compare the bytes, as containerd does.
    if l.file_type().is_file() && u.mtime_nsec() == 0 && (l.dev(), l.ino()) != (u.dev(), u.ino()) {
        return Ok(!same_content(lpath, upath)?);
    }
    Ok(false)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = File::open(a).map_err(io_err(a, "opening"))?;
    let mut fb = File::open(b).map_err(io_err(b, "opening"))?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(io_err(a, "reading"))?;
        let m = read_full(&mut fb, &mut bb).map_err(io_err(b, "reading"))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn walk_overlay<W: Write>(tar: &mut TarWriter<W>, dir: &Path, rel: &[u8]) -> Result<()> {
    for name in list(dir)? {
        let path = dir.join(&name);
        let crel = join(rel, name.as_bytes());
        let md = lstat(&path)?;
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            tar.whiteout(rel, name.as_bytes())?;
            continue;
        }
        let raw = raw_xattrs(&path)?;
        let overlay_attr = |k: &[u8]| {
            raw.iter()
                .find(|(n, _)| n.to_bytes() == k)
                .map(|(_, v)| v.as_slice())
        };
        if overlay_attr(b"trusted.overlay.redirect").is_some() {
            return Err(unsupported(
                &path,
                "renamed directory (overlayfs redirect_dir) needs its lower layers",
            ));
        }
        if overlay_attr(b"trusted.overlay.metacopy").is_some() {
            return Err(unsupported(
                &path,
                "metadata-only copy-up (overlayfs metacopy) needs its lower layers",
            ));
        }
        let opaque = ft.is_dir() && overlay_attr(b"trusted.overlay.opaque") == Some(b"y");
        let xattrs: Vec<_> = raw
            .iter()
            .filter(|(k, _)| !k.to_bytes().starts_with(OVERLAY_XATTR_PREFIX))
            .cloned()
            .collect();
        tar.entry(&crel, &path, &md, &xattrs)?;
        if ft.is_dir() {
            if opaque {
                tar.whiteout(&crel, b".wh..opq")?;
            }
            walk_overlay(tar, &path, &crel)?;
        }
    }
    Ok(())
}

fn unsupported(path: &Path, reason: &str) -> ArchiveError {
    ArchiveError::io(
        path,
        "writing overlay diff of",
        io::Error::new(io::ErrorKind::Unsupported, reason),
    )
}

/// Counts and hashes what goes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A minimal tar writer: ustar headers, PAX extended headers where needed.
struct TarWriter<W: Write> {
    out: BufWriter<HashWriter<W>>,
    /// (device, inode) of non-directories written so far with more than one link → their path.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where <len> counts the whole record including itself.
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(len.to_string().as_bytes());
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Puts `path` into the ustar name (and prefix) fields; false if it does not fit.
fn set_ustar_path(h: &mut Header, path: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else {
        return false;
    };
    if path.len() <= u.name.len() {
        u.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // Split at a '/' so that the prefix has at most 155 bytes and the name at most 100.
    for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/').rev() {
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if name.len() > u.name.len() || name.is_empty() {
            break;
        }
        if prefix.len() <= u.prefix.len() {
            u.prefix[..prefix.len()].copy_from_slice(prefix);
            u.name[..name.len()].copy_from_slice(name);
            return true;
        }
    }
    false
}

impl<W: Write> TarWriter<W> {
    fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(
                1 << 20,
                HashWriter {
                    inner: out,
                    hasher: Sha256::new(),
                    size: 0,
                },
            ),
            links: HashMap::new(),
        }
    }

    /// Writes one file-system object with its metadata.
    fn entry(
        &mut self,
        rel: &[u8],
        path: &Path,
        md: &Metadata,
        xattrs: &[(CString, Vec<u8>)],
    ) -> Result<()> {
        let ft = md.file_type();
        let mut h = Header::new_ustar();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(u64::from(md.uid()));
        h.set_gid(u64::from(md.gid()));
        h.set_mtime(u64::try_from(md.mtime()).unwrap_or(0));
        h.set_size(0);
        let mut name = rel.to_vec();
        let mut link: Option<Vec<u8>> = None;
        let mut data: Option<u64> = None;
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                h.set_entry_type(EntryType::Link);
                return self.write_entry(h, &name, Some(first.clone()), Vec::new(), None, path);
            }
            self.links.insert((md.dev(), md.ino()), rel.to_vec());
        }
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            name.push(b'/');
        } else if ft.is_file() {
            h.set_entry_type(EntryType::Regular);
            h.set_size(md.size());
            data = Some(md.size());
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            link = Some(
                fs::read_link(path)
                    .map_err(io_err(path, "reading link"))?
                    .into_os_string()
                    .into_vec(),
            );
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let dev = md.rdev();
            h.set_device_major(libc::major(dev))
                .map_err(io_err(path, "writing device numbers of"))?;
            h.set_device_minor(libc::minor(dev))
                .map_err(io_err(path, "writing device numbers of"))?;
        } else if ft.is_fifo() {
            h.set_entry_type(EntryType::Fifo);
        } else {
            debug!(path = %path.display(), "sockets cannot be stored in a layer, skipped");
            return Ok(());
        }
        let mut pax: Vec<Vec<u8>> = Vec::new();
        for (k, v) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k.to_bytes());
            pax.push(pax_record(&key, v));
        }
        self.write_entry(h, &name, link, pax, data, path)
    }

    /// A `.wh.<name>` entry in `parent` (`.wh..wh..opq` for an opaque directory).
    fn whiteout(&mut self, parent: &[u8], name: &[u8]) -> Result<()> {
        let mut wh = b".wh.".to_vec();
        wh.extend_from_slice(name);
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        self.write_entry(h, &join(parent, &wh), None, Vec::new(), None, Path::new(""))
    }

    fn write_entry(
        &mut self,
        mut h: Header,
        name: &[u8],
        link: Option<Vec<u8>>,
        mut pax: Vec<Vec<u8>>,
        data: Option<u64>,
        src: &Path,
    ) -> Result<()> {
        if !set_ustar_path(&mut h, name) {
            pax.push(pax_record(b"path", name));
            let n = name.len().min(100);
            h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        }
        if let Some(link) = &link {
            let n = link.len().min(100);
            h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
            if link.len() > 100 {
                pax.push(pax_record(b"linkpath", link));
            }
        }
        let werr = |e| ArchiveError::io(src, "writing tar entry for", e);
        if !pax.is_empty() {
            let records: Vec<u8> = pax.concat();
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            let base = name
                .rsplit(|b| *b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"entry");
            let mut pname = b"PaxHeaders.0/".to_vec();
            pname.extend_from_slice(&base[..base.len().min(100 - pname.len())]);
            set_ustar_path(&mut ph, &pname);
            ph.set_mode(0o644);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(0);
            ph.set_size(records.len() as u64);
            ph.set_cksum();
            self.out.write_all(ph.as_bytes()).map_err(werr)?;
            self.out.write_all(&records).map_err(werr)?;
            self.pad(records.len() as u64).map_err(werr)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(werr)?;
        if let Some(size) = data {
            let file = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(src)
                .map_err(io_err(src, "opening"))?;
            let copied =
                io::copy(&mut file.take(size), &mut self.out).map_err(io_err(src, "reading"))?;
            if copied != size {
                return Err(ArchiveError::io(
                    src,
                    "reading",
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank while being written ({copied} of {size} bytes)"),
                    ),
                ));
            }
            self.pad(size).map_err(werr)?;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = usize::try_from(len % BLOCK as u64).unwrap_or(0);
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn finish(mut self, what: &Path) -> Result<DiffStats> {
        let werr = |e| ArchiveError::io(what, "finishing layer tar of", e);
        self.out.write_all(&[0u8; 2 * BLOCK]).map_err(werr)?;
        let hw = self.out.into_inner().map_err(|e| werr(e.into_error()))?;
        let mut hw = hw;
        hw.flush().map_err(werr)?;
        Ok(DiffStats {
            diff_id: Digest::from_hasher(hw.hasher),
            size: hw.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        assert_eq!(pax_record(b"path", b"abc"), b"12 path=abc\n");
        // Length crossing a digit boundary: 98 + 2 digits = 100 → 3 digits → 101.
        let v = vec![b'x'; 92];
        let r = pax_record(b"path", &v);
        let (len, _) = std::str::from_utf8(&r[..4])
            .expect("ascii")
            .split_once(' ')
            .expect("space");
        assert_eq!(len.parse::<usize>().expect("number"), r.len());
    }

    #[test]
    fn ustar_split() {
        let mut h = Header::new_ustar();
        let long = [vec![b'd'; 120], b"/file".to_vec()].concat();
        assert!(set_ustar_path(&mut h, &long));
        assert_eq!(&*h.path_bytes(), &long[..]);
        let mut h = Header::new_ustar();
        assert!(!set_ustar_path(&mut h, &[b'f'; 150]));
    }
}
