//! Task metrics: the statistics of the cgroup a task's init process lives in, read from the
//! cgroup file systems and shaped as containerd's cgroups stats, `io.containerd.cgroups.v1` on
//! hosts with v1 controllers (legacy or hybrid layout) and `io.containerd.cgroups.v2` on
//! unified hosts, which is what containerd answers on such hosts.
//!
//! The cgroup is found from `/proc/<pid>/cgroup` (which cgroup, per hierarchy) and this
//! process's `/proc/self/mountinfo` (where each hierarchy is mounted), so it does not matter
//! which runtime placed the task or under which path. Nothing here knows of gRPC: [`collect`]
//! returns the message and the adapter wraps it in containerd's `Metric`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use strata_api::io::containerd::cgroups::{v1, v2};
use strata_core::filters::Adaptor;

/// The type URL containerd gives cgroup v1 statistics (no `type.googleapis.com/` prefix).
pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// The type URL containerd gives cgroup v2 statistics.
pub const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// The v1 controllers read. A task sitting in a hierarchy's root was not placed there by its
/// runtime (the root's numbers are the whole host's), so that controller is left out.
const V1_CONTROLLERS: &[&str] = &["pids", "cpu", "cpuacct", "memory", "blkio", "hugetlb"];

/// `cpuacct.stat` counts in USER_HZ, which Linux fixes at 100 for every interface it exports.
const NANOS_PER_USER_HZ: u64 = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The process or its cgroup went away (the task ended while being read).
    #[error("{what} is gone")]
    Gone { what: String },
    #[error(
        "process {pid} is in no cgroup this service can see (no v1 controller or cgroup2 mount)"
    )]
    NoCgroup { pid: u32 },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot parse {text:?}", path.display())]
    Parse { path: PathBuf, text: String },
}

impl From<MetricsError> for strata_core::Error {
    fn from(e: MetricsError) -> Self {
        match e {
            MetricsError::Gone { .. } => Self::not_found(e.to_string()),
            MetricsError::NoCgroup { .. } => Self::failed_precondition(e.to_string()),
            MetricsError::Read { .. } | MetricsError::Parse { .. } => Self::internal(e.to_string()),
        }
    }
}

type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// A task's statistics, in the cgroup version of the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    V1(Box<v1::Metrics>),
    V2(Box<v2::Metrics>),
}

impl Metrics {
    pub fn type_url(&self) -> &'static str {
        match self {
            Self::V1(_) => V1_TYPE_URL,
            Self::V2(_) => V2_TYPE_URL,
        }
    }

    /// The statistics as `Metric.data` carries them.
    pub fn to_any(&self) -> prost_types::Any {
        let value = match self {
            Self::V1(m) => prost::Message::encode_to_vec(m.as_ref()),
            Self::V2(m) => prost::Message::encode_to_vec(m.as_ref()),
        };
        prost_types::Any {
            type_url: self.type_url().to_owned(),
            value,
        }
    }
}

/// The fields a Metrics request's filters can name: `id` and `namespace`.
pub struct TaskFields<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
}

impl Adaptor for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "id" => Some(self.id.to_owned()),
            [f] if f == "namespace" => Some(self.namespace.to_owned()),
            _ => None,
        }
    }
}

/// Where a process's cgroup is, on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirs {
    /// (controller, directory) for each v1 controller the process was placed in.
    V1(Vec<(String, PathBuf)>),
    /// The process's directory in the unified hierarchy.
    V2(PathBuf),
}

/// Reads the statistics of the cgroup process `pid` is in.
pub fn collect(pid: u32) -> Result<Metrics> {
    let membership =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|_| MetricsError::Gone {
            what: format!("process {pid}"),
        })?;
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    match locate(&membership, &mountinfo).ok_or(MetricsError::NoCgroup { pid })? {
        CgroupDirs::V1(dirs) => read_v1(&dirs).map(|m| Metrics::V1(Box::new(m))),
        CgroupDirs::V2(dir) => read_v2(&dir).map(|m| Metrics::V2(Box::new(m))),
    }
}

/// One cgroup mount of `/proc/self/mountinfo`.
struct CgroupMount {
    /// The directory of the hierarchy shown at the mount point (`/` unless bind-mounted).
    root: String,
    point: PathBuf,
    /// v1: the super options (controllers among them); empty for cgroup2.
    options: Vec<String>,
    v2: bool,
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

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
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

/// The directory of cgroup `path` under `mount`, if the mount shows it.
fn dir_under(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        path.strip_prefix('/')?
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(if rel.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(rel)
    })
}

