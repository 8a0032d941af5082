//! The supervisor binary as the tasks service runs it: a sealed in-memory copy.
//!
//! With the built-in runtime a supervisor forks the container's init and exec'd processes
//! itself, so until the container's `execve` the process entering the container runs the
//! supervisor's binary, and a container process can reach that binary through
//! `/proc/<pid>/exe` (or by naming `/proc/self/exe` as its entrypoint's interpreter). Were that
//! the host's `strata-shim` file, the container could write it (CVE-2019-5736's class) or
//! change its mode. So supervisors are started from a copy held in a `memfd` sealed against
//! every write, growth and shrinking: what a container reaches is that copy, which cannot
//! change, and never the file on disk.
//!
//! One copy serves every supervisor; it is made again only when the file on disk is replaced
//! or changed (device, inode, size, mtime or ctime differ), so an upgraded binary takes effect
//! for the next container.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use strata_core::{Error, Result};

/// `memfd_create`'s flag asking for an executable memfd (Linux 6.3; older kernels refuse it
/// with EINVAL, and their memfds are executable anyway). Not in the libc crate yet.
const MFD_EXEC: libc::c_uint = 0x0010;

/// What tells one version of the file on disk from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(md: &std::fs::Metadata) -> Self {
        Self {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// A sealed copy of one version of the binary.
#[derive(Debug)]
pub struct SealedCopy {
    fd: OwnedFd,
}

impl SealedCopy {
    /// The path a child process executes the copy by: the descriptor is inherited across
    /// `fork` and closed (close-on-exec) only after `execve` has opened it.
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The seals on the copy (`F_GET_SEALS`).
    pub fn seals(&self) -> std::io::Result<libc::c_int> {
        // SAFETY: F_GET_SEALS only reads the seals of a descriptor this value owns.
        let s = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GET_SEALS) };
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// The supervisor binary at a path, and its current sealed copy.
#[derive(Debug)]
pub struct SealedExe {
    path: PathBuf,
    current: Mutex<Option<(Identity, Arc<SealedCopy>)>>,
}

impl SealedExe {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            current: Mutex::new(None),
        }
    }

    /// The binary on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sealed copy of the binary as it is on disk now: the one made before when the file
    /// has not changed since (one `stat`), a new one otherwise.
    pub fn copy(&self) -> Result<Arc<SealedCopy>> {
        let md = std::fs::metadata(&self.path).map_err(|e| self.fail("reading", &e))?;
        let id = Identity::of(&md);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, copy)) = current.as_ref()
            && *known == id
        {
            return Ok(copy.clone());
        }
        let (id, copy) = self.make()?;
        let copy = Arc::new(copy);
        tracing::info!(path = %self.path.display(), size = id.size, "supervisor binary copied into a sealed memfd");
        *current = Some((id, copy.clone()));
        Ok(copy)
    }

    fn fail(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::internal(format!(
            "supervisor binary {}: {what}: {e}",
            self.path.display()
        ))
    }

    /// Copies the file into a new memfd and seals it. The identity is the opened file's, taken
    /// before and after the copy: a file changed meanwhile is copied again.
    fn make(&self) -> Result<(Identity, SealedCopy)> {
        for _ in 0..3 {
            let mut src = File::open(&self.path).map_err(|e| self.fail("opening", &e))?;
            let before = Identity::of(&src.metadata().map_err(|e| self.fail("reading", &e))?);
            let fd = memfd("strata-shim").map_err(|e| self.fail("creating a memfd", &e))?;
            let mut dst = File::from(fd);
            let n = std::io::copy(&mut src, &mut dst).map_err(|e| self.fail("copying", &e))?;
            let after = Identity::of(&src.metadata().map_err(|e| self.fail("reading", &e))?);
            if before != after || n != before.size {
                continue;
            }
            let fd = OwnedFd::from(dst);
            seal(&fd).map_err(|e| self.fail("sealing its copy", &e))?;
            return Ok((before, SealedCopy { fd }));
        }
        Err(self.fail("copying", &"it kept changing while it was copied"))
    }
}

/// A new close-on-exec memfd that allows sealing and execution.
fn memfd(name: &str) -> std::io::Result<OwnedFd> {
    let name = CString::new(name).map_err(std::io::Error::other)?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let mut fd = -1;
    for flags in [base | MFD_EXEC, base] {
        // SAFETY: memfd_create reads the NUL-terminated name, which outlives the call.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create has just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Seals the memfd against writes, growth, shrinking, further seals and (where the kernel
/// knows the seal, Linux 6.3) changes of its execute bits.
fn seal(fd: &OwnedFd) -> std::io::Result<()> {
    let base = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    let mut rc = -1;
    for seals in [base | libc::F_SEAL_EXEC, base] {
        // SAFETY: F_ADD_SEALS only changes the seals of a descriptor the caller owns.
        rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    /// The copy holds the file's bytes, refuses every write, and is made again only when the
    /// file changes.
    #[test]
    fn a_sealed_copy_follows_the_file_and_refuses_writes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        std::fs::write(&bin, b"version one").expect("write");
        let exe = SealedExe::new(bin.clone());
        let first = exe.copy().expect("copy");
        assert_eq!(
            std::fs::read(first.exec_path()).expect("read"),
            b"version one"
        );
        let want = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(first.seals().expect("seals") & want, want);
        // Reopened for writing through /proc, as a container would: the write is refused.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_APPEND)
            .open(first.exec_path())
            .expect("a sealed memfd still opens for writing");
        w.write_all(b"x").expect_err("a write to a sealed copy");
        assert!(
            std::fs::File::options()
                .write(true)
                .truncate(true)
                .open(first.exec_path())
                .is_err()
        );
        // Unchanged file: the same copy.
        assert!(Arc::ptr_eq(&first, &exe.copy().expect("copy")));
        // Replaced file (a new inode, as an upgrade installs it): a new copy.
        let next = tmp.path().join("bin.new");
        std::fs::write(&next, b"version two").expect("write");
        std::fs::rename(&next, &bin).expect("rename");
        let second = exe.copy().expect("copy");
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(
            std::fs::read(second.exec_path()).expect("read"),
            b"version two"
        );
        assert_eq!(
            std::fs::read(first.exec_path()).expect("read"),
            b"version one"
        );
    }
}
