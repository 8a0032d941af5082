//! The OCI runtime a supervisor drives: strata's built-in one (the `strata-runtime` library,
//! no binary needed), or an external runtime binary with runc's command line (runc, crun).

use crate::supervisor::Reaper;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
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

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The container's standard streams as the runtime receives them.
pub struct Fds {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

pub enum Runtime {
    Builtin {
        id: String,
        bundle: PathBuf,
        root: PathBuf,
        container: Option<Container>,
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
        std::fs::create_dir_all(&root)
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
        let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        let pid = i32::try_from(child.id()).map_err(|_| fail("pid out of range".into()))?;
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
        let status = reaper.wait_for(pid);
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

    /// Creates the container; returns its init pid.
    pub fn create(&mut self, fds: Fds) -> Result<i32> {
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
                let c = Container::create(id, bundle, root, stdio)?;
                let pid = c.pid().as_raw();
                *container = Some(c);
                Ok(pid)
            }
            Self::External {
                id, bundle, root, ..
            } => {
                let pid_file = root.join(format!("{id}.pid"));
                let (id, bundle) = (id.clone(), bundle.display().to_string());
                let pid_arg = pid_file.display().to_string();
                self.cli(
                    &["create", "--bundle", &bundle, "--pid-file", &pid_arg, &id],
                    Some(fds),
                )?;
                let text = std::fs::read_to_string(&pid_file)
                    .map_err(|e| RuntimeError::Other(format!("{}: {e}", pid_file.display())))?;
                text.trim().parse().map_err(|_| {
                    RuntimeError::Other(format!("bad pid file {}", pid_file.display()))
                })
            }
        }
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

    /// Starts `process` in the container; returns its pid.
    pub fn exec(
        &self,
        process: &serde_json::Value,
        fds: Fds,
        state: &Path,
        exec_id: &str,
    ) -> Result<i32> {
        if let Self::Builtin { .. } = self {
            let p: Process = serde_json::from_value(process.clone())
                .map_err(|e| RuntimeError::Other(format!("exec {exec_id}: process: {e}")))?;
            let stdio = strata_runtime::Stdio {
                stdin: fds.stdin,
                stdout: fds.stdout,
                stderr: fds.stderr,
            };
            return Ok(self.builtin()?.exec(&p, stdio)?.pid.as_raw());
        }
        let spec = state.join(format!("exec-{exec_id}.json"));
        std::fs::write(&spec, process.to_string())
            .map_err(|e| RuntimeError::Other(format!("{}: {e}", spec.display())))?;
        let pid_file = state.join(format!("exec-{exec_id}.pid"));
        let (spec_s, pid_s, id) = (
            spec.display().to_string(),
            pid_file.display().to_string(),
            self.id(),
        );
        self.cli(
            &[
                "exec",
                "--detach",
                "--process",
                &spec_s,
                "--pid-file",
                &pid_s,
                &id,
            ],
            Some(fds),
        )?;
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| RuntimeError::Other(format!("bad pid file {}", pid_file.display())))
    }

    pub fn update(&self, resources: &serde_json::Value, state: &Path) -> Result<()> {
        if let Self::Builtin { .. } = self {
            let r: LinuxResources = serde_json::from_value(resources.clone())
                .map_err(|e| RuntimeError::Other(format!("resources: {e}")))?;
            return Ok(self.builtin()?.update(&r)?);
        }
        let path = state.join("resources.json");
        std::fs::write(&path, resources.to_string())
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

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
