//! A snapshotter and a tasks service on temporary sockets, an "image" (a committed overlayfs
//! snapshot holding busybox-static, as an unpacked busybox layer would), and synchronous
//! helpers that drive containers through the containerd Containers and Tasks APIs with one of
//! the three runtimes. Everything a test leaves running is killed and deleted when the stack
//! is dropped, even after a failed assertion.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)]

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use strata_api::containerd::services::tasks::v1 as pb;
use strata_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use strata_api::containerd::v1::types as tpb;
use strata_core::containers::{Any, Container, ContainerStore as _};
use strata_core::mount::Mount;
use strata_core::snapshots::SnapshotStore as _;
use strata_grpc::metadata::with_namespace;
use strata_grpc::remote::{RemoteContainers, RemoteSnapshots};
use strata_testkit::{Service, sibling_bin, tool};
use tonic::transport::Channel;

pub const SNAPSHOTTER: &str = "overlayfs";
/// The committed snapshot every container of a stack starts from.
pub const IMAGE: &str = "busybox-image";
pub const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Upper bound for something the test waits for; only a liveness guard, never a speed check.
const PATIENCE: Duration = Duration::from_secs(60);

/// The runtime a variant of a check runs its containers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    /// strata's built-in runtime: the default, chosen by containerd's runc runtime name.
    Builtin,
    /// runc, chosen per container (runtime name `runc`).
    Runc,
    /// crun, chosen for the whole service (`strata-tasks --runtime crun`).
    Crun,
}

impl Rt {
    pub fn name(self) -> &'static str {
        match self {
            Rt::Builtin => "builtin",
            Rt::Runc => "runc",
            Rt::Crun => "crun",
        }
    }

    /// The container's `runtime.name`.
    fn container_runtime(self) -> &'static str {
        match self {
            Rt::Runc => "runc",
            Rt::Builtin | Rt::Crun => crate::common::RUNC,
        }
    }
}

/// Where the host mounts `path` last (the mount that is visible), and its file system type.
fn fs_type_at(path: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().rev().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (pre.split(' ').nth(4)? == path).then(|| post.split(' ').next().unwrap_or("").to_owned())
    })
}

/// Whether this host runs cgroup v2 only (`/sys/fs/cgroup` is itself a cgroup2 mount).
pub fn host_is_unified() -> bool {
    fs_type_at("/sys/fs/cgroup").as_deref() == Some("cgroup2")
}

/// crun on hybrid hosts (v1 controllers under /sys/fs/cgroup plus a cgroup2 mount at
/// /sys/fs/cgroup/unified) refuses to run a container while the v2 hierarchy still offers a
/// controller: on these machines that is hugetlb, which systemd leaves to v2. The known way
/// through (bench/run-container.sh does the same) is to give each such controller a v1
/// hierarchy of its own, mounted at /sys/fs/cgroup/<controller>; the kernel then takes it
/// away from v2. Only the crun variants call this; the built-in runtime and runc never need it.
///
/// Process-wide and idempotent: it runs once per test process (later calls return the first
/// outcome), a controller already mounted there is left alone, and nothing is undone: a
/// controller returns to v2 only once its v1 hierarchy has no cgroups left, and other crun
/// users of the machine (another test process, the bench) may rely on the mount meanwhile.
/// Nothing happens on unified or pure v1 hosts.
pub fn crun_hybrid_workaround() {
    static OUTCOME: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    let outcome = OUTCOME.get_or_init(|| {
        if host_is_unified() || fs_type_at("/sys/fs/cgroup/unified").as_deref() != Some("cgroup2") {
            return Ok(Vec::new());
        }
        let offered = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .map_err(|e| format!("reading /sys/fs/cgroup/unified/cgroup.controllers: {e}"))?;
        let mut moved = Vec::new();
        for ctl in offered.split_whitespace() {
            let point = format!("/sys/fs/cgroup/{ctl}");
            if fs_type_at(&point).is_some() {
                continue;
            }
            std::fs::create_dir_all(&point).map_err(|e| format!("creating {point}: {e}"))?;
            nix::mount::mount(
                Some("cgroup"),
                point.as_str(),
                Some("cgroup"),
                nix::mount::MsFlags::empty(),
                Some(ctl),
            )
            .map_err(|e| {
                format!("mounting the {ctl} controller as a v1 hierarchy at {point}: {e}")
            })?;
            moved.push(ctl.to_owned());
        }
        let left = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .unwrap_or_default();
        if !left.trim().is_empty() {
            return Err(format!(
                "the cgroup v2 hierarchy still offers {left:?} after moving {moved:?} to v1"
            ));
        }
        Ok(moved)
    });
    if let Err(e) = outcome {
        panic!("crun's hybrid-host workaround failed: {e}");
    }
}

