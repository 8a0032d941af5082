//! The supervisor with each runtime (built-in, runc, crun): a busybox container created, started,
//! waited on with its true exit code and output, exec'd into, paused, killed and deleted, all
//! through the control socket; the supervisor outlives the process that started it. Output goes
//! to a framed log that tells stdout from stderr and is complete when the exit is told;
//! terminals (init's and an exec's) are served and resized.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use strata_core::logfile::{Decoder, Stream};

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
    for cmd in [
        "sh", "echo", "cat", "sleep", "ps", "hostname", "true", "tty", "stty", "seq",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(cmd)).unwrap();
    }
    root
}

/// A bundle whose process runs `args`, with containerd's defaults, in cgroup
/// `/strata-shim-test/<id>`.
fn bundle(dir: &Path, id: &str, args: &[&str], terminal: bool) -> PathBuf {
    bundle_in(dir, id, args, terminal, "/strata-shim-test")
}

fn bundle_in(dir: &Path, id: &str, args: &[&str], terminal: bool, cgroup: &str) -> PathBuf {
    let b = dir.join(format!("bundle-{id}"));
    std::fs::create_dir_all(&b).unwrap();
    let root = rootfs(&b);
    let mut spec = strata_runtime::default_spec(&root, args).unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(format!("{cgroup}/{id}"))));
    spec.set_linux(Some(linux));
    spec.set_hostname(Some(format!("h-{id}")));
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(terminal));
    spec.set_process(Some(process));
    std::fs::write(b.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    b
}

/// Every record of a framed log, in order.
fn records(path: &Path) -> Vec<(Stream, Vec<u8>)> {
    let mut d = Decoder::default();
    d.feed(&std::fs::read(path).unwrap_or_default());
    let mut out = Vec::new();
    while let Some(r) = d.next_record().unwrap() {
        out.push(r);
    }
    assert_eq!(
        d.pending(),
        0,
        "{} ends in a partial record",
        path.display()
    );
    out
}

