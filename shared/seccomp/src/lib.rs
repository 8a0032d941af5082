//! seccomp for strata containers.
//!
//! - [`default_profile`]: strata's own default profile, with the effect of Docker's (see
//!   `default.rs`), for a container holding a given set of capabilities.
//! - [`docker_profile`]: a profile in Docker's JSON format (`--security-opt
//!   seccomp=PROFILE.json`), resolved for this machine's architecture and the container's
//!   capabilities.
//! - [`compile`] and [`install`]: any OCI seccomp profile to classic BPF, in pure Rust (the
//!   `seccompiler` crate builds the programs), and its installation in the calling thread.
//!
//! Profiles are OCI [`LinuxSeccomp`] values, so the same profile goes into a spec that runc
//! or crun enforce.

#![warn(missing_docs)]

mod compile;
mod default;
mod docker;
mod syscalls;

use oci_spec::runtime::{Capability, LinuxSeccomp};

pub use compile::{Filters, allows_unconditionally, compile, install};
pub use docker::{MAX_PROFILE_BYTES, docker_profile, docker_profile_for};

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of this crate. Every variant but [`Error::Install`] is about the profile given, and
/// names the part of it at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call name that no Linux architecture has.
    #[error("seccomp profile: unknown system call {0:?}")]
    UnknownSyscall(String),
    /// An action this crate does not know.
    #[error("seccomp profile: unknown action {0:?}")]
    UnknownAction(String),
    /// A comparison operator this crate does not know.
    #[error("seccomp profile: unknown operator {0:?}")]
    UnknownOperator(String),
    /// An architecture name this crate does not know, or a machine it cannot filter for.
    #[error("seccomp profile: unsupported architecture {0:?}")]
    UnsupportedArch(String),
    /// A profile larger than [`MAX_PROFILE_BYTES`].
    #[error("seccomp profile: {size} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The profile's size in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// Anything else wrong in the profile (its JSON, an argument index, an errno on an action
    /// that takes none...).
    #[error("seccomp profile: {0}")]
    Invalid(String),
    /// Something valid that this crate cannot enforce (notifications to a seccomp agent).
    #[error("seccomp profile: {0} is not supported")]
    Unsupported(String),
    /// `seccomp(2)` refused a filter.
    #[error("install seccomp filter {index} of {count}: {source}")]
    Install {
        /// Which filter was refused, in the order they are installed.
        index: usize,
        /// How many filters the profile compiled to.
        count: usize,
        /// What `seccomp(2)` failed with (`E2BIG` for a program over 65535 instructions).
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the error is about the profile given (an invalid argument), as opposed to
    /// something valid that is not supported or a failure to install.
    pub fn is_invalid_profile(&self) -> bool {
        !matches!(self, Error::Unsupported(_) | Error::Install { .. })
    }
}

/// The architectures strata builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit x86 (`amd64`).
    X86_64,
    /// 64-bit Arm (`arm64`).
    Aarch64,
}

impl Arch {
    /// The architecture this binary runs on, when it is one strata supports.
    pub fn host() -> Option<Arch> {
        #[cfg(target_arch = "x86_64")]
        let host = Some(Arch::X86_64);
        #[cfg(target_arch = "aarch64")]
        let host = Some(Arch::Aarch64);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let host = None;
        host
    }

    /// Like [`Arch::host`], or an error naming the machine.
    pub fn host_or_err() -> Result<Arch> {
        Arch::host().ok_or_else(|| Error::UnsupportedArch(std::env::consts::ARCH.to_string()))
    }

    /// Go's name of the architecture, which Docker's profiles use in `includes.arches`.
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

/// strata's default profile for this machine and a container holding `caps` (its bounding
/// set): default action `EPERM`, the calls Docker's default profile allows, with the same
/// argument conditions and capability-dependent calls. On a machine strata does not build for,
/// the profile is the x86_64 one, and [`compile`] refuses it.
pub fn default_profile(caps: &[Capability]) -> LinuxSeccomp {
    default_profile_for(Arch::host().unwrap_or(Arch::X86_64), caps)
}

/// [`default_profile`] for a given architecture.
pub fn default_profile_for(arch: Arch, caps: &[Capability]) -> LinuxSeccomp {
    default::profile(arch, caps)
}

/// The number of system call `name` on `arch`; `None` when `arch` has no such call.
pub fn syscall_number(arch: Arch, name: &str) -> Option<i64> {
    syscalls::find(name)
        .and_then(|(_, x86_64, aarch64)| match arch {
            Arch::X86_64 => *x86_64,
            Arch::Aarch64 => *aarch64,
        })
        .map(i64::from)
}

/// Every system call name of `arch`.
pub fn syscall_names(arch: Arch) -> impl Iterator<Item = &'static str> {
    syscalls::SYSCALLS
        .iter()
        .filter(move |(_, x86_64, aarch64)| match arch {
            Arch::X86_64 => x86_64.is_some(),
            Arch::Aarch64 => aarch64.is_some(),
        })
        .map(|(n, _, _)| *n)
}

/// Every system call name this crate knows, of any architecture.
pub fn known_syscall_names() -> impl Iterator<Item = &'static str> {
    syscalls::SYSCALLS
        .iter()
        .map(|(n, _, _)| *n)
        .chain(syscalls::OTHER_ARCHES.iter().copied())
}

/// An OCI argument condition.
pub(crate) fn oci_arg(
    index: usize,
    op: oci_spec::runtime::LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> oci_spec::runtime::LinuxSeccompArg {
    let b = oci_spec::runtime::LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Every field has a default, so building cannot fail.
    b.build().unwrap_or_default()
}

/// Whether some Linux architecture has a system call `name`.
pub fn is_known(name: &str) -> bool {
    syscalls::find(name).is_some() || syscalls::OTHER_ARCHES.contains(&name)
}
