//! The container lifecycle: create, start, state, kill, pause/resume, exec, update, delete.
//!
//! # Process model
//! `create` forks the container's init as a **direct child of the calling process** (from a
//! short-lived helper thread that first unshares its pid namespace, so the child is pid 1 of a
//! new pid namespace without a double fork). The caller must reap it with `waitpid`; its exit
//! status is the container's. `exec` forks the same way (after `setns` into the container's pid
//! namespace), so exec'd processes are children of the caller too.
//!
//! The init sets up everything and then blocks on `<state>/<id>/exec.fifo` until `start`
//! writes a byte to it, like runc.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};
use strata_cgroup::Cgroup;

use crate::child;
use crate::error::{Error, Result};

const STATE_FILE: &str = "state.json";
const EXEC_FIFO: &str = "exec.fifo";

/// Standard streams for the container process. `None` means `/dev/null`. Ignored when the
/// process asks for a terminal (then the pty master is handed back instead).
#[derive(Debug, Default)]
pub struct Stdio {
    /// What the process reads as its stdin.
    pub stdin: Option<OwnedFd>,
    /// Where the process's stdout goes.
    pub stdout: Option<OwnedFd>,
    /// Where the process's stderr goes.
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    /// All three streams on `/dev/null`.
    pub fn null() -> Stdio {
        Stdio::default()
    }

    /// Opens FIFOs (or files) by path, as containerd's shim passes them. They are opened
    /// read-write so opening never blocks waiting for the other side.
    pub fn from_paths(
        stdin: Option<&Path>,
        stdout: Option<&Path>,
        stderr: Option<&Path>,
    ) -> Result<Stdio> {
        let open = |p: Option<&Path>| -> Result<Option<OwnedFd>> {
            p.map(|p| {
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(p)
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io("open stdio", p, e))
            })
            .transpose()
        };
        Ok(Stdio {
            stdin: open(stdin)?,
            stdout: open(stdout)?,
            stderr: open(stderr)?,
        })
    }
}

/// The container's status, as in the OCI runtime spec plus runc's `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Init is set up and waits to be started.
    Created,
    /// The container's process runs.
    Running,
    /// The container's processes are frozen.
    Paused,
    /// Init has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The OCI state of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The OCI runtime spec version the state follows (`1.1.0`).
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// The container's status when the state was read.
    pub status: Status,
    /// Host pid of the init; absent once stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The bundle directory (holding `config.json` and, usually, the root file system).
    pub bundle: PathBuf,
    /// The annotations of the bundle's `config.json`.
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

/// A process started by [`Container::exec`].
#[derive(Debug)]
pub struct ExecProcess {
    /// Host pid; a child of the caller, which must reap it.
    pub pid: Pid,
    /// The pty master when the process asked for a terminal.
    pub console: Option<OwnedFd>,
}

/// What is persisted in `<state_root>/<id>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Persisted {
    id: String,
    bundle: PathBuf,
    pid: i32,
    /// Start time of the init (field 22 of /proc/<pid>/stat), to detect pid reuse.
    start_time: u64,
    cgroups_path: PathBuf,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
    /// The spec's seccomp profile, for exec'd processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seccomp: Option<LinuxSeccomp>,
}

/// A container created by this runtime.
#[derive(Debug)]
pub struct Container {
    state_dir: PathBuf,
    data: Persisted,
    cgroup: Cgroup,
    console: Option<OwnedFd>,
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// Field 22 (starttime) and field 3 (state) of /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Forks after putting the helper thread into `pid_ns` (new, joined, or the host's). The
/// child runs `child` and never returns; the parent gets the child's host pid.
fn fork_in_pid_ns<F>(pid_ns: PidNs, child: F) -> Result<Pid>
where
    F: FnOnce() -> std::convert::Infallible + Send,
{
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("strata-fork".into())
            .spawn_scoped(s, move || -> Result<Pid> {
                match &pid_ns {
                    PidNs::Host => {}
                    PidNs::New => nix::sched::unshare(CloneFlags::CLONE_NEWPID)
                        .map_err(|e| Error::sys("unshare", "pid namespace", e))?,
                    PidNs::Join(fd) => nix::sched::setns(fd, CloneFlags::CLONE_NEWPID)
                        .map_err(|e| Error::sys("setns", "pid namespace", e))?,
                }
                // SAFETY: glibc's fork runs its atfork handlers, so malloc is usable in the child;
                // the child only runs `child`, which execs or _exits and never returns here.
                match unsafe { nix::unistd::fork() } {
                    Ok(ForkResult::Child) => match child() {},
                    Ok(ForkResult::Parent { child }) => Ok(child),
                    Err(e) => Err(Error::sys("fork", "container process", e)),
                }
            })
            .map_err(|e| Error::io("spawn", "fork helper thread", e))?;
        handle.join().unwrap_or_else(|_| {
            Err(Error::sys(
                "fork",
                "helper thread panicked",
                nix::errno::Errno::EIO,
            ))
        })
    })
}

