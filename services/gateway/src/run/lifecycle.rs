//! A container's task from start to removal: starting it, waiting for it, `--rm` (watched,
//! re-armed after a gateway restart, retried while a service is away), and removal.

use super::stdin::{close_stdin, open_stdin};
use super::{
    LABEL_AUTO_REMOVE, LABEL_STDIN, get_container, get_task, ignore_missing, io_dir, key, lock,
    spec_of, status_of,
};
use crate::Backends;
use crate::tasks::{CreateTask, Status as TaskStatus};
use std::sync::Arc;
use std::time::Duration;
use strata_core::containers::{Container, ContainerStore};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Kind, Result};

/// Starts the task of container `id` (a new one if its last has exited); returns its pid.
pub async fn start(b: &Arc<Backends>, ns: &str, id: &str, attach: bool) -> Result<u32> {
    let c = get_container(b, ns, id).await?;
    let started = start_container(b, ns, &c, attach).await;
    // A `--rm` container that could not be started goes, as with Docker: in the background,
    // tried again while the services it needs are restarting.
    if started.is_err() && auto_remove(&c) {
        remove_in_background(b, ns, id, true);
    }
    started
}

fn auto_remove(c: &Container) -> bool {
    c.labels.get(LABEL_AUTO_REMOVE).is_some_and(|v| v == "true")
}

/// The service behind the call was down or went away mid-call: worth trying again.
fn transient(e: &Error) -> bool {
    matches!(e.kind(), Kind::Unavailable | Kind::Canceled)
}

/// Runs `f` until it ends with anything but a transient error, pausing 100 ms, doubling up
/// to 30 s, between tries: background work that must outlive a restart of a service.
async fn retrying<T, F, Fut>(what: &str, id: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if transient(&e) => {
                tracing::debug!(container = %id, error = %e, "{what}: trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            r => return r,
        }
    }
}

/// Removes container `id` (killing its task with `force`) in the background, until it is
/// gone or the removal fails for a reason other than a service being away.
fn remove_in_background(b: &Arc<Backends>, ns: &str, id: &str, force: bool) {
    let (b, ns, id) = (b.clone(), ns.to_owned(), id.to_owned());
    tokio::spawn(async move {
        let r = retrying("auto-remove", &id, || remove(&b, &ns, &id, force)).await;
        if let Err(e) = ignore_missing(r) {
            tracing::warn!(container = %id, error = %e, "auto-remove failed");
        }
    });
}

async fn start_container(b: &Arc<Backends>, ns: &str, c: &Container, attach: bool) -> Result<u32> {
    let id = c.id.as_str();
    let c = c.clone();
    let spec = spec_of(&c)?;
    if let Some(t) = get_task(b, ns, id, "").await? {
        match status_of(&t) {
            TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing => return Ok(t.pid),
            TaskStatus::Created => {
                let pid = start_process(b, ns, id, "").await?;
                watch_auto_remove(b, ns, &c, attach);
                return Ok(pid);
            }
            _ => delete_task(b, ns, id).await?,
        }
    }
    let stdin = if c.labels.get(LABEL_STDIN).is_some_and(|v| v == "true") {
        open_stdin(b, ns, id, "").await?.display().to_string()
    } else {
        String::new()
    };
    let terminal = spec["process"]["terminal"].as_bool().unwrap_or(false);
    let created = b.tasks.create(ns, id, CreateTask { stdin, terminal }).await;
    if let Err(e) = created {
        close_stdin(b, ns, id, "");
        return Err(e);
    }
    let pid = start_process(b, ns, id, "").await?;
    watch_auto_remove(b, ns, &c, attach);
    Ok(pid)
}

/// Starts a created task (empty `exec_id`) or exec'd process; returns its pid.
pub(super) async fn start_process(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
    b.tasks.start(ns, id, exec_id).await
}

pub(super) async fn wait(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
    b.tasks.wait(ns, id, exec_id).await
}

/// For `--rm`: once the task exits and attached clients have seen it, remove the container.
fn watch_auto_remove(b: &Arc<Backends>, ns: &str, c: &Container, attach: bool) {
    if c.labels.get(LABEL_AUTO_REMOVE).is_none_or(|v| v != "true") {
        return;
    }
    if attach {
        b.attachments.reserve(&key(ns, &c.id, ""));
    }
    let (b, ns, id) = (b.clone(), ns.to_owned(), c.id.clone());
    tokio::spawn(async move {
        // Waiting outlives restarts of the tasks service (its tasks outlive them too); a task
        // that is gone has ended.
        let waited = retrying("auto-remove: waiting for the task", &id, || {
            wait(&b, &ns, &id, "")
        })
        .await;
        if let Err(e) = ignore_missing(waited.map(|_| ())) {
            tracing::warn!(container = %id, error = %e, "auto-remove: waiting for the task");
            return;
        }
        b.attachments.wait_idle(&key(&ns, &id, "")).await;
        let r = retrying("auto-remove", &id, || remove(&b, &ns, &id, false)).await;
        if let Err(e) = ignore_missing(r) {
            tracing::warn!(container = %id, error = %e, "auto-remove failed");
        }
    });
}

