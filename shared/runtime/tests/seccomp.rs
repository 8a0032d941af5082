//! seccomp enforced by the built-in runtime (and by runc and crun given the same spec). Needs
//! root, a static busybox at /bin/busybox (Debian: `busybox-static`) and a C compiler with a
//! static C library (`cc -static`, Debian: `libc6-dev`) for a small probe of system calls
//! busybox cannot make.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilitiesBuilder, LinuxSeccomp, LinuxSeccompAction,
    LinuxSyscall, ProcessBuilder, Spec,
};
use strata_runtime::{Container, DEFAULT_CAPABILITIES, Pid, Signal, Stdio, default_spec};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "grep", "unshare", "true", "id",
];
/// Liveness bound for anything we wait on; never an assertion about speed.
const LIVENESS: Duration = Duration::from_secs(60);

/// Makes the calls busybox cannot, and prints what each returned.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, long rc) {
    if (rc < 0) printf("%s=%s\n", what, strerrorname_np(errno));
    else printf("%s=ok\n", what);
}

static void *thread(void *arg) { return arg; }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "x32") == 0) {
        /* getpid through the x32 ABI, in a child that may be killed for it. */
        pid_t pid = fork();
        if (pid == 0) {
            long rc = syscall(0x40000000 | SYS_getpid);
            _exit(rc < 0 ? 2 : 0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status)) printf("x32=%s\n", sigabbrev_np(WTERMSIG(status)));
        else printf("x32=exit%d\n", WEXITSTATUS(status));
        return 0;
    }
    /* add_key(type, description, payload, plen, KEY_SPEC_PROCESS_KEYRING) */
    report("add_key", syscall(SYS_add_key, "user", "strata-probe", "x", 1, -2));
    /* keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) */
    report("keyctl", syscall(SYS_keyctl, 1, 0));
    report("vsock", socket(40, SOCK_STREAM, 0));
    report("unix", socket(AF_UNIX, SOCK_STREAM, 0));
    /* READ_IMPLIES_EXEC is refused; PER_LINUX is fine. */
    report("personality_rie", personality(0x0400000));
    report("personality_linux", personality(0));
    /* clone3 with a zero size: EINVAL from the kernel, ENOSYS from the filter. */
    report("clone3", syscall(SYS_clone3, 0, 0));
    pthread_t t;
    int e = pthread_create(&t, 0, thread, 0);
    if (e == 0) e = pthread_join(t, 0);
    printf("thread=%s\n", e == 0 ? "ok" : strerrorname_np(e));
    fflush(stdout);
    return 0;
}
"#;

struct Bundle {
    dir: tempfile::TempDir,
    bundle: PathBuf,
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
    let src = dir.path().join("probe.c");
    fs::write(&src, PROBE_C).expect("write probe.c");
    let out = Command::new("cc")
        .args(["-static", "-pthread", "-O1", "-o"])
        .arg(rootfs.join("bin/probe"))
        .arg(&src)
        .output()
        .expect("run cc (the probe needs a C compiler)");
    assert!(
        out.status.success(),
        "cc -static probe.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state_root = dir.path().join("state");
    Bundle {
        dir,
        bundle,
        state_root,
    }
}

fn caps_with(extra: &[Capability]) -> Vec<Capability> {
    let mut v = DEFAULT_CAPABILITIES.to_vec();
    v.extend_from_slice(extra);
    v
}

/// strata's default spec with `caps` and the default seccomp profile for them.
fn spec(b: &Bundle, args: &[&str], caps: &[Capability]) -> Spec {
    let mut spec = default_spec(Path::new("rootfs"), args).expect("default spec");
    let id = b.bundle.parent().and_then(|p| p.file_name()).expect("name");
    let linux = spec.linux_mut().as_mut().expect("linux");
    linux.set_cgroups_path(Some(Path::new("/strata-test").join(id)));
    linux.set_seccomp(Some(strata_seccomp::default_profile(caps)));
    let set: Capabilities = caps.iter().copied().collect();
    let process = spec.process_mut().as_mut().expect("process");
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(set.clone())
            .effective(set.clone())
            .permitted(set)
            .build()
            .expect("capabilities"),
    ));
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
    c.start().expect("start");
    let status = wait(c.pid());
    guard.reaped = true;
    (status, read_all(out_r), read_all(err_r))
}

