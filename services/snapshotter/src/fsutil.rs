//! File-system helpers for snapshots: disk usage of a tree, and a full copy of a tree with its
//! metadata (for the `native` snapshotter, where overlay is not available).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use strata_core::snapshots::Usage;

/// Bytes allocated (as `du` counts them) and inodes of a tree, each hard-linked inode once.
pub fn usage(root: &Path) -> io::Result<Usage> {
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let md = fs::symlink_metadata(&path)?;
        if seen.insert((md.dev(), md.ino())) {
            u.inodes += 1;
            u.size += md.blocks() * 512;
        }
        if md.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(u)
}

fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let names = match xattr::list(src) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(value) = xattr::get(src, &name)? {
            xattr::set(dst, &name, &value)?;
        }
    }
    Ok(())
}

fn copy_times(md: &fs::Metadata, dst: &Path) -> io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let atime = TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Copies the tree `src` into the existing, empty directory `dst`, keeping owners, modes
/// (setuid included), times, xattrs, symlinks, device nodes, FIFOs and hard links.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    copy_dir(src, dst, &mut links, &mut dirs)?;
    // Directory times last: writing into a directory changes its mtime.
    let top = fs::symlink_metadata(src)?;
    apply_meta(&top, src, dst)?;
    for (md, d) in dirs.into_iter().rev() {
        copy_times(&md, &d)?;
    }
    copy_times(&top, dst)
}

fn apply_meta(md: &fs::Metadata, src: &Path, dst: &Path) -> io::Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        dst,
        Some(nix::unistd::Uid::from_raw(md.uid())),
        Some(nix::unistd::Gid::from_raw(md.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)?;
    if !md.file_type().is_symlink() {
        // After chown, which clears setuid and setgid.
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    copy_xattrs(src, dst)
}

type DirTimes = Vec<(fs::Metadata, std::path::PathBuf)>;

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
    dirs: &mut DirTimes,
) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let md = fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&d)?;
            copy_dir(&s, &d, links, dirs)?;
            apply_meta(&md, &s, &d)?;
            dirs.push((md, d));
            continue;
        }
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &d)?;
                continue;
            }
            links.insert((md.dev(), md.ino()), d.clone());
        }
        if ft.is_symlink() {
            symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
        } else {
            use nix::sys::stat::{Mode, SFlag, mknod};
            let kind = SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
            mknod(
                &d,
                kind,
                Mode::from_bits_truncate(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(io::Error::from)?;
        }
        apply_meta(&md, &s, &d)?;
        copy_times(&md, &d)?;
    }
    Ok(())
}
