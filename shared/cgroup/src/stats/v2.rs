//! Reading a unified (cgroup v2) directory into containerd's `io.containerd.cgroups.v2`
//! statistics.

use super::{Result, fill, keyed, number, page_sizes, parse_u64, read_opt, require_dir};
use std::path::Path;
use strata_api::io::containerd::cgroups::v2;

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
    m.cpu = cpu(d)?;
    if d.join("memory.current").exists() {
        m.memory = Some(memory(d)?);
        m.memory_events = Some(memory_events(d)?);
    }
    m.io = io(d)?;
    m.hugetlb = hugetlb(d)?;
    Ok(m)
}

/// `cpu.stat`, or nothing when the file is absent or empty.
fn cpu(d: &Path) -> Result<Option<v2::CpuStat>> {
    let stat = keyed(d, "cpu.stat")?;
    if stat.is_empty() {
        return Ok(None);
    }
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
    Ok(Some(c))
}

/// `memory.stat` and the usage, limit and peak files of memory and swap.
fn memory(d: &Path) -> Result<v2::MemoryStat> {
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
    Ok(s)
}

/// `memory.events`.
fn memory_events(d: &Path) -> Result<v2::MemoryEvents> {
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
    Ok(e)
}

/// `io.stat`, one entry per device, or nothing when the file is absent.
fn io(d: &Path) -> Result<Option<v2::IoStat>> {
    let io_path = d.join("io.stat");
    let Some(text) = read_opt(&io_path)? else {
        return Ok(None);
    };
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
    Ok(Some(v2::IoStat { usage }))
}

/// The `hugetlb.<size>.*` files, one entry per page size.
fn hugetlb(d: &Path) -> Result<Vec<v2::HugeTlbStat>> {
    let mut hugetlb = Vec::new();
    for size in page_sizes(d, ".current")? {
        let prefix = format!("hugetlb.{size}");
        hugetlb.push(v2::HugeTlbStat {
            current: number(d, &format!("{prefix}.current"), 0)?,
            max: number(d, &format!("{prefix}.max"), u64::MAX)?,
            pagesize: size.clone(),
            failcnt: keyed(d, &format!("{prefix}.events"))?
                .get("max")
                .copied()
                .unwrap_or(0),
        });
    }
    Ok(hugetlb)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::stats::tests::write;

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
}
