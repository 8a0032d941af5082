//! Containers run server-side, for `strata run` and its siblings: the gateway creates the
//! container record and its root snapshot, starts its task with the tasks service, streams its
//! output (the tasks service's `strata.tasks.v1.Io` logs) and feeds its stdin, and removes it
//! with its thin layer.
//!
//! Stdin: a container created with stdin open gets a FIFO under `<gateway root>/io/<ns>/<id>/`
//! that its supervisor reads; the gateway holds the write end open from task start until the
//! client closes stdin (or the container is removed), so stdin stays open between attaches as
//! with `docker run -i`. Output is never sent through FIFOs: the supervisor writes it to the
//! container's log and attaching means following that log, so nothing blocks when nobody is
//! attached and `logs` shows everything.

mod attach;
mod attachments;
mod create;
mod exec;
mod lifecycle;
mod options;
mod stdin;

use crate::Backends;
use crate::tasks::{Process, Status as TaskStatus};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use strata_core::containers::{Container, ContainerStore};
use strata_core::{Error, Kind, Result};

pub use attach::{Attach, AttachStart, attach, resize};
pub use attachments::{Attached, Attachments};
pub use create::create;
pub use exec::exec;
pub(crate) use lifecycle::delete_task;
pub use lifecycle::{rearm_auto_remove, remove, start};
pub use options::{Device, ExecOptions, PortMapping, RunOptions, Tmpfs, Ulimit, Volume};
pub use stdin::{end_stdin, write_stdin};

/// Label: the container was created with stdin open (`-i`).
pub const LABEL_STDIN: &str = "io.strata.stdin";
/// Label: remove the container once its task has exited (`--rm`).
pub const LABEL_AUTO_REMOVE: &str = "io.strata.auto-remove";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(ns: &str, id: &str, exec_id: &str) -> String {
    format!("{ns}/{id}/{exec_id}")
}

fn random_id() -> Result<String> {
    use std::io::Read as _;
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::internal(format!("reading /dev/urandom: {e}")))?;
    Ok(hex::encode(b))
}

fn io_dir(b: &Backends, ns: &str, id: &str) -> PathBuf {
    b.root.join("io").join(ns).join(id)
}

fn status_of(p: &Process) -> TaskStatus {
    p.status
}

async fn get_container(b: &Backends, ns: &str, id: &str) -> Result<Container> {
    b.containers.get(ns, id).await
}

pub(crate) fn spec_of(c: &Container) -> Result<Value> {
    let any = c
        .spec
        .as_ref()
        .ok_or_else(|| Error::failed_precondition(format!("container {:?} has no spec", c.id)))?;
    serde_json::from_slice(&any.value)
        .map_err(|e| Error::failed_precondition(format!("container {:?}: spec: {e}", c.id)))
}

/// The pid of container `id`'s running task; FailedPrecondition when it is not running.
pub(crate) async fn running_pid(b: &Backends, ns: &str, id: &str) -> Result<u32> {
    get_container(b, ns, id).await?;
    match get_task(b, ns, id, "").await? {
        Some(t) if status_of(&t) == TaskStatus::Running => Ok(t.pid),
        _ => Err(Error::failed_precondition(format!(
            "container {id:?} is not running: its network cannot be joined"
        ))),
    }
}

async fn get_task(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<Option<Process>> {
    b.tasks.get(ns, id, exec_id).await
}

fn ignore_missing(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == Kind::NotFound => Ok(()),
        other => other,
    }
}
