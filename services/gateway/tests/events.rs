//! Storage events: what clients do to content, snapshots, images and namespaces through the
//! gateway reaches the Events API of strata-tasks (where `ctr events` reads), with containerd's
//! topics and payloads; and with strata-tasks stopped, storage requests still succeed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;
use std::collections::HashMap;
use std::time::Duration;
use strata_api::containerd::events as ev;
use strata_api::containerd::services::images::v1 as ipb;
use strata_core::content::write_blob;
use strata_core::events::Envelope;
use strata_core::images::{DeleteOptions, Image, ImageStore as _};
use strata_core::snapshots::SnapshotStore as _;
use strata_grpc::remote::{RemoteContentStore, RemoteEvents, RemoteImages, RemoteSnapshots};
use strata_testkit::ok;
use strata_testkit::stack::Stack;
use tokio_stream::{Stream, StreamExt as _};

const NS: &str = "evtest";

/// Only a liveness guard: events normally arrive within milliseconds.
const PATIENCE: Duration = Duration::from_secs(60);

fn ctr(stack: &Stack, args: &[&str]) -> String {
    ok(stack.ctr().args(args), None)
}

fn ctr_in(stack: &Stack, args: &[&str]) -> String {
    ok(stack.ctr().args(["--namespace", NS]).args(args), None)
}

/// Labels that keep an object from the collector (its grace period is 0 in the test stack):
/// nothing is collected under the test's feet.
fn root() -> HashMap<String, String> {
    HashMap::from([("containerd.io/gc.root".to_owned(), "test".to_owned())])
}

/// Writes `data` through the gateway, held by a gc.root label; returns its digest.
async fn ingest(content: &RemoteContentStore, reference: &str, data: &[u8]) -> String {
    let d = write_blob(content, NS, reference, data, None, root())
        .await
        .unwrap();
    d.to_string()
}

/// Prepares `key` (no parent) through the gateway, held by a gc.root label.
async fn prepare(snapshots: &RemoteSnapshots, key: &str) {
    snapshots
        .prepare("overlayfs", NS, key, "", root())
        .await
        .unwrap();
}

/// The next `n` envelopes of the test's namespace (and namespace events about it), in arrival
/// order.
async fn take(
    sub: &mut (impl Stream<Item = strata_core::Result<Envelope>> + Unpin),
    n: usize,
    stack: &Stack,
) -> Vec<Envelope> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(PATIENCE, sub.next()).await;
        let env = match next {
            Ok(Some(Ok(env))) => env,
            other => panic!(
                "after {got:?}: no further event ({other:?}); logs:\n{}",
                stack.logs()
            ),
        };
        let about_ns =
            env.topic.starts_with("/namespaces/") && payload_name(&env).as_deref() == Some(NS);
        if env.namespace == NS || about_ns {
            got.push(env);
        }
    }
    got
}

fn payload_name(env: &Envelope) -> Option<String> {
    let any = env.event.as_ref()?;
    let v = any.value.as_slice();
    match env.topic.as_str() {
        "/namespaces/create" => ev::NamespaceCreate::decode(v).ok().map(|e| e.name),
        "/namespaces/update" => ev::NamespaceUpdate::decode(v).ok().map(|e| e.name),
        "/namespaces/delete" => ev::NamespaceDelete::decode(v).ok().map(|e| e.name),
        _ => None,
    }
}

/// The topics of `got` that start with `prefix`, in order.
fn of(got: &[Envelope], prefix: &str) -> Vec<String> {
    got.iter()
        .filter(|e| e.topic.starts_with(prefix))
        .map(|e| e.topic.clone())
        .collect()
}

fn find<'a>(got: &'a [Envelope], topic: &str) -> &'a Envelope {
    got.iter()
        .find(|e| e.topic == topic)
        .unwrap_or_else(|| panic!("no {topic} in {got:?}"))
}