/// Where the cgroup described by `membership` (a `/proc/<pid>/cgroup`) lives, given this
/// process's `mountinfo`: its v1 controllers when any is mounted (legacy and hybrid hosts),
/// else its unified directory.
pub fn locate(membership: &str, mountinfo: &str) -> Option<CgroupDirs> {
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
            if !V1_CONTROLLERS.contains(&c) {
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
        return (!v1_dirs.is_empty()).then_some(CgroupDirs::V1(v1_dirs));
    }
    let path = unified?;
    mounts
        .iter()
        .filter(|m| m.v2)
        .find_map(|m| dir_under(m, path))
        .map(CgroupDirs::V2)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| MetricsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A file that may be absent (a kernel without that counter, swap accounting off).
fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetricsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    text.trim().parse().map_err(|_| MetricsError::Parse {
        path: path.to_owned(),
        text: text.trim().to_owned(),
    })
}

/// A single number; absent files read as 0. `max` (no limit) becomes `unlimited`.
fn number(dir: &Path, file: &str, unlimited: u64) -> Result<u64> {
    let path = dir.join(file);
    match read_opt(&path)? {
        None => Ok(0),
        Some(t) if t.trim() == "max" => Ok(unlimited),
        Some(t) => parse_u64(&path, &t),
    }
}

/// A flat keyed file (`key value` per line); absent files are empty.
fn keyed(dir: &Path, file: &str) -> Result<HashMap<String, u64>> {
    let path = dir.join(file);
    let mut out = HashMap::new();
    for line in read_opt(&path)?.unwrap_or_default().lines() {
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.insert(k.to_owned(), parse_u64(&path, v)?);
        }
    }
    Ok(out)
}

/// Copies keys of a flat keyed file into fields of a message, missing keys as 0.
macro_rules! fill {
    ($msg:expr, $map:expr, { $($field:ident: $key:literal),* $(,)? }) => {
        $( $msg.$field = $map.get($key).copied().unwrap_or(0); )*
    };
}

/// The controller directory must exist: a task that ended meanwhile takes it away.
fn require_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(MetricsError::Gone {
            what: format!("cgroup {}", dir.display()),
        })
    }
}

/// Reads every v1 controller in `dirs`.
pub fn read_v1(dirs: &[(String, PathBuf)]) -> Result<v1::Metrics> {
    let dir = |c: &str| dirs.iter().find(|(n, _)| n == c).map(|(_, d)| d.as_path());
    let mut m = v1::Metrics::default();
    if let Some(d) = dir("pids") {
        require_dir(d)?;
        m.pids = Some(v1::PidsStat {
            current: number(d, "pids.current", 0)?,
            limit: number(d, "pids.max", 0)?,
        });
    }
    let mut cpu = v1::CpuStat::default();
    if let Some(d) = dir("cpuacct") {
        require_dir(d)?;
        let stat = keyed(d, "cpuacct.stat")?;
        let per_cpu_path = d.join("cpuacct.usage_percpu");
        let per_cpu = read_opt(&per_cpu_path)?
            .unwrap_or_default()
            .split_whitespace()
            .map(|v| parse_u64(&per_cpu_path, v))
            .collect::<Result<Vec<_>>>()?;
        cpu.usage = Some(v1::CpuUsage {
            total: number(d, "cpuacct.usage", 0)?,
            kernel: stat.get("system").copied().unwrap_or(0) * NANOS_PER_USER_HZ,
            user: stat.get("user").copied().unwrap_or(0) * NANOS_PER_USER_HZ,
            per_cpu,
        });
    }
    if let Some(d) = dir("cpu") {
        require_dir(d)?;
        let stat = keyed(d, "cpu.stat")?;
        let mut t = v1::Throttle::default();
        fill!(t, stat, {
            periods: "nr_periods",
            throttled_periods: "nr_throttled",
            throttled_time: "throttled_time",
        });
        cpu.throttling = Some(t);
    }
    if cpu.usage.is_some() || cpu.throttling.is_some() {
        m.cpu = Some(cpu);
    }
    if let Some(d) = dir("memory") {
        require_dir(d)?;
        m.memory = Some(memory_v1(d)?);
        let oom = keyed(d, "memory.oom_control")?;
        let mut o = v1::MemoryOomControl::default();
        fill!(o, oom, {
            oom_kill_disable: "oom_kill_disable",
            under_oom: "under_oom",
            oom_kill: "oom_kill",
        });
        m.memory_oom_control = Some(o);
    }
    if let Some(d) = dir("blkio") {
        require_dir(d)?;
        m.blkio = Some(blkio_v1(d)?);
    }
    if let Some(d) = dir("hugetlb") {
        require_dir(d)?;
        for size in page_sizes(d, ".usage_in_bytes")? {
            let prefix = format!("hugetlb.{size}");
            m.hugetlb.push(v1::HugetlbStat {
                usage: number(d, &format!("{prefix}.usage_in_bytes"), 0)?,
                max: number(d, &format!("{prefix}.max_usage_in_bytes"), 0)?,
                failcnt: number(d, &format!("{prefix}.failcnt"), 0)?,
                pagesize: size,
            });
        }
    }
    Ok(m)
}