enum PidNs {
    Host,
    New,
    Join(OwnedFd),
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", "sync pipe", e))
}

/// Reads the child's status pipe: `Ok(true)` = init ready (a `0` byte), `Ok(false)` = exec'd
/// (end of file), `Err` = the child's error message.
fn read_status(read: OwnedFd) -> std::result::Result<bool, String> {
    use std::io::Read;
    let mut file = fs::File::from(read);
    let mut first = [0u8; 1];
    loop {
        match file.read(&mut first) {
            Ok(0) => return Ok(false),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read status pipe: {e}")),
        }
    }
    if first[0] == 0 {
        return Ok(true);
    }
    let mut buf = Vec::new();
    if let Err(e) = file.read_to_end(&mut buf) {
        return Err(format!("read status pipe: {e}"));
    }
    Err(String::from_utf8_lossy(&buf).into_owned())
}

/// A socket pair over which the child sends the pty master, when `process` has a terminal:
/// (the parent's end, the child's end).
fn console_pair(process: &Process) -> Result<Option<(OwnedFd, OwnedFd)>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    if process.terminal() != Some(true) {
        return Ok(None);
    }
    let pair = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", "console", e))?;
    Ok(Some(pair))
}

/// The pty master the child sent (see `child::make_console`).
fn receive_console(sock: &OwnedFd) -> Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{FromRawFd as _, RawFd};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::sys("recvmsg", "console", e))?;
    let mut master = None;
    for c in msg
        .cmsgs()
        .map_err(|e| Error::sys("recvmsg", "console", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel has just installed this descriptor for this message;
                // nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                master.get_or_insert(owned);
            }
        }
    }
    master.ok_or_else(|| Error::Init {
        id: String::new(),
        message: "the container process sent no terminal".into(),
    })
}

fn stdio_raw(stdio: &Stdio) -> [Option<i32>; 3] {
    [
        stdio.stdin.as_ref().map(AsRawFd::as_raw_fd),
        stdio.stdout.as_ref().map(AsRawFd::as_raw_fd),
        stdio.stderr.as_ref().map(AsRawFd::as_raw_fd),
    ]
}

fn write_state(dir: &Path, data: &Persisted) -> Result<()> {
    let tmp = dir.join(".state.json.tmp");
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(data).map_err(|e| Error::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    // Root only, from creation: it names the bundle and carries the spec's annotations.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(&json)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

fn validate_spec(spec: &Spec, id: &str) -> Result<()> {
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec(format!("container {id:?}: no linux section")))?;
    let has = |t: LinuxNamespaceType| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    let any = |t: LinuxNamespaceType| linux.namespaces().iter().flatten().any(|n| n.typ() == t);
    if any(LinuxNamespaceType::User) {
        return Err(Error::Unsupported(format!(
            "container {id:?}: user namespaces"
        )));
    }
    if !has(LinuxNamespaceType::Mount) {
        return Err(Error::Unsupported(format!(
            "container {id:?}: a new mount namespace is required"
        )));
    }
    if spec.hostname().is_some() && !has(LinuxNamespaceType::Uts) {
        return Err(Error::InvalidSpec(format!(
            "container {id:?}: hostname needs a new uts namespace"
        )));
    }
    if spec.process().is_none() {
        return Err(Error::InvalidSpec(format!("container {id:?}: no process")));
    }
    // What this runtime cannot enforce is refused, naming the field: never run with a
    // setting silently dropped.
    let unsupported = |field: &str| {
        Err(Error::Unsupported(format!(
            "container {id:?}: {field} (the built-in runtime cannot enforce it; use runc or crun)"
        )))
    };
    if spec.hooks().as_ref().is_some_and(|h| {
        [
            h.prestart().as_ref(),
            h.create_runtime().as_ref(),
            h.create_container().as_ref(),
            h.start_container().as_ref(),
            h.poststart().as_ref(),
            h.poststop().as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|v| !v.is_empty())
    }) {
        return unsupported("hooks");
    }
    if let Some(p) = spec.process() {
        if p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()) {
            return unsupported("process.apparmorProfile");
        }
        if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) {
            return unsupported("process.selinuxLabel");
        }
        if p.io_priority().is_some() {
            return unsupported("process.ioPriority");
        }
        if p.scheduler().is_some() {
            return unsupported("process.scheduler");
        }
        if p.exec_cpu_affinity().is_some() {
            return unsupported("process.execCPUAffinity");
        }
    }
    if linux.mount_label().as_ref().is_some_and(|s| !s.is_empty()) {
        return unsupported("linux.mountLabel");
    }
    if linux.intel_rdt().is_some() {
        return unsupported("linux.intelRdt");
    }
    if linux.personality().is_some() {
        return unsupported("linux.personality");
    }
    if linux.time_offsets().is_some() {
        return unsupported("linux.timeOffsets");
    }
    if any(LinuxNamespaceType::Time) {
        return unsupported("the time namespace");
    }
    // sysctls: only those the container's own namespaces isolate (a host-wide key would change
    // the host for everyone).
    for key in linux.sysctl().iter().flat_map(|m| m.keys()) {
        check_sysctl(
            key,
            has(LinuxNamespaceType::Network),
            has(LinuxNamespaceType::Ipc),
        )
        .map_err(|m| Error::InvalidSpec(format!("container {id:?}: sysctl {key:?}: {m}")))?;
    }
    Ok(())
}

