//! The same container checks through the tasks service's containerd Containers and Tasks APIs,
//! once per runtime: strata's built-in one, runc and crun. Each check starts its own
//! snapshotter and tasks service with a busybox image snapshot, and is its own `#[test]` per
//! runtime (`builtin::…`, `runc::…`, `crun::…`). runc and crun must be installed (.ci/run
//! installs them); crun needs a one-time cgroup step on hybrid hosts, which its variants take
//! themselves (see `crun_hybrid_workaround`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/runtime_stack.rs"]
mod stack;

use serde_json::{Value, json};
use stack::{Rt, Stack, fingerprint};
use std::process::Command;
use std::time::Duration;
use strata_api::containerd::services::tasks::v1 as pb;
use strata_api::containerd::v1::types::Status;
use strata_api::io::containerd::cgroups::{v1, v2};
use strata_testkit::{ok, run, tool};

const SIGTERM: u32 = 15;
const MIB: u64 = 1 << 20;

fn none() -> Value {
    json!({})
}

/// An id unique to the check, the runtime and this test process (cgroup paths are global).
fn id(check: &str, rt: Rt) -> String {
    format!("{check}-{}-{}", rt.name(), std::process::id())
}

/// pid 1 inside, its own hostname, and no host process visible.
fn pid_one_hostname_and_private_processes(rt: Rt) {
    let s = Stack::start(rt);
    let c = id("iso", rt);
    s.run(
        &c,
        &[
            "sh",
            "-c",
            "echo pid=$$; echo host=$(hostname); echo procs:; ls /proc; echo end",
        ],
        &none(),
    );
    assert_eq!(s.wait(&c, ""), 0, "{}", s.output(&c));
    let out = s.wait_output(&c, "end\n");
    assert!(out.lines().any(|l| l == "pid=1"), "{out}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), format!("h-{c}"));
    assert!(out.lines().any(|l| l == format!("host=h-{c}")), "{out}");
    let procs: Vec<u32> = out
        .lines()
        .skip_while(|l| *l != "procs:")
        .filter_map(|l| l.parse().ok())
        .collect();
    // sh (pid 1) and ls; the host has far more.
    assert!(procs.contains(&1), "{out}");
    assert!(procs.len() <= 3, "host processes visible: {procs:?}");
    let host_procs = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    assert!(host_procs > procs.len(), "{host_procs} host processes");
    s.remove(&c);
}

/// A write lands in the container's own layer only; another container of the same image does
/// not see it; the image is unchanged; removing the container removes its layer.
fn writes_stay_in_the_containers_layer(rt: Rt) {
    let s = Stack::start(rt);
    let (a, b) = (id("wa", rt), id("wb", rt));
    s.create(
        &a,
        &["sh", "-c", "echo from-a > /etc/written; echo end"],
        &none(),
    );
    let image = s.image_dir(&a);
    let before = fingerprint(&image);
    let usage = s.image_usage();
    s.start_task(&a);
    assert_eq!(s.wait(&a, ""), 0, "{}", s.output(&a));
    let upper_a = s.upper(&a);
    assert_eq!(
        std::fs::read_to_string(upper_a.join("etc/written")).unwrap(),
        "from-a\n"
    );
    assert!(!image.join("etc/written").exists());

    s.run(
        &b,
        &[
            "sh",
            "-c",
            "if [ -e /etc/written ]; then echo seen; else echo unseen; fi",
        ],
        &none(),
    );
    assert_eq!(s.wait(&b, ""), 0);
    let out = s.wait_output(&b, "seen\n");
    assert_eq!(out, "unseen\n");
    let upper_b = s.upper(&b);
    assert!(!upper_b.join("etc/written").exists());
    assert_eq!(s.image_dir(&b), image, "both containers share the image");

    assert!(
        fingerprint(&image) == before,
        "the image's snapshot changed"
    );
    assert_eq!(s.image_usage(), usage);
    for c in [&a, &b] {
        assert_eq!(s.remove(c), 0);
    }
    assert!(!upper_a.exists() && !upper_b.exists(), "layers left behind");
    assert!(fingerprint(&image) == before);
}

/// The exit code of init reaches Wait, Get and Delete.
fn exit_codes_propagate(rt: Rt) {
    let s = Stack::start(rt);
    let c = id("exit", rt);
    s.run(&c, &["sh", "-c", "exit 7"], &none());
    assert_eq!(s.wait(&c, ""), 7);
    let p = s.get(&c);
    assert_eq!(Status::try_from(p.status).unwrap(), Status::Stopped);
    assert_eq!(p.exit_status, 7);
    assert_eq!(s.remove(&c), 7);
}

/// A 32 MiB memory limit: a shell that keeps doubling a string is killed by the kernel.
fn memory_limit_kills_a_hog(rt: Rt) {
    let s = Stack::start(rt);
    let c = id("oom", rt);
    s.run(
        &c,
        // Bounded (a 256 MiB string at most), so a limit that does not hold fails the check
        // instead of eating the host's memory.
        &[
            "sh",
            "-c",
            "x=a; i=0; while [ $i -lt 28 ]; do x=$x$x; i=$((i+1)); done; echo survived",
        ],
        &json!({"memory": {"limit": 32 * MIB}}),
    );
    assert_eq!(s.wait(&c, ""), 137, "{}", s.output(&c));
    assert!(!s.output(&c).contains("survived"));
    s.remove(&c);
}

/// Kill delivers the signal asked for: init's trap runs and chooses the exit code.
fn kill_delivers_signals(rt: Rt) {
    let s = Stack::start(rt);
    let c = id("sig", rt);
    s.run(
        &c,
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; sleep 1000 & wait",
        ],
        &none(),
    );
    s.wait_output(&c, "ready\n");
    s.kill(&c, SIGTERM, false);
    assert_eq!(s.wait(&c, ""), 42);
    s.wait_output(&c, "got-term\n");
    assert_eq!(s.remove(&c), 42);
}

