//! Reading cgroup v1 controllers (pids, cpu, cpuacct, memory, blkio, hugetlb) into
//! containerd's `io.containerd.cgroups.v1` statistics.

use super::{Error, Result, fill, keyed, number, page_sizes, parse_u64, read_opt, require_dir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strata_api::io::containerd::cgroups::v1;

/// `cpuacct.stat` counts in USER_HZ, which Linux fixes at 100 for every interface it exports.
const NANOS_PER_USER_HZ: u64 = 10_000_000;

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
        let bad = || Error::Parse {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::stats::read_v2;
    use crate::stats::tests::write;

    /// One directory per v1 controller under `root`, filled with a sample of its files.
    fn v1_fixture(root: &Path) -> Vec<(String, PathBuf)> {
        let dirs: Vec<(String, PathBuf)> = ["pids", "cpu", "cpuacct", "memory", "blkio"]
            .iter()
            .map(|c| {
                let d = root.join(c);
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
        dirs
    }

    #[test]
    fn v1_files_become_containerd_fields() {
        let t = tempfile::tempdir().unwrap();
        let dirs = v1_fixture(t.path());
        let d = |i: usize| dirs[i].1.as_path();
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
        assert!(matches!(read_v1(&gone), Err(Error::Gone { .. })));
        assert!(matches!(
            read_v2(&t.path().join("nope")),
            Err(Error::Gone { .. })
        ));
    }
}
