//! The kill -9 matrix: each service is started with `STRATA_CRASH_AT` naming one of its crash
//! points (`strata_core::crashpoint`), the work that reaches the point is driven through the
//! `strata` CLI or `ctr`, the service dies there as a kill -9 would, and it is started again
//! without the variable. Then: the interrupted operation either took effect or left no trace
//! (retrying it succeeds), everything committed before is still there and usable, nothing
//! partial is visible, every container is found with its true state, and no mount, cgroup,
//! FIFO or supervisor is left behind by what was removed.
//!
//! Points are grouped so that each group shares one stack: storage (content, snapshotter,
//! images) and execution (tasks, gateway).
//!
//! | point | work | then |
//! |---|---|---|
//! | `content.write.some` | `ctr content ingest` | resumed ingest commits, blob whole |
//! | `content.commit.renamed` | ingest; a pull | blob absent; retry commits / pull completes |
//! | `content.commit.committed` | ingest | blob listed and whole; retry succeeds |
//! | `snapshotter.prepare.renamed` | a pull; a `run` | no trace; retried pull / run works |
//! | `snapshotter.apply.extracted` | a pull | extract snapshot collected; retried pull runs |
//! | `snapshotter.commit.measured` | a pull | retried pull runs |
//! | `snapshotter.remove.committed` | `rm -f` | container and layer gone, no directory left |
//! | `images.create.committed` | a pull | retried pull runs, its lease dropped |
//! | `images.delete.committed` | `rmi` | the owed collection frees the image's blobs and layer |
//! | `images.gc.swept-content` | `rmi` | the same, after the collector died mid-sweep |
//! | `images.gc.swept-snapshot` | `rmi` | the same |
//! | `tasks.create.started` | `run -d` | container found Created, `start` runs it |
//! | `tasks.exec.started` | `exec` | container still Up, exec works again |
//! | `tasks.delete.midway` | `rm -f` | removing again leaves no mount, state or cgroup |
//! | `gateway.create.recorded` | `run -d` | running it again works |
//! | `gateway.rm.task-deleted` | `rm -f` | removing again finishes it |
//! | `gateway.pull.layer-unpacked` | a pull | retried pull runs, the dead gateway's lease dropped |
//!
//! After each: every container with its true state (a running one keeps the data written in
//! its layer, an exited one its exit code), an earlier image still runs, every blob file hashes
//! to its name and every listed blob has one, no ingest, no `extract-` snapshot, no active
//! snapshot without its container, one snapshot directory per snapshot, no lease, mounts only
//! the roots of existing containers, one supervisor per container, and for removed containers
//! no cgroup, task state or FIFO.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata_testkit::registry::{
    Entry, Layer, Registry, busybox_layer, host_arch, layer, oci_image,
};
use strata_testkit::stack::{Stack, ctr_path};
use strata_testkit::{Service, run};

/// Bounds every wait; only a guard against a hang, never a speed assertion.
const LIMIT: Duration = Duration::from_secs(90);
/// The namespace of `ctr content ingest` runs: talked to on the content socket directly, it is
/// unknown to the images service, so no collection ever touches what the test writes there.
const INGEST_NS: &str = "crash-ingest";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A task whose process runs.
    Running,
    /// A task whose process exited with this code, not deleted.
    Exited(i32),
    /// A task created and not started.
    Created,
}

#[derive(Clone, Copy)]
enum Svc {
    Content,
    Snapshotter,
    Images,
    Tasks,
    Gateway,
}

