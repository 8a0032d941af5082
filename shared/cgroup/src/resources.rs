//! Resource limits on a cgroup: memory and swap, cpu shares/quota/period, cpuset, pids and
//! device rules, written to the v1 controllers' files or the v2 interface files (device rules
//! on v2: an eBPF program, [`crate::devices_bpf`]), and v2 `unified` keys as given.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use crate::cgroup::{Cgroup, write};
use crate::devices_bpf::{self, Rule};
use crate::error::{Error, Result};

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

impl Cgroup {
    /// Applies the resource limits the runtime supports (memory, swap, cpu, cpuset, pids and,
    /// on v1, device rules; v2 `unified` keys).
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
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
}

fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
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
    use std::fs;

    use super::*;

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
