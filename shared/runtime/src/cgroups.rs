//! Container cgroups on cgroup v1 (one hierarchy per controller) and v2 (unified).
//!
//! The host layout decides: if `/sys/fs/cgroup` itself is a cgroup2 mount the container gets a
//! v2 cgroup; otherwise it joins the v1 controllers found in `/proc/self/mountinfo` (a hybrid
//! host's `/sys/fs/cgroup/unified` is ignored, it carries no controllers we need, unless
//! `STRATA_CGROUP2_ROOT` names it: then containers get a v2 cgroup there).
//!
//! Device rules are enforced on both: through the v1 `devices` controller, or on v2 by an eBPF
//! program attached to the container's cgroup ([`crate::devices_bpf`]).

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::devices_bpf::{self, Rule};
use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// v1 controllers the container joins when the host has them mounted.
const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices",
];
/// Devices every container may use, as runc allows them (v1 device rules).
pub(crate) const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The container's cgroup, on whichever cgroup version the host runs.
#[derive(Debug, Clone)]
pub(crate) enum Cgroup {
    /// One directory per mounted v1 controller: (controller, directory).
    V1(Vec<(String, PathBuf)>),
    /// The cgroup's directory in the unified hierarchy.
    V2(PathBuf),
}

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
pub(crate) fn host_is_v2() -> bool {
    is_cgroup2(Path::new(CGROUP_ROOT))
}

/// The cgroup2 mount containers get their cgroups in, if any: `STRATA_CGROUP2_ROOT` when set,
/// else `/sys/fs/cgroup` on a pure v2 host.
fn v2_root() -> Result<Option<PathBuf>> {
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
pub(crate) fn v1_mounts() -> Result<Vec<(PathBuf, Vec<String>)>> {
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

/// `linux.cgroupsPath` made relative, refusing `..` and systemd `slice:prefix:name` paths.
fn relative(cgroups_path: &Path) -> Result<PathBuf> {
    let s = cgroups_path.to_string_lossy();
    if !s.starts_with('/') && s.contains(':') {
        return Err(Error::Unsupported(format!(
            "systemd cgroups path {s:?}: use an absolute cgroupfs path"
        )));
    }
    let mut rel = PathBuf::new();
    for c in cgroups_path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "cgroups path {s:?}: must not contain '..'"
                )));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(Error::InvalidSpec(format!(
            "cgroups path {s:?}: must name a cgroup below the root"
        )));
    }
    Ok(rel)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::io("write", path, e))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