fn ok(status: &WaitStatus) -> bool {
    matches!(status, WaitStatus::Exited(_, 0))
}

/// The value of `field` in a `/proc/<pid>/status` dump.
fn field<'a>(out: &'a str, field: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

#[test]
fn the_init_and_an_exec_run_filtered() {
    let b = bundle();
    let s = spec(&b, &["sleep", "100"], DEFAULT_CAPABILITIES);
    let (mut c, _guard) = create(&b, "filtered", &s, Stdio::null());
    c.start().expect("start");
    let (out_r, out_w) = pipe();
    let process = ProcessBuilder::default()
        .args(vec![
            "sh".to_string(),
            "-c".to_string(),
            "cat /proc/1/status; echo ---; cat /proc/$$/status".to_string(),
        ])
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .no_new_privileges(true)
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
    assert!(ok(&status), "{status:?} {out}");
    let (init, exec) = out.split_once("---").expect("two status files");
    for (who, text) in [("init", init), ("exec'd process", exec)] {
        assert_eq!(field(text, "Seccomp"), Some("2"), "{who}: {text}");
        let filters: u32 = field(text, "Seccomp_filters")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(filters >= 1, "{who}: {text}");
    }
}

#[test]
fn namespaces_keys_and_vsock_are_refused_while_threads_and_forks_work() {
    let b = bundle();
    let script =
        "unshare -U true; echo unshare=$?; sleep 0 & wait $!; echo fork=$?; probe; probe x32";
    let s = spec(&b, &["sh", "-c", script], DEFAULT_CAPABILITIES);
    let (status, out, err) = run(&b, "refused", &s);
    assert!(ok(&status), "{status:?} {out} {err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    for want in [
        "unshare=1",
        "fork=0",
        "add_key=EPERM",
        "keyctl=EPERM",
        "vsock=EPERM",
        "unix=ok",
        "personality_rie=EPERM",
        "personality_linux=ok",
        "clone3=ENOSYS",
        "thread=ok",
        // strata's own filter kills other ABIs, x32 included (see strata-seccomp's compile).
        "x32=SYS",
    ] {
        assert!(out.lines().any(|l| l == want), "want {want}: {out}");
    }
}

#[test]
fn cap_sys_admin_allows_the_extra_calls() {
    let b = bundle();
    let script = "unshare -U true; echo unshare=$?; probe";
    let s = spec(
        &b,
        &["sh", "-c", script],
        &caps_with(&[Capability::SysAdmin]),
    );
    let (status, out, err) = run(&b, "admin", &s);
    assert!(ok(&status), "{status:?} {out} {err}");
    assert!(out.lines().any(|l| l == "unshare=0"), "{out} {err}");
    // clone3 reaches the kernel, which refuses a zero size.
    assert!(out.lines().any(|l| l == "clone3=EINVAL"), "{out}");
    assert!(out.lines().any(|l| l == "add_key=EPERM"), "{out}");
}

#[test]
fn without_no_new_privileges_the_filter_is_installed_and_sys_admin_dropped() {
    let b = bundle();
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "cat /proc/self/status; unshare -U true; echo unshare=$?",
        ],
        DEFAULT_CAPABILITIES,
    );
    s.process_mut()
        .as_mut()
        .expect("process")
        .set_no_new_privileges(Some(false));
    let (status, out, err) = run(&b, "no-nnp", &s);
    assert!(ok(&status), "{status:?} {out} {err}");
    assert_eq!(field(&out, "NoNewPrivs"), Some("0"), "{out}");
    assert_eq!(field(&out, "Seccomp"), Some("2"), "{out}");
    // Docker's default set, without CAP_SYS_ADMIN (bit 21).
    assert_eq!(field(&out, "CapEff"), Some("00000000a80425fb"), "{out}");
    assert_eq!(field(&out, "CapPrm"), Some("00000000a80425fb"), "{out}");
    assert!(out.lines().any(|l| l == "unshare=1"), "{out}");

    // A user without capabilities: none are left after the install either.
    let b = bundle();
    let mut s = spec(&b, &["cat", "/proc/self/status"], DEFAULT_CAPABILITIES);
    let p = s.process_mut().as_mut().expect("process");
    p.set_no_new_privileges(Some(false));
    p.set_capabilities(None);
    p.user_mut().set_uid(1000);
    p.user_mut().set_gid(1000);
    let (status, out, err) = run(&b, "no-nnp-user", &s);
    assert!(ok(&status), "{status:?} {out} {err}");
    assert_eq!(field(&out, "Seccomp"), Some("2"), "{out}");
    assert_eq!(field(&out, "CapEff"), Some("0000000000000000"), "{out}");
    assert_eq!(field(&out, "CapPrm"), Some("0000000000000000"), "{out}");
}

