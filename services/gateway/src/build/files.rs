//! The file work of COPY, ADD and WORKDIR: sources found in the build context (or another
//! stage's tree), copied into the mounted root of the step's snapshot.
//!
//! Both trees are hostile: the context is what a user sent, the root is an image's. Every path
//! is resolved inside its tree (`openat2` with `RESOLVE_IN_ROOT`), every entry below a resolved
//! directory is opened by name relative to it without following links, and an entry the copy
//! replaces is unlinked first, so no link of either tree leads a read or a write outside it.

use sha2::{Digest as _, Sha256};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, symlinkat, unlinkat};

/// Owner given to what a step creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// How a copy treats what it writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Owner of everything written; `None` keeps the source's.
    pub owner: Option<Owner>,
    /// Mode of every file and directory written; `None` keeps the source's.
    pub mode: Option<u32>,
}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

fn rel(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// Opens `path` of the tree at `root` (a directory fd) resolving inside it, with `flags`.
fn open_in(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, rel(path).as_path(), how)
}

/// A tree: its root directory, opened once.
pub struct Tree {
    root: OwnedFd,
    name: String,
}

impl Tree {
    /// Opens the tree at `path`; `name` is how messages call it ("the build context").
    pub fn open(path: &Path, name: &str) -> io::Result<Self> {
        let root = File::open(path).map_err(|e| err(format!("{name} at {}", path.display()), e))?;
        Ok(Self {
            root: root.into(),
            name: name.to_owned(),
        })
    }

    fn at(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Stat of `path` inside the tree, not following its last component; `None` when missing.
    pub fn lstat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        let (dir, name) = match split(path) {
            Some(v) => v,
            None => return fstat(self.at()).map(Some),
        };
        let d = match open_in(self.at(), &dir, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(d) => d,
            Err(nix::Error::ENOENT | nix::Error::ENOTDIR) => return Ok(None),
            Err(e) => return Err(err(format!("{} {}", self.name, path.display()), e)),
        };
        match fstatat(&d, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(err(format!("{} {}", self.name, path.display()), e)),
        }
    }