/// An exec'd process is in the container's namespaces: same hostname, init as pid 1, and
/// its own exit code.
fn exec_joins_the_namespaces(rt: Rt) {
    let s = Stack::start(rt);
    let c = id("exec", rt);
    s.run(&c, &["sleep", "1000"], &none());
    let status = s.exec(
        &c,
        "e1",
        &["sh", "-c", "echo host=$(hostname); ps -o pid,args; exit 3"],
    );
    assert_eq!(status, 3);
    let out = s.wait_output(&format!("{c}-e1"), "sleep 1000");
    assert!(out.lines().any(|l| l == format!("host=h-{c}")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep 1000")),
        "{out}"
    );
    s.kill_and_remove(&c);
}

/// A failure the supervisor reports keeps its kind on the way to the client (the tasks
/// service does not guess it from the text), and its message names the container or the exec
/// and what was being done.
fn errors_carry_their_kind_and_subject(rt: Rt) {
    let s = Stack::start(rt);
    let c = id("errs", rt);
    s.run(&c, &["sleep", "1000"], &none());
    let expect = |what: &str, r: Result<(), tonic::Status>, code: tonic::Code, words: &[&str]| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        for w in words {
            assert!(
                e.message().contains(w),
                "{what}: {:?} lacks {w:?}",
                e.message()
            );
        }
    };
    let mut client = s.client.clone();
    // A running task is not deleted.
    let r = s.block_on(client.delete(s.req(pb::DeleteTaskRequest {
        container_id: c.clone(),
    })));
    expect(
        "deleting a running task",
        r.map(drop),
        tonic::Code::FailedPrecondition,
        &[&format!("{c:?}")],
    );
    // An exec nobody created is not found, and says which.
    let r = s.block_on(client.delete_process(s.req(pb::DeleteProcessRequest {
        container_id: c.clone(),
        exec_id: "ghost".into(),
    })));
    expect(
        "deleting an unknown exec",
        r.map(drop),
        tonic::Code::NotFound,
        &[&format!("{c:?}"), "\"ghost\"", "deleting exec"],
    );
    s.kill(&c, 9, false);
    assert_eq!(s.wait(&c, ""), 137);
    // A container whose init has exited is neither paused, resumed nor started: whatever
    // the runtime answers, the supervisor says so with its kind.
    let r = s.block_on(client.pause(s.req(pb::PauseTaskRequest {
        container_id: c.clone(),
    })));
    expect(
        "pausing a stopped task",
        r.map(drop),
        tonic::Code::FailedPrecondition,
        &[&format!("{c:?}"), "pausing", "exited"],
    );
    let r = s.block_on(client.start(s.req(pb::StartRequest {
        container_id: c.clone(),
        exec_id: String::new(),
    })));
    expect(
        "starting a stopped task",
        r.map(drop),
        tonic::Code::FailedPrecondition,
        &[&format!("{c:?}"), "starting"],
    );
    assert_eq!(s.remove(&c), 137);
}

