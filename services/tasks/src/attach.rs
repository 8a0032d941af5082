//! Starting the kernel's wait for a cgroup attach ahead of time.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`, v1 or v2) takes the kernel's
//! global `cgroup_threadgroup_rwsem` for writing. Unless the host mounts cgroups with
//! `favordynmods`, taking it first waits for a full RCU grace period (`rcu_sync_enter`: 10 to
//! 15 ms on the 2-core test VMs), and once the writer is done the fast state lasts for about
//! one more grace period; a writer that arrives while a grace period is already under way
//! shares it. A container's supervisor attaches the container's init as soon as it is forked,
//! but that is late in a container start: the tasks service has by then mounted the root file
//! system, written the bundle and spawned the supervisor.
//!
//! [`prime`] therefore starts that grace period as early as the service knows a task is
//! coming (a container record created, a task or exec requested): on a blocking thread it
//! writes its own pid into the `cgroup.procs` of the cgroup it is already in, which moves
//! nothing but goes through the same lock. The attach that follows then waits only for what is
//! left of the period, or not at all. It is best effort: any failure (no cgroup mounted, no
//! permission) only means the attach waits as it would have.
//!
//! Which `cgroup.procs` that is, `strata-cgroup` finds ([`strata_cgroup::own_procs`]).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set while a priming write is under way: a second one would only wait on the same period.
static BUSY: AtomicBool = AtomicBool::new(false);
/// This process's own `cgroup.procs`, found once (`None`: none we can write).
static OWN_PROCS: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Starts the grace period the next cgroup attach would wait for, in the background.
pub fn prime() {
    let Some(path) = OWN_PROCS.get_or_init(strata_cgroup::own_procs).as_ref() else {
        return;
    };
    if BUSY.swap(true, Ordering::AcqRel) {
        return;
    }
    let path = path.clone();
    let spawned = std::thread::Builder::new()
        .name("cgroup-prime".into())
        .spawn(move || {
            if let Err(e) = std::fs::write(&path, std::process::id().to_string()) {
                tracing::debug!(path = %path.display(), error = %e, "priming the cgroup attach");
            }
            BUSY.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        BUSY.store(false, Ordering::Release);
    }
}
