//! The OCI runtime a supervisor drives: strata's built-in one (the `strata-runtime` library,
//! no binary needed), or an external runtime binary with runc's command line (runc, crun).

use crate::supervisor::Reaper;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_runtime::oci_spec::runtime::{LinuxResources, Process};
use strata_runtime::{Container, Pid, Signal};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Builtin(#[from] strata_runtime::Error),
    #[error("{runtime} {args}: {message}")]
    External {
        runtime: String,
        args: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// The failure's kind: the built-in runtime's own; an external runtime's is not known.
    pub fn kind(&self) -> strata_core::Kind {
        match self {
            RuntimeError::Builtin(e) => e.kind(),
            RuntimeError::External { .. } | RuntimeError::Other(_) => strata_core::Kind::Internal,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The container's standard streams as the runtime receives them.
#[derive(Default)]
pub struct Fds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// How long an external runtime may take to hand over a terminal it said it had made.
const CONSOLE_LIMIT: Duration = Duration::from_secs(10);

/// A unix socket an external runtime sends a pty master to (`--console-socket`).
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn bind(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| RuntimeError::Other(format!("console socket {}: {e}", path.display())))?;
        Ok(Self { path, listener })
    }

    fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// The master the runtime sent. The runtime connects and sends it before its command
    /// returns, so it is waiting in the socket by the time this is called.
    fn receive(&self) -> Result<OwnedFd> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            RuntimeError::Other(format!(
                "console socket {}: {what}: {e}",
                self.path.display()
            ))
        };
        self.listener
            .set_nonblocking(true)
            .map_err(|e| fail("nonblocking", &e))?;
        let deadline = Instant::now() + CONSOLE_LIMIT;
        let conn = loop {
            match self.listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(fail("accept", &"the runtime sent no terminal"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(fail("accept", &e)),
            }
        };
        conn.set_nonblocking(false)
            .and_then(|()| conn.set_read_timeout(Some(CONSOLE_LIMIT)))
            .map_err(|e| fail("socket options", &e))?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| fail("recvmsg", &e))?;
        let mut master = None;
        for c in msg.cmsgs().map_err(|e| fail("control message", &e))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel has just installed this descriptor in our table for
                    // this message; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if master.is_none() {
                        master = Some(owned);
                    }
                }
            }
        }
        master.ok_or_else(|| fail("message", &"no descriptor in it"))
    }
}