struct World {
    stack: Stack,
    registry: Registry,
    /// Container names start with it (cgroups are per host: two tests must not share names).
    prefix: &'static str,
    /// The base image, pulled first: it must run after every crash.
    base: String,
    /// Images pulled and not removed.
    images: BTreeSet<String>,
    /// Every container that exists, with its true state.
    containers: BTreeMap<String, State>,
    /// Containers removed: nothing of theirs may be left.
    removed: BTreeSet<String>,
    pushed: usize,
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl World {
    fn new(prefix: &'static str) -> Self {
        let stack = Stack::start();
        let registry = Registry::start(stack.path());
        let layout = stack.path().join("layout-base");
        oci_image(&layout, &[busybox_layer()], host_arch());
        let base = registry.push(&layout, "base:1");
        let mut w = Self {
            stack,
            registry,
            prefix,
            base: base.clone(),
            images: BTreeSet::new(),
            containers: BTreeMap::new(),
            removed: BTreeSet::new(),
            pushed: 0,
        };
        w.ok(&["pull", "-q", &base]);
        w.images.insert(base);
        // A running container with data in its own layer, and one that has exited.
        let keep = w.name("keep");
        w.ok(&[
            "run",
            "-d",
            "--name",
            &keep,
            &w.base.clone(),
            "sh",
            "-c",
            "echo precious > /data; exec sleep 100000",
        ]);
        w.eventually("keep's data", || {
            run(w.stack.cli().args(["exec", &keep, "cat", "/data"]), None).stdout == b"precious\n"
        });
        w.containers.insert(keep, State::Running);
        let done = w.name("done");
        let out = w.cli(&[
            "run",
            "--name",
            &done,
            &w.base.clone(),
            "sh",
            "-c",
            "exit 3",
        ]);
        assert_eq!(out.status.code(), Some(3), "{}", w.stack.logs());
        w.containers.insert(done, State::Exited(3));
        w.check();
        w
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// Pushes a new image: the busybox base and `extra` layers of its own, its layer `i` holding
    /// `/img<n>/name<i>`; returns its reference and `n`.
    fn push(&mut self, extra: usize) -> (String, usize) {
        self.pushed += 1;
        let n = self.pushed;
        let mut layers: Vec<Layer> = vec![busybox_layer()];
        for i in 0..extra {
            // Some size, so a layer takes more than one write.
            let filler: Vec<u8> = (0..200_000u32)
                .map(|x| (x.wrapping_mul(2_654_435_761) >> (n + i)).to_le_bytes()[0])
                .collect();
            layers.push(layer(&[
                Entry::Dir(format!("img{n}")),
                Entry::File(format!("img{n}/layer{i}"), filler, 0o644),
                Entry::File(
                    format!("img{n}/name{i}"),
                    format!("image {n} layer {i}\n").into_bytes(),
                    0o644,
                ),
            ]));
        }
        let layout = self.stack.path().join(format!("layout-{n}"));
        oci_image(&layout, &layers, host_arch());
        (self.registry.push(&layout, &format!("img{n}:1")), n)
    }

    fn svc(&mut self, s: Svc) -> &mut Service {
        match s {
            Svc::Content => &mut self.stack.content,
            Svc::Snapshotter => &mut self.stack.snapshotter,
            Svc::Images => &mut self.stack.images,
            Svc::Tasks => &mut self.stack.tasks,
            Svc::Gateway => &mut self.stack.gateway,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        run(self.stack.cli().args(args), None)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.stack.logs()
        );
        text(&out)
    }

    /// `ctr` on the gateway.
    fn ctr(&self, args: &[&str]) -> String {
        let out = run(self.stack.ctr().args(args), None);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.stack.logs()
        );
        text(&out)
    }

    /// `ctr` on the content socket, in [`INGEST_NS`].
    fn ctr_content(&self, args: &[&str], stdin: Option<&Path>) -> Output {
        let mut cmd = Command::new(ctr_path());
        cmd.arg("--address")
            .arg(&self.stack.content.socket)
            .args(["--namespace", INGEST_NS, "content"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            // A file, not a pipe: a resumed ingest seeks to where the store is.
            Some(p) => cmd.stdin(std::fs::File::open(p).unwrap()),
            None => cmd.stdin(Stdio::null()),
        };
        cmd.output().unwrap()
    }

    /// Polls until `f` holds.
    fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < LIMIT,
                "{what} never happened\n{}",
                self.stack.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts `svc` with `point` armed, runs `action` (which reaches the point, and fails as its
    /// service dies), sees the service die of SIGKILL and starts it again unarmed. Returns the
    /// action's output.
    fn crash(&mut self, svc: Svc, point: &str, action: impl FnOnce(&World) -> Output) -> Output {
        self.svc(svc)
            .restart_with_env(&[(strata_core::crashpoint::VAR, point)]);
        let out = action(self);
        let status = self.svc(svc).wait_exit(LIMIT);
        assert_eq!(
            status.signal(),
            Some(9),
            "{point}: the service ended with {status}, not at the crash point\n{}",
            self.stack.logs()
        );
        self.svc(svc).restart_with_env(&[]);
        // Every client reconnects: the gateway, and every service behind it, answers again.
        self.eventually("the stack answering after the restart", || {
            self.cli(&["ps", "-a", "-q"]).status.success()
                && self.cli(&["images", "-q"]).status.success()
                && run(self.stack.ctr().args(["content", "ls", "-q"]), None)
                    .status
                    .success()
                && run(self.stack.ctr().args(["snapshots", "ls"]), None)
                    .status
                    .success()
        });
        out
    }

    fn content_list(&self) -> BTreeSet<String> {
        self.ctr(&["content", "ls", "-q"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// (key, kind) of every overlayfs snapshot.
    fn snapshot_list(&self) -> BTreeMap<String, String> {
        self.ctr(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some(((*f.first()?).to_owned(), (*f.last()?).to_owned()))
            })
            .collect()
    }

    fn image_list(&self) -> String {
        self.ok(&["images"])
    }

    /// The invariants that hold after every crash and restart (once the interrupted operation
    /// has been retried).
    fn check(&self) {
        // No pull is under way: no lease is left, not even one a killed gateway took.
        self.eventually("no lease left", || {
            self.ctr(&["leases", "ls", "-q"]).trim().is_empty()
        });
        self.check_containers();
        self.check_storage();
        self.check_leftovers();
        // What was committed before is there and usable: an earlier image still runs.
        let images = self.image_list();
        for i in &self.images {
            let repo = i.rsplit_once(':').map_or(i.as_str(), |(r, _)| r);
            assert!(images.contains(repo), "image {i} lost: {images}");
        }
        assert_eq!(self.ok(&["run", "--rm", &self.base, "echo", "ok"]), "ok\n");
    }

    fn check_containers(&self) {
        let ps: serde_json::Value =
            serde_json::from_str(&self.ok(&["ps", "-a", "--json"])).unwrap();
        let found: BTreeMap<String, String> = ps
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["ID"].as_str().unwrap().to_owned(),
                    c["Status"].as_str().unwrap().to_owned(),
                )
            })
            .filter(|(id, _)| id.starts_with(self.prefix))
            .collect();
        let want: BTreeMap<String, String> = self
            .containers
            .iter()
            .map(|(id, s)| {
                let s = match s {
                    State::Running => "Up".to_owned(),
                    State::Exited(c) => format!("Exited ({c})"),
                    State::Created => "Created".to_owned(),
                };
                (id.clone(), s)
            })
            .collect();
        assert_eq!(found, want, "containers\n{}", self.stack.logs());
        for (id, s) in &self.containers {
            if *s == State::Running && id.ends_with("-keep") {
                assert_eq!(self.ok(&["exec", id, "cat", "/data"]), "precious\n");
            }
        }
    }

    fn check_storage(&self) {
        // Every blob is whole: its file hashes to its name, and every listed blob has one.
        let blobs = self.stack.content.root.join("blobs/sha256");
        let mut files = BTreeSet::new();
        for e in std::fs::read_dir(&blobs).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let data = std::fs::read(e.path()).unwrap();
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&data)),
                name,
                "blob file {name} is not what its name says"
            );
            files.insert(format!("sha256:{name}"));
        }
        let listed = self.content_list();
        assert!(
            listed.is_subset(&files),
            "listed blobs without a file: {:?}",
            listed.difference(&files).collect::<Vec<_>>()
        );
        // No ingest is left once every interrupted write was retried.
        let active = self.ctr(&["content", "active"]);
        assert!(active.lines().count() <= 1, "ingests left: {active}");
        // No half-unpacked layer, and every active snapshot belongs to a container.
        let snaps = self.snapshot_list();
        for (key, kind) in &snaps {
            assert!(
                !key.starts_with("extract-"),
                "unpack left behind: {snaps:?}"
            );
            if kind == "Active" {
                assert!(
                    self.containers.contains_key(key),
                    "active snapshot {key} of no container: {snaps:?}"
                );
            }
        }
        for id in self.containers.keys() {
            assert_eq!(
                snaps.get(id).map(String::as_str),
                Some("Active"),
                "container {id} lost its layer: {snaps:?}"
            );
        }
        // On disk, one directory per snapshot (only this namespace has snapshots).
        let snap_dirs = self.stack.snapshotter.root.join("overlayfs/snapshots");
        let dirs = std::fs::read_dir(&snap_dirs).unwrap().count();
        assert_eq!(dirs, snaps.len(), "snapshot directories for {snaps:?}");
    }

    /// Mounts, cgroups, FIFOs and supervisors: only live containers have them.
    fn check_leftovers(&self) {
        let dir = self.stack.path().display().to_string();
        let state = self.stack.path().join("tasks-state/default");
        // A container with a task has its root mounted, and nothing else is mounted.
        let mounts: BTreeSet<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|p| p.starts_with(&dir))
            .collect();
        let want: BTreeSet<String> = self
            .containers
            .keys()
            .map(|id| state.join(id).join("bundle/rootfs").display().to_string())
            .collect();
        assert_eq!(mounts, want, "mounts under {dir}");
        // Supervisors: one per container with a task, none of a removed container. (The
        // built-in runtime's init is a child of its supervisor with the same command line until
        // it is started: only a process whose parent is no supervisor of the same container
        // counts.)
        let shim_of = |pid: &str| -> Option<String> {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if !args.first()?.ends_with("strata-shim") || !args.iter().any(|a| a.starts_with(&dir))
            {
                return None;
            }
            let i = args.iter().position(|a| a == "--id")?;
            args.get(i + 1).cloned()
        };
        let mut shims: BTreeMap<String, usize> = BTreeMap::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            let Some(id) = shim_of(&pid) else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .unwrap_or("0")
                .to_owned();
            if shim_of(&ppid).as_ref() != Some(&id) {
                *shims.entry(id).or_default() += 1;
            }
        }
        let want: BTreeMap<String, usize> =
            self.containers.keys().map(|id| (id.clone(), 1)).collect();
        assert_eq!(shims, want, "supervisors");
        for id in &self.removed {
            // No cgroup in any hierarchy.
            for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
                let cg = h.path().join("strata/default").join(id);
                assert!(!cg.exists(), "{} left", cg.display());
            }
            assert!(!state.join(id).exists(), "task state of {id} left");
        }
        // FIFOs only in the directories of existing containers.
        let mut fifos = Vec::new();
        find_fifos(self.stack.path(), &mut fifos);
        for f in fifos {
            let s = f.display().to_string();
            assert!(
                self.containers
                    .keys()
                    .any(|id| s.contains(&format!("/{id}/"))),
                "FIFO {s} of no container"
            );
        }
    }

    fn removed(&mut self, id: &str) {
        self.containers.remove(id);
        self.removed.insert(id.to_owned());
    }
}