/// Pause freezes every process (a counter stops), Resume lets it go on.
fn pause_freezes_and_resume_continues(rt: Rt) {
    let s = Stack::start(rt);
    let c = id("pause", rt);
    s.run(
        &c,
        &["sh", "-c", "while :; do echo x >> /tmp/counter; done"],
        &none(),
    );
    let counter = s.rootfs(&c).join("tmp/counter");
    let size = || std::fs::metadata(&counter).map_or(0, |m| m.len());
    s.until("the counter to start", || size() > 0);
    s.pause(&c);
    assert_eq!(s.status(&c), Status::Paused);
    let frozen = size();
    // The counter writes thousands of lines a second when it runs.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(size(), frozen, "the counter advanced while paused");
    assert!(!s.pids(&c).is_empty());
    s.resume(&c);
    assert_eq!(s.status(&c), Status::Running);
    s.until("the counter to go on after resume", || size() > frozen);
    s.kill_and_remove(&c);
}

/// A pids limit caps a fork bomb: forks fail, the container never holds more processes.
fn pids_limit_caps_a_fork_bomb(rt: Rt) {
    const LIMIT: usize = 16;
    let s = Stack::start(rt);
    let c = id("pids", rt);
    s.run(&c, &["sleep", "1000"], &json!({"pids": {"limit": LIMIT}}));
    let status = s.exec(
        &c,
        "bomb",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 64 ]; do sleep 1000 & i=$((i+1)); done; echo spawned=$i",
        ],
    );
    let out = s.output(&format!("{c}-bomb"));
    assert!(!out.contains("spawned=64"), "no fork failed: {out}");
    assert_ne!(status, 0, "{out}");
    let err = s.wait_output_of(&s.err_path(&format!("{c}-bomb")), "fork");
    assert!(err.contains("can't fork"), "{err}");
    let pids = s.pids(&c);
    assert!(
        pids.len() <= LIMIT && pids.len() >= LIMIT / 2,
        "{} processes under a limit of {LIMIT}",
        pids.len()
    );
    s.kill_and_remove(&c);
}

/// strata-tasks killed with SIGKILL and restarted: every container is found again; one that
/// exited meanwhile reports its true exit code, a running one can still be signalled.
fn restart_of_the_tasks_service_loses_nothing(rt: Rt) {
    let mut s = Stack::start(rt);
    let (a, b) = (id("live", rt), id("ends", rt));
    s.run(
        &a,
        &[
            "sh",
            "-c",
            "trap 'exit 5' TERM; echo ready; sleep 1000 & wait",
        ],
        &none(),
    );
    s.run(
        &b,
        &[
            "sh",
            "-c",
            "echo ready; while [ ! -e /go ]; do sleep 0.05; done; exit 6",
        ],
        &none(),
    );
    s.wait_output(&a, "ready\n");
    s.wait_output(&b, "ready\n");

    s.tasks.kill9();
    // b ends while nobody serves the Tasks API; its supervisor records the exit.
    std::fs::write(s.rootfs(&b).join("go"), b"").unwrap();
    let exit_file = s.task_dir(&b).join("exit");
    s.until("b's exit to be recorded", || exit_file.exists());
    s.tasks.restart();
    s.reconnect();

    let tasks = s.list();
    let find = |id: &str| tasks.iter().find(|t| t.id == id).cloned();
    let ta = find(&a).unwrap_or_else(|| panic!("{a} lost: {tasks:?}"));
    let tb = find(&b).unwrap_or_else(|| panic!("{b} lost: {tasks:?}"));
    assert_eq!(Status::try_from(ta.status).unwrap(), Status::Running);
    assert_eq!(Status::try_from(tb.status).unwrap(), Status::Stopped);
    assert_eq!(tb.exit_status, 6);
    assert_eq!(s.wait(&b, ""), 6);
    s.kill(&a, SIGTERM, false);
    assert_eq!(s.wait(&a, ""), 5);
    assert_eq!(s.remove(&a), 5);
    assert_eq!(s.remove(&b), 6);
    assert!(s.list().is_empty());
}