fn memory_v1(d: &Path) -> Result<v1::MemoryStat> {
    let stat = keyed(d, "memory.stat")?;
    let mut s = v1::MemoryStat::default();
    fill!(s, stat, {
        cache: "cache",
        rss: "rss",
        rss_huge: "rss_huge",
        mapped_file: "mapped_file",
        dirty: "dirty",
        writeback: "writeback",
        pg_pg_in: "pgpgin",
        pg_pg_out: "pgpgout",
        pg_fault: "pgfault",
        pg_maj_fault: "pgmajfault",
        inactive_anon: "inactive_anon",
        active_anon: "active_anon",
        inactive_file: "inactive_file",
        active_file: "active_file",
        unevictable: "unevictable",
        hierarchical_memory_limit: "hierarchical_memory_limit",
        hierarchical_swap_limit: "hierarchical_memsw_limit",
        total_cache: "total_cache",
        total_rss: "total_rss",
        total_rss_huge: "total_rss_huge",
        total_mapped_file: "total_mapped_file",
        total_dirty: "total_dirty",
        total_writeback: "total_writeback",
        total_pg_pg_in: "total_pgpgin",
        total_pg_pg_out: "total_pgpgout",
        total_pg_fault: "total_pgfault",
        total_pg_maj_fault: "total_pgmajfault",
        total_inactive_anon: "total_inactive_anon",
        total_active_anon: "total_active_anon",
        total_inactive_file: "total_inactive_file",
        total_active_file: "total_active_file",
        total_unevictable: "total_unevictable",
    });
    let entry = |prefix: &str| -> Result<Option<v1::MemoryEntry>> {
        // A counter the kernel does not keep (swap accounting off, no kmem) is left out.
        if !d.join(format!("{prefix}.usage_in_bytes")).exists() {
            return Ok(None);
        }
        Ok(Some(v1::MemoryEntry {
            limit: number(d, &format!("{prefix}.limit_in_bytes"), u64::MAX)?,
            usage: number(d, &format!("{prefix}.usage_in_bytes"), 0)?,
            max: number(d, &format!("{prefix}.max_usage_in_bytes"), 0)?,
            failcnt: number(d, &format!("{prefix}.failcnt"), 0)?,
        }))
    };
    s.usage = entry("memory")?;
    s.swap = entry("memory.memsw")?;
    s.kernel = entry("memory.kmem")?;
    s.kernel_tcp = entry("memory.kmem.tcp")?;
    Ok(s)
}

/// `/dev/<name>` of a block device, from sysfs; empty when the kernel does not say.
fn device_name(major: u64, minor: u64, cache: &mut HashMap<(u64, u64), String>) -> String {
    cache
        .entry((major, minor))
        .or_insert_with(|| {
            std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
                .ok()
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
                })
                .unwrap_or_default()
        })
        .clone()
}

/// One blkio file: `major:minor [Op] value` lines; the `Total` summary line is dropped.
fn blkio_entries(
    d: &Path,
    file: &str,
    names: &mut HashMap<(u64, u64), String>,
) -> Result<Vec<v1::BlkIoEntry>> {
    let path = d.join(file);
    let mut out = Vec::new();
    for line in read_opt(&path)?.unwrap_or_default().lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match fields.as_slice() {
            [dev, op, value] => (*dev, *op, *value),
            [dev, value] if dev.contains(':') => (*dev, "", *value),
            _ => continue,
        };
        let bad = || MetricsError::Parse {
            path: path.clone(),
            text: line.to_owned(),
        };
        let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
        let (major, minor) = (parse_u64(&path, major)?, parse_u64(&path, minor)?);
        out.push(v1::BlkIoEntry {
            op: op.to_owned(),
            device: device_name(major, minor, names),
            major,
            minor,
            value: parse_u64(&path, value)?,
        });
    }
    Ok(out)
}

