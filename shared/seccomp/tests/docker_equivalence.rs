//! strata's default profile has the effect of Docker's, call by call.
//!
//! Docker's profile is read from `../shared/referees/moby-seccomp-default.json` beside the
//! checkout (CI has it there); without it the comparison is skipped and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use oci_spec::runtime::{Capability, LinuxSeccomp, LinuxSeccompAction};
use strata_seccomp::{
    Arch, compile, default_profile, default_profile_for, docker_profile, docker_profile_for,
    known_syscall_names, syscall_names, syscall_number,
};

/// Docker's default capabilities (as `strata_runtime::DEFAULT_CAPABILITIES`).
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const ALL_CAPS: &[Capability] = &[
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

fn cap_sets() -> Vec<(&'static str, Vec<Capability>)> {
    let with = |extra: &[Capability]| {
        let mut v = DEFAULT_CAPS.to_vec();
        v.extend_from_slice(extra);
        v
    };
    vec![
        ("none", Vec::new()),
        ("docker's default", DEFAULT_CAPS.to_vec()),
        ("default + SYS_ADMIN", with(&[Capability::SysAdmin])),
        ("default + SYS_PTRACE", with(&[Capability::SysPtrace])),
        (
            "default + SYS_TIME, SYS_NICE, BPF, PERFMON",
            with(&[
                Capability::SysTime,
                Capability::SysNice,
                Capability::Bpf,
                Capability::Perfmon,
            ]),
        ),
        ("default + SYSLOG", with(&[Capability::Syslog])),
        ("all", ALL_CAPS.to_vec()),
    ]
}

fn docker_json() -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/referees/moby-seccomp-default.json");
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!(
                "SKIPPED: Docker's profile {} is not beside the checkout ({e}); the comparison \
                 did not run",
                path.display()
            );
            None
        }
    }
}

/// One rule as its effect: action, errno (ERRNO and TRACE default to 1 as the OCI spec says),
/// conditions (index, operator, value, valueTwo) in a canonical order.
type Effect = (String, Option<u32>, Vec<(usize, String, u64, u64)>);

/// Every rule that names each call.
fn effects(p: &LinuxSeccomp) -> BTreeMap<String, BTreeSet<Effect>> {
    let mut out: BTreeMap<String, BTreeSet<Effect>> = BTreeMap::new();
    for s in p.syscalls().iter().flatten() {
        let errno = match s.action() {
            LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace => {
                Some(s.errno_ret().unwrap_or(1))
            }
            _ => s.errno_ret(),
        };
        let mut args: Vec<_> = s
            .args()
            .iter()
            .flatten()
            .map(|a| {
                (
                    a.index(),
                    a.op().to_string(),
                    a.value(),
                    a.value_two().unwrap_or(0),
                )
            })
            .collect();
        args.sort();
        for n in s.names() {
            out.entry(n.clone())
                .or_default()
                .insert((s.action().to_string(), errno, args.clone()));
        }
    }
    out
}

fn compare(arch: Arch, label: &str, ours: &LinuxSeccomp, docker: &LinuxSeccomp) -> Vec<String> {
    let mut diffs = Vec::new();
    if ours.default_action() != docker.default_action()
        || ours.default_errno_ret() != docker.default_errno_ret()
    {
        diffs.push(format!(
            "default action: ours {} {:?}, docker's {} {:?}",
            ours.default_action(),
            ours.default_errno_ret(),
            docker.default_action(),
            docker.default_errno_ret()
        ));
    }
    if ours.architectures() != docker.architectures() {
        diffs.push(format!(
            "architectures: ours {:?}, docker's {:?}",
            ours.architectures(),
            docker.architectures()
        ));
    }
    let (a, b) = (effects(ours), effects(docker));
    let empty = BTreeSet::new();
    for name in known_syscall_names() {
        let (x, y) = (a.get(name).unwrap_or(&empty), b.get(name).unwrap_or(&empty));
        if x != y {
            diffs.push(format!(
                "{arch:?}, {label}: {name}: ours {x:?}, docker's {y:?}"
            ));
        }
    }
    for name in a.keys().chain(b.keys()) {
        if !strata_seccomp::is_known(name) {
            diffs.push(format!("{arch:?}, {label}: unknown name {name}"));
        }
    }
    diffs
}

#[test]
fn default_profile_has_the_effect_of_dockers_on_every_call() {
    let Some(json) = docker_json() else {
        return;
    };
    let mut diffs = Vec::new();
    let mut compared = 0;
    for arch in [Arch::X86_64, Arch::Aarch64] {
        assert!(syscall_names(arch).count() > 300);
        for (label, caps) in cap_sets() {
            let ours = default_profile_for(arch, &caps);
            let docker =
                docker_profile_for(arch, Some((6, 1)), &json, &caps).expect("docker's profile");
            diffs.extend(compare(arch, label, &ours, &docker));
            compared += 1;
        }
    }
    assert_eq!(compared, 14);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
}

/// Argument values that tell the rules apart: address families around the refused ones,
/// personalities, clone flags with and without namespaces.
fn probes() -> Vec<[u64; 6]> {
    let mut v = Vec::new();
    for x in [
        0u64,
        1,
        2,
        8,
        10,
        16,
        37,
        38,
        39,
        40,
        41,
        45,
        0x2_0000,
        0x2_0008,
        0xffff_ffff,
        u64::MAX,
        0x3d0f00,    // the flags of a new thread
        0x1200011,   // the flags of fork()
        0x1000_0000, // CLONE_NEWUSER
        0x2002_0000, // CLONE_NEWPID | CLONE_NEWNS
        0x4000_0000, // CLONE_NEWNET
        0x0000_0080, // CLONE_NEWTIME
    ] {
        v.push([x, x, 0, 0, 0, 0]);
        v.push([x, 0, 0, 0, 0, 0]);
    }
    v
}

/// On this machine, the compiled filters answer every call the same way.
#[test]
fn compiled_default_answers_as_compiled_docker_for_every_call() {
    let Some(json) = docker_json() else {
        return;
    };
    let arch = Arch::host().expect("strata builds for this machine");
    let probes = probes();
    for (label, caps) in cap_sets() {
        let ours = compile(&default_profile(&caps)).expect("compile ours");
        let docker = compile(&docker_profile(&json, &caps).expect("docker's")).expect("compile");
        // Every number up to past the last one, so calls neither profile names are included.
        let max = syscall_names(arch)
            .filter_map(|n| syscall_number(arch, n))
            .max()
            .unwrap_or(0);
        for nr in 0..=max + 8 {
            for args in &probes {
                assert_eq!(
                    ours.result(nr, *args),
                    docker.result(nr, *args),
                    "{label}: call {nr} with {args:x?}"
                );
            }
        }
    }
}
