//! The crate's one error type. Every variant names the file, directory or process it is about
//! and, where it failed on one, the operation.

use std::path::PathBuf;

use strata_core::Kind;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors reading and writing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation on a cgroup file or directory failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// The operation that failed, in words (`"write"`, `"create cgroup"`, `"reading"`).
        op: &'static str,
        /// The file or directory operated on.
        path: PathBuf,
        /// What it failed with.
        #[source]
        source: std::io::Error,
    },
    /// A system call about `what` failed (`bpf(2)` on a cgroup, a freezer that does not settle).
    #[error("{op} {what}: {source}")]
    Sys {
        /// The call or operation that failed (`"attach device program to"`).
        op: &'static str,
        /// What it was about (a cgroup directory, a program).
        what: String,
        /// The errno it failed with.
        #[source]
        source: nix::errno::Errno,
    },
    /// The configuration asks for something invalid (a cgroups path with `..`, a device rule).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The host or the configuration asks for something this crate does not implement (a
    /// systemd cgroups path, swap limits without swap accounting).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The process or its cgroup went away (the task ended while being read).
    #[error("{what} is gone")]
    Gone {
        /// The process or cgroup directory, in words (`"process 42"`, `"cgroup /sys/…"`).
        what: String,
    },
    /// The process is in no cgroup of a hierarchy mounted here.
    #[error(
        "process {pid} is in no cgroup this service can see (no v1 controller or cgroup2 mount)"
    )]
    NoCgroup {
        /// The process.
        pid: u32,
    },
    /// A statistics file holds something other than the number(s) expected.
    #[error("{}: cannot parse {text:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The text that was not understood.
        text: String,
    },
}

impl Error {
    /// The containerd error category of this error.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Gone { .. } => Kind::NotFound,
            Error::InvalidSpec(_) => Kind::InvalidArgument,
            Error::Unsupported(_) | Error::NoCgroup { .. } => Kind::FailedPrecondition,
            Error::Io { .. } | Error::Sys { .. } | Error::Parse { .. } => Kind::Internal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(
        op: &'static str,
        what: impl Into<String>,
        source: nix::errno::Errno,
    ) -> Self {
        Error::Sys {
            op,
            what: what.into(),
            source,
        }
    }
}

impl From<Error> for strata_core::Error {
    fn from(e: Error) -> Self {
        strata_core::Error::new(e.kind(), e.to_string())
    }
}
