//! Processes exec'd in a running container: started, then deleted once they have exited and
//! their attached client has seen it.

use super::ExecOptions;
use super::create::resolve_user;
use super::lifecycle::{start_process, wait};
use super::stdin::{close_stdin, open_stdin};
use super::{get_container, get_task, ignore_missing, key, lock, random_id, spec_of, status_of};
use crate::Backends;
use crate::spec;
use crate::tasks::{ExecProcess, Status as TaskStatus};
use std::sync::Arc;
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Result};

/// Starts a process in the running container `req.container_id`; returns its exec ID and pid.
pub async fn exec(b: &Arc<Backends>, ns: &str, req: ExecOptions) -> Result<(String, u32)> {
    let id = req.container_id.clone();
    let c = get_container(b, ns, &id).await?;
    match get_task(b, ns, &id, "").await? {
        Some(t) if status_of(&t) == TaskStatus::Running => {}
        _ => {
            return Err(Error::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
    }
    let spec = spec_of(&c)?;
    let user = if req.user.is_empty() {
        None
    } else {
        let parent = match b.snapshots.stat(&c.snapshotter, ns, &c.snapshot_key).await {
            Ok(info) => info.parent,
            Err(_) => String::new(),
        };
        Some(resolve_user(b, ns, &c.snapshotter, &parent, &id, &req.user, &[]).await?)
    };
    let process = spec::exec_process(&spec, &req, user.as_ref())?;
    let exec_id = if req.exec_id.is_empty() {
        random_id()?
    } else {
        strata_core::identifiers::validate("exec ID", &req.exec_id)?;
        req.exec_id.clone()
    };
    let stdin = if req.stdin {
        open_stdin(b, ns, &id, &exec_id)
            .await?
            .display()
            .to_string()
    } else {
        String::new()
    };
    let value = serde_json::to_vec(&process)
        .map_err(|e| Error::internal(format!("exec {exec_id:?}: process: {e}")))?;
    let process = ExecProcess {
        stdin,
        terminal: req.tty,
        process: value,
    };
    let created = b.tasks.exec(ns, &id, &exec_id, process).await;
    if let Err(e) = created {
        close_stdin(b, ns, &id, &exec_id);
        return Err(e);
    }
    let k = key(ns, &id, &exec_id);
    if !req.detach {
        b.attachments.reserve(&k);
    }
    let pid = match start_process(b, ns, &id, &exec_id).await {
        Ok(pid) => pid,
        Err(e) => {
            let _ = delete_process(b, ns, &id, &exec_id).await;
            if !req.detach && lock(&b.attachments.reserved).remove(&k) {
                b.attachments.leave(&k);
            }
            return Err(e);
        }
    };
    // The exec'd process is deleted once it has exited and its attached client has seen it.
    let (b2, ns2, id2, e2) = (b.clone(), ns.to_owned(), id.clone(), exec_id.clone());
    tokio::spawn(async move {
        let _ = wait(&b2, &ns2, &id2, &e2).await;
        b2.attachments.wait_idle(&key(&ns2, &id2, &e2)).await;
        let _ = delete_process(&b2, &ns2, &id2, &e2).await;
    });
    Ok((exec_id, pid))
}

async fn delete_process(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<()> {
    close_stdin(b, ns, id, exec_id);
    ignore_missing(b.tasks.delete_process(ns, id, exec_id).await)
}