fn blkio_v1(d: &Path) -> Result<v1::BlkIoStat> {
    let mut names = HashMap::new();
    let mut e = |f: &str| blkio_entries(d, f, &mut names);
    let mut s = v1::BlkIoStat {
        io_service_bytes_recursive: e("blkio.io_service_bytes_recursive")?,
        io_serviced_recursive: e("blkio.io_serviced_recursive")?,
        io_queued_recursive: e("blkio.io_queued_recursive")?,
        io_service_time_recursive: e("blkio.io_service_time_recursive")?,
        io_wait_time_recursive: e("blkio.io_wait_time_recursive")?,
        io_merged_recursive: e("blkio.io_merged_recursive")?,
        io_time_recursive: e("blkio.time_recursive")?,
        sectors_recursive: e("blkio.sectors_recursive")?,
    };
    // Without a proportional-weight scheduler only the throttling policy counts bytes and I/Os.
    if s.io_service_bytes_recursive.is_empty() && s.io_serviced_recursive.is_empty() {
        s.io_service_bytes_recursive = e("blkio.throttle.io_service_bytes_recursive")?;
        s.io_serviced_recursive = e("blkio.throttle.io_serviced_recursive")?;
    }
    Ok(s)
}

/// The huge page sizes a hugetlb cgroup has files for (`hugetlb.<size><suffix>`), sorted.
fn page_sizes(d: &Path, suffix: &str) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(d).map_err(|source| MetricsError::Read {
        path: d.to_owned(),
        source,
    })?;
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            // v2 also has hugetlb.<size>.rsvd.current: not the page size's own counter.
            (!size.contains('.')).then(|| size.to_owned())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