/// The runtime binary a variant needs, with a clear failure when it is missing.
fn require(rt: Rt) {
    match rt {
        Rt::Builtin => {}
        Rt::Runc => {
            tool("runc", "runc");
        }
        Rt::Crun => {
            tool("crun", "crun");
            crun_hybrid_workaround();
        }
    }
}

/// containerd's default capability set.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A spec like the one containerd's clients send: default mounts, namespaces, capabilities,
/// masked paths; `hostname` h-<id>; `resources` merged into `linux.resources`.
pub fn spec(id: &str, args: &[&str], resources: &Value) -> Value {
    let mut res = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(extra) = resources.as_object() {
        for (k, v) in extra {
            res[k] = v.clone();
        }
    }
    json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": format!("h-{id}"),
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": res,
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"]
        }
    })
}

/// The busybox applets the checks use, as links in /bin.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "true", "false", "sleep", "hostname", "ps", "head", "tail", "wc",
    "grep", "mkdir", "rm", "touch", "seq", "kill", "dd",
];

/// The snapshotter, the tasks service and clients of both, for one runtime.
pub struct Stack {
    pub rt: Rt,
    pub ns: String,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    runtime: tokio::runtime::Runtime,
    pub snapshotter: Service,
    pub tasks: Service,
    pub snapshots: RemoteSnapshots,
    pub containers: RemoteContainers,
    pub client: TasksClient<Channel>,
}

impl Stack {
    pub fn start(rt: Rt) -> Stack {
        Self::start_with(rt, &[])
    }

    /// [`start`](Self::start), with more arguments for the tasks service.
    pub fn start_with(rt: Rt, tasks_args: &[String]) -> Stack {
        require(rt);
        let dir = strata_testkit::tempdir();
        let state = dir.path().join("state");
        let snapshotter = Service::start(
            sibling_bin("strata-snapshotter"),
            dir.path(),
            "snapshotter",
            &[],
        );
        let mut args = vec![
            "--state".to_owned(),
            state.display().to_string(),
            "--snapshotter".to_owned(),
            snapshotter.address(),
        ];
        if rt == Rt::Crun {
            args.extend(["--runtime".to_owned(), "crun".to_owned()]);
        }
        args.extend_from_slice(tasks_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let tasks = Service::start(crate::common::TASKS_BIN, dir.path(), "tasks", &args);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (snapshots, containers, client) = {
            let _in = runtime.enter();
            (
                RemoteSnapshots::connect(&snapshotter.address()).unwrap(),
                RemoteContainers::connect(&tasks.address()).unwrap(),
                TasksClient::new(strata_grpc::client::channel(&tasks.address()).unwrap()),
            )
        };
        let stack = Stack {
            rt,
            // Cgroups are named /strata/<namespace>/<id>: the ids carry the process id, so
            // test processes running at once never share one, and only this namespace's
            // directory stays behind.
            ns: "runtimes-test".to_owned(),
            dir,
            state,
            runtime,
            snapshotter,
            tasks,
            snapshots,
            containers,
            client,
        };
        stack.make_image();
        stack
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Unpacks busybox-static into a new snapshot and commits it as [`IMAGE`].
    fn make_image(&self) {
        let key = "extract-busybox";
        let mounts = self
            .block_on(
                self.snapshots
                    .prepare(SNAPSHOTTER, &self.ns, key, "", HashMap::new()),
            )
            .unwrap();
        {
            let m = strata_mount::TempMount::new(&mounts, self.dir.path()).unwrap();
            let root = m.path();
            for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
                .unwrap();
            let bb = ["/bin/busybox", "/usr/bin/busybox"]
                .into_iter()
                .find(|p| Path::new(p).is_file())
                .unwrap_or_else(|| {
                    panic!("busybox-static is not installed: install busybox-static (.ci/run does)")
                });
            std::fs::copy(bb, root.join("bin/busybox")).unwrap();
            for a in APPLETS {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
            }
            std::fs::write(root.join("etc/os-release"), "NAME=strata-test\n").unwrap();
        }
        self.block_on(
            self.snapshots
                .commit(SNAPSHOTTER, &self.ns, IMAGE, key, HashMap::new()),
        )
        .unwrap();
    }

    /// Reconnects after the tasks service was restarted.
    pub fn reconnect(&mut self) {
        let _in = self.runtime.enter();
        self.containers = RemoteContainers::connect(&self.tasks.address()).unwrap();
        self.client =
            TasksClient::new(strata_grpc::client::channel(&self.tasks.address()).unwrap());
    }

    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        with_namespace(&self.ns, msg).unwrap()
    }

    pub fn out_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.out"))
    }

