//! The supervisor's control protocol, shared by `strata-shim` (which answers) and
//! `strata-tasks` (which asks): one JSON [`Request`] per line on the supervisor's socket
//! ([`SOCKET`] in its state directory), one JSON [`Reply`] per line back. A failed request's
//! reply carries an [`ErrorKind`], which is [`strata_core::Kind`] on the wire: the caller
//! branches on it, never on the message.
//!
//! Kept small (serde only): the supervisor, one per container, links it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_core::Kind;

/// The supervisor's socket, in its state directory.
pub const SOCKET: &str = "shim.sock";

/// A request to the supervisor, tagged on the wire by `op` (`{"op":"kill","signal":9}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Init's pid and status (created, running, paused, stopped) and, once stopped, its exit.
    State,
    /// Lets the created init exec the container's process (like `runc start`).
    Start,
    /// Sends a signal to init, or with `all` to every process in the container's cgroup.
    Kill {
        /// The signal's number.
        signal: i32,
        /// Signal every process of the container, not only init (allowed after init exited).
        #[serde(default)]
        all: bool,
    },
    /// Blocks until init has exited and its output has been copied (or, for output held open
    /// by processes left behind, a short while has passed); answers its exit status.
    Wait,
    /// The pids of the container's processes.
    Pids,
    /// Freezes every process of the container.
    Pause,
    /// Thaws a paused container.
    Resume,
    /// Closes the container's stdin (the write side the supervisor holds; nothing for a
    /// terminal, whose input stops when the client closes its stdin).
    CloseIo,
    /// Runs a process in the container (`process` is an OCI runtime-spec Process in JSON).
    Exec {
        /// The client's name for the process, unique in the container.
        exec_id: String,
        /// The OCI runtime-spec Process to run, as JSON.
        process: serde_json::Value,
        /// The client's path the process's stdin is read from; none or empty for no stdin.
        #[serde(default)]
        stdin: Option<String>,
        /// The client's path the process's stdout is copied to; none or empty for none.
        #[serde(default)]
        stdout: Option<String>,
        /// The client's path the process's stderr is copied to; none or empty for none.
        #[serde(default)]
        stderr: Option<String>,
    },
    /// Blocks until an exec'd process has exited; answers its pid and exit status.
    WaitExec {
        /// The exec'd process.
        exec_id: String,
    },
    /// Sends a signal to an exec'd process.
    KillExec {
        /// The exec'd process.
        exec_id: String,
        /// The signal's number.
        signal: i32,
    },
    /// An exec'd process's pid and status (running, stopped) and, once stopped, its exit.
    StateExec {
        /// The exec'd process.
        exec_id: String,
    },
    /// Forgets an exec'd process that has exited, and removes its log.
    DeleteExec {
        /// The exec'd process.
        exec_id: String,
    },
    /// Sets the size of the terminal of init (empty `exec_id`) or of an exec'd process.
    ResizePty {
        /// The exec'd process, or empty for init.
        #[serde(default)]
        exec_id: String,
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// Applies new resources (an OCI LinuxResources in JSON).
    Update {
        /// The OCI LinuxResources, as JSON.
        resources: serde_json::Value,
    },
    /// Deletes the container (it must have exited unless `force`); the supervisor then exits.
    Delete {
        /// Delete a container that is still running.
        #[serde(default)]
        force: bool,
    },
}

impl Request {
    /// What the request does, for messages: `"starting"`, `"waiting for exec \"e1\""`.
    pub fn doing(&self) -> String {
        match self {
            Request::State => "reading its state".into(),
            Request::Start => "starting".into(),
            Request::Kill { signal, .. } => format!("sending signal {signal}"),
            Request::Wait => "waiting for its exit".into(),
            Request::Pids => "listing its processes".into(),
            Request::Pause => "pausing".into(),
            Request::Resume => "resuming".into(),
            Request::CloseIo => "closing its stdin".into(),
            Request::Exec { exec_id, .. } => format!("starting exec {exec_id:?}"),
            Request::WaitExec { exec_id } => format!("waiting for exec {exec_id:?}"),
            Request::KillExec { exec_id, signal } => {
                format!("sending signal {signal} to exec {exec_id:?}")
            }
            Request::StateExec { exec_id } => format!("reading the state of exec {exec_id:?}"),
            Request::DeleteExec { exec_id } => format!("deleting exec {exec_id:?}"),
            Request::ResizePty { exec_id, .. } if exec_id.is_empty() => {
                "resizing its terminal".into()
            }
            Request::ResizePty { exec_id, .. } => {
                format!("resizing the terminal of exec {exec_id:?}")
            }
            Request::Update { .. } => "updating its resources".into(),
            Request::Delete { .. } => "deleting".into(),
        }
    }
}

/// How a process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Init is set up and waits for [`Request::Start`].
    Created,
    /// The process runs.
    Running,
    /// The container's processes are frozen.
    Paused,
    /// The process has exited.
    Stopped,
}

/// How and when a process exited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal number for a process killed by a signal (as shells report).
    pub status: u32,
    /// When it exited: seconds since the epoch.
    pub at_secs: i64,
    /// When it exited: nanoseconds past `at_secs`.
    pub at_nanos: u32,
}

