//! The conformance suite of the [`Diff`] trait: each case takes the differ under test, the
//! content store it reads and writes layer blobs in and the snapshot store whose mounts it is
//! given (all starting empty), the snapshotter to use (`overlayfs` or `native`) and a directory
//! for temporary mounts, and checks the rules of containerd's Diff API through the traits alone,
//! so the same case runs against the snapshotter's local differ, its gRPC server and the
//! gateway's router in front of it.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use strata_core::content::{ContentStore, read_all, write_blob};
use strata_core::descriptor::{Descriptor, UNCOMPRESSED_LABEL, media_types};
use strata_core::diff::{ApplyOptions, Diff, DiffOptions};
use strata_core::mount::Mount;
use strata_core::snapshots::SnapshotStore;
use strata_core::{Digest, Kind};
use strata_mount::TempMount;

use super::labels;
use crate::registry::Entry;

const NS: &str = "default";

/// The differ under test, and the stores beside it.
pub struct Stores<D, C, S> {
    /// The differ under test.
    pub diff: D,
    /// The content store the differ reads layers from and writes them to.
    pub content: C,
    /// The snapshot store whose mounts the differ is given.
    pub snapshots: S,
}

/// A file entry of a test layer.
fn file(path: &str, content: &str) -> Entry {
    Entry::File(path.to_owned(), content.as_bytes().to_vec(), 0o644)
}

/// A directory entry of a test layer.
fn dir(path: &str) -> Entry {
    Entry::Dir(path.to_owned())
}

/// The tar of `entries`, and its gzip (the registry tests' layers).
fn layer(entries: &[Entry]) -> (Vec<u8>, Vec<u8>) {
    let (blob, _) = crate::registry::layer(entries);
    (gunzip(&blob), blob)
}

/// The tar inside a gzip blob.
fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut tar)
        .unwrap();
    tar
}

/// The paths of a tar's entries, in order, without a leading `./`.
fn entries(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path().unwrap().display().to_string();
            p.trim_start_matches("./").trim_end_matches('/').to_owned()
        })
        .filter(|p| !p.is_empty() && p != ".")
        .collect()
}

/// A tree as path -> file content (`None` for a directory).
fn tree(root: &Path) -> BTreeMap<String, Option<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<String>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The tree mounted by `mounts`.
fn mounted_tree(mounts: &[Mount], tmp: &Path) -> BTreeMap<String, Option<String>> {
    let m = TempMount::new(mounts, tmp).unwrap();
    tree(m.path())
}

/// A tree from pairs (an empty content: a directory).
fn want(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (!c.is_empty()).then(|| (*c).to_owned())))
        .collect()
}

/// Prepares the active snapshot `key` over `parent` in `ns`; its mounts.
async fn prepare<D, C, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    ns: &str,
    key: &str,
    parent: &str,
) -> Vec<Mount> {
    s.snapshots
        .prepare(sn, ns, key, parent, HashMap::new())
        .await
        .unwrap()
}

/// A read-only view `key` of the committed `parent`; its mounts.
async fn view<D, C, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    key: &str,
    parent: &str,
) -> Vec<Mount> {
    s.snapshots
        .view(sn, NS, key, parent, HashMap::new())
        .await
        .unwrap()
}

/// Applies `layer` onto `mounts` in `ns`, with the default options.
async fn apply<D: Diff, C, S>(
    s: &Stores<D, C, S>,
    ns: &str,
    layer: &Descriptor,
    mounts: &[Mount],
) -> strata_core::Result<Descriptor> {
    s.diff
        .apply(ns, layer, mounts, ApplyOptions::default())
        .await
}

/// Puts `blob` into the content store of `ns`; its gzip layer descriptor.
async fn put<C: ContentStore>(c: &C, ns: &str, blob: &[u8]) -> Descriptor {
    let digest = write_blob(c, ns, "layer", blob, None, HashMap::new())
        .await
        .unwrap();
    Descriptor {
        media_type: media_types::OCI_LAYER_GZIP.to_owned(),
        digest,
        size: blob.len() as u64,
        annotations: HashMap::new(),
    }
}

/// The descriptor with the uncompressed-digest annotation `diff_id`.
fn annotated(mut d: Descriptor, diff_id: &Digest) -> Descriptor {
    d.annotations
        .insert(UNCOMPRESSED_LABEL.to_owned(), diff_id.to_string());
    d
}

