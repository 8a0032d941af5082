//! strata's built-in OCI runtime: creates and runs containers from OCI bundles with runc's
//! lifecycle semantics (create → start → kill/pause/resume/exec → delete), so strata can run
//! containers on a machine without runc.
//!
//! The container's init (and every exec'd process) is a direct child of the calling process,
//! which must reap it with `waitpid`; see [`Container`].
//!
//! Supported from `config.json`: pid, mount, uts, ipc, network and cgroup namespaces (new or
//! joined by path; a new network namespace gets `lo` up), hostname and domainname, root with
//! `pivot_root` and `readonly`, mounts in order (including `cgroup`), default device nodes,
//! `linux.devices`, masked and read-only paths, sysctls, process args/env/cwd/user/
//! additional gids/umask, capabilities, `noNewPrivileges`, rlimits, oom_score_adj, a pty for
//! `process.terminal`, and cgroup limits (memory and swap, cpu shares/quota/period, cpuset,
//! pids, device rules: the v1 controller's files, or an eBPF cgroup device program on v2) on
//! cgroup v1 or v2 (through `strata-cgroup`), and any seccomp profile (compiled to BPF by `strata-seccomp` at create,
//! installed last before `execve` in the init and every exec'd process). Every path below the
//! root is resolved inside it by file descriptor (`openat2` with `RESOLVE_IN_ROOT`), so an
//! image's links cannot point the set-up at the host. Refused with [`Error::Unsupported`]
//! (FailedPrecondition, naming the field) rather than run unenforced: user and time
//! namespaces, seccomp notifications to an agent, hooks, AppArmor and SELinux labels, I/O
//! priority, scheduler, CPU affinity, personality, Intel RDT.

#![warn(missing_docs)]

mod caps;
mod child;
mod container;
mod error;
mod inroot;
mod net;
mod rootfs;
mod seccomp;
mod spec;

pub use container::{Container, ExecProcess, State, Status, Stdio, check_sysctl};
pub use error::{Error, Result};
pub use nix::sys::signal::Signal;
pub use nix::unistd::Pid;
pub use oci_spec;
pub use spec::{DEFAULT_CAPABILITIES, default_spec};
