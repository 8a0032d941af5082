//! Real containers: namespaces, mounts, cgroups. Needs root and a static busybox at
//! /bin/busybox (Debian: `busybox-static`).

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, Spec,
};
use strata_runtime::{Container, Pid, Signal, Status, Stdio, default_spec};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "hostname", "ps", "id", "ls", "ip", "seq", "true", "test", "grep",
];
/// Liveness bound for anything we wait on; never an assertion about speed.
const LIVENESS: Duration = Duration::from_secs(60);

struct Bundle {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    rootfs: PathBuf,
    state_root: PathBuf,
}

fn bundle() -> Bundle {
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
        _dir: dir,
        bundle,
        rootfs,
        state_root,
    }
}

fn spec(b: &Bundle, args: &[&str]) -> Spec {
    let mut spec = default_spec(Path::new("rootfs"), args).expect("default spec");
    spec.set_hostname(Some("strata-test".into()));
    // Each test has its own cgroup below /strata-test.
    let id = b.bundle.parent().and_then(|p| p.file_name()).expect("name");
    spec.linux_mut()
        .as_mut()
        .expect("linux")
        .set_cgroups_path(Some(Path::new("/strata-test").join(id)));
    spec
}

/// Kills, reaps and deletes the container even when the test fails.
struct Running {
    id: String,
    state_root: PathBuf,
    pid: Pid,
    reaped: bool,
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

fn create(b: &Bundle, id: &str, spec: &Spec, stdio: Stdio) -> (Container, Running) {
    spec.save(b.bundle.join("config.json"))
        .expect("save config");
    let c = Container::create(id, &b.bundle, &b.state_root, stdio).expect("create");
    let guard = Running {
        id: id.to_string(),
        state_root: b.state_root.clone(),
        pid: c.pid(),
        reaped: false,
    };
    (c, guard)
}

fn wait(pid: Pid) -> WaitStatus {
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

fn pipe() -> (fs::File, OwnedFd) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    (fs::File::from(r), w)
}

fn read_all(mut f: fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read output");
    s
}

/// Creates, starts and waits for a container; returns (status, stdout, stderr).
fn run(b: &Bundle, id: &str, spec: &Spec) -> (WaitStatus, String, String) {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let stdio = Stdio {
        stdin: None,
        stdout: Some(out_w),
        stderr: Some(err_w),
    };
    let (mut c, mut guard) = create(b, id, spec, stdio);
    assert_eq!(c.status(), Status::Created);
    c.start().expect("start");
    let status = wait(c.pid());
    guard.reaped = true;
    (status, read_all(out_r), read_all(err_r))
}

fn without_namespace(spec: &mut Spec, t: LinuxNamespaceType) {
    let ns = spec
        .linux_mut()
        .as_mut()
        .expect("linux")
        .namespaces_mut()
        .as_mut()
        .expect("namespaces");
    ns.retain(|n| n.typ() != t);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIVENESS;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pid_one_hostname_and_isolated_ps() {
    let b = bundle();
    let s = spec(&b, &["sh", "-c", "echo $$; hostname; ps; true"]);
    let (status, out, err) = run(&b, "pid-one", &s);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "{out}");
    assert_eq!(lines[1], "strata-test", "{out}");
    // Header plus only the container's processes: sh (pid 1) and ps.
    let procs: Vec<&str> = lines[2..].iter().skip(1).copied().collect();
    assert_eq!(procs.len(), 2, "ps shows host processes: {out}");
    assert!(procs[0].trim_start().starts_with("1 "), "{out}");
}

#[test]
fn exit_code_propagates() {
    let b = bundle();
    let s = spec(&b, &["sh", "-c", "exit 7"]);
    let (status, _, err) = run(&b, "exit-code", &s);
    assert!(
        matches!(status, WaitStatus::Exited(_, 7)),
        "{status:?} {err}"
    );
}

#[test]
fn writes_land_in_rootfs_and_readonly_root_refuses() {
    let b = bundle();
    let s = spec(&b, &["sh", "-c", "echo hello > /tmp/written"]);
    let (status, _, err) = run(&b, "rw-root", &s);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {err}"
    );
    assert_eq!(
        fs::read_to_string(b.rootfs.join("tmp/written")).expect("file in rootfs"),
        "hello\n"
    );

