//! Fixtures for tests that run the real thing: service binaries on temporary unix sockets,
//! killed with SIGKILL and restarted, and external clients (ctr, grpcurl) pointed at them.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod conformance;
pub mod fifo;
pub mod net;
pub mod registry;
pub mod stack;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for a service to come up; only a liveness guard, never a speed assertion.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A service binary running on a socket in a temporary directory.
pub struct Service {
    bin: PathBuf,
    pub name: String,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    extra: Vec<String>,
    /// Environment variables of the next start (see [`Service::restart_with_env`]).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Service {
    /// Starts `bin` with `--address <dir>/<name>.sock --root <dir>/<name>` and waits until its
    /// socket accepts connections. A storage service (content, snapshotter, images) publishes
    /// no events unless `extra` gives `--events` (a test never posts into a stack the host
    /// runs at /run/strata).
    pub fn start(bin: impl AsRef<Path>, dir: &Path, name: &str, extra: &[&str]) -> Self {
        let bin = bin.as_ref().to_owned();
        let mut extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let publishes = bin.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            ["strata-content", "strata-snapshotter", "strata-images"].contains(&n)
        });
        if publishes && !extra.iter().any(|a| a == "--events") {
            extra.extend(["--events".to_owned(), "none".to_owned()]);
        }
        let mut s = Self {
            bin,
            name: name.to_owned(),
            socket: dir.join(format!("{name}.sock")),
            root: dir.join(name),
            log: dir.join(format!("{name}.log")),
            extra,
            env: Vec::new(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("--address")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_LIMIT;
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited with {status} before listening; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {} in time; log:\n{}",
                self.name,
                self.socket.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as a crash: no cleanup runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let pid = Pid::from_raw(i32::try_from(c.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        c.wait().unwrap().success()
    }

    /// Starts the same binary again with the same socket and root.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn address(&self) -> String {
        self.socket.display().to_string()
    }

    /// Runs the same binary once, with the same socket, root and flags plus `more`, and waits
    /// (for one-shot modes such as `strata-network --detach-all`).
    pub fn run_once(&self, more: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--address")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .args(&self.extra)
            .args(more)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// Restarts it (as [`Service::restart`]) with exactly these environment variables added,
    /// e.g. `[("STRATA_CRASH_AT", "content.commit.renamed")]`; `&[]` restarts it without any.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.restart();
    }

    /// Waits for it to exit on its own (a crash point, say) and returns how it ended; panics
    /// with its log if it is still running after `limit` (only a guard against a hang).
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("the service is not running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs after {limit:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The path of an external tool the tests need; fails with what to install when it is missing.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: install {package} (.ci/run does)");
}

/// Runs a command, returning its output; stdin is `input` when given.
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(cmd: &mut Command, input: Option<&[u8]>) -> String {
    let desc = format!("{cmd:?}");
    let out = run(cmd, input);
    assert!(
        out.status.success(),
        "{desc} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory for sockets and roots.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("strata-test")
        .tempdir()
        .unwrap()
}

/// A binary of another workspace package, built beside the test's own binaries (`make test`
/// builds every binary first).
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A private containerd (Debian's package) on its own socket and state directories, for
/// side-by-side comparisons.
pub struct Containerd {
    child: Option<Child>,
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl Containerd {
    pub fn start(dir: &Path) -> Self {
        let bin = tool("containerd", "containerd");
        let dir = dir.join("containerd");
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"{dbg}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display(),
                dbg = dir.join("debug.sock").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + START_LIMIT;
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not listen on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            socket,
            dir,
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(c.id()).unwrap_or(0));
            let _ = kill(pid, Signal::SIGTERM);
            let _ = c.wait();
        }
        // Snapshots containerd left mounted under its root.
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|t| t.starts_with(&*self.dir.to_string_lossy()))
                .collect();
            targets.sort_unstable_by(|a, b| b.cmp(a));
            for t in targets {
                let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Checks `deploy/systemd/<name>.service` as shipped with `systemd-analyze verify`, its
/// `ExecStart` pointed at `binary` (the unit names /usr/local/bin/<name>); returns the unit's
/// text for further checks.
pub fn verify_unit(name: &str, binary: &str) -> String {
    let analyze = tool("systemd-analyze", "systemd");
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(format!("{name}.service"));
    let unit = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    assert!(
        unit.lines().any(|l| l == "Type=notify"),
        "{name}: not Type=notify"
    );
    let dir = tempdir();
    let path = dir.path().join(format!("{name}.service"));
    std::fs::write(
        &path,
        unit.replace(&format!("/usr/local/bin/{name}"), binary),
    )
    .unwrap();
    let out = run(Command::new(analyze).arg("verify").arg(&path), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<_> = stderr.lines().filter(|l| l.contains(name)).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify {name}: {stderr}"
    );
    unit
}

/// Starts `cmd` as systemd starts a `Type=notify` unit (with `NOTIFY_SOCKET` in `dir`) and
/// returns once it said `READY=1`, checking that `socket` accepts by then. Its stderr is piped,
/// for [`stop_json_logs`].
pub fn start_notified(cmd: &mut Command, dir: &Path, socket: &Path) -> Child {
    let notify_path = dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(START_LIMIT)).unwrap();
    let child = cmd
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("no READY=1 from the service");
    assert_eq!(&buf[..n], b"READY=1\n");
    UnixStream::connect(socket).expect("READY=1 sent before the socket accepts");
    child
}

/// Sends SIGTERM.
pub fn sigterm(child: &Child) {
    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
}

/// Waits for a process started by [`start_notified`] (after [`sigterm`]) to exit successfully;
/// returns its logs, which must be JSON lines (`log_format = "json"`).
pub fn stop_json_logs(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {}", out.status);
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    let first = logs.lines().next().unwrap_or_default();
    assert!(
        first.starts_with('{'),
        "log_format = json not honoured: {first}"
    );
    logs
}

/// Starts `bin` once per `(config text, needle)` with that text as its `--config`: each must
/// be refused, with an error naming `needle` (the file or the offending key).
pub fn assert_bad_configs(bin: &str, cases: &[(&str, &str)]) {
    let dir = tempdir();
    for (text, needle) in cases {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let out = run(
            Command::new(bin)
                .arg("--config")
                .arg(&config)
                .arg("--address")
                .arg(dir.path().join("x.sock"))
                .arg("--root")
                .arg(dir.path().join("root")),
            None,
        );
        assert!(!out.status.success(), "{text} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
}

/// Starts `bin` with a config holding an unknown key `key` beside valid ones: it must exit
/// non-zero with an error naming the key and the file.
pub fn assert_unknown_key_refused(bin: &str, key: &str) {
    let dir = tempdir();
    let config = dir.path().join("typo.toml");
    std::fs::write(&config, format!("log_format = \"text\"\n{key} = 10\n")).unwrap();
    let out = run(
        Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("--address")
            .arg(dir.path().join("x.sock"))
            .arg("--root")
            .arg(dir.path().join("root")),
        None,
    );
    assert!(!out.status.success(), "unknown key {key:?} accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!("config {}: unknown key {key:?}", config.display());
    assert!(err.contains(&expected), "wanted {expected:?} in: {err}");
    assert!(!dir.path().join("x.sock").exists(), "it listened anyway");
}

/// Writes `deploy/config/<name>.toml` as shipped into `dir`, its `/run/strata` and
/// `/var/lib/strata` paths moved under `dir` (`run/`, `lib/`) and `log_format = "json"`; returns
/// its path.
pub fn shipped_config(name: &str, dir: &Path) -> PathBuf {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/config")
        .join(format!("{name}.toml"));
    let shipped = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let run_dir = dir.join("run");
    let lib_dir = dir.join("lib");
    let text = shipped
        .replace("/run/strata", run_dir.to_str().unwrap())
        .replace("/var/lib/strata", lib_dir.to_str().unwrap())
        .replace("log_format = \"text\"", "log_format = \"json\"");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `bin` with its shipped config `deploy/config/<name>.toml` written into `dir` (see
/// [`shipped_config`]) as systemd would (see [`start_notified`]), and returns once it listens on
/// `<dir>/run/<socket>.sock`; its root is `<dir>/lib/<name>`.
pub fn start_shipped(bin: &str, name: &str, socket: &str, dir: &Path) -> Child {
    let config = shipped_config(name, dir);
    let sock = dir.join("run").join(format!("{socket}.sock"));
    start_notified(Command::new(bin).arg("--config").arg(&config), dir, &sock)
}

/// Starts `bin` with its shipped config (see [`start_shipped`]), stops it and returns its JSON
/// logs.
pub fn assert_shipped_config_loads(bin: &str, name: &str, socket: &str) -> String {
    let dir = tempdir();
    let child = start_shipped(bin, name, socket, dir.path());
    sigterm(&child);
    stop_json_logs(child)
}

/// Checks that a unit (its text, as [`verify_unit`] returns it) has `After=` and `Wants=` lines
/// naming each of `deps` (`strata-tasks.service`): it starts them, and starts after them.
pub fn assert_unit_after_and_wants(unit: &str, deps: &[&str]) {
    for dep in deps {
        for key in ["After=", "Wants="] {
            assert!(
                unit.lines().any(|l| l.starts_with(key) && l.contains(dep)),
                "no {key}{dep}"
            );
        }
    }
}