/// `<state>/console.sock` (beside `shim.sock`, not in the runtime root below it: a unix
/// socket's path must stay under 108 bytes).
fn console_path(root: &Path) -> PathBuf {
    root.with_file_name("console.sock")
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub enum Runtime {
    Builtin {
        id: String,
        bundle: PathBuf,
        root: PathBuf,
        /// Boxed: the runtime's container is far larger than the other variant.
        container: Option<Box<Container>>,
    },
    External {
        binary: PathBuf,
        id: String,
        bundle: PathBuf,
        root: PathBuf,
        reaper: Arc<Reaper>,
    },
}

fn signal(sig: i32) -> Result<Signal> {
    Signal::try_from(sig).map_err(|_| RuntimeError::Other(format!("invalid signal {sig}")))
}

impl Runtime {
    pub fn new(
        name: &str,
        id: &str,
        bundle: &Path,
        state: &Path,
        reaper: Arc<Reaper>,
    ) -> Result<Self> {
        let root = state.join("runtime");
        crate::supervisor::create_private_dirs(&root)
            .map_err(|e| RuntimeError::Other(format!("creating {}: {e}", root.display())))?;
        if name == "builtin" || name.is_empty() {
            return Ok(Self::Builtin {
                id: id.to_owned(),
                bundle: bundle.to_owned(),
                root,
                container: None,
            });
        }
        let binary = if name.contains('/') {
            PathBuf::from(name)
        } else {
            find_in_path(name)
                .ok_or_else(|| RuntimeError::Other(format!("runtime {name:?} not found in PATH")))?
        };
        Ok(Self::External {
            binary,
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            root,
            reaper,
        })
    }

    /// Runs the external runtime with `args`; the reaper collects its exit status.
    fn cli(&self, args: &[&str], fds: Option<Fds>) -> Result<String> {
        let Self::External {
            binary,
            root,
            reaper,
            ..
        } = self
        else {
            return Err(RuntimeError::Other("not an external runtime".into()));
        };
        let mut cmd = Command::new(binary);
        cmd.arg("--root").arg(root).args(args);
        let capture = fds.is_none();
        match fds {
            Some(f) => {
                cmd.stdin(f.stdin.map_or_else(Stdio::null, Stdio::from));
                cmd.stdout(f.stdout.map_or_else(Stdio::null, Stdio::from));
                cmd.stderr(f.stderr.map_or_else(Stdio::null, Stdio::from));
            }
            None => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        let fail = |message: String| RuntimeError::External {
            runtime: binary.display().to_string(),
            args: args.join(" "),
            message,
        };
        // Spawned and identified before the reaper may reap it.
        let gate = reaper.spawning();
        let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        let pid = i32::try_from(child.id()).map_err(|_| fail("pid out of range".into()))?;
        let id = reaper.identify(&gate, pid, 0);
        drop(gate);
        reaper.kick();
        let id = id.ok_or_else(|| fail(format!("its process {pid} vanished")))?;
        let (mut out, mut err) = (String::new(), String::new());
        if capture {
            use std::io::Read as _;
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
        }
        // The reaper owns waitpid: ask it for this child's status.
        let status = reaper.wait_for(id);
        std::mem::forget(child);
        if status != 0 {
            let msg = if err.trim().is_empty() {
                format!("exit status {status}")
            } else {
                err.trim().to_owned()
            };
            return Err(fail(msg));
        }
        Ok(out)
    }

    /// Creates the container; returns its init pid and, when its process has a terminal
    /// (`terminal`, from the bundle's `process.terminal`), the pty master.
    pub fn create(&mut self, fds: Fds, terminal: bool) -> Result<(i32, Option<OwnedFd>)> {
        match self {
            Self::Builtin {
                id,
                bundle,
                root,
                container,
            } => {
                let stdio = strata_runtime::Stdio {
                    stdin: fds.stdin,
                    stdout: fds.stdout,
                    stderr: fds.stderr,
                };
                let mut c = Container::create(id, bundle, root, stdio)?;
                let pid = c.pid().as_raw();
                let console = c.take_console();
                *container = Some(Box::new(c));
                Ok((pid, console))
            }
            Self::External {
                id, bundle, root, ..
            } => {
                let pid_file = root.join(format!("{id}.pid"));
                let (id, bundle) = (id.clone(), bundle.display().to_string());
                let pid_arg = pid_file.display().to_string();
                let mut args = vec!["create", "--bundle", &bundle, "--pid-file", &pid_arg];
                let console = if terminal {
                    Some(ConsoleSocket::bind(console_path(root))?)
                } else {
                    None
                };
                let sock_arg = console.as_ref().map(ConsoleSocket::arg);
                if let Some(a) = &sock_arg {
                    args.extend(["--console-socket", a.as_str()]);
                }
                args.push(&id);
                // With a terminal the runtime gives the container none of its own stdio: keep
                // its output for the error message instead.
                self.cli(&args, if terminal { None } else { Some(fds) })?;
                let master = console.as_ref().map(ConsoleSocket::receive).transpose()?;
                let text = std::fs::read_to_string(&pid_file)
                    .map_err(|e| RuntimeError::Other(format!("{}: {e}", pid_file.display())))?;
                let pid = text.trim().parse().map_err(|_| {
                    RuntimeError::Other(format!("bad pid file {}", pid_file.display()))
                })?;
                Ok((pid, master))
            }
        }
    }

    /// Whether this is the built-in runtime, whose processes are the supervisor's own children.
    pub fn is_builtin(&self) -> bool {
        matches!(self, Self::Builtin { .. })
    }

    fn builtin(&self) -> Result<&Container> {
        match self {
            Self::Builtin {
                container: Some(c), ..
            } => Ok(c),
            _ => Err(RuntimeError::Other("container not created".into())),
        }
    }

    fn id(&self) -> String {
        match self {
            Self::Builtin { id, .. } | Self::External { id, .. } => id.clone(),
        }
    }

    pub fn start(&mut self) -> Result<()> {
        if let Self::Builtin {
            container: Some(c), ..
        } = self
        {
            return Ok(c.start()?);
        }
        self.cli(&["start", &self.id()], None).map(|_| ())
    }

    pub fn kill(&self, sig: i32, all: bool) -> Result<()> {
        if let Self::Builtin { .. } = self {
            return Ok(self.builtin()?.kill(signal(sig)?, all)?);
        }
        let s = sig.to_string();
        let id = self.id();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id.as_str(), s.as_str()]);
        self.cli(&args, None).map(|_| ())
    }

    pub fn pause(&self) -> Result<()> {
        if let Self::Builtin { .. } = self {
            return Ok(self.builtin()?.pause()?);
        }
        self.cli(&["pause", &self.id()], None).map(|_| ())
    }

    pub fn resume(&self) -> Result<()> {
        if let Self::Builtin { .. } = self {
            return Ok(self.builtin()?.resume()?);
        }
        self.cli(&["resume", &self.id()], None).map(|_| ())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        if let Self::Builtin { .. } = self {
            return Ok(self
                .builtin()?
                .pids()?
                .into_iter()
                .map(Pid::as_raw)
                .collect());
        }
        let out = self.cli(&["ps", "--format", "json", &self.id()], None)?;
        serde_json::from_str(out.trim())
            .map_err(|e| RuntimeError::Other(format!("runtime ps output: {e}")))
    }

    /// Starts `process` in the container; returns its pid and, when the process has a
    /// terminal (`terminal`, from its `terminal` field), the pty master.
    pub fn exec(
        &self,
        process: &serde_json::Value,
        fds: Fds,
        state: &Path,
        exec_id: &str,
        terminal: bool,
    ) -> Result<(i32, Option<OwnedFd>)> {
        if let Self::Builtin { .. } = self {
            let p: Process = serde_json::from_value(process.clone())
                .map_err(|e| RuntimeError::Other(format!("exec {exec_id}: process: {e}")))?;
            let stdio = strata_runtime::Stdio {
                stdin: fds.stdin,
                stdout: fds.stdout,
                stderr: fds.stderr,
            };
            let p = self.builtin()?.exec(&p, stdio)?;
            return Ok((p.pid.as_raw(), p.console));
        }
        let Self::External { root, .. } = self else {
            return Err(RuntimeError::Other("not an external runtime".into()));
        };
        let spec = state.join(format!("exec-{exec_id}.json"));
        // The process's environment is in it: root only.
        write_private(&spec, process.to_string())
            .map_err(|e| RuntimeError::Other(format!("{}: {e}", spec.display())))?;
        let pid_file = state.join(format!("exec-{exec_id}.pid"));
        let (spec_s, pid_s, id) = (
            spec.display().to_string(),
            pid_file.display().to_string(),
            self.id(),
        );
        let console = if terminal {
            Some(ConsoleSocket::bind(console_path(root))?)
        } else {
            None
        };
        let sock_arg = console.as_ref().map(ConsoleSocket::arg);
        let mut args = vec![
            "exec",
            "--detach",
            "--process",
            &spec_s,
            "--pid-file",
            &pid_s,
        ];
        if let Some(a) = &sock_arg {
            args.extend(["--console-socket", a.as_str()]);
        }
        args.push(&id);
        self.cli(&args, if terminal { None } else { Some(fds) })?;
        let master = console.as_ref().map(ConsoleSocket::receive).transpose()?;
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| RuntimeError::Other(format!("bad pid file {}", pid_file.display())))?;
        Ok((pid, master))
    }

    pub fn update(&self, resources: &serde_json::Value, state: &Path) -> Result<()> {
        if let Self::Builtin { .. } = self {
            let r: LinuxResources = serde_json::from_value(resources.clone())
                .map_err(|e| RuntimeError::Other(format!("resources: {e}")))?;
            return Ok(self.builtin()?.update(&r)?);
        }
        let path = state.join("resources.json");
        write_private(&path, resources.to_string())
            .map_err(|e| RuntimeError::Other(format!("{}: {e}", path.display())))?;
        let p = path.display().to_string();
        self.cli(&["update", "--resources", &p, &self.id()], None)
            .map(|_| ())
    }

    pub fn delete(&mut self, force: bool) -> Result<()> {
        if let Self::Builtin { container, .. } = self {
            return match container.take() {
                Some(c) => Ok(c.delete(force)?),
                None => Ok(()),
            };
        }
        let id = self.id();
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(&id);
        self.cli(&args, None).map(|_| ())
    }
}

fn write_private(path: &Path, text: String) -> std::io::Result<()> {
    use std::io::Write as _;
    crate::supervisor::create_private(path)?.write_all(text.as_bytes())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
