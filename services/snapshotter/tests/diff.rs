//! The Diff API of the real binary, with a real content service: layers applied onto snapshots
//! (whiteouts across three layers, both snapshotters), diff IDs verified, layers produced from
//! changes and applied back, hostile layers refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use strata_api::containerd::services::diff::v1 as pb;
use strata_api::containerd::services::diff::v1::diff_client::DiffClient;
use strata_core::content::{ContentStore, read_all, write_blob};
use strata_core::descriptor::{UNCOMPRESSED_LABEL, media_types};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Digest, Kind};
use strata_grpc::convert::{descriptors, mounts};
use strata_grpc::metadata::with_namespace;
use strata_grpc::remote::{RemoteContentStore, RemoteSnapshots};
use strata_mount::TempMount;
use strata_testkit::Service;

const NS: &str = "default";

struct Stack {
    _dir: tempfile::TempDir,
    tmp: std::path::PathBuf,
    _content: Service,
    _snap: Service,
    content: RemoteContentStore,
    snaps: RemoteSnapshots,
    diff: DiffClient<tonic::transport::Channel>,
}

fn stack() -> Stack {
    let dir = strata_testkit::tempdir();
    let content = Service::start(
        strata_testkit::sibling_bin("strata-content"),
        dir.path(),
        "content",
        &[],
    );
    let content_addr = content.address();
    let snap = Service::start(
        env!("CARGO_BIN_EXE_strata-snapshotter"),
        dir.path(),
        "snapshotter",
        &["--content", &content_addr],
    );
    Stack {
        tmp: dir.path().to_owned(),
        content: RemoteContentStore::connect(&content_addr).unwrap(),
        snaps: RemoteSnapshots::connect(&snap.address()).unwrap(),
        diff: DiffClient::new(strata_grpc::client::channel(&snap.address()).unwrap()),
        _dir: dir,
        _content: content,
        _snap: snap,
    }
}

enum E<'a> {
    File(&'a str, &'a str),
    Dir(&'a str),
    Link(&'a str, &'a str),
    Sym(&'a str, &'a str),
}

