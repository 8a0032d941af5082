//! The crate's one error type. Every variant names the path, id or input it is about.

use std::path::PathBuf;

use strata_core::Kind;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors from the runtime library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system or I/O operation on `path` failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// The operation that failed, in words (`"open stdio"`).
        op: &'static str,
        /// The path operated on.
        path: PathBuf,
        /// What it failed with.
        #[source]
        source: std::io::Error,
    },
    /// A system call about `what` failed.
    #[error("{op} {what}: {source}")]
    Sys {
        /// The call or operation that failed (`"kill"`).
        op: &'static str,
        /// What it was about (a pid and signal, a mount, …).
        what: String,
        /// The errno it failed with.
        #[source]
        source: nix::errno::Errno,
    },
    /// `config.json` (or another JSON file) could not be read or parsed.
    #[error("parse {path}: {message}", path = .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        message: String,
    },
    /// The bundle's configuration asks for something invalid.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The configuration asks for something this runtime does not implement.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// An invalid container id.
    #[error(
        "invalid container id {0:?}: use 1-128 characters of [A-Za-z0-9_.-], not starting with '.'"
    )]
    InvalidId(String),
    /// No container with this id under the state root.
    #[error("container {0:?}: not found")]
    NotFound(String),
    /// A container with this id already exists under the state root.
    #[error("container {0:?}: already exists")]
    AlreadyExists(String),
    /// The operation is not allowed in the container's current status.
    #[error("container {id:?}: cannot {op} a {status} container")]
    BadState {
        /// The container.
        id: String,
        /// The operation refused (`"kill"`, `"start"`, …).
        op: &'static str,
        /// The container's status at the time.
        status: String,
    },
    /// Reading or writing the container's cgroup failed (its messages name the file and the
    /// operation, as this crate's own do).
    #[error(transparent)]
    Cgroup(#[from] strata_cgroup::Error),
    /// The container's init process reported a failure while setting up.
    #[error("container {id:?}: init failed: {message}")]
    Init {
        /// The container.
        id: String,
        /// What init reported.
        message: String,
    },
}

impl Error {
    /// The containerd error category of this error.
    pub fn kind(&self) -> Kind {
        match self {
            Error::NotFound(_) => Kind::NotFound,
            Error::AlreadyExists(_) => Kind::AlreadyExists,
            Error::InvalidSpec(_) | Error::InvalidId(_) | Error::Parse { .. } => {
                Kind::InvalidArgument
            }
            Error::Unsupported(_) => Kind::FailedPrecondition,
            Error::BadState { .. } => Kind::FailedPrecondition,
            Error::Io { .. } | Error::Sys { .. } | Error::Init { .. } => Kind::Internal,
            Error::Cgroup(e) => e.kind(),
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
