//! Linux capabilities through `prctl(2)` and `capset(2)` (no extra crate needed).

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::{Error, Result};

/// The kernel's number for an OCI capability name.
pub(crate) fn number(c: Capability) -> u32 {
    use Capability::*;
    match c {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

fn mask(set: Option<&Capabilities>) -> u64 {
    set.map_or(0, |s| s.iter().fold(0u64, |m, c| m | (1u64 << number(*c))))
}

fn prctl(op: libc::c_int, arg: libc::c_ulong, arg2: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: prctl with integer arguments only; no pointers are passed.
    let rc = unsafe { libc::prctl(op, arg, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc < 0 {
        return Err(Error::sys("prctl", what, nix::errno::Errno::last()));
    }
    Ok(())
}

/// Drops every capability not in `bounding` from the bounding set. Needs CAP_SETPCAP, so it
/// runs before the user switch.
pub(crate) fn drop_bounding(caps: &LinuxCapabilities) -> Result<()> {
    let keep = mask(caps.bounding().as_ref());
    for cap in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ takes an integer capability number and no pointers.
        let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap)) };
        if present < 0 {
            break; // past the kernel's last capability
        }
        if present == 1 && keep & (1u64 << cap) == 0 {
            prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(cap),
                0,
                &format!("drop capability {cap} from the bounding set"),
            )?;
        }
    }
    Ok(())
}

/// Keeps permitted capabilities across the coming setuid.
pub(crate) fn keep_caps(on: bool) -> Result<()> {
    prctl(
        libc::PR_SET_KEEPCAPS,
        libc::c_ulong::from(on),
        0,
        "PR_SET_KEEPCAPS",
    )
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `CAP_SYS_ADMIN` as a mask: held in the effective set until a seccomp filter is installed
/// without `no_new_privs` (see `seccomp.rs`).
pub(crate) const SYS_ADMIN: u64 = 1 << 21;

/// Sets the three sets to exactly these masks.
pub(crate) fn set(eff: u64, perm: u64, inh: u64) -> Result<()> {
    let mut header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let lo = |m: u64| u32::try_from(m & 0xffff_ffff).unwrap_or(u32::MAX);
    let hi = |m: u64| u32::try_from(m >> 32).unwrap_or(u32::MAX);
    let data = [
        CapData {
            effective: lo(eff),
            permitted: lo(perm),
            inheritable: lo(inh),
        },
        CapData {
            effective: hi(eff),
            permitted: hi(perm),
            inheritable: hi(inh),
        },
    ];
    // SAFETY: header and data are valid, properly laid out (#[repr(C)]) for version 3, which
    // reads exactly two CapData entries; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc < 0 {
        return Err(Error::sys(
            "capset",
            format!("effective={eff:#x} permitted={perm:#x} inheritable={inh:#x}"),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// The effective, permitted and inheritable masks of `caps`.
pub(crate) fn masks(caps: &LinuxCapabilities) -> (u64, u64, u64) {
    (
        mask(caps.effective().as_ref()),
        mask(caps.permitted().as_ref()),
        mask(caps.inheritable().as_ref()),
    )
}

/// Sets the effective, permitted and inheritable sets, with `extra` also effective and
/// permitted, then raises the ambient set.
pub(crate) fn apply(caps: &LinuxCapabilities, extra: u64) -> Result<()> {
    let (eff, perm, inh) = masks(caps);
    set(eff | extra, perm | extra, inh)?;
    if let Some(ambient) = caps.ambient() {
        for c in ambient {
            let n = number(*c);
            // Like runc, a capability that cannot be raised (not both permitted and
            // inheritable) is skipped rather than failing the container. No logging here: this
            // runs in the forked child, where another thread's logger lock may be held.
            let _ = prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                libc::c_ulong::from(n),
                "raise ambient capability",
            );
        }
    }
    Ok(())
}
