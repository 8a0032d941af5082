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
const JOINED_CONTROLLERS: &[&str] = &[
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
    Ok(v1_hierarchies(&text))
}

/// The v1 hierarchies of `mountinfo` with a controller a container joins.
fn v1_hierarchies(mountinfo: &str) -> Vec<(PathBuf, Vec<String>)> {
    cgroup_mounts(mountinfo)
        .into_iter()
        .filter(|m| !m.v2)
        .filter_map(|m| {
            let controllers = m
                .options
                .into_iter()
                .filter(|o| JOINED_CONTROLLERS.contains(&o.as_str()))
                .collect::<Vec<_>>();
            (!controllers.is_empty()).then_some((m.point, controllers))
        })
        .collect()
}

/// One cgroup mount of `/proc/self/mountinfo`.
pub(crate) struct CgroupMount {
    /// The directory of the hierarchy shown at the mount point (`/` unless bind-mounted).
    pub(crate) root: String,
    /// Where it is mounted.
    pub(crate) point: PathBuf,
    /// v1: the super options (controllers among them); empty for cgroup2.
    pub(crate) options: Vec<String>,
    /// A cgroup2 mount (else a v1 hierarchy).
    pub(crate) v2: bool,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.bytes().all(|d| (b'0'..=b'7').contains(&d))
            && let Ok(b) = u8::from_str_radix(digits, 8)
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts of `mountinfo` (the text of a `/proc/<pid>/mountinfo`), in its order.
pub(crate) fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (pre.get(3), pre.get(4), post.first()) else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(CgroupMount {
            root: unescape(root),
            point: PathBuf::from(unescape(point)),
            options: post
                .get(2)
                .map(|o| o.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            v2,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape("/plain\\"), "/plain\\");
    }

    #[test]
    fn v1_hierarchies_are_the_cgroup_mounts_with_controllers_to_join() {
        let mountinfo = "\
25 1 0:22 / /sys rw - sysfs sysfs rw
35 28 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
43 28 0:38 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
44 28 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
45 28 0:40 / /mnt/with\\040space rw,relatime - cgroup cgroup rw,hugetlb,memory
";
        assert_eq!(
            v1_hierarchies(mountinfo),
            vec![
                (
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                    vec!["cpu".to_owned(), "cpuacct".to_owned()]
                ),
                (PathBuf::from("/mnt/with space"), vec!["memory".to_owned()]),
            ]
        );
    }
}
