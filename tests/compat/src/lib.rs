//! containerd compatibility suite: the same client workflows (containerd's `ctr`, the Rust
//! `containerd-client` crate) run against strata's gateway and against a private containerd,
//! and what the two answer is compared. Differences strata makes on purpose are listed in
//! docs/compatibility.md; a test adjusts containerd's answers only through [`documented`], so
//! any other difference fails.
//!
//! Without containerd installed, each workflow still runs against strata and strata's answers
//! are checked against what the test knows (digests, file contents, exit codes); the comparison
//! is skipped with a note on stderr. `STRATA_COMPAT_NO_CONTAINERD=1` forces that mode.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::must_use_candidate
)]

pub mod image;
pub mod obs;
pub mod table;

pub use image::TestImage;
pub use obs::{Obs, documented};

use std::path::{Path, PathBuf};
use std::process::Command;
use strata_testkit::Containerd;
use strata_testkit::registry::Registry;
use strata_testkit::stack::{Stack, ctr_path};

/// Which server a side talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Strata,
    Containerd,
}

/// What one `ctr` invocation answered. The side's namespace is replaced by [`Side::ns_norm`]
/// in stdout and stderr, so the two sides' outputs can be compared.
#[derive(Clone, Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    cmd: String,
}

impl Out {
    /// stdout of a command that must have succeeded.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "{} failed with {}:\nstdout: {}\nstderr: {}",
            self.cmd, self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts a failure; returns stderr.
    pub fn failed(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "{} succeeded where it must fail:\nstdout: {}",
            self.cmd, self.stdout
        );
        &self.stderr
    }
}

/// One server under test, with the namespace this test uses on it. Namespaces differ between
/// the sides (`compat-<test>-s`, `compat-<test>-c`) so that containers of the same id never share
/// a cgroup (`/<namespace>/<id>`).
pub struct Side {
    pub kind: Kind,
    pub socket: PathBuf,
    pub ns: String,
    /// What `ns` reads as in normalized output: the same on both sides and of the same length
    /// (`compat-<test>-N`), so that tables stay aligned.
    pub ns_norm: String,
    /// A scratch directory of this side's own (archives, mount points).
    pub scratch: PathBuf,
    /// Where the server keeps blob files (one per digest) and overlayfs snapshot directories
    /// (one per snapshot): what a synchronous removal must actually reclaim.
    pub blob_dir: PathBuf,
    pub snapshot_dir: PathBuf,
}

impl Side {
    fn new(kind: Kind, socket: &Path, test: &str, dir: &Path, store: (PathBuf, PathBuf)) -> Self {
        let tag = match kind {
            Kind::Strata => "s",
            Kind::Containerd => "c",
        };
        let scratch = dir.join(format!("scratch-{tag}"));
        std::fs::create_dir_all(&scratch).unwrap();
        Self {
            kind,
            socket: socket.to_owned(),
            ns: format!("compat-{test}-{tag}"),
            ns_norm: format!("compat-{test}-N"),
            scratch,
            blob_dir: store.0,
            snapshot_dir: store.1,
        }
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Strata => "strata",
            Kind::Containerd => "containerd",
        }
    }

    /// `ctr --address <socket>` with no namespace chosen.
    pub fn ctr_command(&self) -> Command {
        let mut c = Command::new(ctr_path());
        c.arg("--address").arg(&self.socket);
        c
    }

    /// Runs `ctr -n <this side's namespace> ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Out {
        self.ctr_in(&self.ns, args)
    }

    /// Runs `ctr ARGS` without choosing a namespace (for `namespaces`, `version`, `plugins`).
    pub fn ctr_global(&self, args: &[&str]) -> Out {
        let mut c = self.ctr_command();
        c.args(args);
        self.run(c)
    }

    /// Runs `ctr -n NS ARGS`.
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Out {
        let mut c = self.ctr_command();
        c.args(["--namespace", ns]).args(args);
        self.run(c)
    }

    /// Runs a prepared command (stdin closed) and normalizes its output.
    pub fn run(&self, mut c: Command) -> Out {
        let cmd = format!("[{}] {c:?}", self.name());
        let out = strata_testkit::run(&mut c, None);
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: self.normalize(&String::from_utf8_lossy(&out.stdout)),
            stderr: self.normalize(&String::from_utf8_lossy(&out.stderr)),
            cmd,
        }
    }

    pub fn normalize(&self, s: &str) -> String {
        s.replace(&self.ns, &self.ns_norm)
    }

    /// Kills and removes whatever containers the test left in `ns` (best effort, so that no
    /// container outlives a failed test).
    fn cleanup_ns(&self, ns: &str) {
        let ls = self.ctr_in(ns, &["containers", "ls", "-q"]);
        let ids = table::quiet(&ls.stdout);
        for id in &ids {
            let _ = self.ctr_in(ns, &["tasks", "kill", "-a", "-s", "SIGKILL", id]);
        }
        for id in &ids {
            // A killed task is deleted once it has stopped: retry a bounded number of times.
            for _ in 0..100 {
                let rm = self.ctr_in(ns, &["tasks", "rm", "-f", id]);
                let st = self.ctr_in(ns, &["tasks", "ls", "-q"]);
                if rm.code == 0 || !table::quiet(&st.stdout).contains(id) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = self.ctr_in(ns, &["containers", "rm", id]);
        }
    }
}

