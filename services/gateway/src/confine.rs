//! What confines a container `strata run` creates, as `docker run` sets it: capabilities
//! (`--cap-add`, `--cap-drop`, `--privileged`), host devices (`--device`), kernel parameters
//! (`--sysctl`), tmpfs mounts, resource limits (`--ulimit`) and Docker's security options
//! (`--security-opt`). Everything asked for is either put into the spec or refused: nothing is
//! dropped silently.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path};

use crate::run::RunOptions;
use serde_json::{Value, json};
use strata_core::{Error, Result};

/// Every capability Linux defines, in number order (`CAP_CHOWN` is 0).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities this host can grant: those its kernel knows
/// (`/proc/sys/kernel/cap_last_cap`) and strata itself holds (its bounding set: a container
/// cannot get more than the runtime that starts it). What `ALL` means, as for Docker.
fn host_capabilities() -> Vec<&'static str> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(ALL_CAPABILITIES.len() - 1);
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i <= last && bounding & (1u64 << i) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// `sys_admin`, `CAP_SYS_ADMIN`, `Sys_Admin` → `CAP_SYS_ADMIN`; `None` for `ALL`.
fn capability_name(what: &str, s: &str) -> Result<Option<&'static str>> {
    let upper = s.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPABILITIES
        .iter()
        .find(|c| **c == full)
        .map(|c| Some(*c))
        .ok_or_else(|| Error::invalid_argument(format!("{what} {s:?}: no such capability")))
}

/// The container's capability set: `default` minus `drop` plus `add` (Docker's order: a cap
/// both dropped and added is kept; `--cap-drop ALL --cap-add X` keeps only X).
pub fn capabilities(
    default: &[String],
    add: &[String],
    drop: &[String],
    privileged: bool,
) -> Result<Vec<String>> {
    let host = host_capabilities();
    if privileged {
        return Ok(host.iter().map(|c| (*c).to_owned()).collect());
    }
    let mut set: Vec<String> = default.to_vec();
    for d in drop {
        match capability_name("--cap-drop", d)? {
            None => set.clear(),
            Some(c) => set.retain(|x| x != c),
        }
    }
    for a in add {
        let names: Vec<&str> = match capability_name("--cap-add", a)? {
            None => host.clone(),
            Some(c) => vec![c],
        };
        for c in names {
            if !host.contains(&c) {
                return Err(Error::failed_precondition(format!(
                    "--cap-add {a:?}: this host cannot grant {c} (its kernel does not know it, \
                     or strata does not hold it)"
                )));
            }
            if !set.iter().any(|x| x == c) {
                set.push(c.to_owned());
            }
        }
    }
    Ok(set)
}

/// Kernel parameters a container may set: those its own namespaces isolate (the runtime's
/// rule, which also checks specs other clients send).
pub fn check_sysctl(key: &str, private_network: bool, private_ipc: bool) -> Result<()> {
    strata_runtime::check_sysctl(key, private_network, private_ipc).map_err(|why| {
        let hint = if why == "not namespaced" {
            " (only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set for \
             one container)"
        } else {
            ""
        };
        Error::invalid_argument(format!("sysctl {key:?}: {why}{hint}"))
    })
}

/// `nofile` → `RLIMIT_NOFILE`.
fn rlimit_name(name: &str) -> Result<String> {
    const KNOWN: &[&str] = &[
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_prefix("rlimit_").unwrap_or(&lower);
    if KNOWN.contains(&lower) {
        Ok(format!("RLIMIT_{}", lower.to_ascii_uppercase()))
    } else {
        Err(Error::invalid_argument(format!(
            "ulimit {name:?}: no such resource (known: {})",
            KNOWN.join(", ")
        )))
    }
}

/// An rlimit value: -1 is unlimited.
fn rlimit_value(name: &str, v: i64) -> Result<u64> {
    match v {
        -1 => Ok(u64::MAX),
        v => u64::try_from(v)
            .map_err(|_| Error::invalid_argument(format!("ulimit {name}: {v} is negative"))),
    }
}

/// A device node of the host: (type, major, minor, mode).
fn host_device(path: &Path) -> Result<(&'static str, u64, u64, u32)> {
    let md = std::fs::metadata(path)
        .map_err(|e| Error::invalid_argument(format!("device {}: {e}", path.display())))?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(Error::invalid_argument(format!(
            "device {}: not a character or block device",
            path.display()
        )));
    };
    let rdev = md.rdev();
    Ok((
        typ,
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev),
        md.mode() & 0o7777,
    ))
}

