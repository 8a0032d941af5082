//! CVE-2019-5736's class: a container process must not be able to write, truncate or change
//! the mode of the host's supervisor binary through `/proc/<pid>/exe` of a process that runs
//! it in the container (the built-in runtime's init before its `execve`, or a
//! `#!/proc/self/exe` script), neither at once nor with the published trick: hold the file
//! open, wait until nothing runs it any more, reopen it for writing through `/proc/self/fd`.
//!
//! Each check runs a private copy of `strata-shim` (`strata-tasks --shim`), so no other test's
//! supervisor runs that file, and compares it with its original bytes and mode at the end.
//! The supervisor of the container is killed (as the OOM killer or a `kill -9` would) to open
//! the window in which nothing on the host executes the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/runtime_stack.rs"]
mod stack;

use serde_json::json;
use stack::{PROCESS_TYPE, Rt, Stack};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use strata_api::containerd::services::tasks::v1 as pb;

/// A private copy of the supervisor binary, and what it must still be at the end.
struct PrivateShim {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

impl PrivateShim {
    fn new() -> Self {
        let dir = strata_testkit::tempdir();
        let path = dir.path().join("strata-shim");
        let built = Path::new(common::TASKS_BIN).with_file_name("strata-shim");
        std::fs::copy(&built, &path).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode();
        Self {
            _dir: dir,
            path,
            bytes,
            mode,
        }
    }

    fn stack(&self) -> Stack {
        Stack::start_with(
            Rt::Builtin,
            &["--shim".to_owned(), self.path.display().to_string()],
        )
    }

