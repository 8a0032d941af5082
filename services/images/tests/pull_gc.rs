//! What a user sees of the collector through the whole stack (gateway, images, tasks, content,
//! snapshotter) and a real registry: an image pulled, then at once removed with `ctr images rm
//! --sync` or `strata rmi`, leaves nothing on disk when the command returns, whatever the grace
//! period.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_core::content::ContentStore;
use strata_core::snapshots::SnapshotStore;
use strata_grpc::remote::{RemoteContentStore, RemoteSnapshots};
use strata_testkit::ok;
use strata_testkit::registry::{Entry, Registry, busybox_layer, host_arch, layer, oci_image};
use strata_testkit::stack::Stack;

const NS: &str = "default";

/// The stack with the shipped grace period's order of magnitude (an hour: nothing a test waits
/// for), so only claims can free what was pulled at once.
fn stack_with_grace() -> Stack {
    let mut stack = Stack::start();
    let config = stack.path().join("images.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("gc_grace_seconds = 0"), "{text}");
    std::fs::write(
        &config,
        text.replace("gc_grace_seconds = 0", "gc_grace_seconds = 3600"),
    )
    .unwrap();
    stack.images.restart();
    stack
}

async fn on_disk(stack: &Stack) -> (Vec<String>, Vec<String>) {
    let content = RemoteContentStore::connect(&stack.content.address()).unwrap();
    let snapshots = RemoteSnapshots::connect(&stack.snapshotter.address()).unwrap();
    let blobs = content
        .list(NS, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.digest.to_string())
        .collect();
    let snaps = snapshots
        .list("overlayfs", NS, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    (blobs, snaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_then_remove_at_once_leaves_nothing() {
    let stack = stack_with_grace();
    let reg = Registry::start(stack.path());
    let dir = stack.path().join("layout");
    std::fs::create_dir_all(&dir).unwrap();
    let app = layer(&[
        Entry::Dir("app".into()),
        Entry::File("app/hello".into(), b"hello\n".to_vec(), 0o644),
    ]);
    oci_image(&dir, &[busybox_layer(), app], host_arch());
    let r = reg.push(&dir, "gc-at-once:1");

    // containerd's client: it pulls and unpacks through the gateway under its own lease.
    ok(
        stack.ctr().args(["images", "pull", "--plain-http", &r]),
        None,
    );
    let (blobs, snaps) = on_disk(&stack).await;
    assert!(!blobs.is_empty() && snaps.len() == 2, "{blobs:?} {snaps:?}");
    ok(stack.ctr().args(["images", "rm", "--sync", &r]), None);
    let (blobs, snaps) = on_disk(&stack).await;
    assert!(
        blobs.is_empty() && snaps.is_empty(),
        "left after ctr images rm --sync: {blobs:?} {snaps:?}\n{}",
        stack.logs()
    );

    // strata's CLI: the gateway pulls under its lease.
    ok(stack.cli().args(["pull", "-q", &r]), None);
    let (blobs, snaps) = on_disk(&stack).await;
    assert!(!blobs.is_empty() && snaps.len() == 2, "{blobs:?} {snaps:?}");
    ok(stack.cli().args(["rmi", &r]), None);
    let (blobs, snaps) = on_disk(&stack).await;
    assert!(
        blobs.is_empty() && snaps.is_empty(),
        "left after strata rmi: {blobs:?} {snaps:?}\n{}",
        stack.logs()
    );
}
