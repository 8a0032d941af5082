//! The conformance suites of the `SnapshotStore` and `Diff` traits, for both snapshotters
//! (overlayfs and native), run against the local store (the local `Differ`, reading and writing
//! layers in a real content service) and against the real binary through the remote store and
//! `RemoteDiff`. The cases are `strata_testkit::conformance::snapshots`'s and `diff`'s; the
//! gateway's tests run them through its router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                mod $name {
                    async fn run(sn: &str) {
                        let dir = strata_testkit::tempdir();
                        let store = strata_snapshotter::LocalSnapshots::open(
                            dir.path().join("root"),
                            &[strata_snapshotter::Backend::Overlay, strata_snapshotter::Backend::Native],
                        )
                        .unwrap();
                        strata_testkit::conformance::snapshots::$name(&store, sn, dir.path()).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn overlayfs() { run("overlayfs").await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn native() { run("native").await }
                }
            )*
        }
        mod remote {
            $(
                mod $name {
                    async fn run(sn: &str) {
                        let dir = strata_testkit::tempdir();
                        let svc = strata_testkit::Service::start(
                            env!("CARGO_BIN_EXE_strata-snapshotter"),
                            dir.path(),
                            "snapshotter",
                            &[],
                        );
                        let store = strata_grpc::remote::RemoteSnapshots::connect(&svc.address()).unwrap();
                        strata_testkit::conformance::snapshots::$name(&store, sn, dir.path()).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn overlayfs() { run("overlayfs").await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn native() { run("native").await }
                }
            )*
        }
    };
}

strata_testkit::snapshots_cases!(conformance);

/// The content service the differ reads and writes layers in, on a socket in `dir`.
fn content(dir: &std::path::Path) -> strata_testkit::Service {
    strata_testkit::Service::start(
        strata_testkit::sibling_bin("strata-content"),
        dir,
        "content",
        &[],
    )
}

macro_rules! diff {
    ($($name:ident),* $(,)?) => {
        mod diff_local {
            $(
                mod $name {
                    async fn run(sn: &str) {
                        let dir = strata_testkit::tempdir();
                        let content = super::super::content(dir.path());
                        let address = content.address();
                        let scratch = dir.path().join("scratch");
                        std::fs::create_dir(&scratch).unwrap();
                        let stores = strata_testkit::conformance::diff::Stores {
                            diff: strata_snapshotter::diff::Differ::new(
                                strata_grpc::remote::RemoteContentStore::connect(&address).unwrap(),
                                scratch,
                            ),
                            content: strata_grpc::remote::RemoteContentStore::connect(&address).unwrap(),
                            snapshots: strata_snapshotter::LocalSnapshots::open(
                                dir.path().join("root"),
                                &[strata_snapshotter::Backend::Overlay, strata_snapshotter::Backend::Native],
                            )
                            .unwrap(),
                        };
                        strata_testkit::conformance::diff::$name(&stores, sn, dir.path()).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn overlayfs() { run("overlayfs").await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn native() { run("native").await }
                }
            )*
        }
        mod diff_remote {
            $(
                mod $name {
                    async fn run(sn: &str) {
                        let dir = strata_testkit::tempdir();
                        let content = super::super::content(dir.path());
                        let address = content.address();
                        let svc = strata_testkit::Service::start(
                            env!("CARGO_BIN_EXE_strata-snapshotter"),
                            dir.path(),
                            "snapshotter",
                            &["--content", &address],
                        );
                        let stores = strata_testkit::conformance::diff::Stores {
                            diff: strata_grpc::remote::RemoteDiff::connect(&svc.address()).unwrap(),
                            content: strata_grpc::remote::RemoteContentStore::connect(&address).unwrap(),
                            snapshots: strata_grpc::remote::RemoteSnapshots::connect(&svc.address()).unwrap(),
                        };
                        strata_testkit::conformance::diff::$name(&stores, sn, dir.path()).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn overlayfs() { run("overlayfs").await }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn native() { run("native").await }
                }
            )*
        }
    };
}

strata_testkit::diff_cases!(diff);
