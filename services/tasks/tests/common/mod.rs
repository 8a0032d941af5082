//! The real `strata-tasks` binary on a temporary socket, and container fixtures.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use strata_testkit::Service;

pub const TASKS_BIN: &str = env!("CARGO_BIN_EXE_strata-tasks");
// The container fixtures are the conformance suite's (the testkit's); not every test uses each.
#[allow(unused_imports)]
pub use strata_testkit::conformance::containers::{RUNC, SPEC_TYPE, container, spec};

/// strata-tasks with its root, state and socket in a temporary directory.
pub struct Tasks {
    pub service: Service,
    pub dir: tempfile::TempDir,
}

impl Tasks {
    pub fn start() -> Self {
        let dir = strata_testkit::tempdir();
        let state = dir.path().join("state");
        let service = Service::start(
            TASKS_BIN,
            dir.path(),
            "tasks",
            &["--state", state.to_str().unwrap()],
        );
        Self { service, dir }
    }

    pub fn address(&self) -> String {
        self.service.address()
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