    let mut s = spec(&b, &["sh", "-c", "echo nope > /refused"]);
    s.root_mut()
        .as_mut()
        .expect("root")
        .set_readonly(Some(true));
    let (status, _, err) = run(&b, "ro-root", &s);
    assert!(!matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert!(err.contains("Read-only"), "{err}");
    assert!(!b.rootfs.join("refused").exists());
}

#[test]
fn memory_limit_kills_a_hog() {
    let b = bundle();
    let mut s = spec(&b, &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    let limit = 32 * 1024 * 1024;
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    s.linux_mut()
        .as_mut()
        .expect("linux")
        .set_resources(Some(resources));
    let (status, _, err) = run(&b, "memory-hog", &s);
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "{status:?} {err}"
    );
}

#[test]
fn pids_limit_refuses_forks() {
    let b = bundle();
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 100 & done; echo spawned",
        ],
    );
    let resources = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(5).build().expect("pids"))
        .build()
        .expect("resources");
    s.linux_mut()
        .as_mut()
        .expect("linux")
        .set_resources(Some(resources));
    let (_, _, err) = run(&b, "pids-limit", &s);
    assert!(err.contains("fork"), "no fork failure reported: {err}");
}

#[test]
fn kill_delivers_signals() {
    let b = bundle();
    // Not pid 1: the kernel drops signals without a handler sent to a pid namespace's init.
    let mut s = spec(&b, &["sleep", "100"]);
    without_namespace(&mut s, LinuxNamespaceType::Pid);
    let (mut c, mut guard) = create(&b, "kill-term", &s, Stdio::null());
    c.start().expect("start");
    assert_eq!(c.status(), Status::Running);
    c.kill(Signal::SIGTERM, false).expect("kill");
    let status = wait(c.pid());
    guard.reaped = true;
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGTERM, _)),
        "{status:?}"
    );
    assert_eq!(c.status(), Status::Stopped);

    // pid 1 of its own namespace: SIGKILL to all.
    let s = spec(&b, &["sleep", "100"]);
    let (mut c, mut guard) = create(&b, "kill-all", &s, Stdio::null());
    c.start().expect("start");
    c.kill(Signal::SIGKILL, true).expect("kill all");
    let status = wait(c.pid());
    guard.reaped = true;
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "{status:?}"
    );
}

#[test]
fn exec_joins_the_pid_namespace() {
    let b = bundle();
    let s = spec(&b, &["sleep", "100"]);
    let (mut c, _guard) = create(&b, "exec", &s, Stdio::null());
    c.start().expect("start");
    let (out_r, out_w) = pipe();
    let process = ProcessBuilder::default()
        .args(vec!["ps".to_string()])
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .build()
        .expect("process");
    let p = c
        .exec(
            &process,
            Stdio {
                stdin: None,
                stdout: Some(out_w),
                stderr: None,
            },
        )
        .expect("exec");
    let status = wait(p.pid);
    let out = read_all(out_r);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].trim_start().starts_with("1 ") && lines[0].contains("sleep"),
        "{out}"
    );
    assert!(lines[1].contains("ps"), "{out}");
}

#[test]
fn pause_and_resume() {
    let b = bundle();
    let s = spec(&b, &["sh", "-c", "while true; do true; done"]);
    let (mut c, _guard) = create(&b, "pause", &s, Stdio::null());
    c.start().expect("start");
    c.pause().expect("pause");
    assert_eq!(c.status(), Status::Paused);
    assert_eq!(c.state().expect("state").status, Status::Paused);
    // The freezer itself says every task is frozen, and the busy loop is not running.
    let frozen = c.cgroup_paths().iter().any(|p| {
        fs::read_to_string(p.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            || fs::read_to_string(p.join("cgroup.events")).is_ok_and(|s| s.contains("frozen 1"))
    });
    assert!(frozen);
    let proc_state = fs::read_to_string(format!("/proc/{}/status", c.pid())).expect("status");
    let line = proc_state
        .lines()
        .find(|l| l.starts_with("State:"))
        .expect("State line");
    assert!(!line.contains('R'), "{line}");
    c.resume().expect("resume");
    assert_eq!(c.status(), Status::Running);
    wait_for("init to run again", || {
        fs::read_to_string(format!("/proc/{}/status", c.pid())).is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("State:") && l.contains('R'))
        })
    });
}

