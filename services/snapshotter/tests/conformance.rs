//! One conformance suite for the `SnapshotStore` trait, for both snapshotters (overlayfs and
//! native), run against the local store and against the real binary through the remote store.
//! The cases are `strata_testkit::conformance::snapshots`'s; the gateway's tests run them through
//! its router.
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