/// Applies the gzip layer `blob` (whose tar is `tar`) as the committed snapshot `name` over
/// `parent`, checking the diff ID answered.
async fn unpack<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    name: &str,
    parent: &str,
    (tar, blob): &(Vec<u8>, Vec<u8>),
) {
    let key = format!("extract-{name}");
    let mounts = prepare(s, sn, NS, &key, parent).await;
    let diff_id = Digest::of(tar);
    let desc = annotated(put(&s.content, NS, blob).await, &diff_id);
    let applied = apply(s, NS, &desc, &mounts).await.unwrap();
    assert_eq!(applied.digest, diff_id);
    s.snapshots
        .commit(sn, NS, name, &key, HashMap::new())
        .await
        .unwrap();
}

/// Checks what `diff` answered against the content store: the blob is there with the size and
/// digest of the descriptor, the uncompressed digest is on the blob's labels and on the
/// descriptor, and it is the sha256 of the tar inside. Returns the tar and the blob.
async fn stored_layer<C: ContentStore>(c: &C, ns: &str, desc: &Descriptor) -> (Vec<u8>, Vec<u8>) {
    let info = c.info(ns, &desc.digest).await.unwrap();
    assert_eq!(info.size, desc.size, "{desc:?}");
    let blob = read_all(c, ns, &desc.digest).await.unwrap();
    assert_eq!(Digest::of(&blob), desc.digest);
    assert_eq!(blob.len() as u64, desc.size);
    let tar = if desc.media_type == media_types::OCI_LAYER {
        blob.clone()
    } else {
        gunzip(&blob)
    };
    let diff_id = Digest::of(&tar).to_string();
    assert_eq!(
        info.labels.get(UNCOMPRESSED_LABEL),
        Some(&diff_id),
        "{info:?}"
    );
    assert_eq!(
        desc.annotations.get(UNCOMPRESSED_LABEL),
        Some(&diff_id),
        "{desc:?}"
    );
    (tar, blob)
}

/// A gzip layer applied onto an empty active snapshot: the answer is the uncompressed layer
/// (digest and size of the tar), and its files are in the snapshot.
pub async fn apply_gzip_layer<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    tmp: &Path,
) {
    let (tar, blob) = layer(&[
        dir("etc"),
        file("etc/os-release", "strata"),
        file("bin", "binary"),
    ]);
    let mounts = prepare(s, sn, NS, "k", "").await;
    let desc = put(&s.content, NS, &blob).await;
    let applied = apply(s, NS, &desc, &mounts).await.unwrap();
    assert_eq!(applied.digest, Digest::of(&tar), "{applied:?}");
    assert_eq!(applied.size, tar.len() as u64, "{applied:?}");
    assert_eq!(applied.media_type, media_types::OCI_LAYER, "{applied:?}");
    assert_eq!(
        mounted_tree(&mounts, tmp),
        want(&[("etc", ""), ("etc/os-release", "strata"), ("bin", "binary")])
    );

    // With the right uncompressed digest, and a sync of the file system, the same.
    let mounts = prepare(s, sn, NS, "k2", "").await;
    let desc = annotated(desc, &Digest::of(&tar));
    let applied = s
        .diff
        .apply(NS, &desc, &mounts, ApplyOptions { sync_fs: true })
        .await
        .unwrap();
    assert_eq!(applied.digest, Digest::of(&tar), "{applied:?}");
    s.snapshots
        .commit(sn, NS, "c", "k2", HashMap::new())
        .await
        .unwrap();
    let view = view(s, sn, "v", "c").await;
    assert_eq!(
        mounted_tree(&view, tmp),
        want(&[("etc", ""), ("etc/os-release", "strata"), ("bin", "binary")])
    );

    // Docker's media type for the same bytes: the answer is the OCI uncompressed layer.
    let mounts = prepare(s, sn, NS, "k3", "").await;
    let mut docker = desc;
    docker.media_type = media_types::DOCKER_LAYER_GZIP.to_owned();
    let applied = apply(s, NS, &docker, &mounts).await.unwrap();
    assert_eq!(applied.digest, Digest::of(&tar), "{applied:?}");
    assert_eq!(applied.media_type, media_types::OCI_LAYER, "{applied:?}");
}

