//! The conformance suite of the [`ImageStore`], [`LeaseStore`] and [`NamespaceStore`] traits:
//! each case takes the stores (starting empty) and the content and snapshot stores the images
//! service collects from, and checks containerd's rules through the traits alone, so the same
//! case runs against the local stores, the images service's gRPC server and the gateway's router
//! in front of it. The images service is expected to keep unreferenced objects for a grace
//! period of some seconds (cases check what a young object still blocks).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use strata_core::content::{ContentStore, write_blob};
use strata_core::descriptor::Descriptor;
use strata_core::images::{DeleteOptions, Image, ImageStore};
use strata_core::leases::{self, LeaseStore, Resource};
use strata_core::namespaces::{Namespace, NamespaceStore};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Digest, Kind};

use super::labels;

const NS: &str = "default";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The stores under test, and the services beside them.
pub struct Stores<I, L, N, C, S> {
    /// Images under test.
    pub images: I,
    /// Leases under test.
    pub leases: L,
    /// Namespaces under test.
    pub namespaces: N,
    /// The content store the images service collects from.
    pub content: C,
    /// The snapshotter the images service collects from.
    pub snapshots: S,
}

fn image(name: &str, seed: &[u8], media_type: &str) -> Image {
    Image {
        name: name.to_owned(),
        labels: labels(&[("team", "storage")]),
        target: Descriptor {
            media_type: media_type.to_owned(),
            digest: Digest::of(seed),
            size: 1234,
            annotations: labels(&[("org.opencontainers.image.ref.name", "latest")]),
        },
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    }
}

fn names(v: Vec<Image>) -> Vec<String> {
    v.into_iter().map(|i| i.name).collect()
}

pub async fn images_round_trip<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let want = image("docker.io/library/busybox:latest", b"m1", MANIFEST);
    let created = s.images.create(NS, want.clone()).await.unwrap();
    assert_eq!(created.name, want.name);
    assert_eq!(created.labels, want.labels);
    assert_eq!(created.target, want.target);
    assert!(created.created_at > before, "creation time not set");
    assert_eq!(created.created_at, created.updated_at);
    let got = s.images.get(NS, &want.name).await.unwrap();
    assert_eq!(got, created);
    assert_eq!(
        names(s.images.list(NS, &[]).await.unwrap()),
        vec![want.name.clone()]
    );

    let err = s.images.create(NS, want.clone()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    assert!(err.message().contains(&want.name), "{err}");
    // The namespace was recorded by the creation.
    s.namespaces.get(NS).await.unwrap();
    // Namespaces are separate.
    let err = s.images.get("elsewhere", &want.name).await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    s.images.create("elsewhere", want.clone()).await.unwrap();
    assert_eq!(s.images.list("elsewhere", &[]).await.unwrap().len(), 1);
}