/// Tasks.Metrics: the cgroup's numbers as containerd's cgroups types, over gRPC and as
/// Debian's ctr prints them.
fn metrics_report_the_cgroup(rt: Rt) {
    const LIMIT: u64 = 20;
    let s = Stack::start(rt);
    let (c, other) = (id("metrics", rt), id("other", rt));
    s.run(
        &c,
        &[
            "sh",
            "-c",
            "x=0123456789; x=$x$x$x$x; sleep 1000 & echo ready; wait",
        ],
        &json!({"memory": {"limit": 32 * MIB}, "pids": {"limit": LIMIT}}),
    );
    s.run(&other, &["sleep", "1000"], &none());
    s.wait_output(&c, "ready\n");

    let got = s.metrics(&[&format!("id=={c}")]);
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m.id, c);
    assert!(m.timestamp.is_some());
    let data = m.data.clone().unwrap();
    assert_cgroup_numbers(&s, &c, &data.type_url, &data.value, LIMIT);
    // No filter: every running task; a filter naming nothing: none.
    let all = s.metrics(&[]);
    let mut ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = [c.as_str(), other.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(s.metrics(&["id==nobody"]).is_empty());

    // ctr decodes the Any by its type URL and prints the memory and pids numbers.
    let ctr = || {
        let mut cmd = Command::new(tool("ctr", "containerd"));
        cmd.arg("--address")
            .arg(&s.tasks.socket)
            .args(["-n", &s.ns]);
        cmd
    };
    let out = ok(ctr().args(["tasks", "metrics", &c]), None);
    let value = |name: &str| -> Option<u64> {
        out.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name)).then(|| f.next()?.parse().ok())?
        })
    };
    assert!(out.contains(&c), "{out}");
    if stack::host_is_unified() {
        assert_eq!(value("memory.usage_limit"), Some(32 * MIB), "{out}");
    } else {
        assert_eq!(value("memory.limit_in_bytes"), Some(32 * MIB), "{out}");
        assert!(
            value("memory.usage_in_bytes").is_some_and(|u| u > 0),
            "{out}"
        );
    }
    assert_eq!(value("pids.limit"), Some(LIMIT), "{out}");
    assert!(
        value("pids.current").is_some_and(|p| (1..=LIMIT).contains(&p)),
        "{out}"
    );
    let json_out = ok(
        ctr().args(["tasks", "metrics", "--format", "json", &c]),
        None,
    );
    assert!(json_out.contains("\"limit\": 20"), "{json_out}");

    // A stopped task has no metrics.
    s.kill(&other, 9, true);
    assert_eq!(s.wait(&other, ""), 137);
    assert!(s.metrics(&[&format!("id=={other}")]).is_empty());
    let out = run(ctr().args(["tasks", "metrics", &other]), None);
    assert!(!out.status.success());
    assert_eq!(s.remove(&other), 137);
    s.kill_and_remove(&c);
}

/// The metrics of task `c` (a memory limit of 32 MiB, `limit` pids), decoded from the Any
/// (`type_url`, `value`) as the host's cgroup version's containerd message.
fn assert_cgroup_numbers(s: &Stack, c: &str, type_url: &str, value: &[u8], limit: u64) {
    if stack::host_is_unified() {
        assert_eq!(type_url, "io.containerd.cgroups.v2.Metrics");
        let d: v2::Metrics = prost::Message::decode(value).unwrap();
        let mem = d.memory.unwrap();
        assert_eq!(mem.usage_limit, 32 * MIB);
        assert!(mem.usage > 0);
        let pids = d.pids.unwrap();
        assert_eq!(pids.limit, limit);
        assert!(pids.current >= 2 && pids.current <= limit, "{pids:?}");
        assert!(d.cpu.unwrap().usage_usec > 0);
    } else {
        assert_eq!(type_url, "io.containerd.cgroups.v1.Metrics");
        let d: v1::Metrics = prost::Message::decode(value).unwrap();
        let mem = d.memory.unwrap();
        let usage = mem.usage.unwrap();
        assert_eq!(usage.limit, 32 * MIB);
        assert!(usage.usage > 0 && usage.max >= usage.usage, "{usage:?}");
        assert!(mem.rss + mem.cache > 0, "{mem:?}");
        let pids = d.pids.unwrap();
        assert_eq!(pids.limit, limit);
        // sh and sleep.
        assert_eq!(pids.current, 2, "{pids:?}");
        let cpu = d.cpu.unwrap().usage.unwrap();
        assert!(cpu.total > 0 && !cpu.per_cpu.is_empty(), "{cpu:?}");
        assert!(d.blkio.is_some());
        // runc and crun place the task in a hugetlb cgroup when that hierarchy is mounted
        // (crun's workaround mounts it); the built-in runtime leaves it at the root.
        let pid = s.get(c).pid;
        if hugetlb_placed(pid) {
            assert!(!d.hugetlb.is_empty(), "no hugetlb numbers: {:?}", d.hugetlb);
            assert!(
                d.hugetlb
                    .iter()
                    .all(|h| h.usage == 0 && !h.pagesize.is_empty())
            );
        } else {
            assert!(d.hugetlb.is_empty(), "{:?}", d.hugetlb);
        }
    }
}