/// A layer whose uncompressed-digest annotation is not its tar's sha256 is refused, naming the
/// digest expected; so is an annotation that is no digest at all.
pub async fn apply_checks_the_uncompressed_digest<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    _tmp: &Path,
) {
    let (_, blob) = layer(&[file("a", "x")]);
    let desc = put(&s.content, NS, &blob).await;
    let wrong = Digest::of(b"not the diff id");
    let mounts = prepare(s, sn, NS, "k1", "").await;
    let e = apply(s, NS, &annotated(desc.clone(), &wrong), &mounts)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
    assert!(e.message().contains(&wrong.to_string()), "{e}");

    let mut bad = desc;
    bad.annotations
        .insert(UNCOMPRESSED_LABEL.to_owned(), "sha256:zz".to_owned());
    let mounts = prepare(s, sn, NS, "k2", "").await;
    let e = apply(s, NS, &bad, &mounts).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
    assert!(e.message().contains("sha256:zz"), "{e}");
}

/// A layer the content store does not hold is NotFound, naming it; one whose size differs from
/// the stored blob's is a failed precondition; an unknown media type, no mounts at all and a
/// read-only view are invalid arguments.
pub async fn apply_checks_the_blob<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    _tmp: &Path,
) {
    let mounts = prepare(s, sn, NS, "k", "").await;
    let missing = Descriptor {
        media_type: media_types::OCI_LAYER_GZIP.to_owned(),
        digest: Digest::of(b"missing"),
        size: 10,
        annotations: HashMap::new(),
    };
    let e = apply(s, NS, &missing, &mounts).await.unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.message().contains(&missing.digest.to_string()), "{e}");

    let (_, blob) = layer(&[file("a", "x")]);
    let mut desc = put(&s.content, NS, &blob).await;
    desc.size += 1;
    let e = apply(s, NS, &desc, &mounts).await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    assert!(e.message().contains(&desc.digest.to_string()), "{e}");

    // A media type that is no layer's, no mount, a read-only view: refused.
    desc.size -= 1;
    let mut odd = desc.clone();
    odd.media_type = "application/x-not-a-layer".to_owned();
    let e = apply(s, NS, &odd, &mounts).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
    assert!(e.message().contains("application/x-not-a-layer"), "{e}");
    let e = apply(s, NS, &desc, &[]).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
    s.snapshots
        .commit(sn, NS, "c", "k", HashMap::new())
        .await
        .unwrap();
    let view = view(s, sn, "v", "c").await;
    let e = apply(s, NS, &desc, &view).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
}

/// A layer's whiteouts, applied over a parent, remove the parent's files (`.wh.name`) and a
/// directory's old content (the opaque marker); the whiteouts themselves never show.
pub async fn apply_whiteouts<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    tmp: &Path,
) {
    let base = layer(&[
        file("a", "1"),
        file("keep", "1"),
        dir("d"),
        file("d/b", "1"),
        file("d/c", "1"),
        dir("o"),
        file("o/old", "1"),
    ]);
    unpack(s, sn, "base", "", &base).await;
    let (tar, blob) = layer(&[
        file(".wh.a", ""),
        dir("d"),
        file("d/.wh.b", ""),
        dir("o"),
        file("o/.wh..wh..opq", ""),
        file("o/new", "2"),
    ]);
    let mounts = prepare(s, sn, NS, "k", "base").await;
    let desc = annotated(put(&s.content, NS, &blob).await, &Digest::of(&tar));
    let applied = apply(s, NS, &desc, &mounts).await.unwrap();
    assert_eq!(applied.digest, Digest::of(&tar));
    let got = mounted_tree(&mounts, tmp);
    assert_eq!(
        got,
        want(&[
            ("keep", "1"),
            ("d", ""),
            ("d/c", "1"),
            ("o", ""),
            ("o/new", "2")
        ])
    );
    // The parent is unchanged.
    let view = view(s, sn, "v", "base").await;
    assert_eq!(
        mounted_tree(&view, tmp).get("a"),
        Some(&Some("1".to_owned()))
    );
}

