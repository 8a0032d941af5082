//! The real services on temporary sockets: strata-content, strata-snapshotter and (for the remote
//! and end-to-end tests) strata-images pointed at them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strata_grpc::remote::{RemoteContentStore, RemoteSnapshots};
use strata_testkit::{Service, sibling_bin};

pub const IMAGES_BIN: &str = env!("CARGO_BIN_EXE_strata-images");

/// The services the images service talks to.
pub struct Backends {
    pub content: Service,
    pub snapshotter: Service,
}

impl Backends {
    pub fn start(dir: &Path) -> Self {
        let content = Service::start(sibling_bin("strata-content"), dir, "content", &[]);
        let snapshotter = Service::start(
            sibling_bin("strata-snapshotter"),
            dir,
            "snapshotter",
            &["--content", &content.address()],
        );
        Self {
            content,
            snapshotter,
        }
    }

    pub fn content_store(&self) -> RemoteContentStore {
        RemoteContentStore::connect(&self.content.address()).unwrap()
    }

    pub fn snapshots(&self) -> RemoteSnapshots {
        RemoteSnapshots::connect(&self.snapshotter.address()).unwrap()
    }
}

/// Writes the images service's config: grace period and deferred-collection delay.
pub fn write_config(path: &Path, grace_seconds: u64) {
    std::fs::write(
        path,
        format!("gc_grace_seconds = {grace_seconds}\ngc_delay_ms = 20\n"),
    )
    .unwrap();
}

/// The three services (four with [`Stack::with_tasks`]); the images binary is configured with
/// `grace_seconds`.
pub struct Stack {
    pub images: Service,
    /// strata-tasks, whose containers are roots, when started with [`Stack::with_tasks`].
    pub tasks: Option<Service>,
    pub backends: Backends,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub fn start(grace_seconds: u64) -> Self {
        Self::start_inner(grace_seconds, false)
    }

    /// As [`Stack::start`], with strata-tasks (on the snapshotter) as the images service's
    /// tasks service.
    pub fn with_tasks(grace_seconds: u64) -> Self {
        Self::start_inner(grace_seconds, true)
    }

    fn start_inner(grace_seconds: u64, with_tasks: bool) -> Self {
        let dir = strata_testkit::tempdir();
        let backends = Backends::start(dir.path());
        let config = dir.path().join("images.toml");
        write_config(&config, grace_seconds);
        let tasks = with_tasks.then(|| {
            let state = dir.path().join("tasks-state");
            Service::start(
                sibling_bin("strata-tasks"),
                dir.path(),
                "tasks",
                &[
                    "--snapshotter",
                    &backends.snapshotter.address(),
                    "--state",
                    state.to_str().unwrap(),
                ],
            )
        });
        // Without a tasks service it is said explicitly, or the collector finds no container
        // list and collects nothing.
        let tasks_address = tasks
            .as_ref()
            .map_or_else(|| "none".to_owned(), Service::address);
        let images = Service::start(
            IMAGES_BIN,
            dir.path(),
            "images",
            &[
                "--config",
                config.to_str().unwrap(),
                "--content",
                &backends.content.address(),
                "--snapshotter",
                &backends.snapshotter.address(),
                "--tasks",
                &tasks_address,
            ],
        );
        Self {
            images,
            tasks,
            backends,
            config,
            dir,
        }
    }

    pub fn address(&self) -> String {
        self.images.address()
    }

    pub fn content_store(&self) -> RemoteContentStore {
        self.backends.content_store()
    }

    pub fn snapshots(&self) -> RemoteSnapshots {
        self.backends.snapshots()
    }

    pub fn gc_client(
        &self,
    ) -> strata_api::strata::images::v1::garbage_collector_client::GarbageCollectorClient<
        tonic::transport::Channel,
    > {
        strata_api::strata::images::v1::garbage_collector_client::GarbageCollectorClient::new(
            strata_grpc::client::channel(&self.address()).unwrap(),
        )
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
