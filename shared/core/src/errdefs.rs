//! Error categories with containerd's meanings. Callers branch on [`Kind`], never on message text.

use std::fmt;

/// The category of an error, as containerd's `errdefs` defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The named resource does not exist.
    NotFound,
    /// The resource already exists; for content this is how a client learns a blob is present.
    AlreadyExists,
    /// The request itself is malformed (bad digest, bad name, bad field path).
    InvalidArgument,
    /// The system is not in a state where the operation can be done (size or digest mismatch at
    /// commit, namespace missing, removing a parent).
    FailedPrecondition,
    /// The resource is busy, for example an ingest ref locked by another writer.
    Unavailable,
    /// A read or write offset lies outside the object.
    OutOfRange,
    /// The operation is not implemented by this service.
    NotImplemented,
    /// The caller aborted or the deadline passed.
    Canceled,
    /// Anything else: I/O failures, database failures. Details are in the message.
    Internal,
}

/// An error with its category and a message naming the input it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: Kind,
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// The error's category.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The message, naming what the error is about.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Whether the error is of `kind`.
    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind
    }
    /// A [`Kind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    /// A [`Kind::AlreadyExists`] error.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Kind::AlreadyExists, message)
    }
    /// A [`Kind::InvalidArgument`] error.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }
    /// A [`Kind::FailedPrecondition`] error.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, message)
    }
    /// A [`Kind::Unavailable`] error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }
    /// A [`Kind::OutOfRange`] error.
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(Kind::OutOfRange, message)
    }
    /// A [`Kind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }
    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

/// A result whose error is an [`Error`] unless told otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;
