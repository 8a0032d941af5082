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
    /// Blocks until init exits; answers its exit status.
    Wait,
    Pids,
    Pause,
    Resume,
    /// Closes the container's stdin (the write side the supervisor holds).
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
}
