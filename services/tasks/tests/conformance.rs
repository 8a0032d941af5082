//! One conformance suite for the `ContainerStore` trait, run against the local store and against
//! the remote (gRPC client) store talking to the real `strata-tasks` binary. The cases are
//! `strata_testkit::conformance::containers`'s; the gateway's tests run them through its router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = strata_testkit::tempdir();
                    let exchange = std::sync::Arc::new(strata_tasks::Exchange::new(64));
                    let store = strata_tasks::LocalContainers::open(dir.path(), exchange).unwrap();
                    strata_testkit::conformance::containers::$name(&store).await;
                }
            )*
        }
        mod remote {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let tasks = super::common::Tasks::start();
                    let store =
                        strata_grpc::remote::RemoteContainers::connect(&tasks.address()).unwrap();
                    strata_testkit::conformance::containers::$name(&store).await;
                    // ListStream answers as List does.
                    for ns in ["default", "elsewhere"] {
                        let mut a = strata_core::containers::ContainerStore::list(&store, ns, &[])
                            .await
                            .unwrap();
                        let mut b = store.list_stream(ns, &[]).await.unwrap();
                        a.sort_by(|x, y| x.id.cmp(&y.id));
                        b.sort_by(|x, y| x.id.cmp(&y.id));
                        assert_eq!(a, b);
                    }
                }
            )*
        }
    };
}

strata_testkit::containers_cases!(conformance);
