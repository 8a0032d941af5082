//! Tasks: the running side of containers. One supervisor (`strata-shim`) per task holds the
//! container's stdio, reaps it and records its exit; this module starts supervisors, talks to
//! them on their sockets, mounts root file systems and publishes task events. Everything about
//! a task lives under `<state>/<namespace>/<id>/`, so a restarted service finds every task again
//! by looking there. A container's output log is kept beside it, `<state>/<namespace>/<id>.log`,
//! so it outlives its tasks (a container started again appends to it) until the container is
//! deleted; an exec'd process's log lives in the task directory until the process is deleted.

use crate::events::{Exchange, encode};
use crate::locks::TaskLocks;
use crate::private;
use crate::shim_exe::{SealedCopy, SealedExe};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use strata_api::containerd::events as ev;
use strata_core::containers::{Container, ContainerStore, LABEL_VOLATILE_ROOTFS};
use strata_core::mount::Mount;
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Result, identifiers};
use strata_shim_protocol::{self as protocol, Reply, Request, SOCKET};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How a task or process stands, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
    Paused,
}

/// A task or an exec'd process, as Get and List answer.
#[derive(Debug, Clone)]
pub struct ProcessView {
    pub container_id: String,
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub rootfs: Vec<Mount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug, Clone)]
struct PendingExec {
    process: Value,
    stdin: String,
    stdout: String,
    stderr: String,
}

/// The exit of a process: status and time.
#[derive(Debug, Clone, Copy)]
pub struct ExitInfo {
    pub pid: u32,
    pub status: u32,
    pub at: SystemTime,
}

pub struct Tasks<C, S> {
    state: PathBuf,
    /// The supervisor binary, run from a sealed copy (see [`crate::shim_exe`]).
    shim: SealedExe,
    default_runtime: String,
    containers: Arc<C>,
    snapshots: S,
    events: Arc<Exchange>,
    /// Exec'd processes created but not started yet, by (namespace, container, exec id).
    pending: Mutex<HashMap<(String, String, String), PendingExec>>,
    /// Held by a task's creation and its deletion.
    locks: TaskLocks,
}

/// In a task directory: the overlay work directory of a volatile root file system.
const VOLATILE_FILE: &str = "volatile";

/// Adds `volatile` to a root file system that is one overlay mount with a writable layer;
/// returns its work directory (`None`: left as it was).
fn make_volatile(mounts: &mut [Mount]) -> Option<PathBuf> {
    let [m] = mounts else { return None };
    if m.kind != "overlay" || m.option("upperdir").is_none() || m.has_flag("volatile") {
        return None;
    }
    let work = PathBuf::from(m.option("workdir")?);
    m.options.push("volatile".to_owned());
    Some(work)
}

/// Unmounts whatever is mounted on `rootfs` (stacked mounts too); returns whether anything was.
/// The kernel decides, not a record: a crash may come between a mount and its record.
fn unmount_root(rootfs: &Path) -> Result<bool> {
    let mut unmounted = false;
    for _ in 0..16 {
        match strata_mount::unmount(rootfs) {
            Ok(()) => unmounted = true,
            // Not (or no longer) a mount point, or not there at all.
            Err(strata_mount::MountError::Unmount { errno, .. })
                if matches!(
                    std::io::Error::from(errno).kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::NotFound
                ) =>
            {
                return Ok(unmounted);
            }
            Err(e) => {
                return Err(Error::internal(format!(
                    "unmounting {}: {e}",
                    rootfs.display()
                )));
            }
        }
    }
    Err(Error::internal(format!(
        "unmounting {}: still mounted after 16 unmounts",
        rootfs.display()
    )))
}

/// A path as `/proc/self/mountinfo` writes it: space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The mount points at or below `dir` in this process's mount namespace; None when that
/// cannot be read.
fn mounts_under(dir: &Path) -> Option<Vec<PathBuf>> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|p| p.starts_with(&dir))
            .collect(),
    )
}

/// Removes a task's directory without ever removing a file through a mount: its root is
/// unmounted first (whatever any record says), `unmounted` is told whether anything was, and
/// the directory is removed only when no mount point is left at or below it. Returns whether
/// the root was mounted.
fn remove_task_dir(dir: &Path, rootfs: &Path, unmounted: impl FnOnce(bool)) -> Result<bool> {
    let was = unmount_root(rootfs)?;
    unmounted(was);
    if !dir.exists() {
        return Ok(was);
    }
    match mounts_under(dir) {
        Some(m) if m.is_empty() => {}
        Some(m) => {
            return Err(Error::internal(format!(
                "not removing {}: {} is mounted below it",
                dir.display(),
                m[0].display()
            )));
        }
        None => {
            return Err(Error::internal(format!(
                "not removing {}: /proc/self/mountinfo cannot be read to see what is mounted there",
                dir.display()
            )));
        }
    }
    std::fs::remove_dir_all(dir)
        .map_err(|e| Error::internal(format!("removing {}: {e}", dir.display())))?;
    Ok(was)
}