/// Gives the container host device `host` at `inside`, with cgroup access `access`.
fn add_device(
    devices: &mut Vec<Value>,
    rules: &mut Vec<Value>,
    host: &Path,
    inside: &str,
    access: &str,
) -> Result<()> {
    let (typ, major, minor, mode) = host_device(host)?;
    devices.retain(|d| d["path"] != inside);
    devices.push(json!({
        "path": inside, "type": typ, "major": major, "minor": minor,
        "fileMode": mode, "uid": 0, "gid": 0,
    }));
    rules.push(json!({
        "allow": true, "type": typ, "major": major, "minor": minor, "access": access,
    }));
    Ok(())
}

/// Host device nodes under `dir` (not following links, at most `limit` of them), for
/// `--device DIR` and `--privileged`.
fn devices_under(dir: &Path, skip: &[&str], out: &mut Vec<std::path::PathBuf>, limit: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if out.len() >= limit {
            return;
        }
        let path = e.path();
        if skip.iter().any(|s| path == Path::new(s)) {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            devices_under(&path, skip, out, limit);
        } else if ft.is_char_device() || ft.is_block_device() {
            out.push(path);
        }
    }
}

fn absolute_clean(what: &str, p: &str) -> Result<()> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid_argument(format!(
            "{what} {p:?}: must be an absolute path without '..'"
        )));
    }
    Ok(())
}

/// `--group-add`'s groups as numbers: numbers as they are, names from the image's
/// /etc/group.
pub fn group_ids(groups: &[String], group_file: &str) -> Result<Vec<u32>> {
    groups
        .iter()
        .map(|g| {
            if let Ok(n) = g.parse::<u32>() {
                return Ok(n);
            }
            group_file
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "--group-add {g:?}: no such group in the image's /etc/group"
                    ))
                })
        })
        .collect()
}

/// The parsed `--security-opt` list.
#[derive(Debug, Default)]
pub struct SecurityOpts {
    /// `seccomp=unconfined`.
    pub seccomp_unconfined: bool,
    /// `seccomp=<profile JSON>`.
    pub seccomp_profile: Option<String>,
    /// `no-new-privileges[=bool]`.
    pub no_new_privileges: Option<bool>,
    /// `systempaths=unconfined`: no masked or read-only paths.
    pub systempaths_unconfined: bool,
}

/// Parses Docker's security options; what strata cannot enforce is refused.
pub fn security_opts(opts: &[String]) -> Result<SecurityOpts> {
    let mut out = SecurityOpts::default();
    for o in opts {
        // Docker accepts `key=value` and the older `key:value`.
        let (k, v) = match o.split_once('=') {
            Some(kv) => kv,
            None => o.split_once(':').unwrap_or((o.as_str(), "")),
        };
        match (k, v) {
            ("seccomp", "unconfined") => out.seccomp_unconfined = true,
            ("seccomp", "") => {
                return Err(Error::invalid_argument(
                    "security option \"seccomp\": give unconfined or a profile".to_owned(),
                ));
            }
            ("seccomp", profile) => out.seccomp_profile = Some(profile.to_owned()),
            ("no-new-privileges", "" | "true") => out.no_new_privileges = Some(true),
            ("no-new-privileges", "false") => out.no_new_privileges = Some(false),
            ("systempaths", "unconfined") => out.systempaths_unconfined = true,
            // strata confines with neither AppArmor nor SELinux: asking for none is honoured,
            // asking for a profile or a label is refused rather than run unenforced.
            ("apparmor", "unconfined") | ("label", "disable") => {}
            ("apparmor" | "label", _) => {
                return Err(Error::failed_precondition(format!(
                    "security option {o:?}: strata does not enforce {} (only \
                     {k}={})",
                    if k == "apparmor" {
                        "AppArmor profiles"
                    } else {
                        "SELinux labels"
                    },
                    if k == "apparmor" {
                        "unconfined"
                    } else {
                        "disable"
                    }
                )));
            }
            _ => {
                return Err(Error::invalid_argument(format!(
                    "security option {o:?}: unknown (known: seccomp=unconfined|PROFILE, \
                     no-new-privileges[=true|false], systempaths=unconfined)"
                )));
            }
        }
    }
    Ok(out)
}

