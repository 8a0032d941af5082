//! Finding a process's cgroup: which cgroup it is in per hierarchy (`/proc/<pid>/cgroup`) and
//! where each hierarchy is mounted (`/proc/self/mountinfo`).

use std::path::PathBuf;

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::hierarchy::{CgroupMount, cgroup_mounts};

/// The v1 controllers whose statistics are read. A task sitting in a hierarchy's root was not
/// placed there by its runtime (the root's numbers are the whole host's), so that controller is
/// left out.
const READ_CONTROLLERS: &[&str] = &["pids", "cpu", "cpuacct", "memory", "blkio", "hugetlb"];

/// The directory of cgroup `path` under `mount`, if the mount shows it.
fn dir_under(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let rel = below(path, &mount.root)?;
    Some(if rel.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(rel)
    })
}

/// Where the cgroup described by `membership` (a `/proc/<pid>/cgroup`) lives, given this
/// process's `mountinfo`: its v1 controllers when any is mounted (legacy and hybrid hosts),
/// else its unified directory.
pub fn locate(membership: &str, mountinfo: &str) -> Option<Cgroup> {
    let mounts = cgroup_mounts(mountinfo);
    let mut v1_dirs: Vec<(String, PathBuf)> = Vec::new();
    let mut unified = None;
    let mut any_v1_mounted = false;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            unified = Some(path);
            continue;
        }
        for c in controllers.split(',') {
            if !READ_CONTROLLERS.contains(&c) {
                continue;
            }
            let found = mounts
                .iter()
                .filter(|m| !m.v2 && m.options.iter().any(|o| o == c))
                .find_map(|m| dir_under(m, path));
            if let Some(dir) = found {
                any_v1_mounted = true;
                if path != "/" && !v1_dirs.iter().any(|(n, _)| n == c) {
                    v1_dirs.push((c.to_owned(), dir));
                }
            }
        }
    }
    if any_v1_mounted {
        return (!v1_dirs.is_empty()).then_some(Cgroup::V1(v1_dirs));
    }
    let path = unified?;
    mounts
        .iter()
        .filter(|m| m.v2)
        .find_map(|m| dir_under(m, path))
        .map(Cgroup::V2)
}

/// Where the cgroup process `pid` is in lives on this host (read from `/proc/<pid>/cgroup` and
/// this process's `/proc/self/mountinfo`).
pub fn locate_pid(pid: u32) -> Result<Cgroup> {
    let membership =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|_| Error::Gone {
            what: format!("process {pid}"),
        })?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| Error::io("reading", "/proc/self/mountinfo", source))?;
    locate(&membership, &mountinfo).ok_or(Error::NoCgroup { pid })
}

/// The `cgroup.procs` of the cgroup this process is in, in any mounted hierarchy (a write to any
/// takes the kernel's global attach lock, so any will do): the unified one if mounted, else the
/// first v1 one found; `None` if there is none this process can see.
pub fn own_procs() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_own_procs(&cgroups, &mountinfo).filter(|p| p.exists())
}

/// `cgroups` is `/proc/self/cgroup` (`id:controllers:path` lines), `mountinfo` is
/// `/proc/self/mountinfo`.
fn find_own_procs(cgroups: &str, mountinfo: &str) -> Option<PathBuf> {
    let mounts = cgroup_mounts(mountinfo);
    let mut v1 = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let found = if id == "0" && controllers.is_empty() {
            mounts.iter().find(|m| m.v2)
        } else {
            let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
            mounts.iter().find(|m| {
                !m.v2
                    && !wanted.is_empty()
                    && wanted.iter().all(|c| m.options.iter().any(|o| o == c))
            })
        };
        let Some(mount) = found else {
            continue;
        };
        let Some(dir) = dir_under(mount, path) else {
            continue;
        };
        let procs = dir.join("cgroup.procs");
        if mount.v2 {
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// This test host's layout: v1 controllers, name=systemd, cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
35 28 0:30 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
36 28 0:31 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
38 28 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
42 28 0:37 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
43 28 0:38 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
44 28 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
45 28 0:40 /sub /mnt/with\\040space rw,relatime - cgroup cgroup rw,blkio
";

    #[test]
    fn v1_controllers_are_found_under_their_mounts() {
        let membership = "\
10:hugetlb:/
9:name=systemd:/strata/ns/c1
8:pids:/strata/ns/c1
7:blkio:/sub/strata/ns/c1
4:memory:/strata/ns/c1
2:cpuacct:/strata/ns/c1
1:cpu:/strata/ns/c1
0::/strata/ns/c1
";
        let got = locate(membership, HYBRID).expect("located");
        assert_eq!(
            got,
            Cgroup::V1(vec![
                ("pids".into(), "/sys/fs/cgroup/pids/strata/ns/c1".into()),
                ("blkio".into(), "/mnt/with space/strata/ns/c1".into()),
                ("memory".into(), "/sys/fs/cgroup/memory/strata/ns/c1".into()),
                (
                    "cpuacct".into(),
                    "/sys/fs/cgroup/cpuacct/strata/ns/c1".into()
                ),
                ("cpu".into(), "/sys/fs/cgroup/cpu/strata/ns/c1".into()),
            ])
        );
        // A process left in every hierarchy's root was placed nowhere.
        assert_eq!(locate("4:memory:/\n0::/\n", HYBRID), None);
    }

    #[test]
    fn unified_hosts_use_the_cgroup2_mount() {
        let unified = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            locate("0::/strata/ns/c1\n", unified),
            Some(Cgroup::V2("/sys/fs/cgroup/strata/ns/c1".into()))
        );
        assert_eq!(locate("0::/strata/ns/c1\n", ""), None);
    }

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
