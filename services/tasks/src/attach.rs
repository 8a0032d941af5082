//! Starting the kernel's wait for a cgroup attach ahead of time.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`, v1 or v2) takes the kernel's
//! global `cgroup_threadgroup_rwsem` for writing. Unless the host mounts cgroups with
//! `favordynmods`, taking it first waits for a full RCU grace period (`rcu_sync_enter`: 10 to
//! 15 ms on the 2-core test VMs), and once the writer is done the fast state lasts for about
//! one more grace period; a writer that arrives while a grace period is already under way
//! shares it. A container's supervisor attaches the container's init as soon as it is forked,
//! but that is late in a container start: the tasks service has by then mounted the root file
//! system, written the bundle and spawned the supervisor.
//!
//! [`prime`] therefore starts that grace period as early as the service knows a task is
//! coming (a container record created, a task or exec requested): on a blocking thread it
//! writes its own pid into the `cgroup.procs` of the cgroup it is already in, which moves
//! nothing but goes through the same lock. The attach that follows then waits only for what is
//! left of the period, or not at all. It is best effort: any failure (no cgroup mounted, no
//! permission) only means the attach waits as it would have.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set while a priming write is under way: a second one would only wait on the same period.
static BUSY: AtomicBool = AtomicBool::new(false);
/// This process's own `cgroup.procs`, found once (`None`: none we can write).
static OWN_PROCS: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Starts the grace period the next cgroup attach would wait for, in the background.
pub fn prime() {
    let Some(path) = OWN_PROCS.get_or_init(own_procs).as_ref() else {
        return;
    };
    if BUSY.swap(true, Ordering::AcqRel) {
        return;
    }
    let path = path.clone();
    let spawned = std::thread::Builder::new()
        .name("cgroup-prime".into())
        .spawn(move || {
            if let Err(e) = std::fs::write(&path, std::process::id().to_string()) {
                tracing::debug!(path = %path.display(), error = %e, "priming the cgroup attach");
            }
            BUSY.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        BUSY.store(false, Ordering::Release);
    }
}

/// The `cgroup.procs` of the cgroup this process is in, in any mounted hierarchy (the lock is
/// global, so any will do): the unified one if mounted, else the first v1 one found.
fn own_procs() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_own_procs(&cgroups, &mountinfo).filter(|p| p.exists())
}

/// `cgroups` is `/proc/self/cgroup` (`id:controllers:path` lines), `mountinfo` is
/// `/proc/self/mountinfo`.
fn find_own_procs(cgroups: &str, mountinfo: &str) -> Option<PathBuf> {
    // (type, mount root, mount point, super options) of every cgroup mount.
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let typ = post.next()?;
            let opts = post.nth(1).unwrap_or("");
            let (root, point) = (*pre.get(3)?, *pre.get(4)?);
            (typ == "cgroup" || typ == "cgroup2").then_some((typ, root, point, opts))
        })
        .collect();
    let mut v1 = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let found = if id == "0" && controllers.is_empty() {
            mounts.iter().find(|m| m.0 == "cgroup2")
        } else {
            let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
            mounts.iter().find(|m| {
                m.0 == "cgroup"
                    && !wanted.is_empty()
                    && wanted.iter().all(|c| m.3.split(',').any(|o| o == *c))
            })
        };
        let Some((typ, root, point, _)) = found else {
            continue;
        };
        let Some(rel) = below(path, root) else {
            continue;
        };
        let procs = Path::new(point).join(rel).join("cgroup.procs");
        if *typ == "cgroup2" {
            return Some(procs);
        }
        v1.get_or_insert(procs);
    }
    v1
}

/// `path` relative to a mount's `root` (both absolute), if it lies below it.
fn below<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(root.trim_end_matches('/'))?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(rest.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
35 31 0:30 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
40 31 0:35 / /sys/fs/cgroup/unified rw,relatime shared:17 - cgroup2 cgroup2 rw
";

    #[test]
    fn unified_hierarchy_first() {
        let cg =
            "4:memory:/system.slice/strata-tasks.service\n0::/system.slice/strata-tasks.service\n";
        assert_eq!(
            find_own_procs(cg, HYBRID_MOUNTS),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/strata-tasks.service/cgroup.procs"
            ))
        );
    }

    #[test]
    fn v1_when_no_unified_mount() {
        let mounts = HYBRID_MOUNTS
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        let cg = "3:cpu,cpuacct:/a\n4:memory:/b\n0::/c\n";
        assert_eq!(
            find_own_procs(cg, &mounts),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a/cgroup.procs"))
        );
    }

    #[test]
    fn pure_v2_and_mount_roots() {
        let mounts = "30 23 0:26 /ns /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_own_procs("0::/ns/x\n", mounts),
            Some(PathBuf::from("/sys/fs/cgroup/x/cgroup.procs"))
        );
        assert_eq!(find_own_procs("0::/other\n", mounts), None);
        assert_eq!(find_own_procs("0::/\n", ""), None);
        assert_eq!(below("/nsx/y", "/ns"), None);
        assert_eq!(below("/", "/"), Some(""));
    }
}