/// Applies the request's confinement options to `spec` (built from the runtime's defaults;
/// `--group-add` is resolved with the user, see [`group_ids`]).
pub fn apply(spec: &mut Value, req: &RunOptions) -> Result<()> {
    let sec = security_opts(&req.security_opt)?;
    let default: Vec<String> = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let caps = capabilities(&default, &req.cap_add, &req.cap_drop, req.privileged)?;
    spec["process"]["capabilities"] = json!({
        "bounding": caps,
        "permitted": caps,
        "effective": caps,
    });
    if let Some(nnp) = sec.no_new_privileges {
        spec["process"]["noNewPrivileges"] = json!(nnp);
    }

    apply_rlimits(spec, req)?;
    apply_sysctls(spec, req)?;
    let mut mounts = tmpfs_mounts(spec, req)?;
    apply_devices(spec, req)?;

    if (req.privileged || sec.systempaths_unconfined)
        && let Some(linux) = spec["linux"].as_object_mut()
    {
        linux.remove("maskedPaths");
        linux.remove("readonlyPaths");
    }
    if req.privileged {
        // A writable /sys (and cgroup file system), as `docker run --privileged`.
        for m in &mut mounts {
            let system = m["type"] == "sysfs" || m["type"] == "cgroup" || m["type"] == "cgroup2";
            if system && let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| o != "ro");
                opts.push(json!("rw"));
            }
        }
    }
    spec["mounts"] = json!(mounts);

    if req.privileged || sec.seccomp_unconfined {
        if let Some(linux) = spec["linux"].as_object_mut() {
            linux.remove("seccomp");
        }
    } else {
        let profile = match &sec.seccomp_profile {
            Some(json) => crate::seccomp::custom(json.as_bytes(), &caps)?,
            None => crate::seccomp::default(&caps)?,
        };
        if let Some(profile) = profile {
            spec["linux"]["seccomp"] = profile;
        }
    }
    Ok(())
}

/// `--ulimit`: each replaces the spec's rlimit of its type.
fn apply_rlimits(spec: &mut Value, req: &RunOptions) -> Result<()> {
    let mut rlimits: Vec<Value> = spec["process"]["rlimits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for u in &req.ulimits {
        let typ = rlimit_name(&u.name)?;
        let (soft, hard) = (
            rlimit_value(&u.name, u.soft)?,
            rlimit_value(&u.name, u.hard)?,
        );
        if soft > hard {
            return Err(Error::invalid_argument(format!(
                "ulimit {}: soft limit {} is above the hard limit {}",
                u.name, u.soft, u.hard
            )));
        }
        rlimits.retain(|r| r["type"] != typ.as_str());
        rlimits.push(json!({"type": typ, "soft": soft, "hard": hard}));
    }
    spec["process"]["rlimits"] = json!(rlimits);
    Ok(())
}

/// `--sysctl`: checked against the namespaces the container has of its own.
fn apply_sysctls(spec: &mut Value, req: &RunOptions) -> Result<()> {
    let namespaces = spec["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let private = |t: &str| {
        namespaces
            .iter()
            .any(|n| n["type"] == t && n.get("path").is_none_or(|p| p.is_null()))
    };
    let mut sysctls = serde_json::Map::new();
    for (k, v) in &req.sysctls {
        check_sysctl(k, private("network"), private("ipc"))?;
        if v.contains('\n') {
            return Err(Error::invalid_argument(format!(
                "sysctl {k:?}: the value holds a newline"
            )));
        }
        sysctls.insert(k.clone(), json!(v));
    }
    if !sysctls.is_empty() {
        spec["linux"]["sysctl"] = Value::Object(sysctls);
    }
    Ok(())
}