    /// The file is byte for byte and mode for mode what it was.
    fn assert_unchanged(&self, attempts: &str) {
        let now = std::fs::read(&self.path).unwrap();
        let mode = std::fs::metadata(&self.path).unwrap().mode();
        assert!(
            now == self.bytes,
            "the host's supervisor binary was written: sha256 {} (was {}); {attempts}",
            sha256(&self.path),
            sha256_of(&self.bytes),
        );
        assert_eq!(
            mode, self.mode,
            "the host's supervisor binary changed mode: {mode:o}; {attempts}"
        );
    }
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn sha256_of(bytes: &[u8]) -> String {
    let tmp = strata_testkit::tempdir();
    let p = tmp.path().join("f");
    std::fs::write(&p, bytes).unwrap();
    sha256(&p)
}

fn id(check: &str) -> String {
    format!("{check}-{}", std::process::id())
}

/// The attack, as a busybox script run in the container with the target pid in `$pid`: hold
/// `/proc/$pid/exe` open, try to write it and change its mode at once, tell the test
/// (`held`), wait for its word (`go`, a FIFO) and then reopen the held file for writing.
const GRAB: &str = r#"
t=/attack
exec 3</proc/$pid/exe || { echo open-failed > $t/held; exit 1; }
busybox readlink /proc/$pid/exe > $t/link
if echo PWNED >> /proc/$pid/exe; then echo written; else echo refused; fi > $t/direct 2>&1
if busybox chmod 6777 /proc/$pid/exe; then echo changed; else echo refused; fi > $t/chmod 2>&1
echo ok > $t/held
read go < $t/go
[ -n "$before_go" ] && eval "$before_go"
if echo PWNED >> /proc/self/fd/3; then echo written; else echo refused; fi > $t/reopened 2>&1
if echo PWNED > /proc/self/fd/3; then echo written; else echo refused; fi > $t/truncated 2>&1
echo done > $t/result
"#;

/// Puts the attack's files into the container's root: the scripts, and the FIFO `go`.
fn plant(s: &Stack, c: &str, files: &[(&str, &str, u32)]) -> PathBuf {
    let dir = s.rootfs(c).join("attack");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("grab.sh"), GRAB).unwrap();
    for (name, text, mode) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    nix::unistd::mkfifo(
        &dir.join("go"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    dir
}

/// Copies the shared libraries the supervisor binary needs (its ELF interpreter among them)
/// into the container's root, at their host paths, as an image with a C library has them:
/// without them no process in the container can execute the binary at all.
fn give_libraries(s: &Stack, c: &str, binary: &Path) {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap();
    let root = s.rootfs(c);
    for lib in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
}

/// Starts `args` in task `c` without waiting for it, with the container's capabilities (as
/// `ctr task exec` and `docker exec` give).
fn start_exec(s: &Stack, c: &str, exec_id: &str, args: &[&str]) {
    let caps = stack::spec(c, &[], &json!({}))["process"]["capabilities"].clone();
    let process = json!({
        "terminal": false,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": caps,
    });
    let mut client = s.client.clone();
    s.block_on(client.exec(s.req(pb::ExecProcessRequest {
        container_id: c.into(),
        exec_id: exec_id.into(),
        spec: Some(prost_types::Any {
            type_url: PROCESS_TYPE.into(),
            value: serde_json::to_vec(&process).unwrap(),
        }),
        ..Default::default()
    })))
    .unwrap_or_else(|st| panic!("exec {exec_id} in {c}: {st:?}"));
    s.block_on(client.start(s.req(pb::StartRequest {
        container_id: c.into(),
        exec_id: exec_id.into(),
    })))
    .unwrap_or_else(|st| panic!("starting exec {exec_id} in {c}: {st:?}"));
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The supervisor of the container whose init is `init`: init's parent.
fn supervisor_of(init: u32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap()
}

/// Kills the container's supervisor and waits until it is gone (the tasks service reaps it):
/// from then on no host process executes what the container holds.
fn kill_supervisor(s: &Stack, shim: i32) {
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap();
    assert_eq!(
        comm.trim(),
        "strata-shim",
        "pid {shim} is not the supervisor"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    s.until("the supervisor is reaped", || {
        !Path::new(&format!("/proc/{shim}")).exists()
    });
}

/// Lets the attack go on (its `read` may come before or after: the FIFO is held open read-write
/// until it has answered) and waits for its end.
fn go_and_wait(s: &Stack, dir: &Path) -> String {
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(dir.join("go"))
        .unwrap();
    fifo.write_all(b"go\n").unwrap();
    s.until("the attack ends", || dir.join("result").exists());
    drop(fifo);
    format!(
        "link {:?}, direct write {:?}, chmod {:?}, reopened for append {:?}, reopened with truncation {:?}",
        read(dir, "link"),
        read(dir, "direct"),
        read(dir, "chmod"),
        read(dir, "reopened"),
        read(dir, "truncated"),
    )
}

fn assert_refused(dir: &Path, attempts: &str) {
    assert!(
        read(dir, "link").starts_with("/memfd:strata-shim"),
        "the container reached a binary that is not the sealed copy: {attempts}"
    );
    for f in ["direct", "reopened", "truncated"] {
        assert!(
            read(dir, f).ends_with("refused"),
            "{f}: a write was not refused: {attempts}"
        );
    }
}

/// A process exec'd into a created container reaches its init (still the supervisor's code,
/// waiting for Start) through `/proc/1/exe`, holds it, and tries every write.
#[test]
fn the_init_before_its_execve_exposes_only_a_sealed_copy() {
    let shim = PrivateShim::new();
    let s = shim.stack();
    let c = id("exe-init");
    let init = s.create(&c, &["sleep", "1000"], &json!({}));
    let dir = plant(&s, &c, &[]);
    let supervisor = supervisor_of(init);
    start_exec(&s, &c, "grab", &["sh", "-c", "pid=1; . /attack/grab.sh"]);
    s.until("the attack holds its file", || dir.join("held").exists());
    assert_eq!(
        read(&dir, "held"),
        "ok",
        "the attack could not open /proc/1/exe"
    );
    // init execs its process: only the supervisor runs the binary now, then nothing.
    s.start_task(&c);
    kill_supervisor(&s, supervisor);
    let attempts = go_and_wait(&s, &dir);
    shim.assert_unchanged(&attempts);
    assert_refused(&dir, &attempts);
}

/// A `#!/proc/self/exe` script exec'd into the container runs whatever the runtime's process
/// that execs it runs. The container's init (the attack) waits until such a script, exec'd
/// with arguments that make the supervisor's code wait on a FIFO it takes for its bundle's
/// config.json, runs; holds its `/proc/<pid>/exe`; kills it once the supervisor is gone too;
/// and reopens the held file for writing.
#[test]
fn a_proc_self_exe_script_exposes_only_a_sealed_copy() {
    let shim = PrivateShim::new();
    let s = shim.stack();
    let c = id("exe-shebang");
    let init = s.create(&c, &["sh", "/attack/shebang.sh"], &json!({}));
    let shebang = r#"
mkdir -p /attack/bundle && busybox mkfifo /attack/bundle/config.json
echo > /attack/ready
while [ ! -e /attack/state/shim.log ]; do :; done
for p in /proc/[0-9]*; do
  case "$(busybox readlink $p/exe)" in *strata-shim*) pid=${p#/proc/} ;; esac
done
if [ -z "$pid" ]; then { echo no-process; cat /attack/state/shim.log; } > /attack/held 2>&1; exit 1; fi
before_go="kill -9 $pid; while busybox readlink /proc/$pid/exe >/dev/null 2>&1; do :; done"
. /attack/grab.sh
"#;
    let dir = plant(
        &s,
        &c,
        &[
            ("evil", "#!/proc/self/exe --id\n", 0o755),
            ("shebang.sh", shebang, 0o644),
        ],
    );
    give_libraries(&s, &c, &shim.path);
    let supervisor = supervisor_of(init);
    s.start_task(&c);
    s.until("the attack is ready", || dir.join("ready").exists());
    start_exec(
        &s,
        &c,
        "evil",
        &[
            "/attack/evil",
            "--bundle",
            "/attack/bundle",
            "--state",
            "/attack/state",
        ],
    );
    s.until("the attack holds its file", || dir.join("held").exists());
    assert_eq!(
        read(&dir, "held"),
        "ok",
        "the attack could not open the exe"
    );
    kill_supervisor(&s, supervisor);
    let attempts = go_and_wait(&s, &dir);
    shim.assert_unchanged(&attempts);
    assert_refused(&dir, &attempts);
}

/// The init each runtime leaves waiting for Start runs from a sealed memfd copy of its binary
/// (strata's built-in runtime: the supervisor's) or from a read-only mount of it that is no longer attached
/// anywhere (runc 1.1's and crun 1.8's "bindfd"), so what the container reaches through
/// `/proc/<init>/exe` cannot be written, at once or reopened later.
fn init_runs_from_a_copy(rt: Rt) {
    let s = Stack::start(rt);
    let c = id(&format!("exe-{}", rt.name()));
    let init = s.create(&c, &["sleep", "1000"], &json!({}));
    let exe = std::fs::File::open(format!("/proc/{init}/exe")).unwrap();
    let link = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    let seals = nix::fcntl::fcntl(&exe, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap_or(0);
    let sealed = seals & nix::fcntl::SealFlag::F_SEAL_WRITE.bits() != 0;
    let read_only = nix::sys::statvfs::fstatvfs(&exe)
        .unwrap()
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    assert!(
        sealed || read_only,
        "{}'s init runs {link:?}, neither sealed nor on a read-only mount",
        rt.name()
    );
    s.kill_and_remove(&c);
}

#[test]
fn builtin_init_runs_from_a_copy() {
    init_runs_from_a_copy(Rt::Builtin);
}

#[test]
fn runc_init_runs_from_a_copy() {
    init_runs_from_a_copy(Rt::Runc);
}

#[test]
fn crun_init_runs_from_a_copy() {
    init_runs_from_a_copy(Rt::Crun);
}

/// An upgrade (a new file renamed over the binary, as `install` does) takes effect for the next
/// container: its supervisor runs a sealed copy of the new file, the running one keeps the old.
#[test]
fn an_upgraded_binary_serves_the_next_container() {
    let shim = PrivateShim::new();
    let s = shim.stack();
    let (a, b) = (id("exe-before"), id("exe-after"));
    let first = supervisor_of(s.run(&a, &["sleep", "1000"], &json!({})));
    let exe = |pid: i32| std::fs::read(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe(first) == shim.bytes,
        "the first supervisor runs another binary"
    );
    // Trailing bytes change the file, not what it does.
    let mut upgraded = shim.bytes.clone();
    upgraded.extend_from_slice(b"\0strata-shim upgraded");
    let next = shim.path.with_extension("new");
    std::fs::write(&next, &upgraded).unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&next, &shim.path).unwrap();
    let second = supervisor_of(s.run(&b, &["sleep", "1000"], &json!({})));
    let link = std::fs::read_link(format!("/proc/{second}/exe")).unwrap();
    assert!(
        link.display().to_string().starts_with("/memfd:strata-shim"),
        "{link:?}"
    );
    assert!(
        exe(second) == upgraded,
        "the next supervisor runs the old binary"
    );
    assert!(
        exe(first) == shim.bytes,
        "the running supervisor's binary changed"
    );
    s.kill_and_remove(&a);
    s.kill_and_remove(&b);
}