pub async fn images_update<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    let name = "example.com/app:1";
    let created = s
        .images
        .create(NS, image(name, b"a", MANIFEST))
        .await
        .unwrap();

    // One label set, one removed (absent from the request), others untouched.
    let mut change = created.clone();
    change.labels = labels(&[("new", "1")]);
    let got = s
        .images
        .update(
            NS,
            change.clone(),
            &["labels.new".into(), "labels.team".into()],
        )
        .await
        .unwrap();
    assert_eq!(got.labels, labels(&[("new", "1")]));
    assert_eq!(got.target, created.target);
    assert_eq!(got.created_at, created.created_at);
    assert!(got.updated_at >= created.updated_at);

    // The target as a unit; annotations by key.
    let mut change = image(name, b"b", INDEX);
    change.target.annotations = labels(&[("x", "y")]);
    let got = s
        .images
        .update(NS, change.clone(), &["target".into()])
        .await
        .unwrap();
    assert_eq!(got.target, change.target);
    assert_eq!(got.labels, labels(&[("new", "1")]), "labels untouched");
    change.target.annotations = labels(&[("z", "1")]);
    let got = s
        .images
        .update(NS, change.clone(), &["annotations.z".into()])
        .await
        .unwrap();
    assert_eq!(got.target.annotations, labels(&[("x", "y"), ("z", "1")]));
    let got = s
        .images
        .update(NS, change.clone(), &["annotations".into()])
        .await
        .unwrap();
    assert_eq!(got.target.annotations, labels(&[("z", "1")]));

    // No mask: everything but the name and creation time is replaced.
    let replacement = image(name, b"c", MANIFEST);
    let got = s.images.update(NS, replacement.clone(), &[]).await.unwrap();
    assert_eq!(got.labels, replacement.labels);
    assert_eq!(got.target, replacement.target);
    assert_eq!(got.created_at, created.created_at);
    assert_eq!(s.images.get(NS, name).await.unwrap(), got);

    let err = s
        .images
        .update(NS, replacement.clone(), &["name".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("\"name\""), "{err}");
    let mut bad = replacement.clone();
    bad.target.size = 0;
    let err = s
        .images
        .update(NS, bad, &["target".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    let err = s
        .images
        .update(NS, image("nope", b"x", MANIFEST), &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("nope"), "{err}");
}

pub async fn images_filters<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    let a = image("a:1", b"a", MANIFEST);
    let mut b = image("b:1", b"b", INDEX);
    b.labels = labels(&[("kind", "base"), ("x.y/z", "1")]);
    s.images.create(NS, a.clone()).await.unwrap();
    s.images.create(NS, b.clone()).await.unwrap();
    let list = |f: Vec<String>| async move { names(s.images.list(NS, &f).await.unwrap()) };
    assert_eq!(list(vec![]).await, vec!["a:1", "b:1"]);
    assert_eq!(list(vec!["name==a:1".into()]).await, vec!["a:1"]);
    assert_eq!(
        list(vec![format!("target.digest=={}", b.target.digest)]).await,
        vec!["b:1"]
    );
    assert_eq!(
        list(vec![format!("target.mediatype=={INDEX}")]).await,
        vec!["b:1"]
    );
    assert_eq!(list(vec!["labels.kind==base".into()]).await, vec!["b:1"]);
    assert_eq!(list(vec!["labels.\"x.y/z\"".into()]).await, vec!["b:1"]);
    assert_eq!(
        list(vec!["labels.team==storage,name~=^a".into()]).await,
        vec!["a:1"]
    );
    assert_eq!(
        list(vec!["name==a:1".into(), "name==b:1".into()]).await,
        vec!["a:1", "b:1"]
    );
    assert_eq!(
        list(vec![
            "annotations.\"org.opencontainers.image.ref.name\"==latest".into()
        ])
        .await,
        vec!["a:1", "b:1"]
    );
    let err = s.images.list(NS, &["name=~x".into()]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("name=~x"), "{err}");
}

pub async fn images_delete<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    let img = image("del:1", b"d", MANIFEST);
    s.images.create(NS, img.clone()).await.unwrap();
    // A delete guarded by another target is refused and leaves the image.
    let other = Digest::of(b"other");
    let err = s
        .images
        .delete(
            NS,
            "del:1",
            DeleteOptions {
                sync: false,
                target: Some(other.clone()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains(&other.to_string()), "{err}");
    s.images.get(NS, "del:1").await.unwrap();
    s.images
        .delete(
            NS,
            "del:1",
            DeleteOptions {
                sync: true,
                target: Some(img.target.digest.clone()),
            },
        )
        .await
        .unwrap();
    let err = s.images.get(NS, "del:1").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    let err = s
        .images
        .delete(NS, "del:1", DeleteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("del:1"), "{err}");
}

pub async fn images_validation<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    for (bad, what) in [
        (image("", b"e", MANIFEST), "empty"),
        (image("tab\there", b"e", MANIFEST), "tab\\there"),
        (image("no-media-type", b"e", ""), "no-media-type"),
    ] {
        let err = s.images.create(NS, bad).await.unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
        assert!(err.message().contains(what), "{what}: {err}");
    }
    let mut zero = image("zero-size", b"e", MANIFEST);
    zero.target.size = 0;
    let err = s.images.create(NS, zero).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("zero-size"), "{err}");
    let mut big = image("big-label", b"e", MANIFEST);
    big.labels = labels(&[("k", &"v".repeat(5000))]);
    let err = s.images.create(NS, big).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    let err = s
        .images
        .create("bad/ns", image("x", b"e", MANIFEST))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("bad/ns"), "{err}");
    assert!(s.images.list(NS, &[]).await.unwrap().is_empty());
}