/// The spec's mounts with each `--tmpfs` in place of a mount at its destination.
fn tmpfs_mounts(spec: &Value, req: &RunOptions) -> Result<Vec<Value>> {
    let mut mounts: Vec<Value> = spec["mounts"].as_array().cloned().unwrap_or_default();
    for t in &req.tmpfs {
        absolute_clean("tmpfs", &t.destination)?;
        if t.destination == "/" {
            return Err(Error::invalid_argument(
                "tmpfs \"/\": the root cannot be a tmpfs".to_owned(),
            ));
        }
        let mut options = vec!["nosuid".to_owned(), "nodev".to_owned(), "noexec".to_owned()];
        options.extend(
            t.options
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_owned),
        );
        mounts.retain(|m| m["destination"] != t.destination.as_str());
        mounts.push(json!({
            "destination": t.destination,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": options,
        }));
    }
    Ok(mounts)
}

/// `--device` (and the host's devices when privileged): the spec's device nodes and the
/// device controller's rules.
fn apply_devices(spec: &mut Value, req: &RunOptions) -> Result<()> {
    let mut devices: Vec<Value> = spec["linux"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut rules: Vec<Value> = spec["linux"]["resources"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for d in &req.devices {
        absolute_clean("device", &d.host_path)?;
        let inside = if d.container_path.is_empty() {
            d.host_path.as_str()
        } else {
            d.container_path.as_str()
        };
        absolute_clean("device", inside)?;
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::invalid_argument(format!(
                "device {}: permissions {access:?} must be made of r, w and m",
                d.host_path
            )));
        }
        let host = Path::new(&d.host_path);
        if host.is_dir() {
            let mut found = Vec::new();
            devices_under(host, &[], &mut found, 4096);
            for f in found {
                let rel = f.strip_prefix(host).unwrap_or(&f);
                let inside = Path::new(inside).join(rel);
                add_device(
                    &mut devices,
                    &mut rules,
                    &f,
                    &inside.to_string_lossy(),
                    access,
                )?;
            }
        } else {
            add_device(&mut devices, &mut rules, host, inside, access)?;
        }
    }
    if req.privileged {
        // As Docker: the host's devices (but its terminals and pseudo-file systems), and the
        // device controller lets everything through.
        let mut found = Vec::new();
        devices_under(
            Path::new("/dev"),
            &[
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/dev/console",
                "/dev/ptmx",
            ],
            &mut found,
            4096,
        );
        for f in found {
            let inside = f.to_string_lossy().into_owned();
            if devices.iter().any(|d| d["path"] == inside.as_str()) {
                continue;
            }
            // A node that vanished meanwhile is not worth failing the container for.
            let _ = add_device(&mut devices, &mut rules, &f, &inside, "rwm");
        }
        rules = vec![json!({"allow": true, "access": "rwm"})];
    }
    if !devices.is_empty() {
        spec["linux"]["devices"] = json!(devices);
    }
    spec["linux"]["resources"]["devices"] = json!(rules);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn caps(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn capabilities_follow_docker() {
        let d = caps(&["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(
            capabilities(&d, &caps(&["sys_admin"]), &caps(&["kill"]), false).unwrap(),
            caps(&["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
        assert_eq!(
            capabilities(&d, &caps(&["NET_ADMIN"]), &caps(&["ALL"]), false).unwrap(),
            caps(&["CAP_NET_ADMIN"])
        );
        assert!(capabilities(&d, &[], &[], true).unwrap().len() >= 38);
        let e = capabilities(&d, &caps(&["CAP_FLY"]), &[], false).unwrap_err();
        assert_eq!(e.kind(), strata_core::Kind::InvalidArgument);
        assert!(e.to_string().contains("CAP_FLY"), "{e}");
    }

    #[test]
    fn only_namespaced_sysctls() {
        check_sysctl("net.ipv4.ip_forward", true, true).unwrap();
        check_sysctl("kernel.shmmax", true, true).unwrap();
        check_sysctl("fs.mqueue.msg_max", false, true).unwrap();
        for (k, net, ipc) in [
            ("net.ipv4.ip_forward", false, true),
            ("kernel.shmmax", true, false),
            ("kernel.hostname", true, true),
            ("vm.overcommit_memory", true, true),
            ("net/../../sysrq-trigger", true, true),
            ("net..x", true, true),
        ] {
            let e = check_sysctl(k, net, ipc).unwrap_err();
            assert_eq!(e.kind(), strata_core::Kind::InvalidArgument, "{k}");
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn groups_by_name_or_number() {
        let g = "root:x:0:\naudio:x:29:\n";
        assert_eq!(
            group_ids(&caps(&["audio", "1000"]), g).unwrap(),
            vec![29, 1000]
        );
        let e = group_ids(&caps(&["video"]), g).unwrap_err();
        assert!(e.to_string().contains("video"), "{e}");
    }

    #[test]
    fn security_options_enforced_or_refused() {
        let s = security_opts(&caps(&["seccomp=unconfined", "no-new-privileges:false"])).unwrap();
        assert!(s.seccomp_unconfined);
        assert_eq!(s.no_new_privileges, Some(false));
        let e = security_opts(&caps(&["apparmor=docker-default"])).unwrap_err();
        assert_eq!(e.kind(), strata_core::Kind::FailedPrecondition);
        let e = security_opts(&caps(&["label=type:svirt_lxc_net_t"])).unwrap_err();
        assert_eq!(e.kind(), strata_core::Kind::FailedPrecondition);
        let e = security_opts(&caps(&["frobnicate"])).unwrap_err();
        assert_eq!(e.kind(), strata_core::Kind::InvalidArgument);
        security_opts(&caps(&["apparmor=unconfined", "label=disable"])).unwrap();
    }

    #[test]
    fn ulimits_devices_and_tmpfs_go_into_the_spec() {
        let mut spec = serde_json::to_value(
            strata_runtime::default_spec(Path::new("rootfs"), &["sh"]).unwrap(),
        )
        .unwrap();
        let req = RunOptions {
            ulimits: vec![crate::run::Ulimit {
                name: "nofile".into(),
                soft: 100,
                hard: 200,
            }],
            devices: vec![crate::run::Device {
                host_path: "/dev/null".into(),
                container_path: "/dev/mynull".into(),
                permissions: "rw".into(),
            }],
            tmpfs: vec![crate::run::Tmpfs {
                destination: "/scratch".into(),
                options: "size=1m".into(),
            }],
            security_opt: vec!["seccomp=unconfined".into()],
            ..Default::default()
        };
        apply(&mut spec, &req).unwrap();
        let rl = spec["process"]["rlimits"].as_array().unwrap();
        assert!(
            rl.iter()
                .any(|r| r["type"] == "RLIMIT_NOFILE" && r["soft"] == 100)
        );
        assert_eq!(
            rl.iter().filter(|r| r["type"] == "RLIMIT_NOFILE").count(),
            1
        );
        let d = &spec["linux"]["devices"][0];
        assert_eq!(
            (d["path"].as_str(), d["major"].as_u64()),
            (Some("/dev/mynull"), Some(1))
        );
        assert!(
            spec["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/scratch" && m["type"] == "tmpfs")
        );
        assert!(spec["linux"].get("seccomp").is_none());
        let bad = RunOptions {
            ulimits: vec![crate::run::Ulimit {
                name: "nofile".into(),
                soft: 300,
                hard: 200,
            }],
            ..Default::default()
        };
        let e = apply(&mut spec, &bad).unwrap_err();
        assert!(e.to_string().contains("nofile"), "{e}");
    }
}