/// A gzip layer of `entries`.
fn layer(entries: &[E]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::File(p, c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(c.len() as u64);
                if p.contains("..") {
                    // The tar crate refuses such names: write the raw header, as a hostile
                    // layer would.
                    let name = &mut h.as_old_mut().name;
                    name.fill(0);
                    name[..p.len()].copy_from_slice(p.as_bytes());
                    h.set_cksum();
                    b.append(&h, c.as_bytes()).unwrap();
                } else {
                    b.append_data(&mut h, p, c.as_bytes()).unwrap();
                }
            }
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Sym(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

impl Stack {
    async fn put(&self, blob: &[u8]) -> Digest {
        write_blob(&self.content, NS, "layer", blob, None, HashMap::new())
            .await
            .unwrap()
    }

    async fn apply(
        &self,
        blob: &[u8],
        diff_id: Option<&Digest>,
        m: Vec<strata_core::mount::Mount>,
    ) -> Result<pb::ApplyResponse, tonic::Status> {
        let digest = self.put(blob).await;
        let mut annotations = HashMap::new();
        if let Some(d) = diff_id {
            annotations.insert(UNCOMPRESSED_LABEL.to_owned(), d.to_string());
        }
        let req = pb::ApplyRequest {
            diff: Some(descriptors::to_pb(strata_core::descriptor::Descriptor {
                media_type: media_types::OCI_LAYER_GZIP.into(),
                digest,
                size: blob.len() as u64,
                annotations,
            })),
            mounts: mounts::all_to_pb(m),
            ..Default::default()
        };
        self.diff
            .clone()
            .apply(with_namespace(NS, req).unwrap())
            .await
            .map(tonic::Response::into_inner)
    }

    /// Applies `blob` as a new committed snapshot `name` over `parent`.
    async fn unpack(&self, sn: &str, name: &str, parent: &str, blob: &[u8], diff_id: &Digest) {
        let key = format!("extract-{name}");
        let m = self
            .snaps
            .prepare(sn, NS, &key, parent, HashMap::new())
            .await
            .unwrap();
        let resp = self.apply(blob, Some(diff_id), m).await.unwrap();
        let applied = resp.applied.unwrap();
        assert_eq!(applied.digest, diff_id.to_string());
        self.snaps
            .commit(sn, NS, name, &key, HashMap::new())
            .await
            .unwrap();
    }
}

async fn three_layers(sn: &str) {
    let s = stack();
    let (l1, d1) = layer(&[
        E::Dir("etc"),
        E::File("etc/keep", "1"),
        E::File("etc/gone", "1"),
        E::Dir("opq"),
        E::File("opq/old", "1"),
        E::File("big", "base"),
    ]);
    let (l2, d2) = layer(&[
        E::File("etc/.wh.gone", ""),
        E::Dir("opq"),
        E::File("opq/.wh..wh..opq", ""),
        E::File("opq/new", "2"),
        E::Link("big-link", "big"),
    ]);
    let (l3, d3) = layer(&[
        E::File("etc/gone", "back"),
        E::Sym("etc/sym", "keep"),
        E::File(".wh.big-link", ""),
    ]);
    s.unpack(sn, "l1", "", &l1, &d1).await;
    s.unpack(sn, "l2", "l1", &l2, &d2).await;
    s.unpack(sn, "l3", "l2", &l3, &d3).await;
    let m = s
        .snaps
        .view(sn, NS, "v", "l3", HashMap::new())
        .await
        .unwrap();
    let t = TempMount::new(&m, &s.tmp).unwrap();
    let root = t.path();
    assert_eq!(std::fs::read_to_string(root.join("etc/keep")).unwrap(), "1");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/gone")).unwrap(),
        "back"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/sym")).unwrap().to_str(),
        Some("keep")
    );
    let opq: Vec<_> = std::fs::read_dir(root.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(opq, ["new"]);
    assert!(!root.join("big-link").exists());
    assert_eq!(std::fs::read_to_string(root.join("big")).unwrap(), "base");
    // Whiteout files never show as files.
    assert!(!root.join("etc/.wh.gone").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_layers_with_whiteouts_overlayfs() {
    three_layers("overlayfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_layers_with_whiteouts_native() {
    three_layers("native").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_layers_are_refused() {
    let s = stack();
    let (blob, _) = layer(&[E::File("a", "x")]);
    let wrong = Digest::of(b"not the diff id");
    let m = s
        .snaps
        .prepare("overlayfs", NS, "k1", "", HashMap::new())
        .await
        .unwrap();
    let e = s.apply(&blob, Some(&wrong), m).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains(&wrong.to_string()), "{e}");

    // A layer that climbs out of its snapshot.
    let (evil, _) = layer(&[E::File("../../../../escaped-by-layer", "x")]);
    let m = s
        .snaps
        .prepare("overlayfs", NS, "k2", "", HashMap::new())
        .await
        .unwrap();
    let e = s.apply(&evil, None, m).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("escaped-by-layer"), "{e}");
    assert!(!std::path::Path::new("/escaped-by-layer").exists());

    // A blob the content store does not have.
    let m = s
        .snaps
        .prepare("overlayfs", NS, "k3", "", HashMap::new())
        .await
        .unwrap();
    let missing = Digest::of(b"missing");
    let req = pb::ApplyRequest {
        diff: Some(descriptors::to_pb(strata_core::descriptor::Descriptor {
            media_type: media_types::OCI_LAYER_GZIP.into(),
            digest: missing.clone(),
            size: 10,
            annotations: HashMap::new(),
        })),
        mounts: mounts::all_to_pb(m),
        ..Default::default()
    };
    let e = s
        .diff
        .clone()
        .apply(with_namespace(NS, req).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    assert!(e.message().contains(&missing.to_string()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_produces_a_layer_that_applies_back() {
    let s = stack();
    let (l1, d1) = layer(&[E::Dir("d"), E::File("d/a", "1"), E::File("b", "1")]);
    s.unpack("overlayfs", "base", "", &l1, &d1).await;
    let upper = s
        .snaps
        .prepare("overlayfs", NS, "changes", "base", HashMap::new())
        .await
        .unwrap();
    {
        let t = TempMount::new(&upper, &s.tmp).unwrap();
        std::fs::write(t.path().join("d/a"), "2").unwrap();
        std::fs::remove_file(t.path().join("b")).unwrap();
        std::fs::write(t.path().join("c"), "new").unwrap();
    }
    let lower = s
        .snaps
        .view("overlayfs", NS, "base-view", "base", HashMap::new())
        .await
        .unwrap();
    let resp = s
        .diff
        .clone()
        .diff(
            with_namespace(
                NS,
                pb::DiffRequest {
                    left: mounts::all_to_pb(lower.clone()),
                    right: mounts::all_to_pb(upper.clone()),
                    labels: HashMap::from([("made-by".to_owned(), "test".to_owned())]),
                    ..Default::default()
                },
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    let desc = descriptors::from_pb(resp.diff.unwrap()).unwrap();
    assert_eq!(desc.media_type, media_types::OCI_LAYER_GZIP);
    let info = s.content.info(NS, &desc.digest).await.unwrap();
    assert_eq!(info.size, desc.size);
    assert_eq!(info.labels.get("made-by").map(String::as_str), Some("test"));
    let diff_id = Digest::parse(&info.labels[UNCOMPRESSED_LABEL]).unwrap();

    // The same changes again, with a back reference: the blob exists already, and the labels
    // asked for go onto it (without them the collector could take it before the caller holds it).
    let again = s
        .diff
        .clone()
        .diff(
            with_namespace(
                NS,
                pb::DiffRequest {
                    left: mounts::all_to_pb(lower),
                    right: mounts::all_to_pb(upper),
                    labels: HashMap::from([(
                        "containerd.io/gc.bref.snapshot.overlayfs/test".to_owned(),
                        "changes".to_owned(),
                    )]),
                    ..Default::default()
                },
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        descriptors::from_pb(again.diff.unwrap()).unwrap().digest,
        desc.digest
    );
    let info = s.content.info(NS, &desc.digest).await.unwrap();
    assert_eq!(
        info.labels
            .get("containerd.io/gc.bref.snapshot.overlayfs/test")
            .map(String::as_str),
        Some("changes")
    );
    assert_eq!(info.labels.get("made-by").map(String::as_str), Some("test"));

    // The layer, applied onto base, gives the changed tree.
    let blob = read_all(&s.content, NS, &desc.digest).await.unwrap();
    s.unpack("overlayfs", "rebuilt", "base", &blob, &diff_id)
        .await;
    let m = s
        .snaps
        .view("overlayfs", NS, "rebuilt-view", "rebuilt", HashMap::new())
        .await
        .unwrap();
    let t = TempMount::new(&m, &s.tmp).unwrap();
    assert_eq!(std::fs::read_to_string(t.path().join("d/a")).unwrap(), "2");
    assert!(!t.path().join("b").exists());
    assert_eq!(std::fs::read_to_string(t.path().join("c")).unwrap(), "new");
    let e = s.snaps.stat("overlayfs", NS, "nothing").await.unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound);
}
