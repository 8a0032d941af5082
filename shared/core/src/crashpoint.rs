//! Crash points: a test hook, inert unless `STRATA_CRASH_AT` is set.
//!
//! `crashpoint::hit("content.commit.renamed")` does nothing in a normal run. When the
//! environment variable `STRATA_CRASH_AT` (read once, at the first call) names that point, the
//! process sends itself SIGKILL there: it dies at once, exactly as `kill -9` from outside would,
//! with no destructor, no buffered write flushed, no socket or temporary file removed, no
//! transaction committed or rolled back. The kill -9 matrix (`services/gateway/tests/crash.rs`)
//! starts one service with the variable set, drives the work that reaches the point, and checks
//! what a restart finds.
//!
//! SIGKILL rather than [`std::process::abort`]: abort raises SIGABRT, which a handler could catch,
//! may write a core file, and reports a different status; SIGKILL cannot be caught or ignored,
//! and the test sees the same status an outside kill -9 gives.

use std::sync::OnceLock;

/// The variable naming the crash point to die at.
pub const VAR: &str = "STRATA_CRASH_AT";

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var(VAR).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Dies as `kill -9` would when `STRATA_CRASH_AT` names `point`; otherwise does nothing.
pub fn hit(point: &str) {
    if armed() == Some(point) {
        kill_self();
    }
}

fn kill_self() -> ! {
    // SAFETY: getpid and kill take no pointers and have no memory-safety preconditions; SIGKILL
    // to our own pid cannot fail for lack of permission.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL is delivered before kill returns to a single-threaded caller, and to a thread of
    // this process at the latest on its way back to user space; should it somehow not be, never
    // run on past the point.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    #[test]
    fn inert_without_the_variable() {
        // The test binary runs without STRATA_CRASH_AT (or with another point).
        super::hit("crashpoint.test.never-armed");
    }
}