/// One test's world: a registry with the test image, strata's stack, and (when installed)
/// containerd, each with its own state in one temporary directory.
pub struct Env {
    pub test: String,
    pub image: TestImage,
    pub strata: Side,
    pub containerd: Option<Side>,
    /// Extra namespaces whose containers are cleaned up at the end.
    cleanup: std::sync::Mutex<Vec<String>>,
    // Dropped after the sides' cleanup (see Drop), in this order.
    pub registry: Registry,
    containerd_proc: Option<Containerd>,
    pub stack: Stack,
}

/// Whether the comparison runs: containerd installed and not disabled.
fn want_containerd() -> bool {
    if std::env::var_os("STRATA_COMPAT_NO_CONTAINERD").is_some_and(|v| !v.is_empty() && v != "0") {
        return false;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join("containerd").is_file())
}

impl Env {
    /// Starts everything for test `test` (a short name: it goes into namespaces and image names).
    pub fn start(test: &str) -> Self {
        let stack = Stack::start();
        let registry = Registry::start(stack.path());
        let image = TestImage::push(&registry, stack.path(), test);
        let strata = Side::new(
            Kind::Strata,
            stack.socket(),
            test,
            stack.path(),
            (
                stack.content.root.join("blobs/sha256"),
                stack.snapshotter.root.join("overlayfs/snapshots"),
            ),
        );
        let (containerd_proc, containerd) = if want_containerd() {
            let proc = Containerd::start(stack.path());
            let root = proc.dir.join("root");
            let side = Side::new(
                Kind::Containerd,
                &proc.socket,
                test,
                stack.path(),
                (
                    root.join("io.containerd.content.v1.content/blobs/sha256"),
                    root.join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
                ),
            );
            (Some(proc), Some(side))
        } else {
            eprintln!(
                "note: {test}: containerd is not installed (or STRATA_COMPAT_NO_CONTAINERD is set): \
                 strata is checked alone, the comparison with containerd is skipped"
            );
            (None, None)
        };
        Self {
            test: test.to_owned(),
            image,
            strata,
            containerd,
            cleanup: std::sync::Mutex::new(Vec::new()),
            registry,
            containerd_proc,
            stack,
        }
    }

    /// Both sides, strata first.
    pub fn sides(&self) -> impl Iterator<Item = &Side> {
        std::iter::once(&self.strata).chain(self.containerd.as_ref())
    }

    /// Cleans up containers in `ns` (on both sides) when the test ends.
    pub fn clean_namespace(&self, ns: &str) {
        self.cleanup.lock().unwrap().push(ns.to_owned());
    }

    /// Runs `workflow` on strata and `check` on strata's observations; then, with containerd,
    /// runs the same workflow there, lets `adjust` apply documented differences to containerd's
    /// observations, and fails on any remaining difference (and on a failed check, reported
    /// together with the differences). Returns strata's observations.
    pub fn compare(
        &self,
        workflow: impl Fn(&Side) -> Obs,
        check: impl FnOnce(&Obs),
        adjust: impl FnOnce(&mut Obs),
    ) -> Obs {
        let strata = workflow(&self.strata);
        let checked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&strata))).is_ok();
        let Some(side) = &self.containerd else {
            assert!(
                checked,
                "{}: strata's answers failed the checks above",
                self.test
            );
            return strata;
        };
        let mut expected = workflow(side);
        adjust(&mut expected);
        let diff = obs::differences(&strata, &expected);
        if diff.is_empty() {
            assert!(
                checked,
                "{}: strata's answers failed the checks above",
                self.test
            );
            return strata;
        }
        panic!(
            "{test}: {checks}strata answers differently from containerd (undocumented \
             differences, see docs/compatibility.md):\n{diff}\nstrata observed:\n{strata}\n\
             containerd observed (documented differences applied):\n{expected}",
            test = self.test,
            checks = if checked {
                ""
            } else {
                "strata's answers failed the checks above, and "
            },
        );
    }

    /// The warnings and errors of strata's services and containerd (the last few of each),
    /// for failure messages.
    pub fn log_problems(&self) -> String {
        let mut logs: Vec<(String, String)> = [
            &self.stack.content,
            &self.stack.snapshotter,
            &self.stack.images,
            &self.stack.tasks,
            &self.stack.gateway,
        ]
        .iter()
        .map(|s| (s.name.clone(), s.log_text()))
        .collect();
        if let Some(c) = &self.containerd_proc {
            let log = std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default();
            logs.push(("containerd".into(), log));
        }
        let mut out = String::new();
        for (name, text) in logs {
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains("WARN")
                        || l.contains("ERROR")
                        || l.contains("level=error")
                        || l.contains("level=warning")
                })
                .collect();
            if bad.is_empty() {
                continue;
            }
            out.push_str(&format!("--- {name} ---\n"));
            for l in &bad[bad.len().saturating_sub(10)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let extra = self.cleanup.lock().map(|v| v.clone()).unwrap_or_default();
        for side in std::iter::once(&self.strata).chain(self.containerd.as_ref()) {
            side.cleanup_ns(&side.ns);
            for ns in &extra {
                side.cleanup_ns(ns);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "{}: warnings and errors the servers logged:\n{}",
                self.test,
                self.log_problems()
            );
        }
    }
}

/// The sha256 of `data`, as `sha256:<hex>`.
pub fn digest_of(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The sha256 of a file, as `sha256:<hex>`.
pub fn file_digest(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    digest_of(&data)
}

/// How many entries a directory has (0 when it does not exist).
pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

/// Polls `f` until it returns `Some` (bounded: a liveness guard, not a timing assertion).
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{what}: never happened");
}