/// The changes between a committed parent and an active child (files added, changed, deleted)
/// become a blob in the content store that the descriptor answered names, labelled with its
/// uncompressed digest; a deletion is a whiteout; applied onto a fresh child of the parent, the
/// layer gives the child's files again.
pub async fn diff_round_trip<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    tmp: &Path,
) {
    let base = layer(&[
        dir("d"),
        file("d/a", "1"),
        file("b", "1"),
        file("same", "1"),
    ]);
    unpack(s, sn, "base", "", &base).await;
    let upper = prepare(s, sn, NS, "changes", "base").await;
    let child = {
        let m = TempMount::new(&upper, tmp).unwrap();
        std::fs::write(m.path().join("d/a"), "2").unwrap();
        std::fs::remove_file(m.path().join("b")).unwrap();
        std::fs::create_dir(m.path().join("e")).unwrap();
        std::fs::write(m.path().join("e/c"), "new").unwrap();
        tree(m.path())
    };
    let lower = view(s, sn, "base-view", "base").await;
    let desc = s
        .diff
        .diff(NS, &lower, &upper, DiffOptions::default())
        .await
        .unwrap();
    assert_eq!(desc.media_type, media_types::OCI_LAYER_GZIP, "{desc:?}");
    let (tar, blob) = stored_layer(&s.content, NS, &desc).await;
    let mut paths = entries(&tar);
    paths.sort();
    assert_eq!(paths, [".wh.b", "d", "d/a", "e", "e/c"]);

    // Applied onto base, the layer gives the child's tree.
    let rebuilt = prepare(s, sn, NS, "rebuilt", "base").await;
    let desc_with_id = annotated(desc.clone(), &Digest::of(&tar));
    let applied = apply(s, NS, &desc_with_id, &rebuilt).await.unwrap();
    assert_eq!(applied.digest, Digest::of(&tar));
    assert_eq!(applied.size, tar.len() as u64);
    assert_eq!(mounted_tree(&rebuilt, tmp), child);
    assert_eq!(
        child,
        want(&[
            ("d", ""),
            ("d/a", "2"),
            ("same", "1"),
            ("e", ""),
            ("e/c", "new")
        ])
    );
    assert_eq!(Digest::of(&blob), desc.digest);
}

/// A diff written under an explicit ingest reference with labels: the labels are on the
/// committed blob beside the uncompressed digest's, and the ingest is gone. An uncompressed
/// media type gives the tar itself.
pub async fn diff_reference_and_labels<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    tmp: &Path,
) {
    let upper = prepare(s, sn, NS, "k", "").await;
    {
        let m = TempMount::new(&upper, tmp).unwrap();
        std::fs::write(m.path().join("f"), "content").unwrap();
    }
    let opts = DiffOptions {
        media_type: String::new(),
        reference: "custom-ref".to_owned(),
        labels: labels(&[("made-by", "conformance"), ("team", "storage")]),
    };
    let desc = s.diff.diff(NS, &[], &upper, opts).await.unwrap();
    stored_layer(&s.content, NS, &desc).await;
    let info = s.content.info(NS, &desc.digest).await.unwrap();
    let mut want_labels = labels(&[("made-by", "conformance"), ("team", "storage")]);
    want_labels.insert(
        UNCOMPRESSED_LABEL.to_owned(),
        desc.annotations[UNCOMPRESSED_LABEL].clone(),
    );
    assert_eq!(info.labels, want_labels);
    let e = s.content.status(NS, "custom-ref").await.unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");

    // An uncompressed layer: the blob is the tar, its digest the diff ID.
    let opts = DiffOptions {
        media_type: media_types::OCI_LAYER.to_owned(),
        reference: "custom-tar".to_owned(),
        labels: HashMap::new(),
    };
    let desc = s.diff.diff(NS, &[], &upper, opts).await.unwrap();
    assert_eq!(desc.media_type, media_types::OCI_LAYER, "{desc:?}");
    let (tar, _) = stored_layer(&s.content, NS, &desc).await;
    assert_eq!(Digest::of(&tar), desc.digest);
    assert_eq!(entries(&tar), ["f"]);

    // A zstd layer: the blob is what the descriptor names, and it applies back to the same tree.
    let opts = DiffOptions {
        media_type: media_types::OCI_LAYER_ZSTD.to_owned(),
        ..DiffOptions::default()
    };
    let desc = s.diff.diff(NS, &[], &upper, opts).await.unwrap();
    assert_eq!(desc.media_type, media_types::OCI_LAYER_ZSTD, "{desc:?}");
    let info = s.content.info(NS, &desc.digest).await.unwrap();
    assert_eq!(info.size, desc.size);
    assert_eq!(
        info.labels.get(UNCOMPRESSED_LABEL),
        Some(&Digest::of(&tar).to_string())
    );
    let blob = read_all(&s.content, NS, &desc.digest).await.unwrap();
    assert_eq!(Digest::of(&blob), desc.digest);
    let fresh = prepare(s, sn, NS, "fresh", "").await;
    let applied = apply(s, NS, &desc, &fresh).await.unwrap();
    assert_eq!(applied.digest, Digest::of(&tar));
    assert_eq!(mounted_tree(&fresh, tmp), want(&[("f", "content")]));

    // A media type no differ writes.
    let opts = DiffOptions {
        media_type: "application/x-not-a-layer".to_owned(),
        ..DiffOptions::default()
    };
    let e = s.diff.diff(NS, &[], &upper, opts).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
    assert!(e.message().contains("application/x-not-a-layer"), "{e}");
}