#[test]
fn private_network_has_only_lo_up() {
    let b = bundle();
    let s = spec(&b, &["sh", "-c", "cat /proc/net/dev; ip link show lo"]);
    let (status, out, err) = run(&b, "netns", &s);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {err}"
    );
    let ifaces: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|n| !n.contains(' ') && !n.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
    assert!(out.contains("LOOPBACK,UP"), "lo is not up: {out}");
}

#[test]
fn lifecycle_state_load_and_delete_removes_cgroup() {
    let b = bundle();
    let s = spec(&b, &["sleep", "100"]);
    let (mut c, mut guard) = create(&b, "lifecycle", &s, Stdio::null());
    let paths = c.cgroup_paths();
    assert!(!paths.is_empty());
    assert!(paths.iter().all(|p| p.is_dir()));
    assert!(c.pids().expect("pids").contains(&c.pid()));

    let loaded = Container::load("lifecycle", &b.state_root).expect("load");
    assert_eq!(loaded.state().expect("state").status, Status::Created);
    assert!(matches!(
        Container::create("lifecycle", &b.bundle, &b.state_root, Stdio::null()),
        Err(strata_runtime::Error::AlreadyExists(_))
    ));
    c.start().expect("start");
    let st = loaded.state().expect("state");
    assert_eq!(st.status, Status::Running);
    assert_eq!(st.pid, Some(c.pid().as_raw()));
    assert!(
        loaded.delete(false).is_err(),
        "deleting a running container"
    );

    let loaded = Container::load("lifecycle", &b.state_root).expect("load");
    loaded.kill(Signal::SIGKILL, false).expect("kill");
    wait(c.pid());
    guard.reaped = true;
    assert_eq!(loaded.status(), Status::Stopped);
    loaded.delete(false).expect("delete");
    assert!(paths.iter().all(|p| !p.exists()), "cgroup left: {paths:?}");
    assert!(matches!(
        Container::load("lifecycle", &b.state_root),
        Err(strata_runtime::Error::NotFound(_))
    ));
}

#[test]
fn bad_executable_fails_create() {
    let b = bundle();
    let s = spec(&b, &["no-such-binary"]);
    s.save(b.bundle.join("config.json")).expect("save");
    let err = Container::create("bad-exe", &b.bundle, &b.state_root, Stdio::null())
        .expect_err("create must fail");
    assert!(err.to_string().contains("no-such-binary"), "{err}");
    assert!(!b.state_root.join("bad-exe").exists());
}

#[test]
fn default_spec_security_settings_apply() {
    let b = bundle();
    let script = "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; ulimit -n; \
                  test -s /proc/kcore || echo kcore-masked; \
                  echo x > /proc/sys/kernel/hostname 2>/dev/null || echo procsys-ro; \
                  ls /sys/fs/cgroup; \
                  echo x > /sys/fs/cgroup/x 2>/dev/null || echo cgroup-ro";
    let s = spec(&b, &["sh", "-c", script]);
    let (status, out, err) = run(&b, "security", &s);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {err}"
    );
    // containerd's default capability set is 0xa80425fb.
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.lines().any(|l| l == "1024"), "RLIMIT_NOFILE: {out}");
    assert!(out.contains("kcore-masked"), "{out}");
    assert!(out.contains("procsys-ro"), "{out}");
    assert!(out.contains("cgroup-ro"), "{out}");
    assert!(out.lines().any(|l| l == "memory"), "cgroup mount: {out}");
}

#[test]
fn user_and_additional_groups() {
    let b = bundle();
    let mut s = spec(&b, &["id"]);
    let process = s.process_mut().as_mut().expect("process");
    let user = process.user_mut();
    user.set_uid(1000);
    user.set_gid(1001);
    user.set_additional_gids(Some(vec![1002]));
    let (status, out, err) = run(&b, "user", &s);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {err}"
    );
    assert!(
        out.contains("uid=1000") && out.contains("gid=1001"),
        "{out}"
    );
    assert!(out.contains("groups=1002"), "{out}");
}

#[test]
fn terminal_gives_a_pty() {
    let b = bundle();
    let mut s = spec(&b, &["sh", "-c", "test -t 0 && test -t 1 && echo tty-ok"]);
    s.process_mut()
        .as_mut()
        .expect("process")
        .set_terminal(Some(true));
    let (mut c, mut guard) = create(&b, "terminal", &s, Stdio::null());
    let master = c.take_console().expect("console");
    c.start().expect("start");
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    // Reading the master ends with EIO once the slave side is closed.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let status = wait(c.pid());
    guard.reaped = true;
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert!(String::from_utf8_lossy(&out).contains("tty-ok"));
}

