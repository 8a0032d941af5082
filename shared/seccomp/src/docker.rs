//! Profiles in Docker's JSON format (`--security-opt seccomp=PROFILE.json`).
//!
//! Docker's format is the OCI one plus what it resolves before the container is created:
//! `archMap` (the architectures to filter, by native architecture), and per rule `includes` and
//! `excludes` on the architecture (Go's names: `amd64`, `arm64`...), on the container's
//! capabilities and on the kernel's version (`minKernel`). A rule applies when every included
//! capability is held, no excluded one is, the architecture is included (when a list is given)
//! and not excluded, and the kernel is at least `includes.minKernel` (and below
//! `excludes.minKernel`).

use oci_spec::runtime::{
    Arch as OciArch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use crate::{Arch, Error, Result};

/// The largest profile [`docker_profile`] reads (Docker's own is about 20 KiB).
pub const MAX_PROFILE_BYTES: usize = 4 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Syscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Parses an OCI enum from its JSON string (the names `config.json` uses).
fn oci_enum<T: serde::de::DeserializeOwned>(s: &str, unknown: fn(String) -> Error) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| unknown(s.to_string()))
}

/// The JSON name of a capability (`CAP_SYS_ADMIN`).
fn cap_name(c: &Capability) -> String {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("CAP_{c}"),
    }
}

/// `major.minor` of a kernel release such as `6.1.0-18-amd64` or `4.8`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// The running kernel's `major.minor`.
fn running_kernel() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain data; uname fills it and we only read it after success.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid, writable utsname for the duration of the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release: Vec<u8> = uts
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| c.to_ne_bytes()[0])
        .collect();
    kernel_version(&String::from_utf8_lossy(&release))
}

/// Resolves `json`, a profile in Docker's format, for this machine's architecture, its kernel
/// and a container holding `caps` (its bounding set), into an OCI profile.
pub fn docker_profile(json: &[u8], caps: &[Capability]) -> Result<LinuxSeccomp> {
    docker_profile_for(Arch::host_or_err()?, running_kernel(), json, caps)
}

