//! Attaching a client to a process (its output followed from the log, its stdin pipe) and
//! resizing its terminal.

use super::attachments::Attached;
use super::{get_container, key};
use crate::Backends;
use crate::tasks::{LogsOptions, Output};
use std::sync::Arc;
use strata_core::{Error, Result};
use tokio::net::unix::pipe;

/// What an attach needs once it has begun: the output stream and the stdin pipe.
pub struct Attach {
    pub output: Output,
    pub stdin: Option<Arc<tokio::sync::Mutex<Option<pipe::Sender>>>>,
    pub guard: Attached,
}

/// Whom an attach is for and what it asks.
#[derive(Debug, Clone, Default)]
pub struct AttachStart {
    /// The container.
    pub container_id: String,
    /// The exec'd process; empty for the container's own.
    pub exec_id: String,
    /// Send what the process wrote since its task started first, then follow.
    pub logs: bool,
    /// Feed the process's stdin (it must have been created with stdin open).
    pub stdin: bool,
}

/// Begins an attach: registers the client, opens the output stream.
pub async fn attach(b: &Arc<Backends>, ns: &str, start: &AttachStart) -> Result<Attach> {
    let id = &start.container_id;
    get_container(b, ns, id).await?;
    let k = key(ns, id, &start.exec_id);
    let stdin = if start.stdin {
        Some(b.attachments.stdin(&k).ok_or_else(|| {
            Error::failed_precondition(format!(
                "container {id:?}{}: stdin is not open (create it with stdin, -i)",
                if start.exec_id.is_empty() {
                    String::new()
                } else {
                    format!(" exec {:?}", start.exec_id)
                }
            ))
        })?)
    } else {
        None
    };
    let guard = b.attachments.enter(&k);
    let opts = LogsOptions {
        follow: true,
        new_only: !start.logs,
        this_run: start.logs,
    };
    let output = b.tasks.logs(ns, id, &start.exec_id, opts).await?;
    Ok(Attach {
        output,
        stdin,
        guard,
    })
}

/// Resizes the terminal of container `id`'s process `exec_id` (empty: its own).
pub async fn resize(
    b: &Backends,
    ns: &str,
    id: &str,
    exec_id: &str,
    width: u32,
    height: u32,
) -> Result<()> {
    b.tasks.resize_pty(ns, id, exec_id, width, height).await
}