impl Drop for World {
    /// Whatever happened, no container of the test is left running on the host: each is removed,
    /// and should the stack be unable to (a failed test may leave a service dead), its
    /// supervisors and their containers are killed and their roots unmounted.
    fn drop(&mut self) {
        for id in self.containers.keys() {
            let _ = run(self.stack.cli().args(["rm", "-f", id]), None);
        }
        let dir = self.stack.path().display().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let Some(i) = args.iter().position(|a| a == "--id") else {
                continue;
            };
            if !args[0].ends_with("strata-shim") || !args.iter().any(|a| a.starts_with(&dir)) {
                continue;
            }
            let procs = format!(
                "/sys/fs/cgroup/pids/strata/default/{}/cgroup.procs",
                args[i + 1]
            );
            let unified = format!("/sys/fs/cgroup/strata/default/{}/cgroup.procs", args[i + 1]);
            let members = std::fs::read_to_string(procs)
                .or_else(|_| std::fs::read_to_string(unified))
                .unwrap_or_default();
            let shim = e.file_name().to_string_lossy().into_owned();
            for pid in members.lines().chain([shim.as_str()]) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_unstable_by(|a, b| b.cmp(a));
        for m in mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn find_fifos(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_fifo() {
            out.push(e.path());
        } else if t.is_dir() && !t.is_symlink() && !e.path().ends_with("rootfs") {
            find_fifos(&e.path(), out);
        }
    }
}

/// A file of `n` pseudo-random bytes; returns it and its digest.
fn payload(dir: &Path, name: &str, n: usize, seed: u64) -> (PathBuf, String) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (
        path,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data))),
    )
}