/// After a gateway restart: containers created with `--rm` whose task has ended while no
/// gateway watched, or that never started, are removed, and running ones are watched again
/// (each tried again while the tasks service is away); the leases of pulls an
/// earlier gateway process left are dropped.
pub async fn rearm_auto_remove(b: Arc<Backends>, namespaces: Vec<String>) {
    crate::pull::drop_stale_leases(&b, &namespaces).await;
    for ns in namespaces {
        let filter = format!("labels.\"{LABEL_AUTO_REMOVE}\"==true");
        let filters = [filter];
        let listed = retrying("auto-remove: listing containers", &ns, || {
            b.containers.list(&ns, &filters)
        })
        .await;
        let list = match listed {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "auto-remove: listing containers");
                continue;
            }
        };
        for c in list {
            let task = retrying("auto-remove: reading the task", &c.id, || {
                get_task(&b, &ns, &c.id, "")
            })
            .await;
            match task {
                Ok(Some(t)) if status_of(&t) != TaskStatus::Stopped => {
                    watch_auto_remove(&b, &ns, &c, false);
                }
                // Ended while no gateway watched, or never started (its start failed, or the
                // gateway went away between creating and starting it): it goes.
                Ok(_) => remove_in_background(&b, &ns, &c.id, false),
                Err(e) => {
                    tracing::warn!(container = %c.id, error = %e, "auto-remove: reading the task");
                }
            }
        }
    }
}

/// Removes container `id`: its task (killed first with `force`), record, snapshot, stdin pipes.
pub async fn remove(b: &Backends, ns: &str, id: &str, force: bool) -> Result<()> {
    let k = key(ns, id, "");
    let slot = lock(&b.attachments.removals)
        .entry(k.clone())
        .or_default()
        .clone();
    let result = {
        let mut done = slot.lock().await;
        if *done {
            // Removed by the caller we waited for (`--rm` is done by the CLI and the gateway).
            Ok(())
        } else {
            let r = remove_locked(b, ns, id, force).await;
            *done = r.is_ok();
            r
        }
    };
    let mut removals = lock(&b.attachments.removals);
    if removals.get(&k).is_some_and(|s| Arc::strong_count(s) <= 2) {
        removals.remove(&k);
    }
    result
}

pub(crate) async fn delete_task(b: &Backends, ns: &str, id: &str) -> Result<()> {
    b.tasks.delete(ns, id).await
}

async fn remove_locked(b: &Backends, ns: &str, id: &str, force: bool) -> Result<()> {
    // Most removals are of a container whose task has ended: deleting the task is tried at
    // once, beside reading the record (it names the snapshot). A task that has not ended is
    // refused (FailedPrecondition) and then stopped first, with force.
    let (c, first) = tokio::join!(get_container(b, ns, id), delete_task(b, ns, id));
    let c = c?;
    let unended = match first {
        Ok(()) => None,
        Err(e) if e.kind() == Kind::NotFound => None,
        Err(e) if e.kind() == Kind::FailedPrecondition => get_task(b, ns, id, "").await?,
        Err(e) => return Err(e),
    };
    if let Some(t) = unended {
        let status = status_of(&t);
        if status != TaskStatus::Stopped {
            if !force {
                return Err(Error::failed_precondition(format!(
                    "container {id:?} is running: stop it first or remove it with force"
                )));
            }
            ignore_missing(b.tasks.kill(ns, id, 9, true).await)?;
            if status == TaskStatus::Paused {
                let _ = b.tasks.resume(ns, id).await;
            }
            ignore_missing(wait(b, ns, id, "").await.map(|_| ()))?;
        }
        ignore_missing(delete_task(b, ns, id).await)?;
    }
    // The record and the snapshot go together, each a commit of its own service: once the
    // task is deleted the snapshot is unmounted, and should one of the two fail, a second `rm`
    // finishes the other (a snapshot left without its record is also garbage to the collector).
    strata_core::crashpoint::hit("gateway.rm.task-deleted");
    let (deleted, snapshot) = tokio::join!(b.containers.delete(ns, id), async {
        if c.snapshot_key.is_empty() {
            Ok(())
        } else {
            b.snapshots
                .remove(&c.snapshotter, ns, &c.snapshot_key)
                .await
        }
    });
    ignore_missing(deleted)?;
    ignore_missing(snapshot)?;
    // The network goes with the record (the network service also detaches, later, what a
    // crash here leaves of a container that no longer exists).
    // A `--rm` container that published nothing is detached in the background: no port to
    // free for a next container, and its `run` need not wait for the plugins' teardown.
    if auto_remove(&c) && !c.labels.contains_key(crate::net::LABEL_PUBLISHES) {
        if c.labels.contains_key(crate::net::LABEL_NETWORK) {
            crate::net::detach_later(b, ns, id);
        }
    } else if let Err(e) = crate::net::detach(b, ns, id).await {
        tracing::warn!(container = %id, error = %e, "detaching the container's network: trying again in the background");
        crate::net::detach_later(b, ns, id);
    }
    let prefix = key(ns, id, "");
    lock(&b.attachments.stdin).retain(|k, _| !k.starts_with(&prefix));
    let _ = std::fs::remove_dir_all(io_dir(b, ns, id));
    Ok(())
}