/// Identical lower and upper trees make a valid empty layer, which applies as a no-op; writing it
/// twice answers the same blob, with the labels of the second call added.
pub async fn diff_of_identical_trees<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    tmp: &Path,
) {
    let base = layer(&[dir("d"), file("d/a", "1")]);
    unpack(s, sn, "base", "", &base).await;
    let lower = view(s, sn, "lower", "base").await;
    let same = view(s, sn, "same", "base").await;
    let desc = s
        .diff
        .diff(NS, &lower, &same, DiffOptions::default())
        .await
        .unwrap();
    let (tar, _) = stored_layer(&s.content, NS, &desc).await;
    assert_eq!(entries(&tar), Vec::<String>::new());

    // An active child with no change: the same empty layer.
    let child = prepare(s, sn, NS, "child", "base").await;
    let opts = DiffOptions {
        labels: labels(&[("second", "yes")]),
        ..DiffOptions::default()
    };
    let again = s.diff.diff(NS, &lower, &child, opts).await.unwrap();
    assert_eq!(again, desc);
    let info = s.content.info(NS, &desc.digest).await.unwrap();
    assert_eq!(
        info.labels.get("second").map(String::as_str),
        Some("yes"),
        "{info:?}"
    );

    let applied = apply(s, NS, &annotated(desc, &Digest::of(&tar)), &child)
        .await
        .unwrap();
    assert_eq!(applied.digest, Digest::of(&tar));
    assert_eq!(mounted_tree(&child, tmp), want(&[("d", ""), ("d/a", "1")]));
}

/// Layers are read from and written to the content of the request's namespace: a blob of
/// namespace A is not found by an apply in namespace B, and a diff in B writes its blob in B only.
pub async fn namespaces<D: Diff, C: ContentStore, S: SnapshotStore>(
    s: &Stores<D, C, S>,
    sn: &str,
    tmp: &Path,
) {
    let (tar, blob) = layer(&[file("a", "1")]);
    let desc = put(&s.content, "ns-a", &blob).await;
    let mounts_b = prepare(s, sn, "ns-b", "k", "").await;
    let e = apply(s, "ns-b", &desc, &mounts_b).await.unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.message().contains(&desc.digest.to_string()), "{e}");
    let mounts_a = prepare(s, sn, "ns-a", "k", "").await;
    let applied = apply(s, "ns-a", &desc, &mounts_a).await.unwrap();
    assert_eq!(applied.digest, Digest::of(&tar));

    {
        let m = TempMount::new(&mounts_b, tmp).unwrap();
        std::fs::write(m.path().join("only-b"), "b").unwrap();
    }
    let made = s
        .diff
        .diff("ns-b", &[], &mounts_b, DiffOptions::default())
        .await
        .unwrap();
    stored_layer(&s.content, "ns-b", &made).await;
    let e = s.content.info("ns-a", &made.digest).await.unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    let e = apply(s, "bad/ns", &desc, &mounts_a).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
}

/// Calls the macro `$run` with the name of every case of this suite, so that each place that
/// runs the suite (against the local differ, the service, the gateway) runs all of it.
#[macro_export]
macro_rules! diff_cases {
    ($run:ident) => {
        $run!(
            apply_gzip_layer,
            apply_checks_the_uncompressed_digest,
            apply_checks_the_blob,
            apply_whiteouts,
            diff_round_trip,
            diff_reference_and_labels,
            diff_of_identical_trees,
            namespaces,
        );
    };
}