/// Container `id`'s spec as the task will run it: `process.terminal` set when the request
/// (`terminal`) or the spec asks for one. Returns the spec and the terminal setting.
fn task_spec(id: &str, container: &Container, terminal: bool) -> Result<(Value, bool)> {
    let spec = container
        .spec
        .as_ref()
        .ok_or_else(|| Error::failed_precondition(format!("container {id:?} has no spec")))?;
    let mut spec: Value = serde_json::from_slice(&spec.value)
        .map_err(|e| Error::invalid_argument(format!("container {id:?}: spec: {e}")))?;
    // The request and the spec agree on the terminal (containerd clients set both).
    let terminal = terminal || spec["process"]["terminal"].as_bool().unwrap_or(false);
    if !spec["process"].is_object() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: its spec has no process"
        )));
    }
    spec["process"]["terminal"] = json!(terminal);
    Ok((spec, terminal))
}

/// The framed log of container `id`'s output (every task it has had), beside its task
/// directory.
pub fn container_log(state: &Path, ns: &str, id: &str) -> PathBuf {
    state.join(ns).join(format!("{id}.log"))
}

fn shim_err(id: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("task {id:?}: {what}: {e}"))
}

fn exit_from(r: &Reply) -> Option<(u32, SystemTime)> {
    r.exit.as_ref().map(|e| (e.status, e.at()))
}

/// One request to a supervisor, one reply. A failure keeps the kind the supervisor gave it;
/// its message names the task and what was being done.
async fn call(dir: &Path, id: &str, req: &Request) -> Result<Reply> {
    // A supervisor that is leaving (its task deleted, as `--rm` does) may accept a connection
    // and close it unanswered before its socket is gone. A question that changes nothing is
    // asked again for a moment: it then finds the socket gone (NotFound: no task) or gets its
    // answer, instead of failing a listing that raced with a removal.
    let read_only = matches!(
        req,
        Request::State | Request::StateExec { .. } | Request::Pids
    );
    let mut tries = 0;
    loop {
        match call_once(dir, id, req).await {
            Err(e) if read_only && e.kind() == strata_core::Kind::Unavailable && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            r => return r,
        }
    }
}

async fn call_once(dir: &Path, id: &str, req: &Request) -> Result<Reply> {
    let sock = dir.join(SOCKET);
    let doing = req.doing();
    let fail = |kind: strata_core::Kind, e: &dyn std::fmt::Display| {
        Error::new(
            kind,
            format!(
                "task {id:?}: {doing}: supervisor at {}: {e}",
                sock.display()
            ),
        )
    };
    // No socket, or nobody behind it: the task is gone (its supervisor removes the socket as
    // it leaves).
    let mut s = UnixStream::connect(&sock)
        .await
        .map_err(|e| fail(strata_core::Kind::NotFound, &e))?;
    let mut line = serde_json::to_vec(req).map_err(|e| fail(strata_core::Kind::Internal, &e))?;
    line.push(b'\n');
    s.write_all(&line)
        .await
        .map_err(|e| fail(strata_core::Kind::Unavailable, &e))?;
    let mut reply = String::new();
    let n = BufReader::new(s)
        .read_line(&mut reply)
        .await
        .map_err(|e| fail(strata_core::Kind::Unavailable, &e))?;
    if n == 0 {
        return Err(fail(
            strata_core::Kind::Unavailable,
            &"it closed the connection without a reply (it exited)",
        ));
    }
    let reply: Reply = serde_json::from_str(&reply).map_err(|e| {
        fail(
            strata_core::Kind::Internal,
            &format!("unreadable reply: {e}"),
        )
    })?;
    reply.into_result().map_err(|f| {
        Error::new(
            f.kind.into(),
            format!("task {id:?}: {doing}: {}", f.message),
        )
    })
}

fn status_of(s: Option<protocol::Status>) -> Status {
    match s {
        Some(protocol::Status::Created) => Status::Created,
        Some(protocol::Status::Running) => Status::Running,
        Some(protocol::Status::Paused) => Status::Paused,
        Some(protocol::Status::Stopped) | None => Status::Stopped,
    }
}

