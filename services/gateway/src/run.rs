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

use crate::Backends;
use crate::api::find_image;
use crate::image::details;
use crate::spec::{self, PROCESS_TYPE, SPEC_TYPE, User};
use prost_types::Any;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use strata_api::containerd::services::containers::v1 as cpb;
use strata_api::containerd::services::tasks::v1 as tpb;
use strata_api::containerd::v1::types::Status as TaskStatus;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::tasks::v1 as iopb;
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Kind, Result};
use strata_grpc::from_status;
use strata_grpc::metadata::with_namespace;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::Notify;

/// Label: the container was created with stdin open (`-i`).
pub const LABEL_STDIN: &str = "io.strata.stdin";
/// Label: remove the container once its task has exited (`--rm`).
pub const LABEL_AUTO_REMOVE: &str = "io.strata.auto-remove";
/// How long a non-detached exec waits for its attach before it is cleaned up unattended.
const ATTACH_GRACE: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(ns: &str, id: &str, exec_id: &str) -> String {
    format!("{ns}/{id}/{exec_id}")
}

/// Who is attached to which process, so a removal waits until attached clients have seen the
/// exit, and the write ends of stdin FIFOs.
#[derive(Default)]
pub struct Attachments {
    count: Mutex<HashMap<String, usize>>,
    /// Processes started for a client that has not attached yet.
    reserved: Mutex<HashSet<String>>,
    idle: Notify,
    stdin: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<pipe::Sender>>>>>,
    /// One removal at a time per container (`--rm` is done by both the CLI and the gateway).
    /// Once a removal through a slot succeeds it is marked done: callers that were waiting
    /// for it are answered at once.
    removals: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
    /// Containers this gateway is creating (record made, snapshot not yet prepared).
    creating: Mutex<HashSet<String>>,
}

/// A container name held by a creation in progress; released when dropped.
struct Creating<'a> {
    a: &'a Attachments,
    key: String,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        lock(&self.a.creating).remove(&self.key);
    }
}

/// One attached client; dropping it detaches.
pub struct Attached {
    a: Arc<Attachments>,
    key: String,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.a.leave(&self.key);
    }
}

impl Attachments {
    fn enter(self: &Arc<Self>, key: &str) -> Attached {
        if !lock(&self.reserved).remove(key) {
            *lock(&self.count).entry(key.to_owned()).or_default() += 1;
        }
        Attached {
            a: self.clone(),
            key: key.to_owned(),
        }
    }

    fn leave(&self, key: &str) {
        let mut count = lock(&self.count);
        if let Some(n) = count.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                count.remove(key);
            }
        }
        drop(count);
        self.idle.notify_waiters();
    }

    /// Holds `key` for a client expected to attach; released by its attach, or after a grace.
    fn reserve(self: &Arc<Self>, key: &str) {
        *lock(&self.count).entry(key.to_owned()).or_default() += 1;
        lock(&self.reserved).insert(key.to_owned());
        let (a, k) = (self.clone(), key.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(ATTACH_GRACE).await;
            if lock(&a.reserved).remove(&k) {
                a.leave(&k);
            }
        });
    }

    /// Returns once nobody is attached to `key`.
    async fn wait_idle(&self, key: &str) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !lock(&self.count).contains_key(key) {
                return;
            }
            notified.await;
        }
    }

    fn stdin(&self, key: &str) -> Option<Arc<tokio::sync::Mutex<Option<pipe::Sender>>>> {
        lock(&self.stdin).get(key).cloned()
    }

    /// Holds `key` for a creation; `None` when another creation in this gateway holds it.
    fn creating(&self, key: &str) -> Option<Creating<'_>> {
        lock(&self.creating)
            .insert(key.to_owned())
            .then(|| Creating {
                a: self,
                key: key.to_owned(),
            })
    }
}

