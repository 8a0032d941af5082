//! The real `strata-tasks` binary on a temporary socket, and container fixtures.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use strata_core::containers::{Any, Container};
use strata_testkit::Service;

pub const TASKS_BIN: &str = env!("CARGO_BIN_EXE_strata-tasks");
pub const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
pub const RUNC: &str = "io.containerd.runc.v2";

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

/// A minimal OCI spec as containerd clients send it: JSON under the runtime-spec type URL.
pub fn spec(args: &str) -> Any {
    Any {
        type_url: SPEC_TYPE.to_owned(),
        value: format!(r#"{{"ociVersion":"1.1.0","process":{{"args":["{args}"]}}}}"#).into_bytes(),
    }
}

pub fn container(id: &str) -> Container {
    let mut c = Container::new(id, RUNC);
    c.image = "docker.io/library/busybox:latest".to_owned();
    c.spec = Some(spec("sh"));
    c.snapshotter = "overlayfs".to_owned();
    c.snapshot_key = format!("{id}-snapshot");
    c.labels = labels(&[("app", "web")]);
    c
}