    pub fn err_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.err"))
    }

    fn snapshot_key(id: &str) -> String {
        format!("{id}-rootfs")
    }

    /// A container of the image running `args` with `resources` (OCI `linux.resources`), its
    /// own active snapshot, and its task created (not started); stdout and stderr go to
    /// [`out_path`](Self::out_path) and [`err_path`](Self::err_path). Returns init's pid.
    pub fn create(&self, id: &str, args: &[&str], resources: &Value) -> u32 {
        let key = Self::snapshot_key(id);
        self.block_on(
            self.snapshots
                .prepare(SNAPSHOTTER, &self.ns, &key, IMAGE, HashMap::new()),
        )
        .unwrap();
        let mut c = Container::new(id, self.rt.container_runtime());
        c.image = "test/busybox:latest".into();
        c.snapshotter = SNAPSHOTTER.into();
        c.snapshot_key = key;
        c.spec = Some(Any {
            type_url: crate::common::SPEC_TYPE.into(),
            value: serde_json::to_vec(&spec(id, args, resources)).unwrap(),
        });
        self.block_on(self.containers.create(&self.ns, c)).unwrap();
        for p in [self.out_path(id), self.err_path(id)] {
            std::fs::write(p, b"").unwrap();
        }
        let resp = self
            .block_on(self.client.clone().create(self.req(pb::CreateTaskRequest {
                container_id: id.into(),
                stdout: self.out_path(id).display().to_string(),
                stderr: self.err_path(id).display().to_string(),
                ..Default::default()
            })))
            .unwrap_or_else(|s| panic!("creating task {id} with {}: {s:?}", self.rt.name()))
            .into_inner();
        resp.pid
    }

    pub fn start_task(&self, id: &str) -> u32 {
        self.block_on(self.client.clone().start(self.req(pb::StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        })))
        .unwrap_or_else(|s| panic!("starting task {id} with {}: {s:?}", self.rt.name()))
        .into_inner()
        .pid
    }

    /// [`create`](Self::create) and start.
    pub fn run(&self, id: &str, args: &[&str], resources: &Value) -> u32 {
        self.create(id, args, resources);
        self.start_task(id)
    }

    /// Waits for the task (empty `exec_id`) or an exec'd process; returns its exit status.
    pub fn wait(&self, id: &str, exec_id: &str) -> u32 {
        self.block_on(self.client.clone().wait(self.req(pb::WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        })))
        .unwrap_or_else(|s| panic!("waiting for {id}/{exec_id}: {s:?}"))
        .into_inner()
        .exit_status
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) {
        self.block_on(self.client.clone().kill(self.req(pb::KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal,
            all,
        })))
        .unwrap_or_else(|s| panic!("killing {id} with {signal}: {s:?}"));
    }

    pub fn get(&self, id: &str) -> tpb::Process {
        self.block_on(self.client.clone().get(self.req(pb::GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        })))
        .unwrap_or_else(|s| panic!("getting task {id}: {s:?}"))
        .into_inner()
        .process
        .unwrap()
    }

    pub fn status(&self, id: &str) -> tpb::Status {
        tpb::Status::try_from(self.get(id).status).unwrap()
    }

    pub fn list(&self) -> Vec<tpb::Process> {
        self.block_on(
            self.client
                .clone()
                .list(self.req(pb::ListTasksRequest::default())),
        )
        .unwrap()
        .into_inner()
        .tasks
    }

    pub fn pids(&self, id: &str) -> Vec<u32> {
        self.block_on(self.client.clone().list_pids(self.req(pb::ListPidsRequest {
            container_id: id.into(),
        })))
        .unwrap_or_else(|s| panic!("listing the processes of {id}: {s:?}"))
        .into_inner()
        .processes
        .into_iter()
        .map(|p| p.pid)
        .collect()
    }

    pub fn pause(&self, id: &str) {
        self.block_on(self.client.clone().pause(self.req(pb::PauseTaskRequest {
            container_id: id.into(),
        })))
        .unwrap_or_else(|s| panic!("pausing {id}: {s:?}"));
    }

    pub fn resume(&self, id: &str) {
        self.block_on(self.client.clone().resume(self.req(pb::ResumeTaskRequest {
            container_id: id.into(),
        })))
        .unwrap_or_else(|s| panic!("resuming {id}: {s:?}"));
    }

    pub fn metrics(&self, filters: &[&str]) -> Vec<strata_api::containerd::types::Metric> {
        self.block_on(self.client.clone().metrics(self.req(pb::MetricsRequest {
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        })))
        .unwrap_or_else(|s| panic!("metrics {filters:?}: {s:?}"))
        .into_inner()
        .metrics
    }

    /// Starts `args` in task `id` and waits for its exit status; its output is that of
    /// `<id>-<exec_id>` ([`output`](Self::output), [`err_path`](Self::err_path)).
    pub fn exec(&self, id: &str, exec_id: &str, args: &[&str]) -> u32 {
        let name = format!("{id}-{exec_id}");
        let (out, err) = (self.out_path(&name), self.err_path(&name));
        for p in [&out, &err] {
            std::fs::write(p, b"").unwrap();
        }
        let process = json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
        });
        let mut client = self.client.clone();
        self.block_on(client.exec(self.req(pb::ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            stdout: out.display().to_string(),
            stderr: err.display().to_string(),
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE.into(),
                value: serde_json::to_vec(&process).unwrap(),
            }),
            ..Default::default()
        })))
        .unwrap_or_else(|s| panic!("exec {exec_id} in {id}: {s:?}"));
        self.block_on(client.start(self.req(pb::StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        })))
        .unwrap_or_else(|s| panic!("starting exec {exec_id} in {id}: {s:?}"));
        self.wait(id, exec_id)
    }

    /// Deletes the stopped task (returning its exit status), the container and its snapshot.
    pub fn remove(&self, id: &str) -> u32 {
        let status = self
            .block_on(self.client.clone().delete(self.req(pb::DeleteTaskRequest {
                container_id: id.into(),
            })))
            .unwrap_or_else(|s| panic!("deleting task {id}: {s:?}"))
            .into_inner()
            .exit_status;
        self.block_on(self.containers.delete(&self.ns, id)).unwrap();
        self.block_on(
            self.snapshots
                .remove(SNAPSHOTTER, &self.ns, &Self::snapshot_key(id)),
        )
        .unwrap();
        status
    }

    /// SIGKILL, wait (137) and remove.
    pub fn kill_and_remove(&self, id: &str) {
        self.kill(id, 9, true);
        assert_eq!(self.wait(id, ""), 137, "{id} after SIGKILL");
        assert_eq!(self.remove(id), 137);
    }

    /// The task's output so far.
    pub fn output(&self, id: &str) -> String {
        std::fs::read_to_string(self.out_path(id)).unwrap_or_default()
    }

    /// Waits until the output of `id` (a task, or `<task>-<exec>`) contains `needle`.
    pub fn wait_output(&self, id: &str, needle: &str) -> String {
        self.wait_output_of(&self.out_path(id), needle)
    }

    /// Waits until the file `path` (output is copied there as it comes) contains `needle`.
    pub fn wait_output_of(&self, path: &Path, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = std::fs::read_to_string(path).unwrap_or_default();
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{} never got {needle:?}: {out:?}; stderr: {:?}",
                path.display(),
                std::fs::read_to_string(path.with_extension("err")).unwrap_or_default(),
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls `cond` until it holds (liveness guard: [`PATIENCE`]).
    pub fn until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The task's state directory in the tasks service.
    pub fn task_dir(&self, id: &str) -> PathBuf {
        self.state.join(&self.ns).join(id)
    }

    /// The task's root file system, as the tasks service mounted it.
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.task_dir(id).join("bundle/rootfs")
    }

    fn overlay_mount(&self, key: &str) -> Mount {
        let mounts = self
            .block_on(self.snapshots.mounts(SNAPSHOTTER, &self.ns, key))
            .unwrap();
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        mounts.into_iter().next().unwrap()
    }

    /// The container's own layer: its snapshot's overlay upper directory.
    pub fn upper(&self, id: &str) -> PathBuf {
        let m = self.overlay_mount(&Self::snapshot_key(id));
        PathBuf::from(
            m.option("upperdir")
                .expect("an overlay with an upper directory"),
        )
    }

    /// The image's directory: the one lower directory of the container's overlay.
    pub fn image_dir(&self, id: &str) -> PathBuf {
        let m = self.overlay_mount(&Self::snapshot_key(id));
        let lower = m
            .option("lowerdir")
            .expect("an overlay with a lower directory");
        assert!(!lower.contains(':'), "one layer expected: {lower}");
        PathBuf::from(lower)
    }

    /// The image snapshot's usage as the snapshotter reports it.
    pub fn image_usage(&self) -> strata_core::snapshots::Usage {
        self.block_on(self.snapshots.usage(SNAPSHOTTER, &self.ns, IMAGE))
            .unwrap()
    }

    /// A shim's control socket, for cleanup without the tasks service.
    fn shim_call(dir: &Path, req: &Value) -> Option<Value> {
        let mut s = std::os::unix::net::UnixStream::connect(dir.join("shim.sock")).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut line = serde_json::to_vec(req).ok()?;
        line.push(b'\n');
        s.write_all(&line).ok()?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).ok()?;
        serde_json::from_str(&reply).ok()
    }
}