/// containerd's type URLs and payloads of the storage events in `got` (`digest` the blob
/// removed).
fn storage_payloads(got: &[Envelope], digest: &str) {
    let e = find(got, "/content/delete");
    let any = e.event.as_ref().unwrap();
    assert_eq!(any.type_url, "containerd.events.ContentDelete");
    assert_eq!(
        ev::ContentDelete::decode(&*any.value).unwrap().digest,
        digest
    );
    let any = find(got, "/snapshot/commit").event.clone().unwrap();
    assert_eq!(any.type_url, "containerd.events.SnapshotCommit");
    let commit = ev::SnapshotCommit::decode(&*any.value).unwrap();
    assert_eq!(
        (commit.key.as_str(), commit.name.as_str()),
        ("ev-active", "ev-committed")
    );
    assert_eq!(commit.snapshotter, "overlayfs");
    let any = find(got, "/images/update").event.clone().unwrap();
    assert_eq!(any.type_url, "containerd.services.images.v1.ImageUpdate");
    let update = ipb::ImageUpdate::decode(&*any.value).unwrap();
    assert_eq!(update.name, "example.com/ev:1");
    assert_eq!(update.labels.get("a").map(String::as_str), Some("b"));
    let ns_event = find(got, "/namespaces/update");
    assert_eq!(ns_event.namespace, "default", "ctr's own namespace");
    assert_eq!(
        ns_event.event.as_ref().unwrap().type_url,
        "containerd.events.NamespaceUpdate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_events_reach_the_exchange_and_never_block_storage() {
    let stack = tokio::task::spawn_blocking(Stack::start).await.unwrap();
    let events = RemoteEvents::connect(&stack.tasks.address()).unwrap();
    let mut sub = Box::pin(events.subscribe(&[]).await.unwrap());

    let gateway = stack.socket().display().to_string();
    let content = RemoteContentStore::connect(&gateway).unwrap();
    let snapshots = RemoteSnapshots::connect(&gateway).unwrap();
    let images = RemoteImages::connect(&gateway).unwrap();

    // Every kind of storage event, each through the gateway (by ctr where it can).
    ctr(&stack, &["namespaces", "create", NS]);
    ctr(&stack, &["namespaces", "label", NS, "team=storage"]);
    let digest = ingest(&content, "evtest-1", b"storage events\n").await;
    prepare(&snapshots, "ev-active").await;
    snapshots
        .commit("overlayfs", NS, "ev-committed", "ev-active", root())
        .await
        .unwrap();
    let target = strata_core::descriptor::Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest.parse().unwrap(),
        size: 15,
        annotations: HashMap::new(),
    };
    let now = std::time::SystemTime::now();
    let mut image = Image {
        name: "example.com/ev:1".into(),
        labels: HashMap::new(),
        target,
        created_at: now,
        updated_at: now,
    };
    images.create(NS, image.clone()).await.unwrap();
    image.labels.insert("a".into(), "b".into());
    images
        .update(NS, image.clone(), &["labels".to_owned()])
        .await
        .unwrap();
    images
        .delete(NS, &image.name, DeleteOptions::default())
        .await
        .unwrap();
    ctr_in(&stack, &["snapshots", "rm", "ev-committed"]);
    ctr_in(&stack, &["content", "rm", &digest]);
    ctr(&stack, &["namespaces", "rm", NS]);

    let got = take(&mut sub, 10, &stack).await;
    // Each service's events in the order it did the work (services deliver independently).
    assert_eq!(
        of(&got, "/namespaces/"),
        [
            "/namespaces/create",
            "/namespaces/update",
            "/namespaces/delete"
        ]
    );
    assert_eq!(
        of(&got, "/snapshot/"),
        ["/snapshot/prepare", "/snapshot/commit", "/snapshot/remove"]
    );
    assert_eq!(
        of(&got, "/images/"),
        ["/images/create", "/images/update", "/images/delete"]
    );
    assert_eq!(of(&got, "/content/"), ["/content/delete"]);

    storage_payloads(&got, &digest);
    drop(sub);

    // With the exchange away, storage requests are not held up and do not fail.
    let mut stack = stack;
    assert!(stack.tasks.stop(), "strata-tasks did not stop cleanly");
    let digest = ingest(&content, "evtest-2", b"while tasks is down\n").await;
    ctr_in(&stack, &["content", "rm", &digest]);
    prepare(&snapshots, "ev-down").await;
    ctr_in(&stack, &["snapshots", "rm", "ev-down"]);

    // Once it is back, events flow again.
    stack.tasks.restart();
    let mut sub = Box::pin(events.subscribe(&[]).await.unwrap());
    prepare(&snapshots, "ev-back").await;
    let got = take(&mut sub, 1, &stack).await;
    assert_eq!(got[0].topic, "/snapshot/prepare");
    let prepare = ev::SnapshotPrepare::decode(&*got[0].event.as_ref().unwrap().value).unwrap();
    assert_eq!(prepare.key, "ev-back");
    ctr_in(&stack, &["snapshots", "rm", "ev-back"]);
}
