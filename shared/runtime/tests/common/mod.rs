//! Bundles with a static busybox root, and running containers to completion, for the tests of
//! hostile roots and devices. Needs root and /bin/busybox (Debian: `busybox-static`).

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use oci_spec::runtime::{Mount, MountBuilder, Spec};
use strata_runtime::{Container, Pid, Signal, Status, Stdio, default_spec};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "stat", "test", "true", "readlink", "mknod", "dd", "head", "od",
    "mount", "grep",
];
/// Liveness bound for anything we wait on; never an assertion about speed.
const LIVENESS: Duration = Duration::from_secs(60);

pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub state_root: PathBuf,
}

/// A bundle whose root holds busybox and its applets in /bin, and empty /proc, /dev, /sys,
/// /tmp and /etc.
pub fn bundle() -> Bundle {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        symlink("busybox", rootfs.join("bin").join(a)).expect("symlink");
    }
    let state_root = dir.path().join("state");
    Bundle {
        dir,
        bundle,
        rootfs,
        state_root,
    }
}

/// The default spec running `args`, in a cgroup of its own below /strata-test.
pub fn spec(b: &Bundle, args: &[&str]) -> Spec {
    let mut spec = default_spec(Path::new("rootfs"), args).expect("default spec");
    let id = b.bundle.parent().and_then(|p| p.file_name()).expect("name");
    spec.linux_mut()
        .as_mut()
        .expect("linux")
        .set_cgroups_path(Some(Path::new("/strata-test").join(id)));
    spec
}

/// Appends a bind mount of `source` on `dest` (with `extra` options).
pub fn add_bind(spec: &mut Spec, source: &Path, dest: &str, extra: &[&str]) {
    let mut options = vec!["rbind".to_string()];
    options.extend(extra.iter().map(|s| s.to_string()));
    add_mount(
        spec,
        MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(source)
            .options(options)
            .build()
            .expect("mount"),
    );
}

pub fn add_mount(spec: &mut Spec, m: Mount) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(m);
    spec.set_mounts(Some(mounts));
}

/// Kills, reaps and deletes the container even when the test fails.
pub struct Running {
    id: String,
    state_root: PathBuf,
    pid: Pid,
    pub reaped: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(c) = Container::load(&self.id, &self.state_root) {
            let _ = c.kill(Signal::SIGKILL, true);
            if !self.reaped {
                let _ = wait(self.pid);
            }
            let _ = c.delete(true);
        } else if !self.reaped {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            let _ = wait(self.pid);
        }
    }
}

/// Saves `spec` and creates the container.
pub fn create(
    b: &Bundle,
    id: &str,
    spec: &Spec,
    stdio: Stdio,
) -> strata_runtime::Result<(Container, Running)> {
    spec.save(b.bundle.join("config.json"))
        .expect("save config");
    let c = Container::create(id, &b.bundle, &b.state_root, stdio)?;
    let guard = Running {
        id: id.to_string(),
        state_root: b.state_root.clone(),
        pid: c.pid(),
        reaped: false,
    };
    Ok((c, guard))
}

pub fn wait(pid: Pid) -> WaitStatus {
    let deadline = Instant::now() + LIVENESS;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive => {
                assert!(Instant::now() < deadline, "pid {pid} did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
            s => return s,
        }
    }
}

pub fn pipe() -> (fs::File, OwnedFd) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    (fs::File::from(r), w)
}

pub fn read_all(mut f: fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read output");
    s
}

/// What became of a container run to completion.
pub enum Outcome {
    /// `create` failed with this message.
    CreateFailed(String),
    /// It ran: exit status, stdout, stderr.
    Ran(WaitStatus, String, String),
}

impl Outcome {
    /// The output of a run that exited 0; panics with everything known otherwise.
    pub fn success(self) -> String {
        match self {
            Outcome::Ran(WaitStatus::Exited(_, 0), out, _) => out,
            Outcome::Ran(status, out, err) => {
                panic!("container failed: {status:?}\nstdout: {out}\nstderr: {err}")
            }
            Outcome::CreateFailed(msg) => panic!("create failed: {msg}"),
        }
    }
}

/// Creates, starts and waits for a container.
pub fn run(b: &Bundle, id: &str, spec: &Spec) -> Outcome {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let stdio = Stdio {
        stdin: None,
        stdout: Some(out_w),
        stderr: Some(err_w),
    };
    let (mut c, mut guard) = match create(b, id, spec, stdio) {
        Ok(x) => x,
        Err(e) => return Outcome::CreateFailed(e.to_string()),
    };
    assert_eq!(c.status(), Status::Created);
    c.start().expect("start");
    let status = wait(c.pid());
    guard.reaped = true;
    Outcome::Ran(status, read_all(out_r), read_all(err_r))
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Whether anything is mounted at `path` in the test's (the host's) mount namespace.
pub fn mounted_at(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}
