//! Helpers shared by the integration tests: building layer tars (including malformed and
//! malicious ones), snapshotting trees with their metadata, overlay mounts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};
use strata_archive::{ApplyOptions, ApplyStats, Compression, WhiteoutMode};
use tar::{EntryType, Header};

/// Metadata of a test entry.
#[derive(Clone)]
pub struct Opts {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            xattrs: Vec::new(),
        }
    }
}

pub fn mode(mode: u32) -> Opts {
    Opts {
        mode,
        ..Opts::default()
    }
}

/// Builds a layer tar in memory.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl Layer {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(ty: EntryType, o: &Opts, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(o.mode);
        h.set_uid(o.uid);
        h.set_gid(o.gid);
        h.set_mtime(o.mtime);
        h.set_size(size);
        h
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        if records.is_empty() {
            return self;
        }
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_path("PaxHeaders/x").expect("pax name");
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, &data[..]).expect("append pax");
        self
    }

    fn xattrs(&mut self, o: &Opts) {
        let recs: Vec<(String, Vec<u8>)> = o
            .xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
            .collect();
        let refs: Vec<(&str, &[u8])> = recs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        self.pax(&refs);
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.dir_with(path, mode(0o755))
    }

    pub fn dir_with(&mut self, path: &str, o: Opts) -> &mut Self {
        self.xattrs(&o);
        let mut h = Self::header(EntryType::Directory, &o, 0);
        self.b
            .append_data(&mut h, path, &[][..])
            .expect("append dir");
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_with(path, data, Opts::default())
    }

    pub fn file_with(&mut self, path: &str, data: &[u8], o: Opts) -> &mut Self {
        self.xattrs(&o);
        let mut h = Self::header(EntryType::Regular, &o, data.len() as u64);
        self.b.append_data(&mut h, path, data).expect("append file");
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.symlink_with(path, target, mode(0o777))
    }

    pub fn symlink_with(&mut self, path: &str, target: &str, o: Opts) -> &mut Self {
        let mut h = Self::header(EntryType::Symlink, &o, 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("append symlink");
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(EntryType::Link, &Opts::default(), 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("append hard link");
        self
    }

    pub fn device(
        &mut self,
        path: &str,
        ty: EntryType,
        major: u32,
        minor: u32,
        o: Opts,
    ) -> &mut Self {
        let mut h = Self::header(ty, &o, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.b
            .append_data(&mut h, path, &[][..])
            .expect("append device");
        self
    }

    pub fn fifo(&mut self, path: &str, o: Opts) -> &mut Self {
        let mut h = Self::header(EntryType::Fifo, &o, 0);
        self.b
            .append_data(&mut h, path, &[][..])
            .expect("append fifo");
        self
    }

    /// `.wh.<name>` next to `path`'s last component.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (parent, name) = path.rsplit_once('/').map_or(("", path), |(p, n)| (p, n));
        let wh = if parent.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{parent}/.wh.{name}")
        };
        self.file_with(&wh, b"", mode(0o644))
    }

    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file_with(&format!("{dir}/.wh..wh..opq"), b"", mode(0o644))
    }

    /// An entry whose name and link name bytes are written as given, bypassing the builder's
    /// path checks (for `..`, absolute paths and other hostile names).
    pub fn raw(&mut self, name: &[u8], ty: EntryType, link: &[u8], data: &[u8]) -> &mut Self {
        let mut h = Self::header(ty, &mode(0o644), data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.b.append(&h, data).expect("append raw");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn sha256(data: &[u8]) -> strata_core::Digest {
    strata_core::Digest::of(data)
}

pub fn hex_sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn apply(tar: &[u8], root: &Path, whiteouts: WhiteoutMode) -> ApplyStats {
    strata_archive::apply(
        tar,
        Compression::None,
        root,
        &ApplyOptions::new(whiteouts),
        None,
    )
    .unwrap_or_else(|e| panic!("apply into {}: {e}", root.display()))
}

pub fn try_apply(
    tar: &[u8],
    root: &Path,
    whiteouts: WhiteoutMode,
) -> Result<ApplyStats, strata_archive::ArchiveError> {
    strata_archive::apply(
        tar,
        Compression::None,
        root,
        &ApplyOptions::new(whiteouts),
        None,
    )
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL")
}

/// All xattrs of `p` (not following a link) except overlayfs' private ones.
pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let c = cpath(p);
    let mut names = vec![0u8; 4096];
    // SAFETY: `c` is NUL-terminated; `names` is valid for writes of its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let n = usize::try_from(n).unwrap_or(0);
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let s = String::from_utf8_lossy(name).into_owned();
        if s.starts_with("trusted.overlay.") {
            continue;
        }
        out.push((
            s,
            get_xattr(p, std::str::from_utf8(name).expect("utf8 name")).unwrap_or_default(),
        ));
    }
    out.sort();
    out
}

pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = cpath(p);
    let n = CString::new(name).expect("no NUL");
    let mut buf = vec![0u8; 65536];
    // SAFETY: both strings are NUL-terminated; `buf` is valid for writes of its length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let r = usize::try_from(r).ok()?;
    buf.truncate(r);
    Some(buf)
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = cpath(p);
    let n = CString::new(name).expect("no NUL");
    // SAFETY: both strings are NUL-terminated; `value` is valid for reads of its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets atime and mtime of `p` (not following a link) to `secs`.
pub fn set_mtime(p: &Path, secs: i64) {
    let c = cpath(p);
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is NUL-terminated and `times` holds two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let c = cpath(p);
    // SAFETY: `c` is NUL-terminated.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// What a test compares about one file-system object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Whole seconds: layers carry no more.
    pub mtime: i64,
    /// Regular files: sha256 of the content.
    pub content: Option<String>,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Links count of non-directories (shows hard links survived).
    pub nlink: Option<u64>,
}

/// Every object below `root` (not `root` itself) with its metadata, keyed by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let md = fs::symlink_metadata(&p).expect("lstat");
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let node = Node {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            content: ft
                .is_file()
                .then(|| hex_sha(&fs::read(&p).expect("read file"))),
            link: ft
                .is_symlink()
                .then(|| fs::read_link(&p).expect("readlink")),
            rdev: md.rdev(),
            xattrs: xattrs(&p),
            nlink: (!ft.is_dir()).then_some(md.nlink()),
        };
        out.insert(p.strip_prefix(root).expect("below root").to_owned(), node);
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// Asserts two snapshots are equal, listing every difference.
pub fn assert_same(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("only in left: {}", k.display())),
            Some(w) if w != v => {
                diffs.push(format!("{}:\n  left  {v:?}\n  right {w:?}", k.display()))
            }
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diffs.push(format!("only in right: {}", k.display()));
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// `cp -a src dst` (a faithful copy: owners, modes, times, xattrs, hard links).
pub fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp -a {} {}", src.display(), dst.display());
}

/// An overlay mount, unmounted on drop.
pub struct Overlay {
    pub target: PathBuf,
}

impl Overlay {
    /// `lowers` topmost first; with `upper` = (upperdir, workdir) the mount is writable.
    pub fn mount(lowers: &[&Path], upper: Option<(&Path, &Path)>, target: &Path) -> Self {
        let lower = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut opts = format!("lowerdir={lower}");
        if let Some((u, w)) = upper {
            opts.push_str(&format!(
                ",upperdir={},workdir={}",
                u.display(),
                w.display()
            ));
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(target)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount overlay {opts} on {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            target: target.to_owned(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}

/// Names directly inside `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
