//! The supervisor's control protocol: one JSON request per line on `shim.sock`, one JSON reply
//! per line. Kept deliberately small and dependency-free (no gRPC runtime in the supervisor).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Init's pid and status (created, running, paused, stopped) and, once stopped, its exit.
    State,
    Start,
    Kill {
        signal: i32,
        #[serde(default)]
        all: bool,
    },
    /// Blocks until init has exited and its output has been copied (or, for output held open
    /// by processes left behind, a short while has passed); answers its exit status.
    Wait,
    Pids,
    Pause,
    Resume,
    /// Closes the container's stdin (the write side the supervisor holds; nothing for a
    /// terminal, whose input stops when the client closes its stdin).
    CloseIo,
    /// Runs a process in the container (`process` is an OCI runtime-spec Process in JSON).
    Exec {
        exec_id: String,
        process: serde_json::Value,
        #[serde(default)]
        stdin: Option<String>,
        #[serde(default)]
        stdout: Option<String>,
        #[serde(default)]
        stderr: Option<String>,
    },
    WaitExec {
        exec_id: String,
    },
    KillExec {
        exec_id: String,
        signal: i32,
    },
    /// An exec'd process's pid and status (running, stopped) and, once stopped, its exit.
    StateExec {
        exec_id: String,
    },
    /// Forgets an exec'd process that has exited, and removes its log.
    DeleteExec {
        exec_id: String,
    },
    /// Sets the size of the terminal of init (empty `exec_id`) or of an exec'd process.
    ResizePty {
        #[serde(default)]
        exec_id: String,
        width: u32,
        height: u32,
    },
    /// Applies new resources (an OCI LinuxResources in JSON).
    Update {
        resources: serde_json::Value,
    },
    /// Deletes the container (it must have exited unless `force`); the supervisor then exits.
    Delete {
        #[serde(default)]
        force: bool,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal number for a process killed by a signal (as shells report).
    pub status: u32,
    /// Seconds and nanoseconds since the epoch.
    pub at_secs: i64,
    pub at_nanos: u32,
}

/// What kind of failure an error reply reports (`Reply::kind`), for the caller's status codes.
pub mod kind {
    pub const NOT_FOUND: &str = "not_found";
    pub const ALREADY_EXISTS: &str = "already_exists";
    pub const FAILED_PRECONDITION: &str = "failed_precondition";
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One of [`kind`]'s values when the error is not an internal one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// created, running, paused, stopped
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
}

impl Reply {
    pub fn err(msg: impl Into<String>) -> Self {
        Self {
            error: Some(msg.into()),
            ..Default::default()
        }
    }

    /// An error of a [`kind`].
    pub fn fail(kind: &str, msg: impl Into<String>) -> Self {
        Self {
            error: Some(msg.into()),
            kind: Some(kind.to_owned()),
            ..Default::default()
        }
    }
}
