//! The Events API of the real binary: containers' events reach a filtered subscriber in order,
//! published and forwarded events are checked like containerd checks them, and container
//! records survive a kill -9.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Tasks, container, labels};
use prost::Message as _;
use std::time::SystemTime;
use strata_api::containerd::events as ev;
use strata_core::Kind;
use strata_core::containers::{Any, ContainerStore};
use strata_core::events::{Envelope, Publisher, topics, types};
use strata_grpc::remote::{RemoteContainers, RemoteEvents};
use tokio_stream::StreamExt as _;

fn done_marker() -> Any {
    Any {
        type_url: types::CONTAINER_DELETE.into(),
        value: ev::ContainerDelete { id: "done".into() }.encode_to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_changes_reach_filtered_subscribers_in_order() {
    let tasks = Tasks::start();
    let store = RemoteContainers::connect(&tasks.address()).unwrap();
    let events = RemoteEvents::connect(&tasks.address()).unwrap();
    let mut sub = events
        .subscribe(&[
            r#"namespace==team-a,topic~="^/containers/(create|update|delete)$""#.to_owned(),
            r#"topic=="/test/done""#.to_owned(),
        ])
        .await
        .unwrap();
    let mut by_id = events
        .subscribe(&[
            "event.id==web-2".to_owned(),
            r#"topic=="/test/done""#.to_owned(),
        ])
        .await
        .unwrap();

    // In another namespace: filtered out.
    store.create("team-b", container("web-1")).await.unwrap();
    let mut c = container("web-1");
    c.runtime.options = Some(Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: vec![8, 1],
    });
    store.create("team-a", c).await.unwrap();
    let mut change = container("web-1");
    change.labels = labels(&[("tier", "1")]);
    change.image = "docker.io/library/alpine:3".into();
    store
        .update("team-a", change, &["labels.tier".into(), "image".into()])
        .await
        .unwrap();
    store.create("team-a", container("web-2")).await.unwrap();
    store.delete("team-a", "web-1").await.unwrap();
    store.delete("team-a", "web-2").await.unwrap();
    // A failed change publishes nothing.
    store.delete("team-a", "web-1").await.unwrap_err();
    events
        .publish("team-a", "/test/done", done_marker())
        .await
        .unwrap();

    let mut got = Vec::new();
    while let Some(env) = sub.next().await {
        let env = env.unwrap();
        if env.topic == "/test/done" {
            break;
        }
        got.push(env);
    }
    let topics_seen: Vec<&str> = got.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics_seen,
        [
            topics::CONTAINER_CREATE,
            topics::CONTAINER_UPDATE,
            topics::CONTAINER_CREATE,
            topics::CONTAINER_DELETE,
            topics::CONTAINER_DELETE,
        ]
    );
    assert!(got.iter().all(|e| e.namespace == "team-a"));
    let mut last = SystemTime::UNIX_EPOCH;
    for e in &got {
        assert!(e.timestamp >= last && e.timestamp > SystemTime::UNIX_EPOCH);
        last = e.timestamp;
    }
    let payload = |i: usize| got[i].event.clone().unwrap();
    assert_eq!(payload(0).type_url, "containerd.events.ContainerCreate");
    let create = ev::ContainerCreate::decode(payload(0).value.as_slice()).unwrap();
    assert_eq!(create.id, "web-1");
    assert_eq!(create.image, "docker.io/library/busybox:latest");
    let runtime = create.runtime.unwrap();
    assert_eq!(runtime.name, common::RUNC);
    assert_eq!(runtime.options.unwrap().value, vec![8, 1]);
    assert_eq!(payload(1).type_url, "containerd.events.ContainerUpdate");
    let update = ev::ContainerUpdate::decode(payload(1).value.as_slice()).unwrap();
    assert_eq!(update.id, "web-1");
    assert_eq!(update.image, "docker.io/library/alpine:3");
    assert_eq!(update.labels, labels(&[("app", "web"), ("tier", "1")]));
    assert_eq!(update.snapshot_key, "web-1-snapshot");
    assert_eq!(payload(3).type_url, "containerd.events.ContainerDelete");
    let ids: Vec<String> = [2, 3, 4]
        .map(|i| {
            let p = payload(i);
            if p.type_url == types::CONTAINER_CREATE {
                ev::ContainerCreate::decode(p.value.as_slice()).unwrap().id
            } else {
                ev::ContainerDelete::decode(p.value.as_slice()).unwrap().id
            }
        })
        .to_vec();
    assert_eq!(ids, ["web-2", "web-1", "web-2"]);

    // Filtering on the payload: only web-2's create and delete.
    let mut got = Vec::new();
    while let Some(env) = by_id.next().await {
        let env = env.unwrap();
        if env.topic == "/test/done" {
            break;
        }
        got.push(env.topic);
    }
    assert_eq!(got, [topics::CONTAINER_CREATE, topics::CONTAINER_DELETE]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_forward_are_checked() {
    let tasks = Tasks::start();
    let events = RemoteEvents::connect(&tasks.address()).unwrap();
    for topic in ["containers/create", "/", "/a//b", "/bad topic", ""] {
        let err = events
            .publish("default", topic, done_marker())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{topic}: {err}");
        assert!(err.message().contains(&format!("{topic:?}")), "{err}");
    }
    let err = events
        .subscribe(&["topic~=(".to_owned()])
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");

    // Forwarded envelopes arrive as they are; a missing timestamp or bad namespace is refused.
    let mut sub = events
        .subscribe(&[r#"topic=="/x/forwarded""#.to_owned()])
        .await
        .unwrap();
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let env = Envelope {
        timestamp: at,
        namespace: "elsewhere".into(),
        topic: "/x/forwarded".into(),
        event: Some(done_marker()),
    };
    events.forward(env.clone()).await.unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap(), env);
    let mut bad = env.clone();
    bad.timestamp = SystemTime::UNIX_EPOCH;
    let err = events.forward(bad).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("timestamp"), "{err}");
    let mut bad = env;
    bad.namespace = "no/ns".into();
    let err = events.forward(bad).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("\"no/ns\""), "{err}");

    // Publish needs the namespace header.
    let mut client = strata_api::containerd::services::events::v1::events_client::EventsClient::new(
        strata_grpc::client::channel(&tasks.address()).unwrap(),
    );
    let status = client
        .publish(
            strata_api::containerd::services::events::v1::PublishRequest {
                topic: "/a".into(),
                event: Some(prost_types::Any::default()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_kill_9() {
    let mut tasks = Tasks::start();
    let store = RemoteContainers::connect(&tasks.address()).unwrap();
    let mut want = Vec::new();
    for id in ["one", "two", "three"] {
        want.push(store.create("default", container(id)).await.unwrap());
    }
    let mut changed = container("two");
    changed.labels = labels(&[("after", "update")]);
    want[1] = store
        .update("default", changed, &["labels".into()])
        .await
        .unwrap();
    store.delete("default", "three").await.unwrap();
    want.pop();
    tasks.service.kill9();
    tasks.service.restart();
    let store = RemoteContainers::connect(&tasks.address()).unwrap();
    let mut got = store.list("default", &[]).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, want);
}