fn profile_with(rule: LinuxSyscall) -> LinuxSeccomp {
    let mut p = strata_seccomp::default_profile(DEFAULT_CAPABILITIES);
    let mut rules = p.syscalls().clone().unwrap_or_default();
    rules.push(rule);
    p.set_syscalls(Some(rules));
    p
}

#[test]
fn bad_profiles_are_refused_at_create_naming_the_fault() {
    let b = bundle();
    let mut s = spec(&b, &["true"], DEFAULT_CAPABILITIES);
    let mut unknown = LinuxSyscall::default();
    unknown.set_names(vec!["frobnicate".to_string()]);
    unknown.set_action(LinuxSeccompAction::ScmpActAllow);
    let linux = s.linux_mut().as_mut().expect("linux");
    linux.set_seccomp(Some(profile_with(unknown)));
    s.save(b.bundle.join("config.json")).expect("save");
    let err = Container::create("bad-name", &b.bundle, &b.state_root, Stdio::null())
        .expect_err("unknown system call");
    assert!(err.to_string().contains("\"frobnicate\""), "{err}");
    assert_eq!(err.kind(), strata_core::Kind::InvalidArgument, "{err}");
    assert!(!b.state_root.join("bad-name").exists());

    // Without noNewPrivileges the runtime needs capset after installing.
    let mut deny = LinuxSyscall::default();
    deny.set_names(vec!["capset".to_string()]);
    deny.set_action(LinuxSeccompAction::ScmpActErrno);
    let mut s = spec(&b, &["true"], DEFAULT_CAPABILITIES);
    s.linux_mut()
        .as_mut()
        .expect("linux")
        .set_seccomp(Some(profile_with(deny)));
    s.process_mut()
        .as_mut()
        .expect("process")
        .set_no_new_privileges(Some(false));
    s.save(b.bundle.join("config.json")).expect("save");
    let err = Container::create("no-capset", &b.bundle, &b.state_root, Stdio::null())
        .expect_err("capset denied");
    assert!(err.to_string().contains("capset"), "{err}");
    assert_eq!(err.kind(), strata_core::Kind::InvalidArgument, "{err}");
}

/// runc and crun, given the same spec, filter too.
#[test]
fn runc_and_crun_enforce_the_same_profile() {
    for runtime in ["/usr/sbin/runc", "/usr/bin/crun"] {
        if !Path::new(runtime).exists() {
            eprintln!("SKIPPED: {runtime} is not installed");
            continue;
        }
        let b = bundle();
        let script = "grep Seccomp /proc/self/status; unshare -U true; echo unshare=$?; probe";
        let mut s = spec(&b, &["sh", "-c", script], DEFAULT_CAPABILITIES);
        let name = Path::new(runtime)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("oci");
        s.linux_mut()
            .as_mut()
            .expect("linux")
            .set_cgroups_path(Some(PathBuf::from(format!(
                "/strata-test/{name}-{}",
                std::process::id()
            ))));
        s.save(b.bundle.join("config.json")).expect("save");
        let root = b.dir.path().join(format!("{name}-state"));
        let out = Command::new(runtime)
            .arg("--root")
            .arg(&root)
            .args(["run", "--bundle"])
            .arg(&b.bundle)
            .arg(format!("strata-seccomp-{name}-{}", std::process::id()))
            .output()
            .expect("run the runtime");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{runtime}: {stdout} {stderr}");
        assert_eq!(field(&stdout, "Seccomp"), Some("2"), "{runtime}: {stdout}");
        for want in [
            "unshare=1",
            "add_key=EPERM",
            "keyctl=EPERM",
            "vsock=EPERM",
            "clone3=ENOSYS",
            "thread=ok",
        ] {
            assert!(
                stdout.lines().any(|l| l == want),
                "{runtime}: want {want}: {stdout} {stderr}"
            );
        }
    }
}