impl Cgroup {
    /// The cgroup at `cgroups_path` (relative to each hierarchy's root); nothing is created.
    pub(crate) fn open(cgroups_path: &Path) -> Result<Cgroup> {
        let rel = relative(cgroups_path)?;
        if let Some(root) = v2_root()? {
            return Ok(Cgroup::V2(root.join(rel)));
        }
        let mut dirs = Vec::new();
        for (mountpoint, controllers) in v1_mounts()? {
            for c in controllers {
                if !dirs.iter().any(|(name, _)| *name == c) {
                    dirs.push((c, mountpoint.join(&rel)));
                }
            }
        }
        Ok(Cgroup::V1(dirs))
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(dirs) => dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
            Cgroup::V2(d) => Some(d),
        }
    }

    /// Creates the cgroup directories (and, on v2, enables controllers in the ancestors).
    pub(crate) fn create(&self) -> Result<()> {
        match self {
            Cgroup::V1(dirs) => {
                for (controller, dir) in dirs {
                    if controller == "cpuset" {
                        create_cpuset(dir)?;
                    } else {
                        fs::create_dir_all(dir).map_err(|e| Error::io("create cgroup", dir, e))?;
                    }
                }
                Ok(())
            }
            Cgroup::V2(dir) => {
                let root = v2_root()?.unwrap_or_else(|| PathBuf::from(CGROUP_ROOT));
                let rel = dir.strip_prefix(&root).unwrap_or(dir);
                let mut cur = root.to_path_buf();
                for c in rel.components() {
                    let available = read(&cur.join("cgroup.controllers")).unwrap_or_default();
                    let enable = available
                        .split_whitespace()
                        .filter(|c| ["cpu", "cpuset", "memory", "pids", "io"].contains(c))
                        .map(|c| format!("+{c}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    if !enable.is_empty() {
                        // Best effort: a parent with processes refuses (no internal processes).
                        if let Err(e) = write(&cur.join("cgroup.subtree_control"), &enable) {
                            tracing::warn!("{e}");
                        }
                    }
                    cur.push(c);
                    match fs::create_dir(&cur) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io("create cgroup", &cur, e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Moves `pid` into the cgroup (every v1 controller, or the v2 directory).
    pub(crate) fn add(&self, pid: Pid) -> Result<()> {
        let pid = pid.to_string();
        match self {
            Cgroup::V1(dirs) => dirs
                .iter()
                .try_for_each(|(_, d)| write(&d.join("cgroup.procs"), &pid)),
            Cgroup::V2(d) => write(&d.join("cgroup.procs"), &pid),
        }
    }

    /// Applies the resource limits the runtime supports (memory, swap, cpu, cpuset, pids and,
    /// on v1, device rules; v2 `unified` keys).
    pub(crate) fn apply(&self, r: &LinuxResources) -> Result<()> {
        match self {
            Cgroup::V1(_) => self.apply_v1(r),
            Cgroup::V2(d) => apply_v2(d, r),
        }
    }

    fn apply_v1(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory()
            && let Some(dir) = self.dir("memory")
        {
            if let Some(limit) = m.limit() {
                let limit_file = dir.join("memory.limit_in_bytes");
                let swap_file = dir.join("memory.memsw.limit_in_bytes");
                match m.swap() {
                    Some(swap) => {
                        if !swap_file.exists() {
                            return Err(Error::Unsupported(format!(
                                "memory swap limit: {} is missing (swap accounting is off)",
                                swap_file.display()
                            )));
                        }
                        // memsw must stay >= limit: order the writes by direction.
                        if write(&limit_file, &limit.to_string()).is_err() {
                            write(&swap_file, &swap.to_string())?;
                            write(&limit_file, &limit.to_string())?;
                        } else {
                            write(&swap_file, &swap.to_string())?;
                        }
                    }
                    None => write(&limit_file, &limit.to_string())?,
                }
            }
            if let Some(res) = m.reservation() {
                write(&dir.join("memory.soft_limit_in_bytes"), &res.to_string())?;
            }
            if let Some(s) = m.swappiness()
                && s <= 100
            {
                write(&dir.join("memory.swappiness"), &s.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                write(&dir.join("memory.oom_control"), "1")?;
            }
        }
        if let Some(cpu) = r.cpu() {
            if let Some(dir) = self.dir("cpu") {
                if let Some(shares) = cpu.shares() {
                    write(&dir.join("cpu.shares"), &shares.to_string())?;
                }
                if let Some(period) = cpu.period() {
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                }
                if let Some(quota) = cpu.quota() {
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            if let Some(dir) = self.dir("cpuset") {
                if let Some(cpus) = cpu.cpus() {
                    write(&dir.join("cpuset.cpus"), cpus)?;
                }
                if let Some(mems) = cpu.mems() {
                    write(&dir.join("cpuset.mems"), mems)?;
                }
            }
        }
        if let Some(p) = r.pids()
            && let Some(dir) = self.dir("pids")
        {
            write(&dir.join("pids.max"), &pids_max(p.limit()))?;
        }
        if let Some(rules) = r.devices()
            && let Some(dir) = self.dir("devices")
        {
            for rule in rules {
                let typ = rule.typ().map(|t| t.as_str().to_string());
                let typ = typ.as_deref().unwrap_or("a");
                let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
                let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
                let line = if typ == "a" {
                    "a".to_string()
                } else {
                    format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()))
                };
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(&dir.join(file), &line)?;
            }
            for rule in DEFAULT_DEVICE_RULES {
                write(&dir.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    /// Freezes (`true`) or thaws (`false`) every process of the cgroup and waits until the
    /// kernel reports the new state.
    pub(crate) fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self {
            Cgroup::V1(_) => {
                let dir = self
                    .dir("freezer")
                    .ok_or_else(|| Error::Unsupported("freezer: no v1 freezer hierarchy".into()))?;
                let file = dir.join("freezer.state");
                let want = if frozen { "FROZEN" } else { "THAWED" };
                for _ in 0..2000 {
                    write(&file, want)?;
                    if read(&file)?.trim() == want {
                        return Ok(());
                    }
                    sleep(Duration::from_millis(5));
                }
                Err(Error::sys(
                    "set freezer state",
                    format!("{} to {want}", file.display()),
                    nix::errno::Errno::EBUSY,
                ))
            }
            Cgroup::V2(dir) => {
                write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let events = dir.join("cgroup.events");
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                for _ in 0..2000 {
                    if read(&events)?.lines().any(|l| l.trim() == want) {
                        return Ok(());
                    }
                    sleep(Duration::from_millis(5));
                }
                Err(Error::sys(
                    "wait for",
                    format!("{} to say {want:?}", events.display()),
                    nix::errno::Errno::EBUSY,
                ))
            }
        }
    }

    /// Whether the cgroup is frozen.
    pub(crate) fn is_frozen(&self) -> bool {
        match self {
            Cgroup::V1(_) => self
                .dir("freezer")
                .and_then(|d| fs::read_to_string(d.join("freezer.state")).ok())
                .is_some_and(|s| s.trim() == "FROZEN"),
            Cgroup::V2(d) => fs::read_to_string(d.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
        }
    }

    /// The host pids of every process in the cgroup.
    pub(crate) fn pids(&self) -> Result<Vec<Pid>> {
        let dir = match self {
            Cgroup::V1(dirs) => self
                .dir("pids")
                .or_else(|| self.dir("freezer"))
                .or_else(|| dirs.first().map(|(_, d)| d.as_path())),
            Cgroup::V2(d) => Some(d.as_path()),
        };
        let Some(dir) = dir else {
            return Ok(Vec::new());
        };
        let file = dir.join("cgroup.procs");
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", file, e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .map(Pid::from_raw)
            .collect())
    }

    /// Removes the cgroup's directories; waits (bounded) for dying processes to leave.
    pub(crate) fn remove(&self) -> Result<()> {
        let dirs: Vec<&Path> = match self {
            Cgroup::V1(dirs) => dirs.iter().map(|(_, d)| d.as_path()).collect(),
            Cgroup::V2(d) => vec![d.as_path()],
        };
        for dir in dirs {
            let mut attempt = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 500 => {
                        attempt += 1;
                        sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(Error::io("remove cgroup", dir, e)),
                }
            }
        }
        Ok(())
    }

    /// The directories of the cgroup (for tests and diagnostics).
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(dirs) => dirs.iter().map(|(_, d)| d.clone()).collect(),
            Cgroup::V2(d) => vec![d.clone()],
        }
    }
}

fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// Creates a v1 cpuset cgroup, copying `cpuset.cpus`/`cpuset.mems` down from the parent into
/// every new level (an empty cpuset refuses tasks).
///
/// A level that exists is not yet a level that is ready: a container created at the same time
/// may have made it and not yet copied the values into it, so whoever finds one empty fills it
/// in too (with the same values: both copy from the same parent).
fn create_cpuset(dir: &Path) -> Result<()> {
    let filled = |d: &Path| {
        ["cpuset.cpus", "cpuset.mems"]
            .iter()
            .all(|f| read(&d.join(f)).is_ok_and(|v| !v.trim().is_empty()))
    };
    if filled(dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_cpuset(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Made meanwhile by a container created at the same time: it copies the values too.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create cgroup", dir, e)),
    }
    if let Some(parent) = dir.parent() {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if read(&dir.join(f))?.trim().is_empty() {
                write(&dir.join(f), read(&parent.join(f))?.trim())?;
            }
        }
    }
    Ok(())
}

fn apply_v2(dir: &Path, r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            let v = if limit < 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            write(&dir.join("memory.max"), &v)?;
            if let Some(swap) = m.swap() {
                // OCI swap is memory+swap; v2 memory.swap.max is swap alone.
                let v = if swap < 0 {
                    "max".to_string()
                } else {
                    (swap - limit.max(0)).max(0).to_string()
                };
                write(&dir.join("memory.swap.max"), &v)?;
            }
        }
        if let Some(res) = m.reservation() {
            write(&dir.join("memory.low"), &res.to_string())?;
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares()
            && shares > 0
        {
            // runc's conversion of cgroup v1 shares [2, 262144] to v2 weight [1, 10000].
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write(&dir.join("cpu.weight"), &weight.to_string())?;
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = match cpu.quota() {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = cpu.period().unwrap_or(100_000);
            write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = cpu.cpus() {
            write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems() {
            write(&dir.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(p) = r.pids() {
        write(&dir.join("pids.max"), &pids_max(p.limit()))?;
    }
    if let Some(rules) = r.devices() {
        let mut all = Vec::new();
        for rule in rules {
            all.extend(Rule::from_spec(rule)?);
        }
        for line in DEFAULT_DEVICE_RULES {
            all.push(Rule::parse_allow(line)?);
        }
        devices_bpf::apply(dir, &all)?;
    }
    if let Some(unified) = r.unified() {
        for (key, value) in unified {
            if key.contains('/') || key.starts_with('.') {
                return Err(Error::InvalidSpec(format!("unified cgroup key {key:?}")));
            }
            write(&dir.join(key), value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/strata/a")).expect("ok"),
            PathBuf::from("strata/a")
        );
        assert!(relative(Path::new("/a/../b")).is_err());
        assert!(relative(Path::new("system.slice:strata:a")).is_err());
        assert!(relative(Path::new("/")).is_err());
    }

    fn resources() -> LinuxResources {
        use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder};
        oci_spec::runtime::LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(96i64 << 20)
                    .build()
                    .expect("memory"),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .expect("cpu"),
            )
            .pids(LinuxPidsBuilder::default().limit(0).build().expect("pids"))
            .build()
            .expect("resources")
    }

    /// The v2 file formats and conversions, checked against plain files (this host may not
    /// run cgroup v2).
    #[test]
    fn v2_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        apply_v2(dir.path(), &resources()).expect("apply");
        let get = |f: &str| fs::read_to_string(dir.path().join(f)).expect(f);
        assert_eq!(get("memory.max"), (64u64 << 20).to_string());
        assert_eq!(get("memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(get("cpu.weight"), "39");
        assert_eq!(get("cpu.max"), "50000 100000");
        assert_eq!(get("pids.max"), "max");
    }

    #[test]
    fn v1_writes() {
        let dirs: Vec<(String, tempfile::TempDir)> = ["memory", "cpu", "pids"]
            .iter()
            .map(|c| (c.to_string(), tempfile::tempdir().expect("tempdir")))
            .collect();
        let memsw = dirs[0].1.path().join("memory.memsw.limit_in_bytes");
        fs::write(&memsw, "").expect("memsw");
        let cg = Cgroup::V1(
            dirs.iter()
                .map(|(c, d)| (c.clone(), d.path().to_path_buf()))
                .collect(),
        );
        cg.apply(&resources()).expect("apply");
        let get = |i: usize, f: &str| fs::read_to_string(dirs[i].1.path().join(f)).expect(f);
        assert_eq!(get(0, "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(
            get(0, "memory.memsw.limit_in_bytes"),
            (96u64 << 20).to_string()
        );
        assert_eq!(get(1, "cpu.shares"), "1024");
        assert_eq!(get(1, "cpu.cfs_quota_us"), "50000");
        assert_eq!(get(1, "cpu.cfs_period_us"), "100000");
        assert_eq!(get(2, "pids.max"), "max");
    }
}
