//! Reading files of a mounted image as the container would see them: paths resolve inside the
//! root (`openat2` with `RESOLVE_IN_ROOT`), so an image's symlink to a host path reads nothing
//! of the host, and reads are bounded, so a FIFO, a device or a huge file cannot hang or grow
//! the reader.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// Opens `path` (absolute or relative: either way inside `root`) with `O_PATH`, resolving every
/// component inside `root` and refusing `/proc`-style magic links.
pub fn open_path_in_root(root: &Path, path: &Path) -> io::Result<OwnedFd> {
    let root_fd = File::open(root)?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(&root_fd, rel, how).map_err(io::Error::from)
}

/// The contents of regular file `path` of the tree at `root`, resolved inside it; `None` when
/// it does not exist. Anything but a regular file (a FIFO, a device, a directory) or a file
/// larger than `limit` bytes is an `InvalidData` error saying so.
pub fn read_in_root(root: &Path, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let fd = match open_path_in_root(root, path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = File::from(fd);
    let md = file.metadata()?;
    if !md.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if md.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes, more than the {limit} allowed", md.len()),
        ));
    }
    // Reopen the verified O_PATH descriptor for reading: the same file, whatever the tree
    // holds by now.
    let mut f = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let mut buf = Vec::new();
    (&mut f).take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than the {limit} bytes allowed"),
        ));
    }
    Ok(Some(buf))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_and_reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let host = dir.path().join("host-secret");
        std::fs::write(&host, "secret").unwrap();
        std::fs::write(root.join("etc/inside"), "inside").unwrap();
        // An absolute link to a host path resolves inside the root: nothing there.
        std::os::unix::fs::symlink(&host, root.join("etc/passwd")).unwrap();
        assert_eq!(
            read_in_root(&root, Path::new("/etc/passwd"), 100).unwrap(),
            None
        );
        std::os::unix::fs::symlink("/etc/inside", root.join("etc/group")).unwrap();
        assert_eq!(
            read_in_root(&root, Path::new("/etc/group"), 100).unwrap(),
            Some(b"inside".to_vec())
        );
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        assert_eq!(
            read_in_root(&root, Path::new("up/host-secret"), 100).unwrap(),
            None
        );
        nix::unistd::mkfifo(&root.join("etc/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_in_root(&root, Path::new("/etc/fifo"), 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        std::os::unix::fs::symlink("/proc/self/root/dev/zero", root.join("etc/zero")).unwrap();
        assert!(
            read_in_root(&root, Path::new("/etc/zero"), 100)
                .unwrap()
                .is_none()
        );
        std::fs::write(root.join("etc/big"), vec![b'x'; 101]).unwrap();
        let e = read_in_root(&root, Path::new("/etc/big"), 100).unwrap_err();
        assert!(e.to_string().contains("101 bytes"), "{e}");
    }
}