impl<C: ContainerStore, S: SnapshotStore> Tasks<C, S> {
    /// Makes the sealed copy of the supervisor binary now (otherwise the first task does):
    /// see [`crate::shim_exe`].
    pub fn prepare_shim(&self) -> Result<()> {
        self.shim.copy().map(drop)
    }

    pub fn new(
        state: PathBuf,
        shim: PathBuf,
        default_runtime: String,
        containers: Arc<C>,
        snapshots: S,
        events: Arc<Exchange>,
    ) -> Self {
        Self {
            state,
            shim: SealedExe::new(shim),
            default_runtime,
            containers,
            snapshots,
            events,
            pending: Mutex::new(HashMap::new()),
            locks: TaskLocks::default(),
        }
    }

    fn dir(&self, ns: &str, id: &str) -> Result<PathBuf> {
        identifiers::validate_namespace(ns)?;
        identifiers::validate("container id", id)?;
        Ok(self.state.join(ns).join(id))
    }

    fn publish(&self, ns: &str, topic: &str, type_url: &str, msg: &impl prost::Message) {
        if let Err(e) = self.events.publish(ns, topic, encode(type_url, msg)) {
            tracing::warn!(topic, error = %e, "could not publish a task event");
        }
    }

    fn runtime_for(&self, name: &str) -> String {
        match name {
            ""
            | "io.containerd.runc.v2"
            | "io.containerd.runc.v1"
            | "io.containerd.runtime.v1.linux"
            | "builtin"
            | "strata" => self.default_runtime.clone(),
            other => other.to_owned(),
        }
    }