/// Whether process `pid` sits below the root of a mounted v1 hugetlb hierarchy.
fn hugetlb_placed(pid: u32) -> bool {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup ") && l.split(',').any(|o| o == "hugetlb"));
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    mounted
        && membership.lines().any(|l| {
            let mut f = l.splitn(3, ':');
            f.nth(1) == Some("hugetlb") && f.next().is_some_and(|p| p != "/")
        })
}

/// `n` calls made by `make`, all in flight at once; their results in order.
fn at_once<T, F>(s: &Stack, n: usize, make: impl Fn() -> F) -> Vec<Result<T, tonic::Status>>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, tonic::Status>> + Send + 'static,
{
    s.block_on(async {
        let calls: Vec<_> = (0..n).map(|_| tokio::spawn(make())).collect();
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    })
}

/// Of concurrent Deletes of one stopped task, one deletes it and reports its exit status, the
/// others find no task; of concurrent Creates of one container's task, one creates it and the
/// others find that it exists. The tasks service decides, whatever the runtime.
#[test]
fn of_concurrent_deletes_and_creates_of_a_task_one_wins() {
    let s = Stack::start(Rt::Builtin);
    let c = id("race", Rt::Builtin);
    s.run(&c, &["sh", "-c", "exit 3"], &none());
    assert_eq!(s.wait(&c, ""), 3);
    let codes = |results: Vec<Result<u32, tonic::Status>>| {
        let mut won = Vec::new();
        let mut lost = Vec::new();
        for r in results {
            match r {
                Ok(v) => won.push(v),
                Err(e) => lost.push((e.code(), e.message().to_owned())),
            }
        }
        (won, lost)
    };
    let deletes = at_once(&s, 4, || {
        let mut client = s.client.clone();
        let req = s.req(pb::DeleteTaskRequest {
            container_id: c.clone(),
        });
        async move { client.delete(req).await.map(|r| r.into_inner().exit_status) }
    });
    let (won, lost) = codes(deletes);
    assert_eq!(won, vec![3], "deletes: {won:?} won, {lost:?} lost");
    assert!(
        lost.iter().all(|(code, _)| *code == tonic::Code::NotFound),
        "{lost:?}"
    );
    assert!(!s.task_dir(&c).exists(), "the task's directory stayed");

    let creates = at_once(&s, 4, || {
        let mut client = s.client.clone();
        let req = s.req(pb::CreateTaskRequest {
            container_id: c.clone(),
            stdout: s.out_path(&c).display().to_string(),
            stderr: s.err_path(&c).display().to_string(),
            ..Default::default()
        });
        async move { client.create(req).await.map(|r| r.into_inner().pid) }
    });
    let (won, lost) = codes(creates);
    assert_eq!(won.len(), 1, "creates: {won:?} won, {lost:?} lost");
    assert!(
        lost.iter()
            .all(|(code, _)| *code == tonic::Code::AlreadyExists),
        "{lost:?}"
    );
    s.start_task(&c);
    assert_eq!(s.wait(&c, ""), 3);
    assert_eq!(s.remove(&c), 3);
}

macro_rules! per_runtime {
    ($($check:ident),* $(,)?) => {
        mod builtin {
            $( #[test] fn $check() { super::$check(super::Rt::Builtin) } )*
        }
        mod runc {
            $( #[test] fn $check() { super::$check(super::Rt::Runc) } )*
        }
        mod crun {
            $( #[test] fn $check() { super::$check(super::Rt::Crun) } )*
        }
    };
}

per_runtime!(
    errors_carry_their_kind_and_subject,
    pid_one_hostname_and_private_processes,
    writes_stay_in_the_containers_layer,
    exit_codes_propagate,
    memory_limit_kills_a_hog,
    kill_delivers_signals,
    exec_joins_the_namespaces,
    pause_freezes_and_resume_continues,
    pids_limit_caps_a_fork_bomb,
    restart_of_the_tasks_service_loses_nothing,
    metrics_report_the_cgroup,
);