/// Whether sysctl `key` may be set for a container with (or without) its own network and IPC
/// namespaces: `net.*` with a private network namespace; `kernel.shm*`, `kernel.msg*`,
/// `kernel.sem` and `fs.mqueue.*` with a private IPC namespace. The error says why not.
pub fn check_sysctl(
    key: &str,
    private_net: bool,
    private_ipc: bool,
) -> std::result::Result<(), String> {
    let well_formed = key.split('.').all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if !well_formed {
        return Err("not a kernel parameter name".into());
    }
    let ipc = matches!(
        key,
        "kernel.shmmax"
            | "kernel.shmall"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
            | "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
    ) || key.starts_with("fs.mqueue.");
    match (ipc, key.starts_with("net.")) {
        (true, _) if private_ipc => Ok(()),
        (true, _) => Err("needs the container's own IPC namespace".into()),
        (_, true) if private_net => Ok(()),
        (_, true) => Err("needs the container's own network namespace".into()),
        _ => Err("not namespaced".into()),
    }
}

impl Container {
    /// Like `runc create`: creates the cgroup, forks the init (a child of the caller, pid 1 of
    /// a new pid namespace when asked) which sets up namespaces, mounts and `pivot_root` and
    /// then waits for [`Container::start`]. State lives in `<state_root>/<id>`.
    pub fn create(id: &str, bundle: &Path, state_root: &Path, stdio: Stdio) -> Result<Container> {
        validate_id(id)?;
        let bundle = fs::canonicalize(bundle).map_err(|e| Error::io("open bundle", bundle, e))?;
        let config = bundle.join("config.json");
        let spec = Spec::load(&config).map_err(|e| Error::Parse {
            path: config.clone(),
            message: e.to_string(),
        })?;
        validate_spec(&spec, id)?;
        let profile = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        let seccomp = match spec.process() {
            Some(p) => crate::seccomp::prepare(profile, p, id)?,
            None => None,
        };
        // Root only (0700), from creation.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_root)
            .map_err(|e| Error::io("create", state_root, e))?;
        let state_dir = state_root.join(id);
        match fs::DirBuilder::new().mode(0o700).create(&state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.to_string()));
            }
            Err(e) => return Err(Error::io("create", &state_dir, e)),
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let cgroups_path = linux
            .cgroups_path()
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/strata/{id}")));
        let cgroup = match Cgroup::open(&cgroups_path) {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&state_dir);
                return Err(e.into());
            }
        };
        let result = Self::create_inner(
            id,
            &bundle,
            &spec,
            &state_dir,
            &cgroup,
            stdio,
            seccomp.as_ref(),
        );
        match result {
            Ok((pid, console)) => {
                let start_time = proc_stat(pid.as_raw()).map_or(0, |(_, t)| t);
                let data = Persisted {
                    id: id.to_string(),
                    bundle,
                    pid: pid.as_raw(),
                    start_time,
                    cgroups_path,
                    annotations: spec.annotations().clone().unwrap_or_default(),
                    seccomp: profile.cloned(),
                };
                if let Err(e) = write_state(&state_dir, &data) {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(pid, None);
                    let _ = cgroup.remove();
                    let _ = fs::remove_dir_all(&state_dir);
                    return Err(e);
                }
                tracing::debug!(id, pid = pid.as_raw(), "container created");
                Ok(Container {
                    state_dir,
                    data,
                    cgroup,
                    console,
                })
            }
            Err(e) => {
                let _ = cgroup.remove();
                let _ = fs::remove_dir_all(&state_dir);
                Err(e)
            }
        }
    }

    fn create_inner(
        id: &str,
        bundle: &Path,
        spec: &Spec,
        state_dir: &Path,
        cgroup: &Cgroup,
        stdio: Stdio,
        seccomp: Option<&crate::seccomp::Seccomp>,
    ) -> Result<(Pid, Option<OwnedFd>)> {
        let linux = spec.linux().clone().unwrap_or_default();
        cgroup.create()?;
        if let Some(r) = linux.resources() {
            cgroup.apply(r)?;
        }
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec(format!("container {id:?}: no root")))?;
        let rootfs = bundle.join(root.path());
        let rootfs = fs::canonicalize(&rootfs).map_err(|e| Error::io("open rootfs", &rootfs, e))?;
        let fifo = state_dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::sys("mkfifo", fifo.display().to_string(), e))?;

        let pid_ns = match linux
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == LinuxNamespaceType::Pid)
        {
            None => PidNs::Host,
            Some(n) => match n.path() {
                None => PidNs::New,
                Some(p) => PidNs::Join(OwnedFd::from(
                    fs::File::open(p).map_err(|e| Error::io("open namespace", p, e))?,
                )),
            },
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::InvalidSpec(format!("container {id:?}: no process")))?;
        let pair = console_pair(process)?;
        let (go_r, go_w) = pipe()?;
        let (st_r, st_w) = pipe()?;
        let args = child::Args {
            role: child::Role::Init {
                spec,
                rootfs: &rootfs,
                fifo: &fifo,
                cgroup_paths: cgroup.paths(),
            },
            process,
            stdio: stdio_raw(&stdio),
            console_socket: pair.as_ref().map(|(_, c)| c.as_raw_fd()),
            go: go_r.as_raw_fd(),
            status: st_w.as_raw_fd(),
            seccomp,
        };
        let pid = fork_in_pid_ns(pid_ns, move || child::run(args))?;
        drop((go_r, st_w, stdio));
        let console_sock = pair.map(|(ours, _theirs)| ours);
        let fail = |e: Error| {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            e
        };
        // The child sets itself up meanwhile and waits for this byte before its process runs.
        // If it failed already, the status pipe says why (rather than the attach or the write).
        let released = cgroup.add(pid).map_err(Error::from).and_then(|()| {
            nix::unistd::write(&go_w, &[1])
                .map(drop)
                .map_err(|e| Error::sys("write", "sync pipe", e))
        });
        drop(go_w);
        let status = match released {
            Ok(()) => read_status(st_r),
            Err(e) => {
                let _ = kill(pid, Signal::SIGKILL);
                match read_status(st_r) {
                    Err(message) => Err(message),
                    Ok(_) => return Err(fail(e)),
                }
            }
        };
        match status {
            Ok(true) => {
                let console = console_sock
                    .as_ref()
                    .map(receive_console)
                    .transpose()
                    .map_err(fail)?;
                Ok((pid, console))
            }
            Ok(false) => Err(fail(Error::Init {
                id: id.to_string(),
                message: "init exited during setup".into(),
            })),
            Err(message) => Err(fail(Error::Init {
                id: id.to_string(),
                message,
            })),
        }
    }

    /// Loads a container created earlier (by this or another process) from its state.
    pub fn load(id: &str, state_root: &Path) -> Result<Container> {
        validate_id(id)?;
        let state_dir = state_root.join(id);
        let path = state_dir.join(STATE_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let data: Persisted = serde_json::from_slice(&text).map_err(|e| Error::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let cgroup = Cgroup::open(&data.cgroups_path)?;
        Ok(Container {
            state_dir,
            data,
            cgroup,
            console: None,
        })
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.data.id
    }

    /// Host pid of the container's init (a child of the process that created it).
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.data.pid)
    }

    /// Takes the pty master of the init, when `process.terminal` was true (only on the
    /// `Container` returned by `create`).
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// The cgroup directories of the container (one per v1 controller, or one on v2).
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.cgroup.paths()
    }

    fn init_alive(&self) -> bool {
        match proc_stat(self.data.pid) {
            None => false,
            Some((state, start)) => {
                !matches!(state, 'Z' | 'X' | 'x')
                    && (self.data.start_time == 0 || start == self.data.start_time)
            }
        }
    }

    /// The current status, derived from the init process, the freezer and the exec FIFO.
    pub fn status(&self) -> Status {
        if !self.init_alive() {
            Status::Stopped
        } else if self.cgroup.is_frozen() {
            Status::Paused
        } else if self.state_dir.join(EXEC_FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// The OCI state.
    pub fn state(&self) -> Result<State> {
        let status = self.status();
        Ok(State {
            oci_version: "1.1.0".into(),
            id: self.data.id.clone(),
            status,
            pid: (status != Status::Stopped).then_some(self.data.pid),
            bundle: self.data.bundle.clone(),
            annotations: self.data.annotations.clone(),
        })
    }

    fn bad_state(&self, op: &'static str, status: Status) -> Error {
        Error::BadState {
            id: self.data.id.clone(),
            op,
            status: status.to_string(),
        }
    }

    /// Like `runc start`: releases the waiting init to exec the container process.
    pub fn start(&mut self) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            return Err(self.bad_state("start", status));
        }
        let fifo = self.state_dir.join(EXEC_FIFO);
        let fd = nix::fcntl::open(
            &fifo,
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open", fifo.display().to_string(), e))?;
        nix::unistd::write(&fd, &[0])
            .map_err(|e| Error::sys("write", fifo.display().to_string(), e))?;
        fs::remove_file(&fifo).map_err(|e| Error::io("remove", &fifo, e))?;
        tracing::debug!(id = %self.data.id, "container started");
        Ok(())
    }

    /// Sends `signal` to the init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        let status = self.status();
        if status == Status::Stopped && !all {
            return Err(self.bad_state("kill", status));
        }
        if !all {
            return kill(self.pid(), signal)
                .map_err(|e| Error::sys("kill", format!("pid {} with {signal}", self.pid()), e));
        }
        // Freeze so nothing forks between listing and signalling.
        let frozen = status == Status::Paused || self.cgroup.set_frozen(true).is_ok();
        for pid in self.cgroup.pids()? {
            if let Err(e) = kill(pid, signal)
                && e != nix::errno::Errno::ESRCH
            {
                return Err(Error::sys("kill", format!("pid {pid} with {signal}"), e));
            }
        }
        if frozen && status != Status::Paused {
            self.cgroup.set_frozen(false)?;
        }
        Ok(())
    }

    /// Freezes every process of the container.
    pub fn pause(&self) -> Result<()> {
        let status = self.status();
        if !matches!(status, Status::Running | Status::Created) {
            return Err(self.bad_state("pause", status));
        }
        Ok(self.cgroup.set_frozen(true)?)
    }

    /// Thaws a paused container.
    pub fn resume(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Paused {
            return Err(self.bad_state("resume", status));
        }
        Ok(self.cgroup.set_frozen(false)?)
    }

    /// Runs another process in the container: joins its namespaces and cgroup. The process is
    /// a child of the caller, which must reap it.
    pub fn exec(&self, process: &Process, stdio: Stdio) -> Result<ExecProcess> {
        let status = self.status();
        if !matches!(status, Status::Created | Status::Running) {
            return Err(self.bad_state("exec in", status));
        }
        let pid = self.data.pid;
        let mut pid_ns = PidNs::Host;
        let mut namespaces = Vec::new();
        // Mount last: after it, /proc paths resolve inside the container.
        for (name, flag) in [
            ("pid", CloneFlags::CLONE_NEWPID),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
            let (Ok(a), Ok(b)) = (fs::metadata(&theirs), fs::metadata(&ours)) else {
                continue;
            };
            if a.ino() == b.ino() && a.dev() == b.dev() {
                continue;
            }
            let fd = OwnedFd::from(
                fs::File::open(&theirs).map_err(|e| Error::io("open namespace", &theirs, e))?,
            );
            if flag == CloneFlags::CLONE_NEWPID {
                pid_ns = PidNs::Join(fd);
            } else {
                namespaces.push((fd, flag));
            }
        }
        let seccomp = crate::seccomp::prepare(self.data.seccomp.as_ref(), process, &self.data.id)?;
        let seccomp = seccomp.as_ref();
        let pair = console_pair(process)?;
        let (go_r, go_w) = pipe()?;
        let (st_r, st_w) = pipe()?;
        let args = child::Args {
            role: child::Role::Exec { namespaces },
            process,
            stdio: stdio_raw(&stdio),
            console_socket: pair.as_ref().map(|(_, c)| c.as_raw_fd()),
            go: go_r.as_raw_fd(),
            status: st_w.as_raw_fd(),
            seccomp,
        };
        let child = fork_in_pid_ns(pid_ns, move || child::run(args))?;
        drop((go_r, st_w, stdio));
        let console_sock = pair.map(|(ours, _theirs)| ours);
        let fail = |e: Error| {
            let _ = kill(child, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            e
        };
        self.cgroup.add(child).map_err(|e| fail(e.into()))?;
        nix::unistd::write(&go_w, &[1]).map_err(|e| fail(Error::sys("write", "sync pipe", e)))?;
        drop(go_w);
        match read_status(st_r) {
            Ok(_) => Ok(ExecProcess {
                pid: child,
                console: console_sock
                    .as_ref()
                    .map(receive_console)
                    .transpose()
                    .map_err(fail)?,
            }),
            Err(message) => Err(fail(Error::Init {
                id: self.data.id.clone(),
                message,
            })),
        }
    }

    /// Host pids of every process in the container.
    pub fn pids(&self) -> Result<Vec<Pid>> {
        Ok(self.cgroup.pids()?)
    }

    /// Applies new resource limits to the container's cgroup.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        Ok(self.cgroup.apply(resources)?)
    }

    /// Removes the cgroup and the state. A container that is not stopped is refused unless
    /// `force`, which kills every process first (the caller still reaps the init).
    pub fn delete(self, force: bool) -> Result<()> {
        let status = self.status();
        if status != Status::Stopped {
            if !force {
                return Err(self.bad_state("delete", status));
            }
            self.kill(Signal::SIGKILL, true)?;
            if status == Status::Paused {
                self.cgroup.set_frozen(false)?;
            }
        }
        // Wait (bounded) for the processes to leave the cgroup.
        for _ in 0..1000 {
            if self.cgroup.pids()?.is_empty() {
                break;
            }
            let _ = self.kill(Signal::SIGKILL, true);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.cgroup.remove()?;
        fs::remove_dir_all(&self.state_dir).map_err(|e| Error::io("remove", &self.state_dir, e))?;
        tracing::debug!(id = %self.data.id, "container deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_3").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id(".hidden").is_err());
    }

    #[test]
    fn what_cannot_be_enforced_is_refused_by_field() {
        let base = crate::spec::default_spec(Path::new("rootfs"), &["sh"]).expect("default spec");
        assert!(validate_spec(&base, "c").is_ok());
        let with = |patch: serde_json::Value| -> Spec {
            let mut v = serde_json::to_value(&base).expect("spec json");
            json_merge(&mut v, patch);
            serde_json::from_value(v).expect("patched spec")
        };
        for (patch, field) in [
            (
                serde_json::json!({"process": {"apparmorProfile": "docker-default"}}),
                "process.apparmorProfile",
            ),
            (
                serde_json::json!({"process": {"selinuxLabel": "system_u:system_r:container_t:s0"}}),
                "process.selinuxLabel",
            ),
            (
                serde_json::json!({"linux": {"mountLabel": "system_u:object_r:container_file_t:s0"}}),
                "linux.mountLabel",
            ),
            (
                serde_json::json!({"hooks": {"prestart": [{"path": "/bin/true"}]}}),
                "hooks",
            ),
        ] {
            let e = validate_spec(&with(patch), "c").expect_err(field);
            assert_eq!(e.kind(), strata_core::Kind::FailedPrecondition, "{field}");
            assert!(e.to_string().contains(field), "{e}");
        }
        for (key, ok) in [
            ("net.ipv4.ip_forward", true),
            ("kernel.shmmax", true),
            ("fs.mqueue.msg_max", true),
            ("kernel.hostname", false),
            ("vm.swappiness", false),
            ("net.ipv4..x", false),
            ("net/ipv4/ip_forward", false),
        ] {
            let spec = with(serde_json::json!({"linux": {"sysctl": {key: "1"}}}));
            assert_eq!(validate_spec(&spec, "c").is_ok(), ok, "{key}");
        }
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn own_stat_parses() {
        let (state, start) = proc_stat(std::process::id() as i32).expect("own stat");
        assert!(matches!(state, 'R' | 'S'));
        assert!(start > 0);
    }
}
