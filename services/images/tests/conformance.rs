//! One conformance suite for the `ImageStore`, `LeaseStore` and `NamespaceStore` traits, run
//! against the local stores (wired to real content and snapshotter services) and against the
//! remote (gRPC client) stores talking to the real `strata-images` binary. The cases are
//! `strata_testkit::conformance::images`'s; the gateway's tests run them through its router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = strata_testkit::tempdir();
                    let backends = super::common::Backends::start(dir.path());
                    let local = strata_images::Local::open(
                        &dir.path().join("images"),
                        backends.content_store(),
                        backends.snapshots(),
                        strata_images::GcConfig::default(),
                    )
                    .unwrap();
                    local.collector.start();
                    let stores = strata_testkit::conformance::images::Stores {
                        images: local.images.clone(),
                        leases: local.leases.clone(),
                        namespaces: local.namespaces.clone(),
                        content: backends.content_store(),
                        snapshots: backends.snapshots(),
                    };
                    strata_testkit::conformance::images::$name(&stores).await;
                }
            )*
        }
        mod remote {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stack = super::common::Stack::start(10);
                    let address = stack.address();
                    let stores = strata_testkit::conformance::images::Stores {
                        images: strata_grpc::remote::RemoteImages::connect(&address).unwrap(),
                        leases: strata_grpc::remote::RemoteLeases::connect(&address).unwrap(),
                        namespaces: strata_grpc::remote::RemoteNamespaces::connect(&address)
                            .unwrap(),
                        content: stack.content_store(),
                        snapshots: stack.snapshots(),
                    };
                    strata_testkit::conformance::images::$name(&stores).await;
                }
            )*
        }
    };
}

strata_testkit::images_cases!(conformance);
