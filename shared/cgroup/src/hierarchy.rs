//! The host's cgroup layout: cgroup v1 (one hierarchy per controller), v2 (unified, at
//! `/sys/fs/cgroup`) or hybrid (v1 controllers beside a controller-less cgroup2 mount at
//! `/sys/fs/cgroup/unified`).
//!
//! The host layout decides: if `/sys/fs/cgroup` itself is a cgroup2 mount a container gets a
//! v2 cgroup; otherwise it joins the v1 controllers found in `/proc/self/mountinfo` (a hybrid
//! host's `/sys/fs/cgroup/unified` is ignored, it carries no controllers we need, unless
//! `STRATA_CGROUP2_ROOT` names it: then containers get a v2 cgroup there).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the host mounts its cgroup file systems.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// v1 controllers the container joins when the host has them mounted.
const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices",
];

/// Environment variable naming a cgroup2 mount the containers' cgroups are made in instead of
/// the v1 hierarchies, e.g. a hybrid host's `/sys/fs/cgroup/unified` (its controllers stay
/// with v1 there: such cgroups have device rules, freezing and process lists, not limits).
const CGROUP2_ROOT_ENV: &str = "STRATA_CGROUP2_ROOT";

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Whether `/sys/fs/cgroup` is a pure cgroup v2 mount.
pub fn host_is_v2() -> bool {
    is_cgroup2(Path::new(CGROUP_ROOT))
}

/// The cgroup2 mount containers get their cgroups in, if any: `STRATA_CGROUP2_ROOT` when set,
/// else `/sys/fs/cgroup` on a pure v2 host.
pub(crate) fn v2_root() -> Result<Option<PathBuf>> {
    if let Some(root) = std::env::var_os(CGROUP2_ROOT_ENV).filter(|r| !r.is_empty()) {
        let root = PathBuf::from(root);
        if !is_cgroup2(&root) {
            return Err(Error::Unsupported(format!(
                "{CGROUP2_ROOT_ENV}={}: not a cgroup2 mount",
                root.display()
            )));
        }
        return Ok(Some(root));
    }
    Ok(host_is_v2().then(|| PathBuf::from(CGROUP_ROOT)))
}

/// The v1 hierarchies from `/proc/self/mountinfo`: (mount point, controllers of the mount).
pub fn v1_mounts() -> Result<Vec<(PathBuf, Vec<String>)>> {
    let info = "/proc/self/mountinfo";
    let text = fs::read_to_string(info).map_err(|e| Error::io("read", info, e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        if post.next() != Some("cgroup") {
            continue;
        }
        let opts = post.nth(1).unwrap_or("");
        let Some(mountpoint) = pre.split(' ').nth(4) else {
            continue;
        };
        let controllers = opts
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o))
            .map(str::to_string)
            .collect::<Vec<_>>();
        if !controllers.is_empty() {
            out.push((PathBuf::from(mountpoint), controllers));
        }
    }
    Ok(out)
}
