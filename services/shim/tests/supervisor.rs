//! The supervisor with each runtime (built-in, runc, crun): a busybox container created, started,
//! waited on with its true exit code and output, exec'd into, paused, killed and deleted, all
//! through the control socket; the supervisor outlives the process that started it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SHIM: &str = env!("CARGO_BIN_EXE_strata-shim");

fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is not installed (apt-get install busybox-static)");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for cmd in ["sh", "echo", "cat", "sleep", "ps", "hostname", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(cmd)).unwrap();
    }
    root
}

/// A bundle whose process runs `args`, with containerd's defaults.
fn bundle(dir: &Path, id: &str, args: &[&str]) -> PathBuf {
    let b = dir.join(format!("bundle-{id}"));
    std::fs::create_dir_all(&b).unwrap();
    let root = rootfs(&b);
    let mut spec = strata_runtime::default_spec(&root, args).unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(format!("/strata-shim-test/{id}"))));
    spec.set_linux(Some(linux));
    spec.set_hostname(Some(format!("h-{id}")));
    std::fs::write(b.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    b
}

struct Shim {
    state: PathBuf,
}

impl Shim {
    fn start(dir: &Path, id: &str, runtime: &str, args: &[&str]) -> Shim {
        let b = bundle(dir, id, args);
        let state = dir.join(format!("state-{id}"));
        let out = dir.join(format!("{id}.out"));
        std::fs::write(&out, b"").unwrap();
        let mut child = Command::new(SHIM)
            .args(["--id", id, "--runtime", runtime])
            .arg("--bundle")
            .arg(&b)
            .arg("--state")
            .arg(&state)
            .arg("--stdout")
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready "), "supervisor said {line:?}");
        // The supervisor outlives its starter.
        drop(child);
        Shim { state }
    }

    fn call(&self, req: Value) -> Value {
        let mut s = UnixStream::connect(self.state.join("shim.sock")).unwrap();
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        s.write_all(&line).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }

    fn ok(&self, req: Value) -> Value {
        let r = self.call(req.clone());
        assert!(r.get("error").is_none(), "{req} → {r}");
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("log")).unwrap_or_default()
    }
}

fn lifecycle(runtime: &str) {
    let dir = strata_testkit::tempdir();
    let id = format!("t-{runtime}-{}", std::process::id());
    let s = Shim::start(
        dir.path(),
        &id,
        runtime,
        &["sh", "-c", "echo pid=$$ host=$(hostname); exit 7"],
    );
    assert_eq!(s.ok(json!({"op": "state"}))["status"], "created");
    s.ok(json!({"op": "start"}));
    let exit = s.ok(json!({"op": "wait"}));
    assert_eq!(exit["exit"]["status"], 7, "{exit}");
    assert_eq!(s.ok(json!({"op": "state"}))["status"], "stopped");
    // The exit status is on disk for a restarted tasks service.
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(s.state.join("exit")).unwrap()).unwrap();
    assert_eq!(on_disk["status"], 7);
    for _ in 0..200 {
        if s.log().contains("host=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        s.log().contains(&format!("pid=1 host=h-{id}")),
        "log: {:?}",
        s.log()
    );
    let out = std::fs::read_to_string(dir.path().join(format!("{id}.out"))).unwrap();
    assert!(out.contains("pid=1"), "stdout path got {out:?}");
    s.ok(json!({"op": "delete"}));
    assert!(!s.state.join("shim.sock").exists());
}

fn signals_exec_pause(runtime: &str) {
    let dir = strata_testkit::tempdir();
    let id = format!("s-{runtime}-{}", std::process::id());
    let s = Shim::start(dir.path(), &id, runtime, &["sleep", "1000"]);
    s.ok(json!({"op": "start"}));
    assert_eq!(s.ok(json!({"op": "state"}))["status"], "running");
    // exec joins the container: it sees pid 1 (sleep) in its pid namespace.
    let process = json!({"args": ["sh", "-c", "ps -o pid,args; exit 3"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    s.ok(json!({"op": "exec", "exec_id": "e1", "process": process}));
    let e = s.ok(json!({"op": "wait_exec", "exec_id": "e1"}));
    assert_eq!(e["exit"]["status"], 3, "{e}");
    let exec_log = std::fs::read_to_string(s.state.join("exec-e1.log")).unwrap_or_default();
    assert!(
        exec_log
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep")),
        "{exec_log}"
    );
    let pids = s.ok(json!({"op": "pids"}));
    assert!(!pids["pids"].as_array().unwrap().is_empty(), "{pids}");
    s.ok(json!({"op": "pause"}));
    assert_eq!(s.ok(json!({"op": "state"}))["status"], "paused");
    s.ok(json!({"op": "resume"}));
    let refused = s.call(json!({"op": "delete"}));
    assert!(
        refused["error"].as_str().unwrap().contains("still running"),
        "{refused}"
    );
    s.ok(json!({"op": "kill", "signal": 9}));
    let exit = s.ok(json!({"op": "wait"}));
    assert_eq!(exit["exit"]["status"], 137, "{exit}");
    s.ok(json!({"op": "delete"}));
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn builtin_lifecycle() {
    lifecycle("builtin");
}

#[test]
fn builtin_signals_exec_pause() {
    signals_exec_pause("builtin");
}

#[test]
fn runc_lifecycle() {
    assert!(have("runc"), "runc is not installed (apt-get install runc)");
    lifecycle("runc");
}

#[test]
fn runc_signals_exec_pause() {
    assert!(have("runc"), "runc is not installed (apt-get install runc)");
    signals_exec_pause("runc");
}