/// Every file of a tree: path → (mode, size, mtime, contents of regular files).
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let data = if md.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if md.is_dir() {
                todo.push(p.clone());
            }
            out.insert(
                p.strip_prefix(root).unwrap().to_owned(),
                (
                    md.mode(),
                    md.size(),
                    md.mtime_nsec() + md.mtime() * 1_000_000_000,
                    data,
                ),
            );
        }
    }
    out
}

impl Drop for Stack {
    /// Kills and deletes every task left behind (through the supervisors themselves, so this
    /// works with the tasks service down too), then unmounts what is still mounted.
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.state.join(&self.ns)) {
            for e in entries.flatten() {
                let dir = e.path();
                let id = e.file_name().to_string_lossy().into_owned();
                if !dir.join("shim.sock").exists() {
                    continue;
                }
                // Without relying on the supervisor or the runtime (either may be what failed):
                // thaw the task's cgroup (a frozen process cannot die) and SIGKILL its
                // processes; the tasks service names cgroups /strata/<namespace>/<id>.
                let rel = format!("strata/{}/{id}", self.ns);
                let _ = std::fs::write(
                    format!("/sys/fs/cgroup/freezer/{rel}/freezer.state"),
                    "THAWED",
                );
                let _ = std::fs::write(format!("/sys/fs/cgroup/{rel}/cgroup.freeze"), "0");
                let _ = Self::shim_call(&dir, &json!({"op": "resume"}));
                let _ = Self::shim_call(&dir, &json!({"op": "kill", "signal": 9, "all": true}));
                for procs in [
                    format!("/sys/fs/cgroup/pids/{rel}/cgroup.procs"),
                    format!("/sys/fs/cgroup/{rel}/cgroup.procs"),
                ] {
                    for pid in std::fs::read_to_string(procs).unwrap_or_default().lines() {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
                let _ = Self::shim_call(&dir, &json!({"op": "wait"}));
                let _ = Self::shim_call(&dir, &json!({"op": "delete"}));
                // A supervisor the test killed never removes the task's cgroups.
                remove_cgroups(&rel);
            }
        }
        self.tasks.kill9();
        self.snapshotter.kill9();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let base = self.dir.path().to_string_lossy().into_owned();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|t| t.starts_with(&base))
                .collect();
            targets.sort_unstable_by(|a, b| b.cmp(a));
            for t in targets {
                let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Removes cgroup `rel` (`strata/<namespace>/<id>`) from every hierarchy that has it, waiting a
/// little for processes killed just before to leave it (rmdir fails while one is left).
fn remove_cgroups(rel: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path().join(rel)).collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(rel));
    for dir in dirs {
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Err(e) = std::fs::remove_dir(&dir) {
            if e.kind() == std::io::ErrorKind::NotFound || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
