//! The conformance suite of the [`ContainerStore`] trait: each case takes a store that starts
//! empty and checks containerd's rules through the trait alone, so the same case runs against the
//! local store, the tasks service's gRPC server and the gateway's router in front of it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use strata_core::Kind;
use strata_core::containers::{Any, Container, ContainerStore};

use super::labels;

const NS: &str = "default";

/// The type URL of an OCI runtime spec, as containerd clients send it.
pub const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The runtime of the containers below.
pub const RUNC: &str = "io.containerd.runc.v2";

/// A minimal OCI spec as containerd clients send it: JSON under the runtime-spec type URL.
pub fn spec(args: &str) -> Any {
    Any {
        type_url: SPEC_TYPE.to_owned(),
        value: format!(r#"{{"ociVersion":"1.1.0","process":{{"args":["{args}"]}}}}"#).into_bytes(),
    }
}

/// A valid container `id`: busybox, a spec, an overlayfs snapshot, one label.
pub fn container(id: &str) -> Container {
    let mut c = Container::new(id, RUNC);
    c.image = "docker.io/library/busybox:latest".to_owned();
    c.spec = Some(spec("sh"));
    c.snapshotter = "overlayfs".to_owned();
    c.snapshot_key = format!("{id}-snapshot");
    c.labels = labels(&[("app", "web")]);
    c
}

fn ids(v: Vec<Container>) -> Vec<String> {
    v.into_iter().map(|c| c.id).collect()
}

pub async fn round_trip<S: ContainerStore>(s: &S) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let mut want = container("web-1");
    // Not JSON, not even UTF-8: kept byte for byte all the same.
    want.spec = Some(Any {
        type_url: "example.com/odd".into(),
        value: vec![0, 159, 146, 150, 255],
    });
    want.runtime.options = Some(Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: vec![8, 1],
    });
    want.extensions = HashMap::from([(
        "com.example/ext".to_owned(),
        Any {
            type_url: "example.com/Ext".into(),
            value: b"\x01\x02".to_vec(),
        },
    )]);
    want.sandbox = "pod-1".into();
    let created = s.create(NS, want.clone()).await.unwrap();
    assert!(created.created_at > before, "creation time not set");
    assert_eq!(created.created_at, created.updated_at);
    let mut expect = want.clone();
    expect.created_at = created.created_at;
    expect.updated_at = created.updated_at;
    assert_eq!(created, expect);
    assert_eq!(s.get(NS, "web-1").await.unwrap(), created);
    assert_eq!(ids(s.list(NS, &[]).await.unwrap()), vec!["web-1"]);

    let err = s.create(NS, want.clone()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    assert!(err.message().contains("\"web-1\""), "{err}");

    // Namespaces are separate.
    let err = s.get("elsewhere", "web-1").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("\"web-1\""), "{err}");
    assert!(s.list("elsewhere", &[]).await.unwrap().is_empty());
    s.create("elsewhere", want).await.unwrap();
    assert_eq!(s.list("elsewhere", &[]).await.unwrap().len(), 1);

    // Labels with empty values are no labels.
    let mut c = container("web-2");
    c.labels = labels(&[("a", "1"), ("b", "")]);
    let got = s.create(NS, c).await.unwrap();
    assert_eq!(got.labels, labels(&[("a", "1")]));
}

