//! glibc's tunables (`strata_grpc::tunables`): the tasks service executed itself again with
//! them in force, and the supervisors it starts (and the containers they run) inherit none of
//! it: their environment is the one the service was started with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/runtime_stack.rs"]
mod stack;

use serde_json::json;
use stack::{Rt, Stack};

/// A process's environment as the kernel keeps it from its last `execve`.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

fn var<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap()
}

#[test]
fn the_service_runs_with_the_tunables_and_its_supervisors_inherit_none() {
    let s = Stack::start(Rt::Builtin);
    let service = environ(s.tasks.pid());
    // glibc rewrites the variable's text as it reads it (it kept only the first of the two
    // here), so what shows is that the service was executed again with it, and marked so.
    let tunables = var(&service, "GLIBC_TUNABLES").unwrap_or_else(|| {
        panic!("strata-tasks was not executed again with GLIBC_TUNABLES: {service:?}")
    });
    assert!(
        tunables.contains(strata_grpc::tunables::TUNABLES[0].0),
        "{tunables:?}"
    );
    // Executed again under its own name: `ps` and `pgrep` still find it as strata-tasks.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", s.tasks.pid())).unwrap();
    assert_eq!(comm.trim(), "strata-tasks");
    let ours = std::env::var("GLIBC_TUNABLES").ok();
    assert_eq!(
        var(&service, "STRATA_GLIBC_TUNABLES_WAS"),
        Some(ours.as_deref().unwrap_or("")),
        "the second execution is marked with the first one's GLIBC_TUNABLES"
    );

    let c = format!("tunables-{}", std::process::id());
    let init = s.create(&c, &["sleep", "1000"], &json!({}));
    let supervisor = parent_of(init);
    let comm = std::fs::read_to_string(format!("/proc/{supervisor}/comm")).unwrap();
    assert_eq!(comm.trim(), "strata-shim");
    for (who, pid) in [("the supervisor", supervisor), ("the container", init)] {
        let env = environ(pid);
        assert_eq!(
            var(&env, "GLIBC_TUNABLES"),
            ours.as_deref(),
            "{who} inherited the service's tunables: {env:?}"
        );
        assert_eq!(
            var(&env, "STRATA_GLIBC_TUNABLES_WAS"),
            None,
            "{who}: {env:?}"
        );
    }
    s.kill_and_remove(&c);
}
