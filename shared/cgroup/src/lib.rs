//! strata's cgroups, on every layout a host may have: v1 (one hierarchy per controller), v2
//! (unified at `/sys/fs/cgroup`) and hybrid (v1 controllers beside a cgroup2 mount at
//! `/sys/fs/cgroup/unified`), in the manner of youki's `libcgroups`.
//!
//! - [`host_is_v2`], [`v1_mounts`]: which layout the host runs, where the v1 controllers are
//!   mounted. Containers get v2 cgroups on a v2 host, v1 ones otherwise, or v2 ones in the
//!   cgroup2 mount `STRATA_CGROUP2_ROOT` names (a hybrid host's `/sys/fs/cgroup/unified`).
//! - [`Cgroup`]: a container's cgroup, opened from `linux.cgroupsPath`; created, joined,
//!   limited ([`Cgroup::apply`]: memory, swap, cpu, cpuset, pids, device rules), frozen,
//!   listed and removed. Device rules on v2 are an eBPF program attached to the cgroup (the
//!   crate's only `unsafe` code, in its private `devices_bpf` module).
//! - [`locate_pid`], [`locate`]: which cgroup a process is in; [`own_procs`]: this process's
//!   own `cgroup.procs`.
//! - [`stats`] (feature `stats`): a cgroup's statistics as containerd's cgroups v1/v2 messages.
//!
//! Nothing here knows of gRPC or of a container's other settings: the runtime hands in the
//! spec's `linux.resources`, the tasks service a pid.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod cgroup;
#[allow(unsafe_code)]
mod devices_bpf;
mod error;
mod hierarchy;
mod locate;
mod resources;
#[cfg(feature = "stats")]
pub mod stats;

pub use cgroup::Cgroup;
pub use error::{Error, Result};
pub use hierarchy::{host_is_v2, v1_mounts};
pub use locate::{locate, locate_pid, own_procs};