fn succeeded(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// content: killed mid-write, between the rename into blobs/ and the metadata commit, and
/// after the commit before answering. Each time the retried ingest succeeds, the blob reads
/// back whole, and no ingest is left.
fn content_killed_mid_ingest(w: &mut World, dir: &Path) {
    for (i, point) in [
        "content.write.some",
        "content.commit.renamed",
        "content.commit.committed",
    ]
    .into_iter()
    .enumerate()
    {
        let (file, digest) = payload(dir, &format!("ingest-{i}"), 3_000_000, i as u64 + 1);
        let reference = format!("crash-{i}");
        let out = w.crash(Svc::Content, point, |w| {
            w.ctr_content(&["ingest", &reference], Some(&file))
        });
        assert!(!out.status.success(), "{point}: ingest answered success");
        let listed = text(&w.ctr_content(&["ls", "-q"], None));
        match point {
            // Not committed: no trace of the blob, on disk or listed.
            "content.commit.renamed" | "content.write.some" => {
                assert!(!listed.contains(&digest), "{point}: {listed}");
                let hex = digest.trim_start_matches("sha256:");
                assert!(!w.stack.content.root.join("blobs/sha256").join(hex).exists());
            }
            // Committed: there, whole.
            _ => assert!(listed.contains(&digest), "{point}: {listed}"),
        }
        let out = w.ctr_content(&["ingest", &reference], Some(&file));
        succeeded(&out, &format!("{point}: ingest again"));
        let got = w.ctr_content(&["get", &digest], None);
        succeeded(&got, "content get");
        assert_eq!(got.stdout, std::fs::read(&file).unwrap(), "{point}");
        let active = text(&w.ctr_content(&["active"], None));
        assert!(
            active.lines().count() <= 1,
            "{point}: ingests left: {active}"
        );
        w.check();
    }
}

/// Content commits (through `ctr content ingest`), unpacks, snapshot commits, image records
/// and the collector's sweep.
#[test]
fn storage_services_killed_at_their_crash_points() {
    let mut w = World::new("crash-st");
    let dir = w.stack.path().to_owned();

    content_killed_mid_ingest(&mut w, &dir);

    // A pull killed at each storage point: content commit of a layer, snapshot prepare (the
    // extract snapshot renamed into place, not yet recorded), the layer extracted but not
    // answered, the snapshot commit, the image record committed but not answered. The pull
    // fails; pulled again it succeeds and its image runs.
    let mut pulled = Vec::new();
    for (svc, point) in [
        (Svc::Content, "content.commit.renamed"),
        (Svc::Snapshotter, "snapshotter.prepare.renamed"),
        (Svc::Snapshotter, "snapshotter.apply.extracted"),
        (Svc::Snapshotter, "snapshotter.commit.measured"),
        (Svc::Images, "images.create.committed"),
    ] {
        let (image, n) = w.push(1);
        let out = w.crash(svc, point, |w| w.cli(&["pull", "-q", &image]));
        assert!(!out.status.success(), "{point}: pull answered success");
        w.ok(&["pull", "-q", &image]);
        let file = format!("/img{n}/name0");
        assert_eq!(
            w.ok(&["run", "--rm", &image, "cat", &file, "/etc/os-release"]),
            format!("image {n} layer 0\nNAME=strata-test\n")
        );
        w.images.insert(image.clone());
        pulled.push((image, n));
        // An interrupted unpack is collected once its pull's lease is gone.
        w.eventually(&format!("{point}: no extract snapshot"), || {
            !w.snapshot_list().keys().any(|k| k.starts_with("extract-"))
        });
        w.check();
    }

    // snapshotter: a container's snapshot prepared (renamed, not recorded): the create fails
    // and leaves nothing; run again it works.
    let id = w.name("prep");
    let out = w.crash(Svc::Snapshotter, "snapshotter.prepare.renamed", |w| {
        w.cli(&["run", "-d", "--name", &id, &w.base, "sleep", "100000"])
    });
    assert!(!out.status.success());
    w.check();
    w.ok(&[
        "run",
        "-d",
        "--name",
        &id,
        &w.base.clone(),
        "sleep",
        "100000",
    ]);
    w.containers.insert(id.clone(), State::Running);
    w.check();

    // snapshotter: a removal killed after its commit, before the directory is moved away.
    let out = w.crash(Svc::Snapshotter, "snapshotter.remove.committed", |w| {
        w.cli(&["rm", "-f", &id])
    });
    if !out.status.success() && w.ok(&["ps", "-a", "-q"]).lines().any(|l| l == id) {
        w.ok(&["rm", "-f", &id]);
    }
    w.removed(&id);
    w.check();

    // images: an image deletion killed after its commit, and the collector killed after it
    // removed the first blob, then the first snapshot. The image is gone (or its deletion
    // retried), and once the owed collection has run, everything only it held is gone too.
    for ((image, _), point) in pulled.iter().take(3).zip([
        "images.delete.committed",
        "images.gc.swept-content",
        "images.gc.swept-snapshot",
    ]) {
        w.images.remove(image);
        let before = (w.content_list(), w.snapshot_list());
        let out = w.crash(Svc::Images, point, |w| w.cli(&["rmi", image]));
        let repo = image.rsplit_once(':').unwrap().0;
        if w.image_list().contains(repo) {
            assert!(!out.status.success());
            w.ok(&["rmi", image]);
        }
        w.eventually(
            &format!("{point}: the image's blobs and layer collected"),
            || {
                let (c, s) = (w.content_list(), w.snapshot_list());
                // Its index, manifest, config and layer; its own top layer snapshot.
                before.0.difference(&c).count() >= 3
                    && before.1.keys().filter(|k| !s.contains_key(*k)).count() >= 1
            },
        );
        w.check();
    }
    // The collector left nothing the remaining images or containers need.
    let (image, n) = &pulled[3];
    w.ok(&["run", "--rm", image, "cat", &format!("/img{n}/name0")]);
}

/// Task creation, exec and deletion in strata-tasks; container creation, removal and a pull in
/// the gateway.
#[test]
fn execution_services_killed_at_their_crash_points() {
    let mut w = World::new("crash-ex");

    // tasks: the supervisor is up (the container created) but the task not yet recorded. The
    // container is found again with its task created; starting it runs it.
    let id = w.name("t1");
    let out = w.crash(Svc::Tasks, "tasks.create.started", |w| {
        w.cli(&["run", "-d", "--name", &id, &w.base, "sleep", "100000"])
    });
    assert!(!out.status.success());
    w.containers.insert(id.clone(), State::Created);
    w.check();
    w.ok(&["start", &id]);
    w.containers.insert(id.clone(), State::Running);
    assert_eq!(w.ok(&["exec", &id, "echo", "in"]), "in\n");
    w.check();

    // tasks: an exec started by the supervisor, not yet answered. The container runs on, and
    // exec works again.
    let keep = w.name("keep");
    let out = w.crash(Svc::Tasks, "tasks.exec.started", |w| {
        w.cli(&["exec", &keep, "sh", "-c", "exit 0"])
    });
    assert!(!out.status.success());
    assert_eq!(w.ok(&["exec", &keep, "echo", "again"]), "again\n");
    w.check();

    // tasks: a deletion killed after the supervisor removed the container, before the root is
    // unmounted and the state removed. Removing again finishes it, with nothing left.
    let out = w.crash(Svc::Tasks, "tasks.delete.midway", |w| {
        w.cli(&["rm", "-f", &id])
    });
    assert!(!out.status.success());
    if w.ok(&["ps", "-a", "-q"]).lines().any(|l| l == id) {
        w.ok(&["rm", "-f", &id]);
    }
    w.removed(&id);
    w.check();

    // gateway: a container recorded, its snapshot not yet prepared. Running it again works.
    let g1 = w.name("g1");
    let out = w.crash(Svc::Gateway, "gateway.create.recorded", |w| {
        w.cli(&["run", "-d", "--name", &g1, &w.base, "sleep", "100000"])
    });
    assert!(!out.status.success());
    w.ok(&[
        "run",
        "-d",
        "--name",
        &g1,
        &w.base.clone(),
        "sleep",
        "100000",
    ]);
    w.containers.insert(g1.clone(), State::Running);
    w.check();

    // gateway: a removal killed once the task is deleted, before the record and the snapshot
    // go. Removing again finishes it.
    let out = w.crash(Svc::Gateway, "gateway.rm.task-deleted", |w| {
        w.cli(&["rm", "-f", &g1])
    });
    assert!(!out.status.success());
    if w.ok(&["ps", "-a", "-q"]).lines().any(|l| l == g1) {
        w.ok(&["rm", "-f", &g1]);
    }
    w.removed(&g1);
    w.check();

    // gateway: a pull killed after its first layers are in. Pulled again it is complete.
    let (image, n) = w.push(2);
    let out = w.crash(Svc::Gateway, "gateway.pull.layer-unpacked", |w| {
        w.cli(&["pull", "-q", &image])
    });
    assert!(!out.status.success());
    w.ok(&["pull", "-q", &image]);
    w.images.insert(image.clone());
    assert_eq!(
        w.ok(&["run", "--rm", &image, "cat", &format!("/img{n}/name1")]),
        format!("image {n} layer 1\n")
    );
    w.check();

    // The survivors end as they should: the kept container is removed with nothing left.
    let keep = w.name("keep");
    w.ok(&["rm", "-f", &keep]);
    w.removed(&keep);
    let done = w.name("done");
    w.ok(&["rm", &done]);
    w.removed(&done);
    w.check();
}