/// What one stream wrote to a framed log.
fn stream_text(path: &Path, stream: Stream) -> String {
    let bytes: Vec<u8> = records(path)
        .into_iter()
        .filter(|(s, _)| *s == stream)
        .flat_map(|(_, d)| d)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

use strata_testkit::fifo::{mkfifo, slow_reader};

struct Shim {
    state: PathBuf,
    log: PathBuf,
}

impl Shim {
    fn start(dir: &Path, id: &str, runtime: &str, args: &[&str]) -> Shim {
        Self::start_with(dir, id, runtime, args, false, None)
    }

    /// Starts a supervisor on an existing bundle.
    fn start_bundle(dir: &Path, id: &str, runtime: &str, b: &Path) -> Shim {
        Self::spawn(dir, id, runtime, b, None, &[])
    }

    /// With a terminal when `terminal`; with `stdin` (a FIFO) as its stdin when given. The log
    /// is kept outside the state directory (`--log`), as the tasks service keeps it.
    fn start_with(
        dir: &Path,
        id: &str,
        runtime: &str,
        args: &[&str],
        terminal: bool,
        stdin: Option<&Path>,
    ) -> Shim {
        let b = bundle(dir, id, args, terminal);
        Self::spawn(dir, id, runtime, &b, stdin, &[])
    }

    /// Runs the supervisor under `wrap` (a command that runs its arguments) when not empty.
    fn spawn(
        dir: &Path,
        id: &str,
        runtime: &str,
        b: &Path,
        stdin: Option<&Path>,
        wrap: &[&str],
    ) -> Shim {
        let state = dir.join(format!("state-{id}"));
        let log = dir.join(format!("{id}.log"));
        let out = dir.join(format!("{id}.out"));
        // A FIFO the test made stays one.
        if !out.exists() {
            std::fs::write(&out, b"").unwrap();
        }
        let mut cmd = match wrap {
            [] => Command::new(SHIM),
            [first, rest @ ..] => {
                let mut c = Command::new(first);
                c.args(rest).arg(SHIM);
                c
            }
        };
        cmd.args(["--id", id, "--runtime", runtime])
            .arg("--bundle")
            .arg(b)
            .arg("--state")
            .arg(&state)
            .arg("--log")
            .arg(&log)
            .arg("--stdout")
            .arg(&out);
        if let Some(p) = stdin {
            cmd.arg("--stdin").arg(p);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Its diagnostics go to shim.log: an empty line means it failed before ready.
        assert!(
            line.starts_with("ready "),
            "supervisor said {line:?}; shim.log: {:?}",
            std::fs::read_to_string(state.join("shim.log")).unwrap_or_default()
        );
        // The supervisor outlives its starter.
        drop(child);
        Shim { state, log }
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

    fn stdout(&self) -> String {
        stream_text(&self.log, Stream::Stdout)
    }
}

fn lifecycle(runtime: &str) {
    let dir = strata_testkit::tempdir();
    let id = format!("t-{runtime}-{}", std::process::id());
    let fifo = dir.path().join(format!("{id}.out"));
    mkfifo(&fifo);
    let s = Shim::start(
        dir.path(),
        &id,
        runtime,
        &[
            "sh",
            "-c",
            "echo pid=$$ host=$(hostname); echo to-stderr >&2; seq 1 20000; exit 7",
        ],
    );
    assert_eq!(s.ok(json!({"op": "state"}))["status"], "created");
    let reader = slow_reader(fifo, "\n20000\n");
    s.ok(json!({"op": "start"}));
    let exit = s.ok(json!({"op": "wait"}));
    assert_eq!(exit["exit"]["status"], 7, "{exit}");
    assert_eq!(s.ok(json!({"op": "state"}))["status"], "stopped");
    // The exit status is on disk for a restarted tasks service.
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(s.state.join("exit")).unwrap()).unwrap();
    assert_eq!(on_disk["status"], 7);
    // The exit is told once the output is in the log: nothing to wait for, the last line
    // included. Streams are told apart.
    let out = s.stdout();
    assert!(out.starts_with(&format!("pid=1 host=h-{id}\n")), "{out:?}");
    assert!(
        out.ends_with("\n19999\n20000\n"),
        "{:?}",
        &out[out.len() - 40..]
    );
    assert!(!out.contains("to-stderr"), "stderr in stdout");
    assert_eq!(stream_text(&s.log, Stream::Stderr), "to-stderr\n");
    assert!(!s.state.join("log").exists(), "the log went to --log");
    assert_eq!(
        reader.join().unwrap(),
        out,
        "the stdout path got other output"
    );
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
    let exec_log = stream_text(&s.state.join("exec-e1.log"), Stream::Stdout);
    assert!(
        exec_log
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep")),
        "{exec_log}"
    );
    let st = s.ok(json!({"op": "state_exec", "exec_id": "e1"}));
    assert_eq!(st["status"], "stopped", "{st}");
    assert_eq!(st["exit"]["status"], 3, "{st}");
    // No terminal to resize; unknown execs are not found.
    let r = s.call(json!({"op": "resize_pty", "width": 80, "height": 24}));
    assert_eq!(r["kind"], "failed_precondition", "{r}");
    let r = s.call(json!({"op": "resize_pty", "exec_id": "nope", "width": 80, "height": 24}));
    assert_eq!(r["kind"], "not_found", "{r}");
    // Deleting an exec forgets it and removes its log.
    s.ok(json!({"op": "delete_exec", "exec_id": "e1"}));
    assert!(!s.state.join("exec-e1.log").exists());
    let r = s.call(json!({"op": "wait_exec", "exec_id": "e1"}));
    assert_eq!(r["kind"], "not_found", "{r}");
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
    assert_eq!(refused["kind"], "failed_precondition", "{refused}");
    s.ok(json!({"op": "kill", "signal": 9}));
    let exit = s.ok(json!({"op": "wait"}));
    assert_eq!(exit["exit"]["status"], 137, "{exit}");
    s.ok(json!({"op": "delete"}));
}

/// A terminal for init and for an exec: the process sees a pty, its output (with \r\n) goes
/// to the log as stdout, stdin reaches it through the terminal, and resizes are seen.
fn terminal(runtime: &str) {
    let dir = strata_testkit::tempdir();
    let id = format!("tty-{runtime}-{}", std::process::id());
    let fifo = dir.path().join("stdin");
    mkfifo(&fifo);
    let s = Shim::start_with(
        dir.path(),
        &id,
        runtime,
        &[
            "sh",
            "-c",
            "tty; read line; stty size; echo got=$line; exit 5",
        ],
        true,
        Some(&fifo),
    );
    s.ok(json!({"op": "start"}));
    s.ok(json!({"op": "resize_pty", "width": 123, "height": 45}));
    // The shell waits for a line before it reads the size: the resize is in place by then.
    let mut stdin = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    stdin.write_all(b"hello\n").unwrap();
    let exit = s.ok(json!({"op": "wait"}));
    assert_eq!(exit["exit"]["status"], 5, "{exit}");
    let out = s.stdout();
    // The terminal echoes the input line whenever it arrives: look for lines, not an order.
    assert!(out.lines().any(|l| l.starts_with("/dev/pts/")), "{out:?}");
    assert!(out.contains("45 123\r\n"), "{out:?}");
    assert!(out.contains("got=hello\r\n"), "{out:?}");
    assert_eq!(stream_text(&s.log, Stream::Stderr), "");
    let fifo_out = std::fs::read_to_string(dir.path().join(format!("{id}.out"))).unwrap();
    assert!(fifo_out.contains("got=hello"), "{fifo_out:?}");
    drop(stdin);
    s.ok(json!({"op": "delete"}));

    // An exec with a terminal, in a container without one.
    let id = format!("ttyx-{runtime}-{}", std::process::id());
    let s = Shim::start(dir.path(), &id, runtime, &["sleep", "1000"]);
    s.ok(json!({"op": "start"}));
    let efifo = dir.path().join("exec-stdin");
    mkfifo(&efifo);
    let process = json!({"args": ["sh", "-c", "tty; read l; stty size; echo l=$l"], "cwd": "/",
        "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}, "terminal": true});
    s.ok(json!({"op": "exec", "exec_id": "t1", "process": process,
        "stdin": efifo.display().to_string()}));
    s.ok(json!({"op": "resize_pty", "exec_id": "t1", "width": 77, "height": 22}));
    let mut stdin = std::fs::OpenOptions::new()
        .write(true)
        .open(&efifo)
        .unwrap();
    stdin.write_all(b"there\n").unwrap();
    let e = s.ok(json!({"op": "wait_exec", "exec_id": "t1"}));
    assert_eq!(e["exit"]["status"], 0, "{e}");
    let out = stream_text(&s.state.join("exec-t1.log"), Stream::Stdout);
    assert!(out.lines().any(|l| l.starts_with("/dev/pts/")), "{out:?}");
    assert!(
        out.contains("22 77\r\n") && out.contains("l=there\r\n"),
        "{out:?}"
    );
    // Init has no terminal.
    let r = s.call(json!({"op": "resize_pty", "width": 80, "height": 24}));
    assert_eq!(r["kind"], "failed_precondition", "{r}");
    s.ok(json!({"op": "kill", "signal": 9}));
    s.ok(json!({"op": "wait"}));
    s.ok(json!({"op": "delete"}));
}

/// A process that leaves a daemon holding its output open: its exit is still told, once the
/// bounded drain gives up; what it wrote before exiting is in the log.
fn daemon_holds_output(runtime: &str) {
    let dir = strata_testkit::tempdir();
    let id = format!("d-{runtime}-{}", std::process::id());
    let s = Shim::start(
        dir.path(),
        &id,
        runtime,
        &["sh", "-c", "sleep 1000 & echo bye; exit 4"],
    );
    s.ok(json!({"op": "start"}));
    let exit = s.ok(json!({"op": "wait"}));
    assert_eq!(exit["exit"]["status"], 4, "{exit}");
    assert_eq!(s.ok(json!({"op": "state"}))["status"], "stopped");
    assert_eq!(s.stdout(), "bye\n");
    s.ok(json!({"op": "kill", "signal": 9, "all": true}));
    s.ok(json!({"op": "delete", "force": true}));
}

/// A container whose cgroup's parent another container, created at the same moment, has just
/// made and not yet filled in: on cgroup v1 that parent's `cpuset.cpus` and `cpuset.mems` are
/// still empty (they are copied from its own parent after the mkdir). The first two tests of a
/// run on a fresh machine met this state (`builtin_daemon_holds_output` beside
/// `builtin_lifecycle`, both under a `/strata-shim-test` that did not exist yet): the new
/// container's cgroup copied the empty values, an empty cpuset refuses every process, and the
/// supervisor failed before its ready line.
fn half_made_cgroup_parent(runtime: &str) {
    let dir = strata_testkit::tempdir();
    let parent = format!("strata-shim-half-{runtime}-{}", std::process::id());
    let cpuset = Path::new("/sys/fs/cgroup/cpuset").join(&parent);
    /// Removes the parent from every hierarchy, pass or fail.
    struct Parent(String);
    impl Drop for Parent {
        fn drop(&mut self) {
            for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten() {
                let _ = std::fs::remove_dir(hierarchy.unwrap().path().join(&self.0));
            }
        }
    }
    let _cleanup = Parent(parent.clone());
    let v1 = Path::new("/sys/fs/cgroup/cpuset/cpuset.cpus").exists();
    if v1 {
        // What a concurrent creator has done so far: the directory, nothing in it.
        std::fs::create_dir(&cpuset).unwrap();
        assert_eq!(
            std::fs::read_to_string(cpuset.join("cpuset.cpus"))
                .unwrap()
                .trim(),
            ""
        );
    }
    let id = format!("half-{runtime}-{}", std::process::id());
    let b = bundle_in(
        dir.path(),
        &id,
        &["sh", "-c", "exit 6"],
        false,
        &format!("/{parent}"),
    );
    let s = Shim::start_bundle(dir.path(), &id, runtime, &b);
    s.ok(json!({"op": "start"}));
    let exit = s.ok(json!({"op": "wait"}));
    assert_eq!(exit["exit"]["status"], 6, "{exit}");
    s.ok(json!({"op": "delete"}));
}

/// The supervisor in a pid namespace of its own, where nothing else forks, so the test can
/// steer which pid its next process gets (`ns_last_pid`) and hand an exited exec's pid to a
/// new one. Exits are kept by process identity (pid and start time): the new exec is told its
/// own exit, not the old one's (keyed by a bare pid, the old exit stayed in the table and the
/// new exec's wait took it: status 3 for a process killed with 9), and an exec that has exited
/// is not signalled again, whoever holds its pid by then.
fn a_reused_pid_gets_no_other_process_exit(runtime: &str) {
    let dir = strata_testkit::tempdir();
    let id = format!("reuse-{runtime}-{}", std::process::id());
    let b = bundle(dir.path(), &id, &["sleep", "1000"], false);
    let s = Shim::spawn(
        dir.path(),
        &id,
        runtime,
        &b,
        None,
        &["unshare", "--pid", "--fork", "--mount-proc"],
    );
    s.ok(json!({"op": "start"}));
    // The supervisor's host pid (it is pid 1 of its namespace): a process of its namespace to
    // write ns_last_pid from.
    let shim_host_pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            cmd.starts_with(SHIM.as_bytes())
                && String::from_utf8_lossy(&cmd).contains(&id)
                && status
                    .lines()
                    .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"))
        })
        .expect("the supervisor's process");
    let last_pid = |n: i32| {
        strata_testkit::ok(
            Command::new("nsenter")
                .arg("--target")
                .arg(shim_host_pid.to_string())
                .args(["--pid", "--", "sh", "-c"])
                .arg(format!("echo {n} > /proc/sys/kernel/ns_last_pid")),
            None,
        );
    };
    let process = |args: &[&str]| json!({"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    s.ok(json!({"op": "exec", "exec_id": "old", "process": process(&["sh", "-c", "exit 3"])}));
    let old = s.ok(json!({"op": "wait_exec", "exec_id": "old"}));
    assert_eq!(old["exit"]["status"], 3, "{old}");
    let p = old["pid"].as_i64().unwrap();
    s.ok(json!({"op": "delete_exec", "exec_id": "old"}));
    // Threads take pids too: find how many the supervisor takes before an exec's fork.
    let mut reused = None;
    for k in 1..p - 1 {
        last_pid(i32::try_from(p - k).unwrap());
        let e = format!("new{k}");
        let r = s.ok(json!({"op": "exec", "exec_id": e, "process": process(&["sleep", "1000"])}));
        if r["pid"].as_i64() == Some(p) {
            reused = Some(e);
            break;
        }
        s.ok(json!({"op": "kill_exec", "exec_id": e, "signal": 9}));
        s.ok(json!({"op": "wait_exec", "exec_id": e}));
        s.ok(json!({"op": "delete_exec", "exec_id": e}));
    }
    let e = reused.unwrap_or_else(|| panic!("no exec got pid {p} again"));
    let st = s.ok(json!({"op": "state_exec", "exec_id": e}));
    assert_eq!(
        st["status"], "running",
        "exec {e} with the reused pid {p}: {st}"
    );
    assert!(st.get("exit").is_none(), "{st}");
    s.ok(json!({"op": "kill_exec", "exec_id": e, "signal": 9}));
    let w = s.ok(json!({"op": "wait_exec", "exec_id": e}));
    assert_eq!(w["exit"]["status"], 137, "{w}");
    // Gone now: not signalled again, whoever holds its pid.
    let r = s.call(json!({"op": "kill_exec", "exec_id": e, "signal": 9}));
    assert_eq!(r["kind"], "not_found", "{r}");
    s.ok(json!({"op": "kill", "signal": 9}));
    assert_eq!(s.ok(json!({"op": "wait"}))["exit"]["status"], 137);
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

#[test]
fn builtin_terminal() {
    terminal("builtin");
}

#[test]
fn runc_terminal() {
    assert!(have("runc"), "runc is not installed (apt-get install runc)");
    terminal("runc");
}

#[test]
fn builtin_daemon_holds_output() {
    daemon_holds_output("builtin");
}

#[test]
fn runc_daemon_holds_output() {
    assert!(have("runc"), "runc is not installed (apt-get install runc)");
    daemon_holds_output("runc");
}

#[test]
fn builtin_half_made_cgroup_parent() {
    half_made_cgroup_parent("builtin");
}

#[test]
fn builtin_a_reused_pid_gets_no_other_process_exit() {
    a_reused_pid_gets_no_other_process_exit("builtin");
}