pub async fn update<S: ContainerStore>(s: &S) {
    let created = s.create(NS, container("app")).await.unwrap();

    // One label set, one removed (absent from the request), others untouched.
    let mut change = container("app");
    change.labels = labels(&[("tier", "1")]);
    change.image = "ignored".into();
    let got = s
        .update(NS, change, &["labels.tier".into(), "labels.app".into()])
        .await
        .unwrap();
    assert_eq!(got.labels, labels(&[("tier", "1")]));
    assert_eq!(got.image, created.image);
    assert_eq!(got.created_at, created.created_at);
    assert!(got.updated_at >= created.updated_at);

    // Image, spec, snapshot key and extensions by path.
    let mut change = got.clone();
    change.image = "docker.io/library/alpine:3".into();
    change.spec = Some(spec("top"));
    change.snapshot_key = "new-key".into();
    change.extensions = HashMap::from([
        (
            "x".to_owned(),
            Any {
                type_url: "t/x".into(),
                value: vec![1],
            },
        ),
        (
            "y".to_owned(),
            Any {
                type_url: "t/y".into(),
                value: vec![2],
            },
        ),
    ]);
    let got = s
        .update(
            NS,
            change.clone(),
            &[
                "image".into(),
                "spec".into(),
                "snapshotkey".into(),
                "extensions".into(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(got.image, change.image);
    assert_eq!(got.spec, change.spec);
    assert_eq!(got.snapshot_key, "new-key");
    assert_eq!(got.extensions, change.extensions);
    let mut less = got.clone();
    less.extensions.remove("x");
    let got = s.update(NS, less, &["extensions.x".into()]).await.unwrap();
    assert_eq!(got.extensions.keys().collect::<Vec<_>>(), vec!["y"]);
    let mut key = got.clone();
    key.snapshot_key = "other-key".into();
    let got = s.update(NS, key, &["snapshot_key".into()]).await.unwrap();
    assert_eq!(got.snapshot_key, "other-key");
    assert_eq!(s.get(NS, "app").await.unwrap(), got);

    // Without a mask: everything mutable replaced.
    let mut whole = container("app");
    whole.labels = labels(&[("only", "this")]);
    let got = s.update(NS, whole.clone(), &[]).await.unwrap();
    assert_eq!(got.labels, whole.labels);
    assert_eq!(got.spec, whole.spec);
    assert!(got.extensions.is_empty());

    // The runtime and the snapshotter are immutable.
    let mut other = whole.clone();
    other.runtime.name = "io.containerd.kata.v2".into();
    for paths in [
        vec![],
        vec!["runtime".to_owned()],
        vec!["runtime.name".to_owned()],
    ] {
        let err = s.update(NS, other.clone(), &paths).await.unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{paths:?}: {err}");
        assert!(err.message().contains("\"app\""), "{err}");
    }
    let mut other = whole.clone();
    other.snapshotter = "native".into();
    let err = s.update(NS, other, &[]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("snapshotter"), "{err}");
    assert_eq!(s.get(NS, "app").await.unwrap().runtime.name, RUNC);

    // Unknown paths and absent containers.
    let err = s
        .update(NS, whole.clone(), &["created_at".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("\"created_at\""), "{err}");
    let err = s
        .update(NS, container("ghost"), &["labels".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("\"ghost\""), "{err}");
    // An update may not drop the spec.
    let mut nospec = whole;
    nospec.spec = None;
    let err = s.update(NS, nospec, &["spec".into()]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
}

pub async fn filters<S: ContainerStore>(s: &S) {
    let mut a = container("a");
    a.labels = labels(&[("app", "web"), ("tier", "front")]);
    let mut b = container("b");
    b.image = "docker.io/library/redis:7".into();
    b.labels = labels(&[("app", "db")]);
    b.snapshotter = "native".into();
    let mut c = container("c");
    c.runtime.name = "io.containerd.kata.v2".into();
    c.snapshot_key = "special".into();
    for x in [a, b, c] {
        s.create(NS, x).await.unwrap();
    }
    let q = |f: &[&str]| {
        let f: Vec<String> = f.iter().map(|s| (*s).to_owned()).collect();
        async move {
            let mut got = ids(s.list(NS, &f).await.unwrap());
            got.sort();
            got
        }
    };
    assert_eq!(q(&[]).await, ["a", "b", "c"]);
    assert_eq!(q(&["id==b"]).await, ["b"]);
    assert_eq!(q(&["image~=redis"]).await, ["b"]);
    assert_eq!(q(&["runtime.name==io.containerd.kata.v2"]).await, ["c"]);
    assert_eq!(q(&["snapshotter==native"]).await, ["b"]);
    assert_eq!(q(&["snapshot_key==special"]).await, ["c"]);
    assert_eq!(q(&["labels.app==web"]).await, ["a", "c"]);
    assert_eq!(q(&["labels.app==web,labels.tier"]).await, ["a"]);
    assert_eq!(q(&["labels.app==db", "id==c"]).await, ["b", "c"]);
    assert_eq!(q(&["labels.nope"]).await, Vec::<String>::new());
    let err = s.list(NS, &["id~=(".into()]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("id~=("), "{err}");
}

pub async fn delete<S: ContainerStore>(s: &S) {
    s.create(NS, container("gone")).await.unwrap();
    s.delete(NS, "gone").await.unwrap();
    let err = s.get(NS, "gone").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    let err = s.delete(NS, "gone").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
    assert!(err.message().contains("\"gone\""), "{err}");
    // The id is free again.
    s.create(NS, container("gone")).await.unwrap();
}

pub async fn validation<S: ContainerStore>(s: &S) {
    let cases: Vec<(Container, &str)> = vec![
        (container("bad/id"), "\"bad/id\""),
        (container(""), "container id"),
        (
            {
                let mut c = container("noruntime");
                c.runtime.name.clear();
                c
            },
            "runtime",
        ),
        (
            {
                let mut c = container("nospec");
                c.spec = None;
                c
            },
            "spec",
        ),
        (
            {
                let mut c = container("nosnapshotter");
                c.snapshotter.clear();
                c
            },
            "snapshotter",
        ),
        (
            {
                let mut c = container("emptyext");
                c.extensions.insert(String::new(), Any::default());
                c
            },
            "extension",
        ),
        (
            {
                let mut c = container("biglabel");
                c.labels.insert("k".into(), "v".repeat(5000));
                c
            },
            "label",
        ),
    ];
    for (c, needle) in cases {
        let id = c.id.clone();
        let err = s.create(NS, c).await.unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{id}: {err}");
        assert!(err.message().contains(needle), "{id}: {err}");
    }
    assert!(s.list(NS, &[]).await.unwrap().is_empty());
    let err = s.list("bad ns", &[]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
}

/// Calls the macro `$run` with the name of every case of this suite, so that each place that
/// runs the suite (against the local store, the service, the gateway) runs all of it.
#[macro_export]
macro_rules! containers_cases {
    ($run:ident) => {
        $run!(round_trip, update, filters, delete, validation);
    };
}