    /// Stat of `path`, following links inside the tree; `None` when missing.
    pub fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        match open_in(self.at(), path, OFlag::O_PATH) {
            Ok(fd) => fstat(fd.as_fd()).map(Some),
            Err(nix::Error::ENOENT | nix::Error::ENOTDIR) => Ok(None),
            Err(e) => Err(err(format!("{} {}", self.name, path.display()), e)),
        }
    }

    /// The names in directory `path` (resolved inside the tree), sorted.
    pub fn list(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let d = open_in(self.at(), path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| err(format!("{} {}", self.name, path.display()), e))?;
        list_fd(d.as_fd())
    }

    /// Creates directory `path` and its missing parents, each owned by `owner` (root when
    /// `None`), mode 0755; answers the directory, opened.
    pub fn mkdir_all(&self, path: &Path, owner: Option<Owner>) -> io::Result<OwnedFd> {
        self.mkdir_all_at(path, owner, 0)
    }

    /// A link met on the way is followed (inside the tree): its target is created, at most
    /// 40 links deep, as the kernel's own limit.
    fn mkdir_all_at(&self, path: &Path, owner: Option<Owner>, depth: u32) -> io::Result<OwnedFd> {
        if depth > 40 {
            return Err(err(path.display(), "too many levels of symbolic links"));
        }
        let target = rel(path);
        let mut at = PathBuf::new();
        let mut dir = open_in(
            self.at(),
            Path::new("."),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )
        .map_err(|e| err(&self.name, e))?;
        for c in target.components() {
            let Component::Normal(n) = c else { continue };
            at.push(n);
            match open_in(self.at(), &at, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Ok(d) => dir = d,
                Err(nix::Error::ENOENT) => {
                    // A dangling link: what it names is made.
                    if let Ok(st) = fstatat(&dir, n, AtFlags::AT_SYMLINK_NOFOLLOW)
                        && kind(&st) == SFlag::S_IFLNK
                    {
                        let link = readlinkat(&dir, n)
                            .map_err(|e| err(format!("reading {}", at.display()), e))?;
                        let to = at.parent().unwrap_or(Path::new("")).join(Path::new(&link));
                        self.mkdir_all_at(&to, owner, depth + 1)?;
                        dir = open_in(self.at(), &at, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                            .map_err(|e| err(format!("opening {}", at.display()), e))?;
                        continue;
                    }
                    match mkdirat(&dir, n, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(nix::Error::EEXIST) => {}
                        Err(e) => return Err(err(format!("creating {}", at.display()), e)),
                    }
                    let o = owner.unwrap_or(Owner { uid: 0, gid: 0 });
                    fchownat(
                        &dir,
                        n,
                        Some(Uid::from_raw(o.uid)),
                        Some(Gid::from_raw(o.gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| err(format!("owning {}", at.display()), e))?;
                    dir = open_in(self.at(), &at, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                        .map_err(|e| err(format!("opening {}", at.display()), e))?;
                }
                Err(nix::Error::ENOTDIR) => {
                    return Err(err(
                        format!("{}", at.display()),
                        "exists and is not a directory",
                    ));
                }
                Err(e) => return Err(err(format!("opening {}", at.display()), e)),
            }
        }
        Ok(dir)
    }

    /// Reads the regular file `path` (resolved inside the tree), at most `limit` bytes;
    /// `None` when it does not exist.
    pub fn read(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let fd = match open_in(self.at(), path, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => return Ok(None),
            Err(e) => return Err(err(path.display(), e)),
        };
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(err(path.display(), "not a regular file"));
        }
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(&f, limit + 1), &mut buf)?;
        if buf.len() as u64 > limit {
            return Err(err(path.display(), format!("larger than {limit} bytes")));
        }
        Ok(Some(buf))
    }

    /// Opens `path` for reading, resolved inside the tree.
    pub fn open_file(&self, path: &Path) -> io::Result<File> {
        open_in(self.at(), path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .map(File::from)
            .map_err(|e| err(format!("{} {}", self.name, path.display()), e))
    }
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    nix::sys::stat::fstat(fd).map_err(io::Error::from)
}

fn split(path: &Path) -> Option<(PathBuf, OsString)> {
    let r = rel(path);
    let name = r.file_name()?.to_owned();
    let dir = r
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    Some((dir, name))
}

fn list_fd(d: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Go's `path.Match` on one component: `*`, `?`, `[...]` (with `^` or `!` negation, ranges)
/// and `\` escapes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; answers (matched, length consumed including ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some('^' | '!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            let mut hi = lo;
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                hi = p[i + 2];
                if hi == '\\' {
                    hi = *p.get(i + 3)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        None
    }
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| m(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                match class(&p[1..], *c) {
                    Some((true, used)) => m(&p[1 + used..], &n[1..]),
                    _ => false,
                }
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && m(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

/// Whether a source names several files by pattern.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths of `tree` a COPY source names: itself, or every match of its pattern (sorted).
/// An empty answer for a pattern is the caller's to judge; a plain path that is missing is an
/// error naming it.
pub fn resolve_sources(tree: &Tree, source: &str) -> io::Result<Vec<PathBuf>> {
    let clean = rel(Path::new(source));
    if !has_wildcard(source) {
        if tree.lstat(&clean)?.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{source}: not found in {}", tree.name),
            ));
        }
        return Ok(vec![clean]);
    }
    let mut found = vec![PathBuf::new()];
    for c in clean.components() {
        let Component::Normal(part) = c else { continue };
        let part = part.to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            let d = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.clone()
            };
            if has_wildcard(&part) {
                if tree.stat(&d)?.is_none_or(|s| kind(&s) != SFlag::S_IFDIR) {
                    continue;
                }
                for n in tree.list(&d)? {
                    if glob_match(&part, &n.to_string_lossy()) {
                        next.push(dir.join(&n));
                    }
                }
            } else {
                let p = dir.join(part.as_ref());
                if tree.lstat(&p)?.is_some() {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.sort();
    Ok(found)
}

/// A checksum of what copying `sources` of `tree` writes: names, kinds, modes, link targets and
/// contents (not times, not owners when the copy sets them), for the build cache.
pub fn checksum(tree: &Tree, sources: &[PathBuf], with_owners: bool) -> io::Result<String> {
    let mut h = Sha256::new();
    for s in sources {
        h.update(b"source\0");
        h.update(s.as_os_str().as_bytes());
        h.update(b"\0");
        hash_entry(tree, s, with_owners, &mut h)?;
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_entry(tree: &Tree, p: &Path, with_owners: bool, h: &mut Sha256) -> io::Result<()> {
    let Some(st) = tree.lstat(p)? else {
        return Ok(());
    };
    h.update(p.as_os_str().as_bytes());
    h.update(format!("\0{:o}\0", st.st_mode).as_bytes());
    if with_owners {
        h.update(format!("{}:{}\0", st.st_uid, st.st_gid).as_bytes());
    }
    match kind(&st) {
        SFlag::S_IFDIR => {
            for n in tree.list(p)? {
                hash_entry(tree, &p.join(n), with_owners, h)?;
            }
        }
        SFlag::S_IFREG => {
            let mut f = tree.open_file(p)?;
            io::copy(&mut f, h)?;
        }
        SFlag::S_IFLNK => {
            let (dir, name) = split(p).unwrap_or_default();
            let d = open_in(tree.at(), &dir, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .map_err(|e| err(p.display(), e))?;
            let target = readlinkat(&d, name.as_os_str()).map_err(|e| err(p.display(), e))?;
            h.update(target.as_bytes());
        }
        _ => {}
    }
    h.update(b"\0");
    Ok(())
}

/// One source's copy into `dest_dir` (a directory of the root, opened): a directory's
/// contents go into it, anything else becomes the entry `name` in it.
pub struct Copier<'a> {
    pub from: &'a Tree,
    pub opts: CopyOptions,
}

impl Copier<'_> {
    /// Copies the entry `src` of the source tree as `name` in `dest`; when `src` is a link,
    /// what it points to (inside the tree) is copied, as BuildKit follows a source's links.
    pub fn copy_entry(&self, src: &Path, dest: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if self
            .from
            .lstat(src)?
            .is_some_and(|st| kind(&st) == SFlag::S_IFLNK)
        {
            let target = open_in(self.from.at(), src, OFlag::O_PATH)
                .map_err(|e| err(format!("{} {}", self.from.name, src.display()), e))?;
            let real = std::fs::read_link(format!("/proc/self/fd/{}", target.as_raw_fd()))?;
            let root = std::fs::read_link(format!("/proc/self/fd/{}", self.from.at().as_raw_fd()))?;
            let inside = real
                .strip_prefix(&root)
                .map_err(|_| err(src.display(), "its link leads outside the tree"))?
                .to_path_buf();
            return self.copy_entry(&inside, dest, name);
        }
        let (sdir, sname) = split(src).ok_or_else(|| err(src.display(), "no name"))?;
        let sd = open_in(self.from.at(), &sdir, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| err(format!("{} {}", self.from.name, src.display()), e))?;
        self.copy_at(sd.as_fd(), &sname, dest, name, src)
    }

    /// Copies the contents of directory `src` of the source tree into `dest`.
    pub fn copy_contents(&self, src: &Path, dest: BorrowedFd<'_>) -> io::Result<()> {
        let sd = open_in(self.from.at(), src, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| err(format!("{} {}", self.from.name, src.display()), e))?;
        for n in list_fd(sd.as_fd())? {
            self.copy_at(sd.as_fd(), &n, dest, &n, &src.join(&n))?;
        }
        Ok(())
    }

    fn copy_at(
        &self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        shown: &Path,
    ) -> io::Result<()> {
        let st = fstatat(sdir, sname, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| err(shown.display(), e))?;
        let existing = fstatat(ddir, dname, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let k = kind(&st);
        let e = |what: &str, x: nix::Error| err(format!("{what} {}", shown.display()), x);
        // Anything but a directory over a directory is replaced.
        if let Some(ex) = &existing
            && !(k == SFlag::S_IFDIR && kind(ex) == SFlag::S_IFDIR)
        {
            let flag = if kind(ex) == SFlag::S_IFDIR {
                return Err(err(
                    shown.display(),
                    "cannot replace a directory of the image with a file",
                ));
            } else {
                UnlinkatFlags::NoRemoveDir
            };
            unlinkat(ddir, dname, flag).map_err(|x| e("replacing", x))?;
        }
        let mode = self.opts.mode.unwrap_or(st.st_mode & 0o7777);
        match k {
            SFlag::S_IFDIR => {
                if existing.is_none() {
                    mkdirat(ddir, dname, Mode::from_bits_truncate(0o700))
                        .map_err(|x| e("creating", x))?;
                }
                let sd = openat(
                    sdir,
                    sname,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|x| e("opening", x))?;
                let dd = openat(
                    ddir,
                    dname,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|x| e("opening the copy of", x))?;
                for n in list_fd(sd.as_fd())? {
                    self.copy_at(sd.as_fd(), &n, dd.as_fd(), &n, &shown.join(&n))?;
                }
                self.finish(dd.as_fd(), &st, mode, shown)?;
            }
            SFlag::S_IFREG => {
                let sf = openat(
                    sdir,
                    sname,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|x| e("opening", x))?;
                let df = openat(
                    ddir,
                    dname,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|x| e("creating", x))?;
                let (mut sf, mut df) = (File::from(sf), File::from(df));
                io::copy(&mut sf, &mut df).map_err(|x| err(shown.display(), x))?;
                self.finish(df.as_fd(), &st, mode, shown)?;
            }
            SFlag::S_IFLNK => self.copy_link(sdir, sname, ddir, dname, &st, shown)?,
            _ => {
                return Err(err(
                    shown.display(),
                    "only files, directories and symbolic links can be copied",
                ));
            }
        }
        Ok(())
    }

    /// Copies the symbolic link `sname` of `sdir` (stat `st`) as `dname` in `ddir`, with its
    /// owner and times.
    fn copy_link(
        &self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        st: &FileStat,
        shown: &Path,
    ) -> io::Result<()> {
        let e = |what: &str, x: nix::Error| err(format!("{what} {}", shown.display()), x);
        let target = readlinkat(sdir, sname).map_err(|x| e("reading", x))?;
        symlinkat(target.as_os_str(), ddir, dname).map_err(|x| e("creating", x))?;
        let o = self.opts.owner.unwrap_or(Owner {
            uid: st.st_uid,
            gid: st.st_gid,
        });
        fchownat(
            ddir,
            dname,
            Some(Uid::from_raw(o.uid)),
            Some(Gid::from_raw(o.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|x| e("owning", x))?;
        let times = [
            TimeSpec::new(st.st_atime, st.st_atime_nsec),
            TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        ];
        nix::sys::stat::utimensat(
            ddir,
            dname,
            &times[0],
            &times[1],
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|x| e("dating", x))?;
        Ok(())
    }

    /// Owner, mode and times of an entry written.
    fn finish(&self, fd: BorrowedFd<'_>, st: &FileStat, mode: u32, shown: &Path) -> io::Result<()> {
        let o = self.opts.owner.unwrap_or(Owner {
            uid: st.st_uid,
            gid: st.st_gid,
        });
        nix::unistd::fchown(fd, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid)))
            .map_err(|e| err(format!("owning {}", shown.display()), e))?;
        // After the owner: a chown clears setuid and setgid bits.
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode))
            .map_err(|e| err(format!("setting the mode of {}", shown.display()), e))?;
        nix::sys::stat::futimens(
            fd,
            &TimeSpec::new(st.st_atime, st.st_atime_nsec),
            &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        )
        .map_err(|e| err(format!("dating {}", shown.display()), e))?;
        Ok(())
    }
}

/// Whether `fd` is a directory.
pub fn is_dir_fd(fd: BorrowedFd<'_>) -> bool {
    fstat(fd).is_ok_and(|s| kind(&s) == SFlag::S_IFDIR)
}

/// Whether `st` is a directory.
pub fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

/// Opens directory `path` below `root` without following any link on the way (an entry the
/// container made a link is not walked through).
fn open_beneath(root: BorrowedFd<'_>, path: &Path) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(root, rel(path).as_path(), how)
}

/// Whether `path` exists in directory tree `dir`, looked up without following links (a link
/// on the way counts as existing: such a path is never taken for a stub).
fn exists_in(dir: &Path, path: &Path) -> bool {
    let Ok(root) = File::open(dir) else {
        return true;
    };
    let Some((parent, name)) = split(path) else {
        return true;
    };
    match open_beneath(root.as_fd(), &parent) {
        Ok(d) => !matches!(
            fstatat(&d, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
            Err(nix::Error::ENOENT)
        ),
        Err(nix::Error::ENOENT) => false,
        Err(_) => true,
    }
}

/// Removes from an overlay upper directory the mount points a runtime made for a RUN step's
/// container (`/proc`, `/dev`, `/etc/hosts`, …: `destinations`) and the directories made only
/// to hold them: each goes when it is an empty file or an empty directory that no lower layer
/// has, so a step's layer holds only what its command changed (as BuildKit's, as buildah's).
pub fn remove_mount_stubs(upper: &Path, lowers: &[PathBuf], destinations: &[String]) {
    let Ok(root) = File::open(upper) else {
        return;
    };
    let in_lower = |p: &Path| lowers.iter().any(|l| exists_in(l, p));
    let mut dests: Vec<PathBuf> = destinations.iter().map(|d| rel(Path::new(d))).collect();
    // Deepest first, so a directory made for a stub is empty once the stub is gone.
    dests.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dests {
        let mut p = d;
        let mut first = true;
        while p.as_os_str() != "." && !p.as_os_str().is_empty() {
            if in_lower(&p) {
                // A directory of the image the runtime only copied up to hold a stub goes
                // too: empty, not opaque, its owner and mode those of the image's.
                if !first {
                    drop_copied_up(root.as_fd(), lowers, &p);
                }
                break;
            }
            first = false;
            let Some((parent, name)) = split(&p) else {
                break;
            };
            let Ok(dir) = open_beneath(root.as_fd(), &parent) else {
                break;
            };
            let Ok(st) = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                break;
            };
            let removed = match kind(&st) {
                SFlag::S_IFREG if st.st_size == 0 => {
                    unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir).is_ok()
                }
                // Fails (and stays) unless empty.
                SFlag::S_IFDIR => {
                    unlinkat(&dir, name.as_os_str(), UnlinkatFlags::RemoveDir).is_ok()
                }
                _ => false,
            };
            if !removed {
                break;
            }
            p = parent;
        }
    }
}

/// Removes directory `p` of the upper directory `root` when it is empty, not opaque and has
/// the owner and mode of the topmost lower layer's `p`, which then shows again.
fn drop_copied_up(root: BorrowedFd<'_>, lowers: &[PathBuf], p: &Path) {
    use xattr::FileExt as _;
    let Ok(d) = open_beneath(root, p) else { return };
    let Ok(st) = fstat(d.as_fd()) else { return };
    let d = File::from(d);
    if !matches!(list_fd(d.as_fd()), Ok(v) if v.is_empty())
        || d.get_xattr("trusted.overlay.opaque")
            .ok()
            .flatten()
            .is_some()
    {
        return;
    }
    let Some(lower) = lowers.iter().find_map(|l| {
        let r = File::open(l).ok()?;
        let ld = open_beneath(r.as_fd(), p).ok()?;
        fstat(ld.as_fd()).ok()
    }) else {
        return;
    };
    if (lower.st_mode, lower.st_uid, lower.st_gid) != (st.st_mode, st.st_uid, st.st_gid) {
        return;
    }
    let Some((parent, name)) = split(p) else {
        return;
    };
    if let Ok(pd) = open_beneath(root, &parent) {
        let _ = unlinkat(&pd, name.as_os_str(), UnlinkatFlags::RemoveDir);
    }
}

/// Unpacks a build context (a tar stream a client sent) into the empty directory `tree`:
/// files, directories and links, with their modes and times, owned by root (COPY sets owners).
/// Every path is resolved inside the tree, links included, and anything else (devices, FIFOs,
/// hard links) is refused, naming the entry.
pub fn unpack_context(input: impl io::Read, tree: &Tree) -> io::Result<()> {
    let mut a = tar::Archive::new(input);
    // Entries come grouped by directory: the last one opened serves the next.
    let mut last: Option<(PathBuf, OwnedFd)> = None;
    let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
    for entry in a.entries()? {
        let mut e = entry?;
        let path = rel(&e.path()?);
        if path.as_os_str() == "." {
            continue;
        }
        let h = e.header();
        let mode = h.mode()? & 0o7777;
        let mtime = i64::try_from(h.mtime()?).unwrap_or(0);
        let kind = h.entry_type();
        if kind.is_dir() {
            tree.mkdir_all(&path, None)?;
            dirs.push((path, mode, mtime));
            continue;
        }
        let (parent, name) = split(&path).ok_or_else(|| err(path.display(), "no name"))?;
        let dir = match last.take() {
            Some((p, fd)) if p == parent => fd,
            _ => tree.mkdir_all(&parent, None)?,
        };
        let shown = path.display();
        if kind.is_file() {
            let f = openat(
                &dir,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_TRUNC
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|x| err(&shown, x))?;
            let mut f = File::from(f);
            io::copy(&mut e, &mut f)?;
            nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(mode))
                .map_err(|x| err(&shown, x))?;
            let t = TimeSpec::new(mtime, 0);
            nix::sys::stat::futimens(&f, &t, &t).map_err(|x| err(&shown, x))?;
        } else if kind.is_symlink() {
            let target = e
                .link_name()?
                .ok_or_else(|| err(&shown, "a link without a target"))?;
            symlinkat(target.as_os_str(), &dir, name.as_os_str()).map_err(|x| err(&shown, x))?;
        } else {
            return Err(err(
                &shown,
                "only files, directories and links can be sent in a build context",
            ));
        }
        last = Some((parent, dir));
    }
    // Directories' modes and times last: writing into them changed their times.
    for (path, mode, mtime) in dirs.iter().rev() {
        let d = open_in(tree.at(), path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|x| err(path.display(), x))?;
        nix::sys::stat::fchmod(&d, Mode::from_bits_truncate(*mode))
            .map_err(|x| err(path.display(), x))?;
        let t = TimeSpec::new(*mtime, 0);
        nix::sys::stat::futimens(&d, &t, &t).map_err(|x| err(path.display(), x))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mount_stubs_go_and_what_the_command_made_stays() {
        let upper = tempfile::tempdir().unwrap();
        let lower = tempfile::tempdir().unwrap();
        let u = upper.path();
        std::fs::create_dir_all(lower.path().join("etc")).unwrap();
        std::fs::write(lower.path().join("etc/hosts"), b"image's").unwrap();
        for d in ["proc", "dev/pts", "etc", "run/secrets", "data"] {
            std::fs::create_dir_all(u.join(d)).unwrap();
        }
        std::fs::write(u.join("etc/resolv.conf"), b"").unwrap();
        // /srv is the image's; the runtime copied it up to make /srv/stub.
        std::fs::create_dir_all(lower.path().join("srv")).unwrap();
        std::fs::create_dir_all(u.join("srv")).unwrap();
        std::fs::write(u.join("srv/stub"), b"").unwrap();
        std::fs::write(u.join("etc/hosts"), b"").unwrap();
        std::fs::write(u.join("data/kept"), b"").unwrap();
        // A stub the command filled is kept.
        std::fs::write(u.join("run/secrets/x"), b"x").unwrap();
        remove_mount_stubs(
            u,
            &[lower.path().to_path_buf()],
            &[
                "/proc",
                "/dev/pts",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/run/secrets",
                "/nothing/here",
                "/srv/stub",
            ]
            .map(String::from),
        );
        let mut left: Vec<String> = Vec::new();
        for e in walk(u) {
            left.push(e);
        }
        left.sort();
        // /etc/hosts is in the lower layer: the step emptied it, a change of its own.
        assert_eq!(
            left,
            [
                "data",
                "data/kept",
                "etc",
                "etc/hosts",
                "run",
                "run/secrets",
                "run/secrets/x"
            ]
        );
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() {
                    todo.push(p);
                }
            }
        }
        out
    }

    #[test]
    fn a_context_unpacks_inside_its_directory() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "escape", "/etc").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o640);
        h.set_mtime(1_000_000);
        b.append_data(&mut h, "escape/passwd-from-context", &b"hi"[..])
            .unwrap();
        b.append_data(&mut h, "d/e/f.txt", &b"ok"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let t = Tree::open(d.path(), "the build context").unwrap();
        unpack_context(&data[..], &t).unwrap();
        // The link resolved inside the context: nothing reached the host's /etc.
        assert!(!Path::new("/etc/passwd-from-context").exists());
        assert_eq!(
            std::fs::read(d.path().join("etc/passwd-from-context")).unwrap(),
            b"hi"
        );
        let md = std::fs::metadata(d.path().join("d/e/f.txt")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777,
            0o640
        );
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&md), 1_000_000);
    }

    #[test]
    fn globs_match_as_go_does() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("f?o", "foo"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "a"));
        assert!(glob_match("*", ".hidden"));
    }

    #[test]
    fn copies_stay_inside_both_trees() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        // The source tree's link to a host path is copied as a link, not followed.
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        std::fs::write(src.path().join("file"), b"data").unwrap();
        // The root's link to an absolute path resolves inside the root.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dst.path().join("app")).unwrap();
        let from = Tree::open(src.path(), "the context").unwrap();
        let to = Tree::open(dst.path(), "the image").unwrap();
        let d = to.mkdir_all(Path::new("/app/sub"), None).unwrap();
        let c = Copier {
            from: &from,
            opts: CopyOptions::default(),
        };
        c.copy_contents(Path::new("."), d.as_fd()).unwrap();
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        let inside = dst.path().join(outside.path().strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(inside.join("sub/file")).unwrap(), b"data");
        assert_eq!(
            std::fs::read_link(inside.join("sub/link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn sources_resolve_patterns_and_name_what_is_missing() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/a.txt"), b"a").unwrap();
        std::fs::write(src.path().join("d/b.txt"), b"b").unwrap();
        std::fs::write(src.path().join("d/c.md"), b"c").unwrap();
        let t = Tree::open(src.path(), "the context").unwrap();
        let got = resolve_sources(&t, "d/*.txt").unwrap();
        assert_eq!(
            got,
            vec![PathBuf::from("d/a.txt"), PathBuf::from("d/b.txt")]
        );
        let e = resolve_sources(&t, "nope").unwrap_err();
        assert!(e.to_string().contains("nope: not found"), "{e}");
        let a = checksum(&t, &got, false).unwrap();
        std::fs::write(src.path().join("d/b.txt"), b"B").unwrap();
        assert_ne!(a, checksum(&t, &got, false).unwrap());
    }
}