/// Whether container `id`'s record is all that is left of it: it names a snapshot that does not
/// exist and has no task. A creation cut short between the record and the snapshot (the
/// gateway killed), or a removal cut short between the snapshot and the record, leaves that;
/// no creation in progress does, once [`Attachments::creating`] says none is.
async fn record_only(b: &Backends, ns: &str, id: &str) -> Result<bool> {
    let c = get_container(b, ns, id).await?;
    if c.snapshot_key.is_empty() {
        return Ok(false);
    }
    match b.snapshots.stat(&c.snapshotter, ns, &c.snapshot_key).await {
        Err(e) if e.kind() == Kind::NotFound => {}
        Err(e) => return Err(e),
        Ok(_) => return Ok(false),
    }
    Ok(get_task(b, ns, id, "").await?.is_none())
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

fn status_of(p: &strata_api::containerd::v1::types::Process) -> TaskStatus {
    TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown)
}

/// Creates a FIFO for the stdin of `exec_id` (empty: init) and opens its write end.
async fn open_stdin(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<PathBuf> {
    let dir = io_dir(b, ns, id);
    let name = if exec_id.is_empty() {
        "init.stdin".to_owned()
    } else {
        format!("exec-{exec_id}.stdin")
    };
    let path = dir.join(name);
    let io = |e: std::io::Error| Error::internal(format!("stdin pipe {}: {e}", path.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io(e.into()))?;
    // Read and write: opening never waits for the supervisor, and the pipe stays open as long
    // as the gateway holds it.
    let sender = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(&path)
        .map_err(io)?;
    lock(&b.attachments.stdin).insert(
        key(ns, id, exec_id),
        Arc::new(tokio::sync::Mutex::new(Some(sender))),
    );
    Ok(path)
}

fn close_stdin(b: &Backends, ns: &str, id: &str, exec_id: &str) {
    lock(&b.attachments.stdin).remove(&key(ns, id, exec_id));
    let dir = io_dir(b, ns, id);
    let name = if exec_id.is_empty() {
        "init.stdin".to_owned()
    } else {
        format!("exec-{exec_id}.stdin")
    };
    let _ = std::fs::remove_file(dir.join(name));
}

async fn get_container(b: &Backends, ns: &str, id: &str) -> Result<cpb::Container> {
    b.containers
        .clone()
        .get(with_namespace(
            ns,
            cpb::GetContainerRequest { id: id.to_owned() },
        )?)
        .await
        .map_err(from_status)?
        .into_inner()
        .container
        .ok_or_else(|| Error::not_found(format!("container {id:?}")))
}

pub(crate) fn spec_of(c: &cpb::Container) -> Result<Value> {
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

async fn get_task(
    b: &Backends,
    ns: &str,
    id: &str,
    exec_id: &str,
) -> Result<Option<strata_api::containerd::v1::types::Process>> {
    match b
        .tasks
        .clone()
        .get(with_namespace(
            ns,
            tpb::GetRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?)
        .await
    {
        Ok(r) => Ok(r.into_inner().process),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(from_status(s)),
    }
}

fn ignore_missing(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == Kind::NotFound => Ok(()),
        other => other,
    }
}

/// The most of an image's /etc/passwd or /etc/group read to resolve a user.
const ACCOUNTS_LIMIT: u64 = 1 << 20;

/// Reads `/etc/passwd` and `/etc/group` of the image whose top layer is `parent`, through a
/// short-lived read-only view of it.
async fn image_accounts(
    b: &Backends,
    ns: &str,
    snapshotter: &str,
    parent: &str,
    id: &str,
) -> Result<(String, String)> {
    let view = format!("strata-user-{id}-{}", random_id()?);
    let mounts = b
        .snapshots
        .view(snapshotter, ns, &view, parent, HashMap::new())
        .await?;
    let tmp = b.root.join("tmp");
    let read = tokio::task::spawn_blocking(move || -> Result<(String, String)> {
        std::fs::create_dir_all(&tmp)
            .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
        let m = strata_mount::TempMount::new(&mounts, &tmp)
            .map_err(|e| Error::internal(format!("mounting the image to read its users: {e}")))?;
        // Read as the container would see them (links resolve inside the image) and bounded:
        // an image's /etc/passwd that is a FIFO, a device or a huge file is refused.
        let read = |f: &str| -> Result<String> {
            let bytes = strata_mount::inroot::read_in_root(m.path(), Path::new(f), ACCOUNTS_LIMIT)
                .map_err(|e| {
                    Error::failed_precondition(format!(
                        "reading the image's {f} to resolve the user: {e}"
                    ))
                })?;
            Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
        };
        Ok((read("/etc/passwd")?, read("/etc/group")?))
    })
    .await
    .map_err(|e| Error::internal(format!("reading the image's users: {e}")));
    let _ = b.snapshots.remove(snapshotter, ns, &view).await;
    read?
}

async fn resolve_user(
    b: &Backends,
    ns: &str,
    snapshotter: &str,
    parent: &str,
    id: &str,
    user: &str,
    group_add: &[String],
) -> Result<User> {
    let numeric_groups = group_add.iter().all(|g| g.parse::<u32>().is_ok());
    let mut resolved = if user.is_empty() {
        Some(User::default())
    } else {
        spec::numeric_user(user).filter(|_| user.contains(':'))
    };
    let mut group_file = String::new();
    if resolved.is_none() || !numeric_groups {
        let (passwd, group) = image_accounts(b, ns, snapshotter, parent, id).await?;
        if resolved.is_none() {
            resolved = Some(spec::resolve_user(user, &passwd, &group)?);
        }
        group_file = group;
    }
    let mut u = resolved.unwrap_or_default();
    for g in crate::confine::group_ids(group_add, &group_file)? {
        if !u.additional_gids.contains(&g) {
            u.additional_gids.push(g);
        }
    }
    Ok(u)
}

/// Creates a container of a local image; returns its ID.
pub async fn create(b: &Backends, ns: &str, req: pb::CreateContainerRequest) -> Result<String> {
    let image = find_image(b, ns, &req.image).await?;
    let img = details(b, ns, image).await?;
    let id = if req.name.is_empty() {
        random_id()?
    } else {
        strata_core::identifiers::validate("container name", &req.name)?;
        req.name.clone()
    };
    let snapshotter = if req.snapshotter.is_empty() {
        b.snapshotter.clone()
    } else {
        req.snapshotter.clone()
    };
    let parent = img
        .chain_ids
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();
    // An image whose top layer is not unpacked is found out by the first use of that layer
    // (reading its users, or preparing the container's snapshot over it): no extra call.
    let not_unpacked = |e: Error| {
        if e.kind() == Kind::NotFound && !parent.is_empty() {
            Error::failed_precondition(format!(
                "image {:?} is not unpacked in snapshotter {snapshotter:?}: pull it again",
                img.name
            ))
        } else {
            e
        }
    };
    let config = img.config.config.clone().unwrap_or_default();
    let user_s = if req.user.is_empty() {
        config.user.clone().unwrap_or_default()
    } else {
        req.user.clone()
    };
    let user = resolve_user(b, ns, &snapshotter, &parent, &id, &user_s, &req.group_add)
        .await
        .map_err(not_unpacked)?;
    let mut spec = spec::build(&id, &req, &config, &user)?;
    let network = crate::net::wanted(b, &req)?;
    if let Some(target) = req.network.strip_prefix("container:") {
        crate::net::join_container(b, ns, target, &mut spec).await?;
    }
    for v in &req.volumes {
        // As `docker run -v`: a missing host directory is created.
        if !std::path::Path::new(&v.source).exists() {
            std::fs::create_dir_all(&v.source)
                .map_err(|e| Error::invalid_argument(format!("volume source {}: {e}", v.source)))?;
        }
    }
    let mut labels = req.labels.clone();
    if req.stdin {
        labels.insert(LABEL_STDIN.to_owned(), "true".to_owned());
    }
    if req.auto_remove {
        labels.insert(LABEL_AUTO_REMOVE.to_owned(), "true".to_owned());
        // Its layer goes with it: no sync of it is worth waiting for.
        labels.insert(
            strata_core::containers::LABEL_VOLATILE_ROOTFS.to_owned(),
            "true".to_owned(),
        );
    }
    let in_use = || Error::already_exists(format!("container {id:?}: the name is in use"));
    let _creating = b
        .attachments
        .creating(&key(ns, &id, ""))
        .ok_or_else(in_use)?;
    if let Some(network) = &network {
        match get_container(b, ns, &id).await {
            Ok(_) => return Err(in_use()),
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
        // An attachment a crash left under this name goes first.
        crate::net::detach(b, ns, &id).await?;
        let hostname = spec["hostname"].as_str().unwrap_or_default().to_owned();
        let a = crate::net::attach(b, ns, &id, network, &req, &config, &hostname).await?;
        crate::net::apply(&mut spec, &a);
        labels.insert(crate::net::LABEL_NETWORK.to_owned(), a.network.clone());
        if !a.ports.is_empty() {
            labels.insert(crate::net::LABEL_PUBLISHES.to_owned(), "true".to_owned());
        }
    }
    let created = create_recorded(
        b,
        ns,
        &id,
        &img.name,
        &req,
        labels,
        &spec,
        &snapshotter,
        &parent,
    )
    .await;
    if created.is_err() && network.is_some() {
        let _ = crate::net::detach(b, ns, &id).await;
    }
    created.map_err(not_unpacked)?;
    Ok(id)
}

/// The container's record, then its snapshot; the record goes again when the snapshot
/// cannot be made.
#[allow(clippy::too_many_arguments)]
async fn create_recorded(
    b: &Backends,
    ns: &str,
    id: &str,
    image: &str,
    req: &pb::CreateContainerRequest,
    labels: HashMap<String, String>,
    spec: &Value,
    snapshotter: &str,
    parent: &str,
) -> Result<()> {
    let id = id.to_owned();
    let in_use = || Error::already_exists(format!("container {id:?}: the name is in use"));
    let value = serde_json::to_vec(spec)
        .map_err(|e| Error::internal(format!("container {id:?}: spec: {e}")))?;
    let record = cpb::CreateContainerRequest {
        container: Some(cpb::Container {
            id: id.clone(),
            labels,
            image: image.to_owned(),
            runtime: Some(cpb::container::Runtime {
                name: if req.runtime.is_empty() {
                    "io.containerd.runc.v2".to_owned()
                } else {
                    req.runtime.clone()
                },
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE.to_owned(),
                value,
            }),
            snapshotter: snapshotter.to_owned(),
            snapshot_key: id.clone(),
            ..Default::default()
        }),
    };
    // The record first: as a root of garbage collection it holds its snapshot's key before the
    // snapshot exists, so the snapshot is never unreferenced and no lease is needed.
    let mut containers = b.containers.clone();
    let created = containers
        .create(with_namespace(ns, record.clone())?)
        .await
        .map_err(from_status);
    match created {
        Ok(_) => {}
        // What a crash left of an earlier creation or removal of this name is replaced.
        Err(e) if e.kind() == Kind::AlreadyExists && record_only(b, ns, &id).await? => {
            tracing::info!(container = %id, "replacing a record left without its snapshot");
            let gone = containers
                .delete(with_namespace(
                    ns,
                    cpb::DeleteContainerRequest { id: id.clone() },
                )?)
                .await
                .map_err(from_status);
            ignore_missing(gone.map(drop))?;
            match containers.create(with_namespace(ns, record)?).await {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Err(in_use()),
                Err(s) => return Err(from_status(s)),
            }
        }
        Err(e) if e.kind() == Kind::AlreadyExists => return Err(in_use()),
        Err(e) => return Err(e),
    }
    strata_core::crashpoint::hit("gateway.create.recorded");
    if let Err(e) = b
        .snapshots
        .prepare(snapshotter, ns, &id, parent, HashMap::new())
        .await
    {
        if let Ok(req) = with_namespace(ns, cpb::DeleteContainerRequest { id: id.clone() }) {
            let _ = b.containers.clone().delete(req).await;
        }
        return Err(e);
    }
    Ok(())
}

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

fn auto_remove(c: &cpb::Container) -> bool {
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

async fn start_container(
    b: &Arc<Backends>,
    ns: &str,
    c: &cpb::Container,
    attach: bool,
) -> Result<u32> {
    let id = c.id.as_str();
    let c = c.clone();
    let spec = spec_of(&c)?;
    let mut tasks = b.tasks.clone();
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
    let created = tasks
        .create(with_namespace(
            ns,
            tpb::CreateTaskRequest {
                container_id: id.to_owned(),
                stdin,
                terminal,
                ..Default::default()
            },
        )?)
        .await
        .map_err(from_status);
    if let Err(e) = created {
        close_stdin(b, ns, id, "");
        return Err(e);
    }
    let pid = start_process(b, ns, id, "").await?;
    watch_auto_remove(b, ns, &c, attach);
    Ok(pid)
}

/// Starts a created task (empty `exec_id`) or exec'd process; returns its pid.
async fn start_process(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
    Ok(b.tasks
        .clone()
        .start(with_namespace(
            ns,
            tpb::StartRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?)
        .await
        .map_err(from_status)?
        .into_inner()
        .pid)
}

async fn wait(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
    Ok(b.tasks
        .clone()
        .wait(with_namespace(
            ns,
            tpb::WaitRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?)
        .await
        .map_err(from_status)?
        .into_inner()
        .exit_status)
}

/// For `--rm`: once the task exits and attached clients have seen it, remove the container.
fn watch_auto_remove(b: &Arc<Backends>, ns: &str, c: &cpb::Container, attach: bool) {
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
        let listed = retrying("auto-remove: listing containers", &ns, || {
            let req = with_namespace(
                &ns,
                cpb::ListContainersRequest {
                    filters: vec![filter.clone()],
                },
            );
            let mut containers = b.containers.clone();
            async move {
                Ok(containers
                    .list(req?)
                    .await
                    .map_err(from_status)?
                    .into_inner()
                    .containers)
            }
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
    b.tasks
        .clone()
        .delete(with_namespace(
            ns,
            tpb::DeleteTaskRequest {
                container_id: id.to_owned(),
            },
        )?)
        .await
        .map(drop)
        .map_err(from_status)
}

async fn remove_locked(b: &Backends, ns: &str, id: &str, force: bool) -> Result<()> {
    // Most removals are of a container whose task has ended: deleting the task is tried at
    // once, beside reading the record (it names the snapshot). A task that has not ended is
    // refused (FailedPrecondition) and then stopped first, with force.
    let (c, first) = tokio::join!(get_container(b, ns, id), delete_task(b, ns, id));
    let c = c?;
    let mut tasks = b.tasks.clone();
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
            let killed = tasks
                .kill(with_namespace(
                    ns,
                    tpb::KillRequest {
                        container_id: id.to_owned(),
                        exec_id: String::new(),
                        signal: 9,
                        all: true,
                    },
                )?)
                .await
                .map_err(from_status);
            ignore_missing(killed.map(|_| ()))?;
            if status == TaskStatus::Paused {
                let _ = tasks
                    .resume(with_namespace(
                        ns,
                        tpb::ResumeTaskRequest {
                            container_id: id.to_owned(),
                        },
                    )?)
                    .await;
            }
            ignore_missing(wait(b, ns, id, "").await.map(|_| ()))?;
        }
        ignore_missing(delete_task(b, ns, id).await)?;
    }
    // The record and the snapshot go together, each a commit of its own service: once the
    // task is deleted the snapshot is unmounted, and should one of the two fail, a second `rm`
    // finishes the other (a snapshot left without its record is also garbage to the collector).
    strata_core::crashpoint::hit("gateway.rm.task-deleted");
    let record = with_namespace(ns, cpb::DeleteContainerRequest { id: id.to_owned() })?;
    let mut containers = b.containers.clone();
    let (deleted, snapshot) = tokio::join!(
        async { containers.delete(record).await.map_err(from_status) },
        async {
            if c.snapshot_key.is_empty() {
                Ok(())
            } else {
                b.snapshots
                    .remove(&c.snapshotter, ns, &c.snapshot_key)
                    .await
            }
        }
    );
    ignore_missing(deleted.map(|_| ()))?;
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

/// Starts a process in the running container `req.container_id`; returns its exec ID and pid.
pub async fn exec(b: &Arc<Backends>, ns: &str, req: pb::ExecRequest) -> Result<(String, u32)> {
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
    let mut tasks = b.tasks.clone();
    let created = tasks
        .exec(with_namespace(
            ns,
            tpb::ExecProcessRequest {
                container_id: id.clone(),
                stdin,
                stdout: String::new(),
                stderr: String::new(),
                terminal: req.tty,
                spec: Some(Any {
                    type_url: PROCESS_TYPE.to_owned(),
                    value,
                }),
                exec_id: exec_id.clone(),
            },
        )?)
        .await
        .map_err(from_status);
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
    let r = b
        .tasks
        .clone()
        .delete_process(with_namespace(
            ns,
            tpb::DeleteProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?)
        .await
        .map_err(from_status);
    ignore_missing(r.map(|_| ()))
}

/// What an attach needs once it has begun: the output stream and the stdin pipe.
pub struct Attach {
    pub output: tonic::Streaming<iopb::LogsEvent>,
    pub stdin: Option<Arc<tokio::sync::Mutex<Option<pipe::Sender>>>>,
    pub guard: Attached,
}

/// Begins an attach: registers the client, opens the output stream.
pub async fn attach(b: &Arc<Backends>, ns: &str, start: &pb::AttachStart) -> Result<Attach> {
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
    let output =
        b.io.clone()
            .logs(with_namespace(
                ns,
                iopb::LogsRequest {
                    container_id: id.clone(),
                    exec_id: start.exec_id.clone(),
                    follow: true,
                    new_only: !start.logs,
                    tail: 0,
                    this_run: start.logs,
                },
            )?)
            .await
            .map_err(from_status)?
            .into_inner();
    Ok(Attach {
        output,
        stdin,
        guard,
    })
}

/// Writes stdin data from an attached client.
pub async fn write_stdin(
    stdin: &Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    data: &[u8],
) -> Result<()> {
    let mut s = stdin.lock().await;
    match s.as_mut() {
        Some(w) => w
            .write_all(data)
            .await
            .map_err(|e| Error::failed_precondition(format!("writing stdin: {e}"))),
        None => Err(Error::failed_precondition("stdin is closed")),
    }
}

/// Closes stdin for good: the process reads end of file.
pub async fn end_stdin(b: &Backends, ns: &str, id: &str, exec_id: &str) {
    let k = key(ns, id, exec_id);
    if let Some(s) = b.attachments.stdin(&k) {
        s.lock().await.take();
    }
    lock(&b.attachments.stdin).remove(&k);
    // The supervisor holds the process's end open until told: what the pipe held is delivered,
    // then the process reads end of file.
    let closed = match with_namespace(
        ns,
        tpb::CloseIoRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            stdin: true,
        },
    ) {
        Ok(req) => b.tasks.clone().close_io(req).await.map_err(from_status),
        Err(e) => Err(e),
    };
    if let Err(e) = closed {
        tracing::debug!(container = %id, exec = %exec_id, error = %e, "closing stdin");
    }
}

pub async fn resize(b: &Backends, ns: &str, id: &str, exec_id: &str, r: pb::Resize) -> Result<()> {
    b.tasks
        .clone()
        .resize_pty(with_namespace(
            ns,
            tpb::ResizePtyRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                width: r.width,
                height: r.height,
            },
        )?)
        .await
        .map_err(from_status)?;
    Ok(())
}
