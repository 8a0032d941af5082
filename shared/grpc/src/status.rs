//! [`strata_core::Error`] to gRPC status and back, mapped once with containerd's meanings.

use strata_core::{Error, Kind};
use tonic::{Code, Status};

/// The status a server answers for an error.
pub fn to_status(err: Error) -> Status {
    let code = match err.kind() {
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::Unavailable => Code::Unavailable,
        Kind::OutOfRange => Code::OutOfRange,
        Kind::NotImplemented => Code::Unimplemented,
        Kind::Canceled => Code::Cancelled,
        Kind::Internal => Code::Internal,
    };
    Status::new(code, err.message().to_owned())
}

/// The error a client sees for a status, so remote and local implementations fail alike.
///
/// A status that carries a source error was made on this side from a transport failure (the
/// connection refused, or closed mid-call because the server stopped): a server's answer
/// never has one. Whatever code tonic gave it ("operation was canceled", "h2 protocol error"),
/// that is the server being unavailable, and it says so.
pub fn from_status(status: Status) -> Error {
    if status.code() != Code::Unavailable && std::error::Error::source(&status).is_some() {
        return Error::new(
            Kind::Unavailable,
            format!("connection lost: {}", status.message()),
        );
    }
    let kind = match status.code() {
        Code::NotFound => Kind::NotFound,
        Code::AlreadyExists => Kind::AlreadyExists,
        Code::InvalidArgument => Kind::InvalidArgument,
        Code::FailedPrecondition => Kind::FailedPrecondition,
        Code::Unavailable => Kind::Unavailable,
        Code::OutOfRange => Kind::OutOfRange,
        Code::Unimplemented => Kind::NotImplemented,
        Code::Cancelled | Code::DeadlineExceeded => Kind::Canceled,
        _ => Kind::Internal,
    };
    Error::new(kind, status.message().to_owned())
}
