//! glibc tunables every service runs with. glibc reads them from `GLIBC_TUNABLES` once, when
//! the process starts, and offers no call to set them later; so a service started without them
//! executes itself again at once (same pid, same program file, same arguments and name) with
//! them added, then gives its environment back as it found it, so that what it starts
//! (supervisors, runtimes, plugins) inherits nothing.
//!
//! - `glibc.malloc.tcache_count=0`: no per-thread cache of freed blocks. Each thread kept up to
//!   seven freed blocks of every small size, counted as in use: over rounds of the same load
//!   (`bench/soak.sh`), glibc's in-use count of strata-tasks rose by 40 KiB a round and its
//!   heap by 200 KiB, as the caches of its threads filled and pinned the pages around them.
//! - `glibc.pthread.stack_cache_size=0`: the stack of a thread that ended is unmapped, not kept
//!   for the next thread. tokio's blocking threads come and go with each burst of work, and
//!   glibc kept up to 40 MiB of their stacks, each with the pages it last used: 22 stacks and
//!   490 KiB of strata-tasks' 4.2 MiB, with three threads alive.
//!
//! Without them each service's memory after the warm-up round was 0.7 to 1.3 MiB larger, and
//! tasks' kept growing by about 5 % a round. The allocation-heavy paths (pulls, container
//! starts) showed no difference in throughput.
//!
//! A value the operator set for one of these keys stands (it is not added again).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;

/// The tunables added, key and value.
pub const TUNABLES: &[(&str, &str)] = &[
    ("glibc.malloc.tcache_count", "0"),
    ("glibc.pthread.stack_cache_size", "0"),
];

/// Set (to the caller's own `GLIBC_TUNABLES`, possibly empty) in the environment of the second
/// execution, so it does not execute itself again and can restore the variable.
const MARK: &str = "STRATA_GLIBC_TUNABLES_WAS";

/// `GLIBC_TUNABLES` with [`TUNABLES`] added to `current` (keys already there keep their
/// value); `None` when every key is there already.
pub fn with_tunables(current: Option<&OsStr>) -> Option<OsString> {
    let current = current.map_or(&[][..], OsStr::as_bytes);
    let present = |key: &str| {
        current
            .split(|b| *b == b':')
            .any(|kv| kv.split(|b| *b == b'=').next() == Some(key.as_bytes()))
    };
    let mut out = current.to_vec();
    for (key, value) in TUNABLES {
        if present(key) {
            continue;
        }
        if !out.is_empty() {
            out.push(b':');
        }
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
    }
    (out != current).then(|| OsString::from(std::ffi::OsStr::from_bytes(&out)))
}

/// Executes this program again with [`TUNABLES`], unless they are in force already; in the
/// second execution, restores the environment. Must run first in `main`, before any thread
/// exists (it changes the environment). When the program cannot execute itself (no `/proc`),
/// it goes on without the tunables.
pub fn ensure() {
    if let Some(was) = std::env::var_os(MARK) {
        // SAFETY: called first in `main`, before any other thread exists that could read the
        // environment at the same time (the service's runtime is made after this returns).
        unsafe {
            std::env::remove_var(MARK);
            if was.is_empty() {
                std::env::remove_var("GLIBC_TUNABLES");
            } else {
                std::env::set_var("GLIBC_TUNABLES", was);
            }
        }
        return;
    }
    let current = std::env::var_os("GLIBC_TUNABLES");
    let Some(value) = with_tunables(current.as_deref()) else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let err = std::os::unix::process::CommandExt::exec(
        std::os::unix::process::CommandExt::arg0(
            &mut std::process::Command::new(this_program()),
            arg0,
        )
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .env(MARK, current.unwrap_or_default()),
    );
    // Only returns on failure; the service runs with glibc's defaults.
    eprintln!("running without the allocator's tunables (executing /proc/self/exe: {err})");
}

/// The path of the running program's file, when that path still names the very file that
/// runs (executing it keeps the process's name, which `ps`, `pgrep` and the journal show);
/// otherwise (the file was replaced or removed meanwhile) `/proc/self/exe`, the same file
/// under the name `exe`.
fn this_program() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let running = std::path::PathBuf::from("/proc/self/exe");
    let same = |path: &std::path::Path| match (std::fs::metadata(&running), std::fs::metadata(path))
    {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    match std::fs::read_link(&running) {
        Ok(path) if same(&path) => path,
        _ => running,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tunables_are_added_and_an_operator_s_value_stands() {
        assert_eq!(
            with_tunables(None).unwrap(),
            "glibc.malloc.tcache_count=0:glibc.pthread.stack_cache_size=0"
        );
        assert_eq!(
            with_tunables(Some(OsStr::new("glibc.malloc.check=3"))).unwrap(),
            "glibc.malloc.check=3:glibc.malloc.tcache_count=0:glibc.pthread.stack_cache_size=0"
        );
        assert_eq!(
            with_tunables(Some(OsStr::new("glibc.malloc.tcache_count=7"))).unwrap(),
            "glibc.malloc.tcache_count=7:glibc.pthread.stack_cache_size=0"
        );
        assert_eq!(
            with_tunables(Some(OsStr::new(
                "glibc.pthread.stack_cache_size=1:glibc.malloc.tcache_count=7"
            ))),
            None
        );
        // A key is matched whole, not as a prefix.
        assert_eq!(
            with_tunables(Some(OsStr::new("glibc.malloc.tcache_count_x=1"))).unwrap(),
            "glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=0:glibc.pthread.stack_cache_size=0"
        );
    }
}