pub async fn leases_round_trip<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    let l = s
        .leases
        .create(NS, "pull-1", labels(&[("purpose", "pull")]))
        .await
        .unwrap();
    assert_eq!(l.id, "pull-1");
    assert_eq!(l.labels, labels(&[("purpose", "pull")]));
    assert!(l.created_at > SystemTime::now() - Duration::from_secs(60));
    let err = s
        .leases
        .create(NS, "pull-1", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    assert!(err.message().contains("pull-1"), "{err}");
    // An empty id asks for a generated one.
    let generated = s.leases.create(NS, "", HashMap::new()).await.unwrap();
    assert!(!generated.id.is_empty());
    let other = s.leases.create(NS, "", HashMap::new()).await.unwrap();
    assert_ne!(generated.id, other.id);
    s.namespaces.get(NS).await.unwrap();

    let ids = |v: Vec<leases::Lease>| {
        let mut v: Vec<String> = v.into_iter().map(|l| l.id).collect();
        v.sort();
        v
    };
    assert_eq!(ids(s.leases.list(NS, &[]).await.unwrap()).len(), 3);
    assert_eq!(
        ids(s.leases.list(NS, &["id==pull-1".into()]).await.unwrap()),
        vec!["pull-1"]
    );
    assert_eq!(
        ids(s
            .leases
            .list(NS, &["labels.purpose==pull".into()])
            .await
            .unwrap()),
        vec!["pull-1"]
    );
    let err = s.leases.list(NS, &["id=".into()]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");

    // An expiry label must be an RFC 3339 time.
    let err = s
        .leases
        .create(
            NS,
            "bad-expiry",
            labels(&[(leases::gc::EXPIRE, "tomorrow")]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("tomorrow"), "{err}");
    let later = leases::format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
    s.leases
        .create(NS, "expiring", labels(&[(leases::gc::EXPIRE, &later)]))
        .await
        .unwrap();

    s.leases.delete(NS, "pull-1", false).await.unwrap();
    let err = s.leases.delete(NS, "pull-1", false).await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("pull-1"), "{err}");
    s.leases.delete(NS, &generated.id, true).await.unwrap();
    assert_eq!(s.leases.list(NS, &[]).await.unwrap().len(), 2);
    assert!(s.leases.list("other", &[]).await.unwrap().is_empty());
}

pub async fn lease_resources<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    s.leases.create(NS, "holder", HashMap::new()).await.unwrap();
    let d = Digest::of(b"held");
    let held = [
        Resource::new("content", d.to_string()),
        Resource::new("snapshots/overlayfs", "layer-1"),
        Resource::new("ingests", "pull-ref-1"),
        Resource::new("images", "app:1"),
    ];
    for r in &held {
        s.leases
            .add_resource(NS, "holder", r.clone())
            .await
            .unwrap();
    }
    // Adding twice holds once.
    s.leases
        .add_resource(NS, "holder", held[0].clone())
        .await
        .unwrap();
    let mut got = s.leases.list_resources(NS, "holder").await.unwrap();
    got.sort();
    let mut want = held.to_vec();
    want.sort();
    assert_eq!(got, want);

    s.leases
        .delete_resource(NS, "holder", held[1].clone())
        .await
        .unwrap();
    // Releasing what is not held is no error.
    s.leases
        .delete_resource(NS, "holder", held[1].clone())
        .await
        .unwrap();
    assert_eq!(
        s.leases.list_resources(NS, "holder").await.unwrap().len(),
        3
    );

    for (r, kind, what) in [
        (
            Resource::new("content", "sha256:zz"),
            Kind::InvalidArgument,
            "sha256:zz",
        ),
        (
            Resource::new("snapshots", "k"),
            Kind::InvalidArgument,
            "snapshots",
        ),
        (
            Resource::new("content/x", d.to_string()),
            Kind::InvalidArgument,
            "content/x",
        ),
        (
            Resource::new("volumes", "v"),
            Kind::NotImplemented,
            "volumes",
        ),
        (
            Resource::new("ingests", ""),
            Kind::InvalidArgument,
            "ingests",
        ),
    ] {
        let err = s.leases.add_resource(NS, "holder", r).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.message().contains(what), "{what}: {err}");
    }
    for err in [
        s.leases
            .add_resource(NS, "missing", held[0].clone())
            .await
            .unwrap_err(),
        s.leases
            .delete_resource(NS, "missing", held[0].clone())
            .await
            .unwrap_err(),
        s.leases.list_resources(NS, "missing").await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), Kind::NotFound, "{err}");
        assert!(err.message().contains("missing"), "{err}");
    }
    // Deleting the lease drops what it held.
    s.leases.delete(NS, "holder", false).await.unwrap();
    s.leases.create(NS, "holder", HashMap::new()).await.unwrap();
    assert!(
        s.leases
            .list_resources(NS, "holder")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn namespaces_crud<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    let ns = Namespace {
        name: "team-a".into(),
        labels: labels(&[("owner", "a"), ("tier", "1")]),
    };
    assert_eq!(s.namespaces.create(ns.clone()).await.unwrap(), ns);
    assert_eq!(s.namespaces.get("team-a").await.unwrap(), ns);
    let err = s.namespaces.create(ns.clone()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    assert!(err.message().contains("team-a"), "{err}");
    s.namespaces
        .create(Namespace {
            name: "team-b".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap();
    let all: Vec<String> = s
        .namespaces
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(all, vec!["team-a", "team-b"]);
    let owned: Vec<String> = s
        .namespaces
        .list("labels.owner==a")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(owned, vec!["team-a"]);

    // By key: one set, one removed by an empty value.
    let got = s
        .namespaces
        .update(
            Namespace {
                name: "team-a".into(),
                labels: labels(&[("owner", "b"), ("tier", "")]),
            },
            &["labels.owner".into(), "labels.tier".into()],
        )
        .await
        .unwrap();
    assert_eq!(got.labels, labels(&[("owner", "b")]));
    // No mask: replaced.
    let got = s
        .namespaces
        .update(
            Namespace {
                name: "team-a".into(),
                labels: labels(&[("x", "1")]),
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(got.labels, labels(&[("x", "1")]));
    assert_eq!(s.namespaces.get("team-a").await.unwrap(), got);
    let err = s
        .namespaces
        .update(got.clone(), &["name".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    let err = s
        .namespaces
        .update(
            Namespace {
                name: "ghost".into(),
                labels: HashMap::new(),
            },
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("ghost"), "{err}");

    s.namespaces.delete("team-b").await.unwrap();
    let err = s.namespaces.get("team-b").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("team-b"), "{err}");
    let err = s.namespaces.delete("team-b").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");

    for bad in ["", "bad/name", "-x"] {
        let err = s
            .namespaces
            .create(Namespace {
                name: bad.into(),
                labels: HashMap::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    }
    let err = s.namespaces.get("bad/name").await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("bad/name"), "{err}");
}

/// Deleting `ns` is refused with a message naming each of `what`.
async fn refusal<N: NamespaceStore>(n: &N, ns: &str, what: &[&str]) -> String {
    let err = n.delete(ns).await.unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition, "{err}");
    assert!(err.message().contains(&format!("{ns:?}")), "{err}");
    for w in what {
        assert!(err.message().contains(w), "{w} not in: {err}");
    }
    err.message().to_owned()
}

pub async fn namespace_delete_refused_while_not_empty<
    I: ImageStore,
    L: LeaseStore,
    N: NamespaceStore,
    C: ContentStore,
    S: SnapshotStore,
>(
    s: &Stores<I, L, N, C, S>,
) {
    let ns = "busy";
    s.images
        .create(ns, image("app:1", b"a", MANIFEST))
        .await
        .unwrap();
    s.leases.create(ns, "pull-9", HashMap::new()).await.unwrap();
    let blob = write_blob(&s.content, ns, "r", b"a blob", None, HashMap::new())
        .await
        .unwrap();
    s.snapshots
        .prepare("overlayfs", ns, "work-1", "", HashMap::new())
        .await
        .unwrap();
    s.snapshots
        .prepare("native", ns, "work-2", "", HashMap::new())
        .await
        .unwrap();

    refusal(
        &s.namespaces,
        ns,
        &[
            "images (1: \"app:1\")",
            "leases (1: \"pull-9\")",
            &blob.to_string(),
            "snapshots on \"overlayfs\" snapshotter (1: \"work-1\")",
            "snapshots on \"native\" snapshotter (1: \"work-2\")",
        ],
    )
    .await;

    s.images
        .delete(ns, "app:1", DeleteOptions::default())
        .await
        .unwrap();
    s.leases.delete(ns, "pull-9", false).await.unwrap();
    let msg = refusal(&s.namespaces, ns, &["blobs", "work-1"]).await;
    assert!(!msg.contains("images") && !msg.contains("leases"), "{msg}");

    // The objects are young (grace period): nothing collected them. Remove them by hand.
    s.snapshots.remove("overlayfs", ns, "work-1").await.unwrap();
    s.snapshots.remove("native", ns, "work-2").await.unwrap();
    let msg = refusal(&s.namespaces, ns, &["blobs"]).await;
    assert!(!msg.contains("snapshots"), "{msg}");
    s.content.delete(ns, &blob).await.unwrap();
    s.namespaces.delete(ns).await.unwrap();
    let err = s.namespaces.get(ns).await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
}

/// Calls the macro `$run` with the name of every case of this suite, so that each place that
/// runs the suite (against the local store, the service, the gateway) runs all of it.
#[macro_export]
macro_rules! images_cases {
    ($run:ident) => {
        $run!(
            images_round_trip,
            images_update,
            images_filters,
            images_delete,
            images_validation,
            leases_round_trip,
            lease_resources,
            namespaces_crud,
            namespace_delete_refused_while_not_empty,
        );
    };
}
