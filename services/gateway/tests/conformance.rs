//! The conformance suites of content, snapshots, diff, images, leases, namespaces and
//! containers (the testkit's, which each service also runs against its local store and its own
//! socket), run through the gateway: every request goes through its router and its hooks (the
//! namespace recorded with the images service at first use, the lease header, the events), as a
//! client of the installation sees them. Each case gets a stack of its own, whose collector
//! keeps young objects for 10 seconds as the images service's own run does (a case checks what
//! a young object still holds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_grpc::remote::{
    RemoteContainers, RemoteContentStore, RemoteDiff, RemoteImages, RemoteLeases, RemoteNamespaces,
    RemoteSnapshots,
};
use strata_testkit::stack::Stack;

/// The whole stack; its collector's grace period is the images service's default.
async fn stack() -> Stack {
    tokio::task::spawn_blocking(|| Stack::start_with_gc_grace(10))
        .await
        .unwrap()
}

/// The gateway's socket, the one address every store below is given.
fn gateway(stack: &Stack) -> String {
    stack.socket().display().to_string()
}

macro_rules! content {
    ($($name:ident),* $(,)?) => {
        mod content {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stack = super::stack().await;
                    let store = super::RemoteContentStore::connect(&super::gateway(&stack)).unwrap();
                    strata_testkit::conformance::content::$name(&store).await;
                }
            )*
        }
    };
}

macro_rules! snapshots {
    ($($name:ident),* $(,)?) => {
        mod snapshots {
            $(
                mod $name {
                    async fn run(sn: &str) {
                        let stack = super::super::stack().await;
                        let store = super::super::RemoteSnapshots::connect(
                            &super::super::gateway(&stack),
                        )
                        .unwrap();
                        let tmp = strata_testkit::tempdir();
                        strata_testkit::conformance::snapshots::$name(&store, sn, tmp.path()).await;
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

macro_rules! diff {
    ($($name:ident),* $(,)?) => {
        mod diff {
            $(
                mod $name {
                    async fn run(sn: &str) {
                        let stack = super::super::stack().await;
                        let address = super::super::gateway(&stack);
                        let stores = strata_testkit::conformance::diff::Stores {
                            diff: super::super::RemoteDiff::connect(&address).unwrap(),
                            content: super::super::RemoteContentStore::connect(&address).unwrap(),
                            snapshots: super::super::RemoteSnapshots::connect(&address).unwrap(),
                        };
                        let tmp = strata_testkit::tempdir();
                        strata_testkit::conformance::diff::$name(&stores, sn, tmp.path()).await;
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

macro_rules! images {
    ($($name:ident),* $(,)?) => {
        mod images {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stack = super::stack().await;
                    let address = super::gateway(&stack);
                    let stores = strata_testkit::conformance::images::Stores {
                        images: super::RemoteImages::connect(&address).unwrap(),
                        leases: super::RemoteLeases::connect(&address).unwrap(),
                        namespaces: super::RemoteNamespaces::connect(&address).unwrap(),
                        content: super::RemoteContentStore::connect(&address).unwrap(),
                        snapshots: super::RemoteSnapshots::connect(&address).unwrap(),
                    };
                    strata_testkit::conformance::images::$name(&stores).await;
                }
            )*
        }
    };
}

macro_rules! containers {
    ($($name:ident),* $(,)?) => {
        mod containers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stack = super::stack().await;
                    let store = super::RemoteContainers::connect(&super::gateway(&stack)).unwrap();
                    strata_testkit::conformance::containers::$name(&store).await;
                }
            )*
        }
    };
}

strata_testkit::content_cases!(content);
strata_testkit::snapshots_cases!(snapshots);
strata_testkit::diff_cases!(diff);
strata_testkit::images_cases!(images);
strata_testkit::containers_cases!(containers);