/// Reads a unified (v2) cgroup directory.
pub fn read_v2(d: &Path) -> Result<v2::Metrics> {
    require_dir(d)?;
    let mut m = v2::Metrics::default();
    if d.join("pids.current").exists() {
        m.pids = Some(v2::PidsStat {
            current: number(d, "pids.current", 0)?,
            limit: number(d, "pids.max", 0)?,
        });
    }
    let stat = keyed(d, "cpu.stat")?;
    if !stat.is_empty() {
        let mut c = v2::CpuStat::default();
        fill!(c, stat, {
            usage_usec: "usage_usec",
            user_usec: "user_usec",
            system_usec: "system_usec",
            nr_periods: "nr_periods",
            nr_throttled: "nr_throttled",
            throttled_usec: "throttled_usec",
            nr_bursts: "nr_bursts",
            burst_usec: "burst_usec",
        });
        m.cpu = Some(c);
    }
    if d.join("memory.current").exists() {
        let stat = keyed(d, "memory.stat")?;
        let mut s = v2::MemoryStat::default();
        fill!(s, stat, {
            anon: "anon",
            file: "file",
            kernel_stack: "kernel_stack",
            slab: "slab",
            sock: "sock",
            shmem: "shmem",
            file_mapped: "file_mapped",
            file_dirty: "file_dirty",
            file_writeback: "file_writeback",
            anon_thp: "anon_thp",
            inactive_anon: "inactive_anon",
            active_anon: "active_anon",
            inactive_file: "inactive_file",
            active_file: "active_file",
            unevictable: "unevictable",
            slab_reclaimable: "slab_reclaimable",
            slab_unreclaimable: "slab_unreclaimable",
            pgfault: "pgfault",
            pgmajfault: "pgmajfault",
            workingset_refault: "workingset_refault",
            workingset_activate: "workingset_activate",
            workingset_nodereclaim: "workingset_nodereclaim",
            pgrefill: "pgrefill",
            pgscan: "pgscan",
            pgsteal: "pgsteal",
            pgactivate: "pgactivate",
            pgdeactivate: "pgdeactivate",
            pglazyfree: "pglazyfree",
            pglazyfreed: "pglazyfreed",
            thp_fault_alloc: "thp_fault_alloc",
            thp_collapse_alloc: "thp_collapse_alloc",
            workingset_refault_anon: "workingset_refault_anon",
            workingset_refault_file: "workingset_refault_file",
            workingset_activate_anon: "workingset_activate_anon",
            workingset_activate_file: "workingset_activate_file",
        });
        s.usage = number(d, "memory.current", 0)?;
        s.usage_limit = number(d, "memory.max", u64::MAX)?;
        s.max_usage = number(d, "memory.peak", 0)?;
        s.swap_usage = number(d, "memory.swap.current", 0)?;
        s.swap_limit = number(d, "memory.swap.max", u64::MAX)?;
        s.swap_max_usage = number(d, "memory.swap.peak", 0)?;
        m.memory = Some(s);
        let events = keyed(d, "memory.events")?;
        let mut e = v2::MemoryEvents::default();
        fill!(e, events, {
            low: "low",
            high: "high",
            max: "max",
            oom: "oom",
            oom_kill: "oom_kill",
            oom_group_kill: "oom_group_kill",
        });
        m.memory_events = Some(e);
    }
    let io_path = d.join("io.stat");
    if let Some(text) = read_opt(&io_path)? {
        let mut usage = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let Some((major, minor)) = it.next().and_then(|dev| dev.split_once(':')) else {
                continue;
            };
            let mut e = v2::IoEntry {
                major: parse_u64(&io_path, major)?,
                minor: parse_u64(&io_path, minor)?,
                ..Default::default()
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = parse_u64(&io_path, v)?;
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            usage.push(e);
        }
        m.io = Some(v2::IoStat { usage });
    }
    for size in page_sizes(d, ".current")? {
        let prefix = format!("hugetlb.{size}");
        m.hugetlb.push(v2::HugeTlbStat {
            current: number(d, &format!("{prefix}.current"), 0)?,
            max: number(d, &format!("{prefix}.max"), u64::MAX)?,
            pagesize: size.clone(),
            failcnt: keyed(d, &format!("{prefix}.events"))?
                .get("max")
                .copied()
                .unwrap_or(0),
        });
    }
    Ok(m)
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
            CgroupDirs::V1(vec![
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
            Some(CgroupDirs::V2("/sys/fs/cgroup/strata/ns/c1".into()))
        );
        assert_eq!(locate("0::/strata/ns/c1\n", ""), None);
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn v1_files_become_containerd_fields() {
        let t = tempfile::tempdir().unwrap();
        let dirs: Vec<(String, PathBuf)> = ["pids", "cpu", "cpuacct", "memory", "blkio"]
            .iter()
            .map(|c| {
                let d = t.path().join(c);
                std::fs::create_dir(&d).unwrap();
                ((*c).to_owned(), d)
            })
            .collect();
        let d = |i: usize| dirs[i].1.as_path();
        write(d(0), &[("pids.current", "3\n"), ("pids.max", "max\n")]);
        write(
            d(1),
            &[(
                "cpu.stat",
                "nr_periods 10\nnr_throttled 4\nthrottled_time 900\n",
            )],
        );
        write(
            d(2),
            &[
                ("cpuacct.usage", "123456789\n"),
                ("cpuacct.usage_percpu", "100 200 \n"),
                ("cpuacct.stat", "user 7\nsystem 2\n"),
            ],
        );
        write(
            d(3),
            &[
                (
                    "memory.stat",
                    "cache 4096\nrss 8192\npgpgin 5\ntotal_cache 4096\nhierarchical_memsw_limit 9\n",
                ),
                ("memory.usage_in_bytes", "12288\n"),
                ("memory.limit_in_bytes", "33554432\n"),
                ("memory.max_usage_in_bytes", "20000\n"),
                ("memory.failcnt", "1\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        write(
            d(4),
            &[(
                "blkio.throttle.io_service_bytes_recursive",
                "7:0 Read 512\n7:0 Write 0\nTotal 512\n",
            )],
        );
        let m = read_v1(&dirs).unwrap();
        assert_eq!(
            m.pids,
            Some(v1::PidsStat {
                current: 3,
                limit: 0
            })
        );
        let cpu = m.cpu.unwrap();
        let usage = cpu.usage.unwrap();
        assert_eq!(usage.total, 123_456_789);
        assert_eq!(usage.per_cpu, [100, 200]);
        assert_eq!((usage.user, usage.kernel), (70_000_000, 20_000_000));
        let th = cpu.throttling.unwrap();
        assert_eq!(
            (th.periods, th.throttled_periods, th.throttled_time),
            (10, 4, 900)
        );
        let mem = m.memory.unwrap();
        assert_eq!(
            (mem.cache, mem.rss, mem.pg_pg_in, mem.total_cache),
            (4096, 8192, 5, 4096)
        );
        assert_eq!(mem.hierarchical_swap_limit, 9);
        assert_eq!(
            mem.usage,
            Some(v1::MemoryEntry {
                limit: 33_554_432,
                usage: 12288,
                max: 20000,
                failcnt: 1
            })
        );
        assert_eq!(mem.swap, None, "no memsw files: swap accounting off");
        assert_eq!(m.memory_oom_control.unwrap().oom_kill, 2);
        let blk = m.blkio.unwrap();
        assert_eq!(blk.io_service_bytes_recursive.len(), 2);
        assert_eq!(blk.io_service_bytes_recursive[0].op, "Read");
        assert_eq!(blk.io_service_bytes_recursive[0].value, 512);
        assert_eq!(
            (
                blk.io_service_bytes_recursive[0].major,
                blk.io_service_bytes_recursive[0].minor
            ),
            (7, 0)
        );

        // Garbage is an error naming the file; a vanished cgroup too.
        write(d(0), &[("pids.current", "lots\n")]);
        let err = read_v1(&dirs).unwrap_err();
        assert!(err.to_string().contains("pids.current"), "{err}");
        let gone = vec![("memory".to_owned(), t.path().join("nope"))];
        assert!(matches!(read_v1(&gone), Err(MetricsError::Gone { .. })));
        assert!(matches!(
            read_v2(&t.path().join("nope")),
            Err(MetricsError::Gone { .. })
        ));
    }

    #[test]
    fn v2_files_become_containerd_fields() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        write(
            d,
            &[
                ("pids.current", "2\n"),
                ("pids.max", "64\n"),
                (
                    "cpu.stat",
                    "usage_usec 500\nuser_usec 300\nsystem_usec 200\nnr_periods 1\nnr_throttled 1\nthrottled_usec 9\n",
                ),
                ("memory.current", "4096\n"),
                ("memory.max", "max\n"),
                ("memory.peak", "8192\n"),
                ("memory.swap.current", "0\n"),
                ("memory.swap.max", "0\n"),
                ("memory.stat", "anon 1024\nfile 2048\npgfault 3\n"),
                ("memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"),
                (
                    "io.stat",
                    "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
                ),
                ("hugetlb.2MB.current", "0\n"),
                ("hugetlb.2MB.max", "max\n"),
                ("hugetlb.2MB.rsvd.current", "0\n"),
                ("hugetlb.2MB.events", "max 4\n"),
            ],
        );
        let m = read_v2(d).unwrap();
        assert_eq!(
            m.pids,
            Some(v2::PidsStat {
                current: 2,
                limit: 64
            })
        );
        let cpu = m.cpu.unwrap();
        assert_eq!(
            (
                cpu.usage_usec,
                cpu.user_usec,
                cpu.system_usec,
                cpu.throttled_usec
            ),
            (500, 300, 200, 9)
        );
        let mem = m.memory.unwrap();
        assert_eq!(
            (mem.usage, mem.usage_limit, mem.max_usage),
            (4096, u64::MAX, 8192)
        );
        assert_eq!((mem.anon, mem.file, mem.pgfault), (1024, 2048, 3));
        assert_eq!(mem.swap_limit, 0);
        assert_eq!(m.memory_events.unwrap().oom_kill, 1);
        let io = m.io.unwrap();
        assert_eq!(
            (io.usage[0].major, io.usage[0].rbytes, io.usage[0].wios),
            (8, 10, 2)
        );
        assert_eq!(m.hugetlb.len(), 1, "rsvd counters are not page sizes");
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!((m.hugetlb[0].max, m.hugetlb[0].failcnt), (u64::MAX, 4));
    }

    #[test]
    fn the_any_carries_containerd_type_urls() {
        let any = Metrics::V1(Box::default()).to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v2::Metrics {
            pids: Some(v2::PidsStat {
                current: 1,
                limit: 2,
            }),
            ..Default::default()
        };
        let any = Metrics::V2(Box::new(m.clone())).to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(
            <v2::Metrics as prost::Message>::decode(any.value.as_slice()).unwrap(),
            m
        );
    }

    #[test]
    fn filters_see_id_and_namespace() {
        let f = strata_core::filters::Filter::parse_all(&["id==web"]).unwrap();
        assert!(f.matches(&TaskFields {
            namespace: "default",
            id: "web"
        }));
        assert!(!f.matches(&TaskFields {
            namespace: "default",
            id: "db"
        }));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape("/plain\\"), "/plain\\");
    }
}