#[test]
fn update_and_host_network() {
    let b = bundle();
    // No network namespace: the host's interfaces are visible (and /sys is bound from the host).
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "cat /proc/net/dev; ls /sys/class/net; echo END; sleep 100",
        ],
    );
    without_namespace(&mut s, LinuxNamespaceType::Network);
    let (out_r, out_w) = pipe();
    let stdio = Stdio {
        stdin: None,
        stdout: Some(out_w),
        stderr: None,
    };
    let (mut c, _guard) = create(&b, "update", &s, stdio);
    c.start().expect("start");
    // Read up to the marker (EOF if the container died early).
    let mut out = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(out_r)) {
        let line = line.expect("read output");
        if line == "END" {
            break;
        }
        out.push_str(&line);
        out.push('\n');
    }
    let resources = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(42).build().expect("pids"))
        .build()
        .expect("resources");
    c.update(&resources).expect("update");
    let max = c
        .cgroup_paths()
        .iter()
        .find_map(|p| fs::read_to_string(p.join("pids.max")).ok())
        .expect("pids.max");
    assert_eq!(max.trim(), "42");
    c.kill(Signal::SIGKILL, true).expect("kill");
    let ifaces = out.lines().filter(|l| l.contains(':')).count();
    assert!(ifaces > 2, "host network expected: {out}");
}

/// The container's command is in its cgroup from its first instruction, though its init set
/// itself up while being attached (the parent's attach waits on the kernel).
#[test]
fn the_process_runs_in_its_cgroup_from_the_start() {
    let b = bundle();
    let spec = spec(&b, &["cat", "/proc/self/cgroup"]);
    let (status, out, err) = run(&b, "cg-first", &spec);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {err}"
    );
    let id = b.bundle.parent().and_then(|p| p.file_name()).expect("name");
    let want = Path::new("/strata-test").join(id);
    // Every controller the runtime joins (v1), or the unified line (v2), names its cgroup.
    let joined: Vec<&str> = out
        .lines()
        .filter(|l| {
            let ctrl = l.split(':').nth(1).unwrap_or("");
            ctrl.is_empty()
                || ctrl
                    .split(',')
                    .any(|c| ["memory", "pids", "cpu"].contains(&c))
        })
        .collect();
    assert!(!joined.is_empty(), "{out}");
    for line in joined {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if line.starts_with("0::") && !Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
            continue; // a hybrid host's unified hierarchy carries no controllers we join
        }
        assert_eq!(Path::new(path), want, "{line} in\n{out}");
    }
}

/// With a cgroup namespace of its own, the container sees its cgroup as the root: the
/// namespace is made once the init is in the cgroup.
#[test]
fn a_new_cgroup_namespace_is_rooted_at_the_container_cgroup() {
    let b = bundle();
    let mut spec = spec(&b, &["cat", "/proc/self/cgroup"]);
    let linux = spec.linux_mut().as_mut().expect("linux");
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Cgroup)
            .build()
            .expect("namespace"),
    );
    linux.set_namespaces(Some(namespaces));
    let (status, out, err) = run(&b, "cg-ns", &spec);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {err}"
    );
    for line in out
        .lines()
        .filter(|l| l.contains("memory") || l.starts_with("0::"))
    {
        assert!(line.ends_with(":/"), "{line} in\n{out}");
    }
}

/// A setup failure of the init is reported with its reason, though the parent was attaching
/// it to its cgroup meanwhile.
#[test]
fn an_init_setup_failure_names_its_reason() {
    let b = bundle();
    let mut spec = spec(&b, &["true"]);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/nonexistent/strata-test-source")
            .options(vec!["rbind".to_owned()])
            .build()
            .expect("mount"),
    );
    spec.set_mounts(Some(mounts));
    spec.save(b.bundle.join("config.json"))
        .expect("save config");
    let err = Container::create("setup-fails", &b.bundle, &b.state_root, Stdio::null())
        .expect_err("a bind of a missing source");
    let msg = err.to_string();
    assert!(msg.contains("strata-test-source"), "{msg}");
}
