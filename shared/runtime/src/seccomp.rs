//! Enforcing the spec's `linux.seccomp` with `strata-seccomp`.
//!
//! The profile is compiled in the parent when the container (or an exec'd process) is created,
//! so a bad profile is an [`Error::InvalidSpec`] before anything runs. The child installs it as
//! its last step before `execve`, once its capabilities are dropped:
//!
//! - with `noNewPrivileges`, `no_new_privs` is set already and the filter installs as is;
//! - without it, `seccomp(2)` needs `CAP_SYS_ADMIN` in the effective set, so the child keeps
//!   `CAP_SYS_ADMIN` effective and permitted through the user switch, installs the filter, and
//!   then sets its capabilities to what the spec asks (`capset`). The profile must then allow
//!   `capset` (checked here): otherwise the process would keep `CAP_SYS_ADMIN`.
//!
//! Either way the profile must allow `execve`, or the container process could never start.

use oci_spec::runtime::{LinuxSeccomp, Process};
use strata_seccomp::Filters;

use crate::caps;
use crate::error::{Error, Result};

/// What the child does with its capabilities once the filter is installed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AfterInstall {
    /// `no_new_privs` was enough: nothing.
    Nothing,
    /// Drop the `CAP_SYS_ADMIN` kept for the install: set exactly these (effective, permitted,
    /// inheritable) masks.
    SetCaps(u64, u64, u64),
}

/// A compiled profile for one process.
#[derive(Debug)]
pub(crate) struct Seccomp {
    pub filters: Filters,
    /// Whether the child must hold `CAP_SYS_ADMIN` until the filter is installed.
    pub hold_admin: bool,
}

/// Compiles `profile` for `process` of container `id`; `None` without a profile.
pub(crate) fn prepare(
    profile: Option<&LinuxSeccomp>,
    process: &Process,
    id: &str,
) -> Result<Option<Seccomp>> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    let filters = strata_seccomp::compile(profile).map_err(|e| {
        if e.is_invalid_profile() {
            Error::InvalidSpec(format!("container {id:?}: linux.seccomp: {e}"))
        } else {
            Error::Unsupported(format!("container {id:?}: linux.seccomp: {e}"))
        }
    })?;
    if !strata_seccomp::allows_unconditionally(profile, "execve") {
        return Err(Error::InvalidSpec(format!(
            "container {id:?}: linux.seccomp: the profile does not allow execve, so the \
             container process could not start"
        )));
    }
    let hold_admin = process.no_new_privileges() != Some(true);
    if hold_admin && !strata_seccomp::allows_unconditionally(profile, "capset") {
        return Err(Error::InvalidSpec(format!(
            "container {id:?}: linux.seccomp: the profile does not allow capset, which the \
             runtime needs after installing it without noNewPrivileges (allow capset or set \
             process.noNewPrivileges)"
        )));
    }
    Ok(Some(Seccomp {
        filters,
        hold_admin,
    }))
}

/// In the child, after the user switch: when the filter must be installed without
/// `no_new_privs`, makes sure `CAP_SYS_ADMIN` is effective (the spec's capabilities were set
/// with it by `caps::apply`) and says how to drop it afterwards.
pub(crate) fn after_install(seccomp: Option<&Seccomp>, process: &Process) -> Result<AfterInstall> {
    if !seccomp.is_some_and(|s| s.hold_admin) {
        return Ok(AfterInstall::Nothing);
    }
    Ok(match process.capabilities() {
        Some(c) => {
            let (eff, perm, inh) = caps::masks(c);
            AfterInstall::SetCaps(eff, perm, inh)
        }
        // No capabilities in the spec: root keeps its own, anyone else has none (the child
        // kept CAP_SYS_ADMIN through setuid for the install only).
        None if process.user().uid() == 0 => AfterInstall::Nothing,
        None => {
            caps::set(caps::SYS_ADMIN, caps::SYS_ADMIN, 0)?;
            AfterInstall::SetCaps(0, 0, 0)
        }
    })
}

/// In the child, the last step before `execve`: installs the filters, then drops what was kept
/// for the install.
pub(crate) fn install(seccomp: &Seccomp, after: AfterInstall) -> Result<()> {
    strata_seccomp::install(&seccomp.filters).map_err(|e| match e {
        strata_seccomp::Error::Install {
            index,
            count,
            source,
        } => Error::sys(
            "install",
            format!("seccomp filter {index} of {count}"),
            nix::errno::Errno::from_raw(source.raw_os_error().unwrap_or(libc::EINVAL)),
        ),
        other => Error::InvalidSpec(format!("linux.seccomp: {other}")),
    })?;
    if let AfterInstall::SetCaps(eff, perm, inh) = after {
        caps::set(eff, perm, inh)?;
    }
    Ok(())
}
