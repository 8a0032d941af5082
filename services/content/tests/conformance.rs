//! One conformance suite for the `ContentStore` trait, run against the local store and against
//! the remote (gRPC client) store talking to the real `strata-content` binary. The cases are
//! `strata_testkit::conformance::content`'s; the gateway's tests run them through its router.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = strata_testkit::tempdir();
                    let store = strata_content::LocalContentStore::open(dir.path()).unwrap();
                    strata_testkit::conformance::content::$name(&store).await;
                }
            )*
        }
        mod remote {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = strata_testkit::tempdir();
                    let svc = strata_testkit::Service::start(
                        env!("CARGO_BIN_EXE_strata-content"),
                        dir.path(),
                        "content",
                        &[],
                    );
                    let store = strata_grpc::remote::RemoteContentStore::connect(&svc.address()).unwrap();
                    strata_testkit::conformance::content::$name(&store).await;
                }
            )*
        }
    };
}

strata_testkit::content_cases!(conformance);