    /// Creates the task of container `id`: mounts its root file system, writes the bundle,
    /// starts its supervisor. Returns init's pid.
    pub async fn create(&self, ns: &str, id: &str, opts: CreateOptions) -> Result<u32> {
        // The supervisor will attach the init to its cgroup: that wait starts now.
        crate::attach::prime();
        let dir = self.dir(ns, id)?;
        let _task = self.locks.lock(ns, id).await;
        let container = self.containers.get(ns, id).await?;
        if dir.join(SOCKET).exists() {
            return Err(Error::already_exists(format!(
                "task {id:?}: already exists"
            )));
        }
        // Container "a" logs to `a.log`, which is also where container "a.log" would have its
        // task: refuse rather than mix them up.
        let log = container_log(&self.state, ns, id);
        if log.is_dir() {
            return Err(Error::failed_precondition(format!(
                "container {id:?}: its log {} is taken by another container's task",
                log.display()
            )));
        }
        // Where this task's output begins in the container's log (it spans restarts).
        let run_start = if log.exists() {
            crate::logs::end_of_records(&log)?
        } else {
            0
        };
        let (mut spec, terminal) = task_spec(id, &container, opts.terminal)?;
        // The supervisor starts from the sealed copy of its binary, so what the container can
        // reach through /proc is that copy, never the file (made before anything is mounted).
        let exe = self.shim.copy()?;
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        // 0700 from the namespace's directory down: the bundle's config.json holds the
        // container's environment, the logs beside it its output (and one made by an older
        // version, wider, is narrowed).
        private::create_dir_all(&rootfs).map_err(|e| shim_err(id, "bundle", e))?;
        private::restrict(&self.state.join(ns), private::DIR_MODE)
            .map_err(|e| shim_err(id, "bundle", e))?;
        let mounts = self
            .mount_root(ns, id, &container, &opts.rootfs, &dir, &rootfs)
            .await?;
        if !mounts.is_empty() {
            spec["root"]["path"] = json!(rootfs.display().to_string());
        }
        if spec["linux"]["cgroupsPath"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            spec["linux"]["cgroupsPath"] = json!(format!("/strata/{ns}/{id}"));
        }
        let config = serde_json::to_vec(&spec).map_err(|e| shim_err(id, "spec", e))?;
        private::write(&bundle.join("config.json"), config).map_err(|e| shim_err(id, "spec", e))?;

        let runtime = self.runtime_for(&container.runtime.name);
        let line = self
            .spawn_shim(exe, id, &runtime, &bundle, &dir, &log, &opts)
            .await?;
        let Some(pid) = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            let _ = self.cleanup(&dir, &rootfs, !mounts.is_empty());
            return Err(Error::failed_precondition(format!(
                "task {id:?}: the container could not be created: {}",
                log.lines().last().unwrap_or("no reason given")
            )));
        };
        strata_core::crashpoint::hit("tasks.create.started");
        private::write(&dir.join("log.start"), run_start.to_string())
            .map_err(|e| shim_err(id, "state", e))?;
        private::write(
            &dir.join("io.json"),
            json!({"stdin": opts.stdin, "stdout": opts.stdout, "stderr": opts.stderr,
                   "terminal": terminal})
            .to_string(),
        )
        .map_err(|e| shim_err(id, "state", e))?;
        self.publish(
            ns,
            "/tasks/create",
            "containerd.events.TaskCreate",
            &ev::TaskCreate {
                container_id: id.to_owned(),
                bundle: bundle.display().to_string(),
                rootfs: mounts
                    .into_iter()
                    .map(strata_grpc::convert::mounts::to_pb)
                    .collect(),
                io: Some(ev::TaskIo {
                    stdin: opts.stdin,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                    terminal,
                }),
                checkpoint: String::new(),
                pid,
            },
        );
        Ok(pid)
    }

    /// Mounts the task's root file system at `rootfs` (the request's mounts, else the
    /// container's snapshot), made volatile when the container's label asks, and records that
    /// in `dir`. Returns the mounts (none: the bundle's `rootfs` directory is the root).
    async fn mount_root(
        &self,
        ns: &str,
        id: &str,
        container: &Container,
        requested: &[Mount],
        dir: &Path,
        rootfs: &Path,
    ) -> Result<Vec<Mount>> {
        let mut mounts = if !requested.is_empty() {
            requested.to_vec()
        } else if !container.snapshot_key.is_empty() {
            self.snapshots
                .mounts(&container.snapshotter, ns, &container.snapshot_key)
                .await?
        } else {
            Vec::new()
        };
        let volatile = container
            .labels
            .get(LABEL_VOLATILE_ROOTFS)
            .is_some_and(|v| v == "true")
            .then(|| make_volatile(&mut mounts))
            .flatten();
        // Recorded before the mount: a crash between the two leaves a record that says
        // mounted, never one that says not (and cleanup asks the kernel anyway).
        private::write(
            &dir.join("mounted"),
            if mounts.is_empty() { "0" } else { "1" },
        )
        .map_err(|e| shim_err(id, "recording its mount", e))?;
        if !mounts.is_empty() {
            let (m, r) = (mounts.clone(), rootfs.to_path_buf());
            tokio::task::spawn_blocking(move || strata_mount::mount_all(&m, &r))
                .await
                .map_err(|e| shim_err(id, "mount", e))?
                .map_err(|e| Error::from(e).context(format!("task {id:?}: mounting its root")))?;
        }
        if let Some(work) = &volatile {
            private::write(
                &dir.join(VOLATILE_FILE),
                work.as_os_str().as_encoded_bytes(),
            )
            .map_err(|e| shim_err(id, "state", e))?;
        }
        Ok(mounts)
    }

    /// Starts the supervisor from the sealed copy `exe` of its binary and waits for the line it
    /// writes once the container is created (`ready <pid>`, or nothing when it failed). The
    /// supervisor is reaped in the background when it ends.
    #[expect(
        clippy::too_many_arguments,
        reason = "the supervisor's command line: its binary, the container, runtime, bundle, state \
                  directory, log and stdio"
    )]
    async fn spawn_shim(
        &self,
        exe: Arc<SealedCopy>,
        id: &str,
        runtime: &str,
        bundle: &Path,
        dir: &Path,
        log: &Path,
        opts: &CreateOptions,
    ) -> Result<String> {
        // argv[0] still names the file.
        let mut cmd = tokio::process::Command::new(exe.exec_path());
        cmd.arg0(self.shim.path());
        cmd.args(["--id", id, "--runtime", runtime])
            .arg("--bundle")
            .arg(bundle)
            .arg("--state")
            .arg(dir)
            .arg("--log")
            .arg(log);
        for (flag, path) in [
            ("--stdin", &opts.stdin),
            ("--stdout", &opts.stdout),
            ("--stderr", &opts.stderr),
        ] {
            if !path.is_empty() {
                cmd.arg(flag).arg(path);
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| shim_err(id, &format!("starting {}", self.shim.path().display()), e))?;
        // The child has exec'd: the copy may go once a newer one replaces it.
        drop(exe);
        let out = child.stdout.take();
        let mut line = String::new();
        if let Some(out) = out {
            let _ = BufReader::new(out).read_line(&mut line).await;
        }
        // The supervisor lives on in its own session; reap it when it ends.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(line)
    }

    /// Removes a task's directory, its root unmounted first whatever `mounted` (the record)
    /// says: see [`remove_task_dir`].
    fn cleanup(&self, dir: &Path, rootfs: &Path, mounted: bool) -> Result<()> {
        let unmounted = remove_task_dir(dir, rootfs, |unmounted| {
            tracing::debug!(path = %rootfs.display(), recorded = mounted, unmounted, "task root");
            if unmounted && let Ok(work) = std::fs::read(dir.join(VOLATILE_FILE)) {
                // Unmounted cleanly, so the layer may be mounted again (a crash leaves the marker,
                // and overlayfs then refuses the layer, as it should).
                let work = PathBuf::from(std::ffi::OsString::from_vec(work));
                let _ = std::fs::remove_dir_all(work.join("work/incompat/volatile"));
            }
        });
        if let Err(e) = &unmounted {
            tracing::warn!(path = %dir.display(), error = %e, "could not remove a task's directory");
        }
        unmounted.map(drop)
    }

    /// Whether the supervisor of the task in `dir` answers on its socket.
    async fn supervisor_alive(dir: &Path) -> bool {
        UnixStream::connect(dir.join(SOCKET)).await.is_ok()
    }

    /// Finishes a task whose supervisor is gone while its directory is still there: a deletion
    /// interrupted after the supervisor left (a crash of this service), or a supervisor that
    /// died. Its root is unmounted, then the directory goes.
    fn finish_abandoned(&self, dir: &Path) -> Result<()> {
        tracing::info!(path = %dir.display(), "removing a task whose supervisor is gone");
        self.cleanup(dir, &dir.join("bundle/rootfs"), true)
    }

    /// At start-up: finishes every task whose supervisor is gone (see
    /// [`finish_abandoned`](Self::finish_abandoned)), so no mount or state outlives it.
    pub async fn recover(&self) {
        let Ok(namespaces) = std::fs::read_dir(&self.state) else {
            return;
        };
        for ns in namespaces.flatten() {
            // An older version made namespaces' directories 0755: narrowed (they are ours).
            if ns.file_type().is_ok_and(|t| t.is_dir())
                && let Err(e) = private::restrict(&ns.path(), private::DIR_MODE)
            {
                tracing::warn!(path = %ns.path().display(), error = %e, "could not make a namespace's directory private");
            }
            let Ok(tasks) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for t in tasks.flatten() {
                let dir = t.path();
                if t.file_type().is_ok_and(|f| f.is_dir())
                    && !Self::supervisor_alive(&dir).await
                    && let Err(e) = self.finish_abandoned(&dir)
                {
                    tracing::warn!(path = %dir.display(), error = %e, "could not remove an abandoned task");
                }
            }
        }
    }

    /// Starts the task (empty `exec_id`) or a process created by [`exec`](Self::exec).
    pub async fn start(self: &Arc<Self>, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
        let dir = self.dir(ns, id)?;
        if exec_id.is_empty() {
            call(&dir, id, &Request::Start).await?;
            let pid = call(&dir, id, &Request::State).await?.pid_u32();
            self.publish(
                ns,
                "/tasks/start",
                "containerd.events.TaskStart",
                &ev::TaskStart {
                    container_id: id.to_owned(),
                    pid,
                },
            );
            self.watch_exit(ns, id, "", pid);
            return Ok(pid);
        }
        let key = (ns.to_owned(), id.to_owned(), exec_id.to_owned());
        // Kept pending until the supervisor has it, so a concurrent Wait never asks too early.
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("exec {exec_id:?} of task {id:?}: not found"))
            })?;
        let reply = call(
            &dir,
            id,
            &Request::Exec {
                exec_id: exec_id.to_owned(),
                process: pending.process,
                stdin: Some(pending.stdin),
                stdout: Some(pending.stdout),
                stderr: Some(pending.stderr),
            },
        )
        .await;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let pid = reply?.pid_u32();
        strata_core::crashpoint::hit("tasks.exec.started");
        self.publish(
            ns,
            "/tasks/exec-started",
            "containerd.events.TaskExecStarted",
            &ev::TaskExecStarted {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid,
            },
        );
        self.watch_exit(ns, id, exec_id, pid);
        Ok(pid)
    }

    /// Publishes `/tasks/exit` when the process ends.
    fn watch_exit(self: &Arc<Self>, ns: &str, id: &str, exec_id: &str, pid: u32) {
        let (this, ns, id, exec_id) = (
            self.clone(),
            ns.to_owned(),
            id.to_owned(),
            exec_id.to_owned(),
        );
        tokio::spawn(async move {
            if let Ok(exit) = this.wait(&ns, &id, &exec_id).await {
                let at = strata_grpc::convert::timestamp(exit.at);
                this.publish(
                    &ns,
                    "/tasks/exit",
                    "containerd.events.TaskExit",
                    &ev::TaskExit {
                        container_id: id.clone(),
                        id: if exec_id.is_empty() {
                            id.clone()
                        } else {
                            exec_id
                        },
                        pid,
                        exit_status: exit.status,
                        exited_at: Some(at),
                    },
                );
            }
        });
    }

    pub async fn exec(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        process: Value,
        stdio: (String, String, String),
    ) -> Result<()> {
        let dir = self.dir(ns, id)?;
        identifiers::validate("exec id", exec_id)?;
        // Its start attaches it to the container's cgroup: that wait starts now.
        crate::attach::prime();
        call(&dir, id, &Request::State).await?;
        let key = (ns.to_owned(), id.to_owned(), exec_id.to_owned());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.contains_key(&key) {
            return Err(Error::already_exists(format!(
                "exec {exec_id:?} of task {id:?}: already exists"
            )));
        }
        pending.insert(
            key,
            PendingExec {
                process,
                stdin: stdio.0,
                stdout: stdio.1,
                stderr: stdio.2,
            },
        );
        drop(pending);
        self.publish(
            ns,
            "/tasks/exec-added",
            "containerd.events.TaskExecAdded",
            &ev::TaskExecAdded {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        );
        Ok(())
    }

    /// Blocks until the task (or exec'd process) exits.
    pub async fn wait(&self, ns: &str, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let dir = self.dir(ns, id)?;
        // A client may wait on a process it has created but not started yet (ctr does).
        let key = (ns.to_owned(), id.to_owned(), exec_id.to_owned());
        while !exec_id.is_empty()
            && self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&key)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let req = if exec_id.is_empty() {
            Request::Wait
        } else {
            Request::WaitExec {
                exec_id: exec_id.to_owned(),
            }
        };
        let reply = call(&dir, id, &req).await?;
        let (status, at) = exit_from(&reply).ok_or_else(|| {
            shim_err(id, &req.doing(), "no exit status in the supervisor's reply")
        })?;
        let pid = reply.pid_u32();
        Ok(ExitInfo { pid, status, at })
    }

    pub async fn kill(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let dir = self.dir(ns, id)?;
        let sig = i32::try_from(signal)
            .map_err(|_| Error::invalid_argument(format!("signal {signal}")))?;
        let req = if exec_id.is_empty() {
            Request::Kill { signal: sig, all }
        } else {
            Request::KillExec {
                exec_id: exec_id.to_owned(),
                signal: sig,
            }
        };
        let sent = call(&dir, id, &req).await;
        match sent {
            Ok(_) => Ok(()),
            // A process that has exited cannot be signalled: NotFound, as containerd answers.
            Err(e) if e.kind() != strata_core::Kind::NotFound => {
                match self.exit_now(ns, id, exec_id).await {
                    Ok(Some(_)) => Err(Error::not_found(format!(
                        "task {id:?}{}: process already finished",
                        if exec_id.is_empty() {
                            String::new()
                        } else {
                            format!(" exec {exec_id:?}")
                        }
                    ))),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn get(&self, ns: &str, id: &str, exec_id: &str) -> Result<ProcessView> {
        let dir = self.dir(ns, id)?;
        if !dir.join(SOCKET).exists() {
            return Err(Error::not_found(format!("task {id:?}: not found")));
        }
        let state = call(&dir, id, &Request::State).await?;
        let io: Value = std::fs::read(dir.join("io.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let s = |k: &str| io[k].as_str().unwrap_or_default().to_owned();
        let terminal = io["terminal"].as_bool().unwrap_or(false);
        if !exec_id.is_empty() {
            let key = (ns.to_owned(), id.to_owned(), exec_id.to_owned());
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            // Created, not started: known only here.
            if let Some(p) = pending {
                return Ok(ProcessView {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    pid: 0,
                    status: Status::Created,
                    stdin: p.stdin,
                    stdout: p.stdout,
                    stderr: p.stderr,
                    terminal: p.process["terminal"].as_bool().unwrap_or(false),
                    exit_status: 0,
                    exited_at: None,
                });
            }
            let st = call(
                &dir,
                id,
                &Request::StateExec {
                    exec_id: exec_id.to_owned(),
                },
            )
            .await?;
            let exit = exit_from(&st);
            return Ok(ProcessView {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid: st.pid_u32(),
                status: status_of(st.status),
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                exit_status: exit.map_or(0, |e| e.0),
                exited_at: exit.map(|e| e.1),
            });
        }
        let exit = exit_from(&state);
        Ok(ProcessView {
            container_id: id.to_owned(),
            exec_id: String::new(),
            pid: state.pid_u32(),
            status: status_of(state.status),
            stdin: s("stdin"),
            stdout: s("stdout"),
            stderr: s("stderr"),
            terminal,
            exit_status: exit.map_or(0, |e| e.0),
            exited_at: exit.map(|e| e.1),
        })
    }

    pub async fn list(&self, ns: &str) -> Result<Vec<ProcessView>> {
        identifiers::validate_namespace(ns)?;
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.state.join(ns)) else {
            return Ok(out);
        };
        // Task directories; containers' logs lie beside them.
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(p) = self.get(ns, &id, "").await {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Deletes a stopped task: the supervisor removes the container and exits, the root is
    /// unmounted, the state directory removed.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<ExitInfo> {
        let dir = self.dir(ns, id)?;
        let _task = self.locks.lock(ns, id).await;
        if dir.is_dir() && !Self::supervisor_alive(&dir).await {
            self.finish_abandoned(&dir)?;
            return Err(Error::not_found(format!("task {id:?}: not found")));
        }
        let view = self.get(ns, id, "").await?;
        if view.status != Status::Stopped {
            return Err(Error::failed_precondition(format!(
                "task {id:?} must be stopped before deletion: it is {:?}",
                view.status
            )));
        }
        call(&dir, id, &Request::Delete { force: false }).await?;
        strata_core::crashpoint::hit("tasks.delete.midway");
        let mounted = std::fs::read_to_string(dir.join("mounted")).unwrap_or_default() == "1";
        self.cleanup(&dir, &dir.join("bundle/rootfs"), mounted)?;
        let at = view.exited_at.unwrap_or_else(SystemTime::now);
        self.publish(
            ns,
            "/tasks/delete",
            "containerd.events.TaskDelete",
            &ev::TaskDelete {
                container_id: id.to_owned(),
                pid: view.pid,
                exit_status: view.exit_status,
                exited_at: Some(strata_grpc::convert::timestamp(at)),
                id: id.to_owned(),
            },
        );
        Ok(ExitInfo {
            pid: view.pid,
            status: view.exit_status,
            at,
        })
    }

    /// A request without arguments (state, pause, resume, pids, close_io); pause and resume
    /// are published.
    pub async fn simple(&self, ns: &str, id: &str, req: Request) -> Result<Reply> {
        let dir = self.dir(ns, id)?;
        let v = call(&dir, id, &req).await?;
        let (topic, url) = match req {
            Request::Pause => ("/tasks/paused", "containerd.events.TaskPaused"),
            Request::Resume => ("/tasks/resumed", "containerd.events.TaskResumed"),
            _ => return Ok(v),
        };
        if matches!(req, Request::Pause) {
            self.publish(
                ns,
                topic,
                url,
                &ev::TaskPaused {
                    container_id: id.to_owned(),
                },
            );
        } else {
            self.publish(
                ns,
                topic,
                url,
                &ev::TaskResumed {
                    container_id: id.to_owned(),
                },
            );
        }
        Ok(v)
    }

    /// Sets the size of the terminal of the task (empty `exec_id`) or of an exec'd process.
    pub async fn resize_pty(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let dir = self.dir(ns, id)?;
        if !dir.join(SOCKET).exists() {
            return Err(Error::not_found(format!("task {id:?}: not found")));
        }
        if !exec_id.is_empty() && self.is_pending(ns, id, exec_id) {
            return Err(Error::failed_precondition(format!(
                "exec {exec_id:?} of task {id:?} is not started: it has no terminal yet"
            )));
        }
        call(
            &dir,
            id,
            &Request::ResizePty {
                exec_id: exec_id.to_owned(),
                width,
                height,
            },
        )
        .await?;
        Ok(())
    }

    /// Deletes an exec'd process that has exited (or was never started): the supervisor
    /// forgets it and its log goes.
    pub async fn delete_exec(&self, ns: &str, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let dir = self.dir(ns, id)?;
        identifiers::validate("exec id", exec_id)?;
        let key = (ns.to_owned(), id.to_owned(), exec_id.to_owned());
        if self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .is_some()
        {
            return Ok(ExitInfo {
                pid: 0,
                status: 0,
                at: SystemTime::now(),
            });
        }
        let req = Request::DeleteExec {
            exec_id: exec_id.to_owned(),
        };
        let reply = call(&dir, id, &req).await?;
        let (status, at) = exit_from(&reply)
            .ok_or_else(|| shim_err(id, &req.doing(), "no exit status in the reply"))?;
        let pid = reply.pid_u32();
        Ok(ExitInfo { pid, status, at })
    }

    /// The framed log of the task (empty `exec_id`: the container's log) or of an exec'd
    /// process.
    /// Where the current task's output begins in its container's log (0 when unknown).
    pub fn run_start(&self, ns: &str, id: &str) -> Result<u64> {
        let p = self.dir(ns, id)?.join("log.start");
        Ok(std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0))
    }

    pub fn log_path(&self, ns: &str, id: &str, exec_id: &str) -> Result<PathBuf> {
        let dir = self.dir(ns, id)?;
        if exec_id.is_empty() {
            return Ok(container_log(&self.state, ns, id));
        }
        identifiers::validate("exec id", exec_id)?;
        Ok(dir.join(format!("exec-{exec_id}.log")))
    }

    /// Whether the task has a supervisor.
    pub fn has_task(&self, ns: &str, id: &str) -> Result<bool> {
        Ok(self.dir(ns, id)?.join(SOCKET).exists())
    }

    /// Whether `exec_id` was created and not started yet.
    pub fn is_pending(&self, ns: &str, id: &str, exec_id: &str) -> bool {
        let key = (ns.to_owned(), id.to_owned(), exec_id.to_owned());
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
    }

    /// The exit of the task or of an exec'd process if it has exited (and its output has all
    /// reached its log), without waiting. NotFound when there is no such process.
    pub async fn exit_now(&self, ns: &str, id: &str, exec_id: &str) -> Result<Option<ExitInfo>> {
        let dir = self.dir(ns, id)?;
        if !exec_id.is_empty() && self.is_pending(ns, id, exec_id) {
            return Ok(None);
        }
        if !dir.join(SOCKET).exists() {
            return Err(Error::not_found(format!("task {id:?}: not found")));
        }
        let req = if exec_id.is_empty() {
            Request::State
        } else {
            Request::StateExec {
                exec_id: exec_id.to_owned(),
            }
        };
        let reply = call(&dir, id, &req).await?;
        let pid = reply.pid_u32();
        Ok(exit_from(&reply).map(|(status, at)| ExitInfo { pid, status, at }))
    }

    pub async fn update(&self, ns: &str, id: &str, resources: Value) -> Result<()> {
        let dir = self.dir(ns, id)?;
        call(&dir, id, &Request::Update { resources }).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(src: &Path, dst: &Path) {
        nix::mount::mount(
            Some(src),
            dst,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");
    }

    /// The state a kill -9 of the service leaves between mounting a task's root and recording
    /// that it did: the record says nothing is mounted, the container's layer is. The task's
    /// directory goes, its root unmounted first; the layer keeps every file (a removal that
    /// trusted the record went through the mount and emptied it).
    #[test]
    fn a_task_dir_is_never_removed_through_a_mount() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layer = tmp.path().join("layer");
        std::fs::create_dir_all(layer.join("etc")).expect("layer");
        std::fs::write(layer.join("etc/precious"), "data").expect("file");
        let dir = tmp.path().join("task");
        let rootfs = dir.join("bundle/rootfs");
        std::fs::create_dir_all(&rootfs).expect("rootfs");
        std::fs::write(dir.join("mounted"), "0").expect("record");
        // Twice: a mount stacked on another is unmounted too.
        bind(&layer, &rootfs);
        bind(&layer, &rootfs);
        let mut told = None;
        let was = remove_task_dir(&dir, &rootfs, |u| told = Some(u)).expect("removed");
        assert!(was && told == Some(true));
        assert!(!dir.exists(), "the task's directory stayed");
        assert_eq!(
            std::fs::read_to_string(layer.join("etc/precious")).expect("the layer's file"),
            "data"
        );
        let under = mounts_under(tmp.path()).expect("mountinfo");
        assert!(under.is_empty(), "left mounted: {under:?}");
        // Nothing mounted, nothing there: nothing to do.
        assert!(!remove_task_dir(&dir, &rootfs, |_| {}).expect("no-op"));
    }

    /// A mount below the root (not the root itself) stops the removal.
    #[test]
    fn a_mount_below_the_root_stops_the_removal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layer = tmp.path().join("layer");
        std::fs::create_dir_all(&layer).expect("layer");
        std::fs::write(layer.join("precious"), "data").expect("file");
        let dir = tmp.path().join("task");
        let rootfs = dir.join("bundle/rootfs");
        let other = dir.join("bundle/other");
        std::fs::create_dir_all(&rootfs).expect("rootfs");
        std::fs::create_dir_all(&other).expect("other");
        bind(&layer, &other);
        let e = remove_task_dir(&dir, &rootfs, |_| {}).expect_err("refused");
        assert!(e.message().contains("is mounted below it"), "{e}");
        assert!(layer.join("precious").exists());
        strata_mount::unmount(&other).expect("unmount");
    }

    #[test]
    fn mountinfo_paths() {
        assert_eq!(
            unescape_mountinfo("/a\\040b\\011c\\134d"),
            PathBuf::from("/a b\tc\\d")
        );
    }
}
