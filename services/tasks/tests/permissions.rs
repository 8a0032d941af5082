//! Local users: a non-root user on the host reads nothing of a container's through the tasks
//! service's state: not its spec (config.json holds its environment), its output logs, the
//! supervisor's and runtime's records, the state directories' listings, its root file system,
//! nor the containers' metadata. Each read is tried as `nobody` (uid and gid 65534, no
//! supplementary groups) with `setpriv`, and must fail with EACCES; the modes are checked too.
//!
//! The stack's temporary directory is opened to 0755 first, as `/run` and `/var/lib` are on a
//! host: only the service's own modes may stand between `nobody` and the state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/runtime_stack.rs"]
mod stack;

use serde_json::json;
use stack::{IMAGE, Rt, SNAPSHOTTER, Stack};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use strata_api::containerd::services::tasks::v1 as pb;
use strata_core::containers::{Any, Container, ContainerStore as _};
use strata_core::snapshots::SnapshotStore as _;

const NOBODY: &str = "65534";

/// Runs `args` as nobody; returns (success, stdout, stderr).
fn as_nobody(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .args(args)
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nobody` cannot read (`cat`) the file or list (`ls`) the directory at `path`: refused with
/// EACCES, and none of `secrets` comes out.
fn refused(path: &Path, secrets: &[&str]) -> Result<(), String> {
    let p = path.display().to_string();
    let args = if path.is_dir() {
        vec!["ls", "-a", p.as_str()]
    } else {
        vec!["cat", p.as_str()]
    };
    let (ok, out, err) = as_nobody(&args);
    if ok || !err.contains("Permission denied") || secrets.iter().any(|s| out.contains(s)) {
        let out: String = out.chars().take(200).collect();
        return Err(format!(
            "nobody: {args:?}: succeeded={ok}, stdout (first 200 characters) {out:?}, stderr {err:?}"
        ));
    }
    Ok(())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// A container of the stack's image whose environment holds `env`, started: stdout goes to
/// the stack's out path.
fn run_with_env(s: &Stack, id: &str, args: &[&str], env: &str) {
    let key = format!("{id}-rootfs");
    s.block_on(
        s.snapshots
            .prepare(SNAPSHOTTER, &s.ns, &key, IMAGE, HashMap::new()),
    )
    .unwrap();
    let mut spec = stack::spec(id, args, &json!({}));
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!(env));
    let mut c = Container::new(id, common::RUNC);
    c.snapshotter = SNAPSHOTTER.into();
    c.snapshot_key = key;
    c.spec = Some(Any {
        type_url: common::SPEC_TYPE.into(),
        value: serde_json::to_vec(&spec).unwrap(),
    });
    s.block_on(s.containers.create(&s.ns, c)).unwrap();
    std::fs::write(s.out_path(id), b"").unwrap();
    std::fs::write(s.err_path(id), b"").unwrap();
    s.block_on(s.client.clone().create(s.req(pb::CreateTaskRequest {
        container_id: id.into(),
        stdout: s.out_path(id).display().to_string(),
        stderr: s.err_path(id).display().to_string(),
        ..Default::default()
    })))
    .unwrap_or_else(|st| panic!("creating task {id}: {st:?}"));
    s.start_task(id);
}

#[test]
fn nobody_reads_nothing_of_a_running_container() {
    let s = Stack::start(Rt::Builtin);
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = format!("private-{}", std::process::id());
    let secret = format!("s3cret-{}", std::process::id());
    let marker = format!("marker-{}", std::process::id());
    run_with_env(
        &s,
        &c,
        &[
            "sh",
            "-c",
            &format!("echo {marker}; echo {marker} >&2; sleep 1000"),
        ],
        &format!("SECRET={secret}"),
    );
    s.wait_output(&c, &marker);
    assert_eq!(
        s.exec(&c, "peek", &["sh", "-c", &format!("echo exec-{marker}")]),
        0
    );
    let secrets = [secret.as_str(), marker.as_str()];

    let task = s.task_dir(&c);
    let ns_dir = s.state.join(&s.ns);
    let log = ns_dir.join(format!("{c}.log"));
    let rootfs = s.rootfs(&c);
    let runtime_state = task.join("runtime").join(&c);
    // Everything exists (the checks below would otherwise pass by accident).
    for p in [
        &task.join("bundle/config.json"),
        &log,
        &task.join("exec-peek.log"),
        &task.join("shim.log"),
        &task.join("io.json"),
        &runtime_state.join("state.json"),
        &rootfs.join("etc/os-release"),
    ] {
        assert!(p.exists(), "{} is missing", p.display());
    }
    assert!(
        std::fs::read_to_string(task.join("bundle/config.json"))
            .unwrap()
            .contains(&secret)
    );

    // What nobody tries, all of which must fail with EACCES.
    let tries = [
        task.join("bundle/config.json"),
        log.clone(),
        task.join("exec-peek.log"),
        task.join("shim.log"),
        task.join("io.json"),
        task.join("init.pid"),
        runtime_state.join("state.json"),
        s.state.clone(),
        ns_dir.clone(),
        task.clone(),
        task.join("bundle"),
        rootfs.clone(),
        rootfs.join("etc/os-release"),
        runtime_state.clone(),
        s.tasks.root.join("metadata.redb"),
        s.tasks.root.clone(),
    ];
    let failures: Vec<String> = tries
        .iter()
        .filter_map(|p| refused(p, &secrets).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The modes themselves, beyond what the directories above them hide.
    for d in [
        &s.state,
        &ns_dir,
        &task,
        &task.join("bundle"),
        &runtime_state,
    ] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for f in [
        task.join("bundle/config.json"),
        log,
        task.join("exec-peek.log"),
        task.join("shim.log"),
        task.join("io.json"),
        task.join("init.pid"),
        runtime_state.join("state.json"),
    ] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(&s.tasks.root), 0o700);
    assert_eq!(mode(&s.tasks.root.join("metadata.redb")), 0o600);
    s.kill_and_remove(&c);
}