/// [`docker_profile`] for a given architecture and kernel version (`None`: rules with a
/// `minKernel` are resolved as on a kernel older than any).
pub fn docker_profile_for(
    arch: Arch,
    kernel: Option<(u32, u32)>,
    json: &[u8],
    caps: &[Capability],
) -> Result<LinuxSeccomp> {
    if json.len() > MAX_PROFILE_BYTES {
        return Err(Error::TooLarge {
            size: json.len(),
            max: MAX_PROFILE_BYTES,
        });
    }
    let p: Profile =
        serde_json::from_slice(json).map_err(|e| Error::Invalid(format!("parse json: {e}")))?;
    let held: Vec<String> = caps.iter().map(cap_name).collect();
    let native = crate::default::oci_arches(arch)[0];

    let mut out = LinuxSeccomp::default();
    out.set_default_action(action(&p.default_action)?);
    out.set_default_errno_ret(p.default_errno_ret);

    let arches = profile_arches(&p, native)?;
    if !arches.is_empty() {
        out.set_architectures(Some(arches));
    }
    if let Some(flags) = &p.flags {
        out.set_flags(Some(
            flags
                .iter()
                .map(|f| {
                    oci_enum::<LinuxSeccompFilterFlag>(f, |f| {
                        Error::Invalid(format!("unknown flag {f:?}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        ));
    }
    if let Some(path) = &p.listener_path {
        out.set_listener_path(Some(path.into()));
    }

    let mut syscalls = Vec::new();
    for s in p.syscalls.iter().flatten() {
        let names = match (&s.name, &s.names) {
            (Some(_), Some(n)) if !n.is_empty() => {
                return Err(Error::Invalid(format!(
                    "a rule has both name and names ({n:?})"
                )));
            }
            (Some(n), _) => vec![n.clone()],
            (None, Some(n)) => n.clone(),
            (None, None) => Vec::new(),
        };
        let act = action(&s.action)?;
        if !applies(s, arch, kernel, &held)? {
            continue;
        }
        let mut rule = LinuxSyscall::default();
        rule.set_names(names);
        rule.set_action(act);
        rule.set_errno_ret(s.errno_ret);
        if let Some(args) = &s.args {
            rule.set_args(Some(
                args.iter()
                    .map(|a| {
                        let op: LinuxSeccompOperator = oci_enum(&a.op, Error::UnknownOperator)?;
                        Ok(crate::oci_arg(a.index, op, a.value, a.value_two))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ));
        }
        syscalls.push(rule);
    }
    out.set_syscalls(Some(syscalls));
    Ok(out)
}

/// The architectures of profile `p` for a machine whose native one is `native`: its
/// `architectures`, or the `archMap` entry of `native` with its sub-architectures.
fn profile_arches(p: &Profile, native: OciArch) -> Result<Vec<OciArch>> {
    if p.architectures.is_some() && p.arch_map.is_some() {
        return Err(Error::Invalid(
            "both architectures and archMap are set; use one".into(),
        ));
    }
    let mut arches: Vec<OciArch> = Vec::new();
    for a in p.architectures.iter().flatten() {
        arches.push(oci_enum(a, Error::UnsupportedArch)?);
    }
    for m in p.arch_map.iter().flatten() {
        let main: OciArch = oci_enum(&m.architecture, Error::UnsupportedArch)?;
        let subs = m
            .sub_architectures
            .iter()
            .flatten()
            .map(|s| oci_enum::<OciArch>(s, Error::UnsupportedArch))
            .collect::<Result<Vec<_>>>()?;
        if main == native {
            arches.push(main);
            arches.extend(subs);
        }
    }
    Ok(arches)
}

/// Whether rule `s` applies on `arch` and `kernel` to a container holding the capabilities
/// `held`, by its `excludes` and `includes`.
fn applies(s: &Syscall, arch: Arch, kernel: Option<(u32, u32)>, held: &[String]) -> Result<bool> {
    let kernel_at_least = |v: &str| -> Result<bool> {
        let want = kernel_version(v)
            .ok_or_else(|| Error::Invalid(format!("minKernel {v:?} is no kernel version")))?;
        Ok(kernel.is_some_and(|k| k >= want))
    };
    if let Some(ex) = &s.excludes {
        if ex.arches.iter().flatten().any(|a| a == arch.go_name())
            || ex.caps.iter().flatten().any(|c| held.contains(c))
        {
            return Ok(false);
        }
        if let Some(v) = &ex.min_kernel
            && kernel_at_least(v)?
        {
            return Ok(false);
        }
    }
    if let Some(inc) = &s.includes {
        if let Some(arches) = &inc.arches
            && !arches.is_empty()
            && !arches.iter().any(|a| a == arch.go_name())
        {
            return Ok(false);
        }
        if !inc.caps.iter().flatten().all(|c| held.contains(c)) {
            return Ok(false);
        }
        if let Some(v) = &inc.min_kernel
            && !kernel_at_least(v)?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn action(s: &str) -> Result<LinuxSeccompAction> {
    oci_enum(s, Error::UnknownAction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("4.8"), Some((4, 8)));
        assert_eq!(kernel_version("5"), Some((5, 0)));
        assert_eq!(kernel_version("x"), None);
        assert!(running_kernel().is_some());
    }

    #[test]
    fn resolves_includes_and_excludes() {
        let json = br#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
            ],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"name": "socket", "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}
            ]
        }"#;
        let names = |p: &LinuxSeccomp| -> Vec<String> {
            p.syscalls()
                .iter()
                .flatten()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        let p = docker_profile_for(Arch::X86_64, Some((6, 1)), json, &[]).expect("profile");
        assert_eq!(
            names(&p),
            ["read", "clone3", "arch_prctl", "ptrace", "socket"]
        );
        assert_eq!(
            p.architectures().clone().unwrap_or_default(),
            [OciArch::ScmpArchX86_64, OciArch::ScmpArchX86]
        );
        let p = docker_profile_for(Arch::Aarch64, Some((4, 4)), json, &[Capability::SysAdmin])
            .expect("profile");
        assert_eq!(names(&p), ["read", "mount", "socket"]);
        assert_eq!(
            p.architectures().clone().unwrap_or_default(),
            [OciArch::ScmpArchAarch64, OciArch::ScmpArchArm]
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let with = |action: &str, op: &str| {
            format!(
                r#"{{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {{"names": ["read"], "action": "{action}", "args": [{{"index": 0, "value": 1, "op": "{op}"}}]}}
                ]}}"#
            )
        };
        let err = docker_profile_for(
            Arch::X86_64,
            None,
            with("SCMP_ACT_FROB", "SCMP_CMP_EQ").as_bytes(),
            &[],
        )
        .expect_err("unknown action");
        assert!(err.to_string().contains("SCMP_ACT_FROB"), "{err}");
        let err = docker_profile_for(
            Arch::X86_64,
            None,
            with("SCMP_ACT_ALLOW", "SCMP_CMP_ABOUT").as_bytes(),
            &[],
        )
        .expect_err("unknown operator");
        assert!(err.to_string().contains("SCMP_CMP_ABOUT"), "{err}");
        let big = vec![b' '; MAX_PROFILE_BYTES + 1];
        let err = docker_profile_for(Arch::X86_64, None, &big, &[]).expect_err("too large");
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        let err = docker_profile_for(Arch::X86_64, None, b"{", &[]).expect_err("bad json");
        assert!(
            err.to_string().starts_with("seccomp profile: parse json"),
            "{err}"
        );
    }
}