impl Exit {
    /// When the process exited.
    pub fn at(&self) -> SystemTime {
        let secs = u64::try_from(self.at_secs).unwrap_or(0);
        UNIX_EPOCH + Duration::new(secs, self.at_nanos.min(999_999_999))
    }
}

/// The kind of a failure, as [`strata_core::Kind`] (containerd's categories); on the wire in
/// snake case (`"not_found"`). A kind this side does not know reads as `Internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// [`Kind::NotFound`].
    NotFound,
    /// [`Kind::AlreadyExists`].
    AlreadyExists,
    /// [`Kind::InvalidArgument`].
    InvalidArgument,
    /// [`Kind::FailedPrecondition`].
    FailedPrecondition,
    /// [`Kind::Unavailable`].
    Unavailable,
    /// [`Kind::OutOfRange`].
    OutOfRange,
    /// [`Kind::NotImplemented`].
    NotImplemented,
    /// [`Kind::Canceled`].
    Canceled,
    /// [`Kind::Internal`], and any kind this side does not know.
    #[serde(other)]
    Internal,
}

impl From<Kind> for ErrorKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::NotFound => Self::NotFound,
            Kind::AlreadyExists => Self::AlreadyExists,
            Kind::InvalidArgument => Self::InvalidArgument,
            Kind::FailedPrecondition => Self::FailedPrecondition,
            Kind::Unavailable => Self::Unavailable,
            Kind::OutOfRange => Self::OutOfRange,
            Kind::NotImplemented => Self::NotImplemented,
            Kind::Canceled => Self::Canceled,
            Kind::Internal => Self::Internal,
        }
    }
}

impl From<ErrorKind> for Kind {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::AlreadyExists => Self::AlreadyExists,
            ErrorKind::InvalidArgument => Self::InvalidArgument,
            ErrorKind::FailedPrecondition => Self::FailedPrecondition,
            ErrorKind::Unavailable => Self::Unavailable,
            ErrorKind::OutOfRange => Self::OutOfRange,
            ErrorKind::NotImplemented => Self::NotImplemented,
            ErrorKind::Canceled => Self::Canceled,
            ErrorKind::Internal => Self::Internal,
        }
    }
}

/// A failed request: its kind and the supervisor's message (which names the exec or the
/// container it is about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What category of failure it is; callers branch on this.
    pub kind: ErrorKind,
    /// The supervisor's message, for people.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The supervisor's answer to a [`Request`]: the error, or the fields the request answers
/// (the rest left out on the wire).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The failure's message; none when the request succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's kind; an error without one is `Internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    /// The process's status (answers `State` and `StateExec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The process's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The process's exit, once it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    /// The container's processes (answers `Pids`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
}

impl Reply {
    /// A failure of `kind`.
    pub fn fail(kind: impl Into<ErrorKind>, msg: impl Into<String>) -> Self {
        Self {
            error: Some(msg.into()),
            kind: Some(kind.into()),
            ..Default::default()
        }
    }

    /// The reply, or its failure.
    pub fn into_result(self) -> Result<Reply, Failure> {
        match self.error {
            Some(message) => Err(Failure {
                kind: self.kind.unwrap_or(ErrorKind::Internal),
                message,
            }),
            None => Ok(self),
        }
    }

    /// The pid the reply names, 0 when none.
    pub fn pid_u32(&self) -> u32 {
        self.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r = Reply::fail(Kind::FailedPrecondition, "exec \"e\" is still running");
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(
            text,
            r#"{"error":"exec \"e\" is still running","kind":"failed_precondition"}"#
        );
        let back: Reply = serde_json::from_str(&text).expect("parse");
        let f = back.into_result().expect_err("a failure");
        assert_eq!(Kind::from(f.kind), Kind::FailedPrecondition);
        // A kind this side does not know, and no kind at all, are internal.
        for text in [r#"{"error":"x","kind":"on_fire"}"#, r#"{"error":"x"}"#] {
            let r: Reply = serde_json::from_str(text).expect("parse");
            assert_eq!(
                r.into_result().expect_err("fails").kind,
                ErrorKind::Internal
            );
        }
        let req = Request::KillExec {
            exec_id: "e".into(),
            signal: 9,
        };
        assert_eq!(
            serde_json::to_string(&req).expect("json"),
            r#"{"op":"kill_exec","exec_id":"e","signal":9}"#
        );
        let ok: Reply = serde_json::from_str(r#"{"status":"paused","pid":7}"#).expect("parse");
        assert_eq!(ok.status, Some(Status::Paused));
        assert_eq!(ok.pid_u32(), 7);
    }

    #[test]
    fn every_kind_crosses() {
        for k in [
            Kind::NotFound,
            Kind::AlreadyExists,
            Kind::InvalidArgument,
            Kind::FailedPrecondition,
            Kind::Unavailable,
            Kind::OutOfRange,
            Kind::NotImplemented,
            Kind::Canceled,
            Kind::Internal,
        ] {
            let text = serde_json::to_string(&Reply::fail(k, "m")).expect("json");
            let r: Reply = serde_json::from_str(&text).expect("parse");
            assert_eq!(Kind::from(r.into_result().expect_err("fails").kind), k);
        }
    }
}
