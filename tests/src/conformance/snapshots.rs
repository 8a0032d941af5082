//! The conformance suite of the [`SnapshotStore`] trait: each case takes a store that starts
//! empty, the snapshotter to use (`overlayfs` or `native`) and a directory for its temporary
//! mounts, and checks containerd's rules through the trait alone, so the same case runs against
//! the local store, the snapshotter's gRPC server and the gateway's router in front of it.

use std::collections::HashMap;
use std::path::Path;
use strata_core::Kind as ErrKind;
use strata_core::snapshots::{Kind, SnapshotStore};
use strata_mount::TempMount;

use super::labels;

const NS: &str = "default";

/// Prepares `key` over `parent`, writes `files` into it, commits it as `name`.
async fn layer<S: SnapshotStore>(
    s: &S,
    sn: &str,
    tmp: &Path,
    name: &str,
    parent: &str,
    files: &[(&str, &str)],
) {
    let key = format!("{name}-active");
    let mounts = s
        .prepare(sn, NS, &key, parent, HashMap::new())
        .await
        .unwrap();
    {
        let m = TempMount::new(&mounts, tmp).unwrap();
        for (f, content) in files {
            let p = m.path().join(f);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(p, content).unwrap();
        }
    }
    s.commit(sn, NS, name, &key, HashMap::new()).await.unwrap();
}

pub async fn prepare_commit_view_chain<S: SnapshotStore>(s: &S, sn: &str, tmp: &Path) {
    layer(s, sn, tmp, "base", "", &[("etc/os", "base"), ("a", "1")]).await;
    layer(s, sn, tmp, "mid", "base", &[("a", "2"), ("b", "2")]).await;
    let info = s.stat(sn, NS, "mid").await.unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent, "base");

    let mounts = s
        .view(sn, NS, "v", "mid", labels(&[("l", "x")]))
        .await
        .unwrap();
    {
        let m = TempMount::new(&mounts, tmp).unwrap();
        assert_eq!(std::fs::read_to_string(m.path().join("a")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(m.path().join("b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_to_string(m.path().join("etc/os")).unwrap(),
            "base"
        );
        // A view is read-only.
        assert!(std::fs::write(m.path().join("c"), "no").is_err());
    }
    let info = s.stat(sn, NS, "v").await.unwrap();
    assert_eq!(info.kind, Kind::View);
    assert_eq!(info.labels, labels(&[("l", "x")]));
    assert_eq!(s.mounts(sn, NS, "v").await.unwrap(), mounts);

    // A view cannot be committed; a committed snapshot has no mounts.
    let err = s
        .commit(sn, NS, "nope", "v", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrKind::FailedPrecondition, "{err}");
    let err = s.mounts(sn, NS, "mid").await.unwrap_err();
    assert_eq!(err.kind(), ErrKind::FailedPrecondition, "{err}");

    // Writes in an active snapshot stay there; the parents are unchanged.
    let mounts = s
        .prepare(sn, NS, "work", "mid", HashMap::new())
        .await
        .unwrap();
    {
        let m = TempMount::new(&mounts, tmp).unwrap();
        std::fs::write(m.path().join("a"), "3").unwrap();
        std::fs::remove_file(m.path().join("b")).unwrap();
    }
    let mounts = s.view(sn, NS, "v2", "mid", HashMap::new()).await.unwrap();
    let m = TempMount::new(&mounts, tmp).unwrap();
    assert_eq!(std::fs::read_to_string(m.path().join("a")).unwrap(), "2");
    assert!(m.path().join("b").exists());
}

pub async fn errors<S: SnapshotStore>(s: &S, sn: &str, tmp: &Path) {
    layer(s, sn, tmp, "c", "", &[("f", "x")]).await;
    s.prepare(sn, NS, "a", "", HashMap::new()).await.unwrap();
    let e = s
        .prepare(sn, NS, "a", "", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrKind::AlreadyExists, "{e}");
    assert!(e.message().contains("\"a\""), "{e}");
    let e = s
        .prepare(sn, NS, "x", "missing", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrKind::NotFound, "{e}");
    assert!(e.message().contains("missing"), "{e}");
    let e = s
        .prepare(sn, NS, "x", "a", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrKind::InvalidArgument, "{e}");
    let e = s.stat(sn, NS, "nothing").await.unwrap_err();
    assert_eq!(e.kind(), ErrKind::NotFound, "{e}");
    assert!(e.message().contains("nothing"), "{e}");
    let e = s
        .commit(sn, NS, "c", "a", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrKind::AlreadyExists, "{e}");
    let e = s
        .commit(sn, NS, "d", "c", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrKind::FailedPrecondition, "{e}");
    let e = s.remove(sn, NS, "nothing").await.unwrap_err();
    assert_eq!(e.kind(), ErrKind::NotFound, "{e}");
    let e = s.stat("zfs", NS, "a").await.unwrap_err();
    assert_eq!(e.kind(), ErrKind::InvalidArgument, "{e}");
    assert!(e.message().contains("zfs"), "{e}");
    let e = s.list(sn, "bad/ns", &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrKind::InvalidArgument, "{e}");
    // The unpacker's target label: preparing towards an existing snapshot is AlreadyExists.
    let e = s
        .prepare(
            sn,
            NS,
            "extract",
            "",
            labels(&[("containerd.io/snapshot.ref", "c")]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrKind::AlreadyExists, "{e}");
}

pub async fn removal_rules<S: SnapshotStore>(s: &S, sn: &str, tmp: &Path) {
    layer(s, sn, tmp, "p", "", &[("f", "1")]).await;
    layer(s, sn, tmp, "q", "p", &[("g", "2")]).await;
    s.prepare(sn, NS, "r", "q", HashMap::new()).await.unwrap();
    for parent in ["p", "q"] {
        let e = s.remove(sn, NS, parent).await.unwrap_err();
        assert_eq!(e.kind(), ErrKind::FailedPrecondition, "{e}");
    }
    s.remove(sn, NS, "r").await.unwrap();
    s.remove(sn, NS, "q").await.unwrap();
    s.remove(sn, NS, "p").await.unwrap();
    assert!(s.list(sn, NS, &[]).await.unwrap().is_empty());
    s.cleanup(sn).await.unwrap();
}

pub async fn long_chain_mounts<S: SnapshotStore>(s: &S, sn: &str, tmp: &Path) {
    let mut parent = String::new();
    for i in 0..128 {
        let name = format!("layer-{i:03}");
        layer(
            s,
            sn,
            tmp,
            &name,
            &parent,
            &[(&format!("f{i}"), &i.to_string())],
        )
        .await;
        parent = name;
    }
    for (key, active) in [("top-view", false), ("top-active", true)] {
        let mounts = if active {
            s.prepare(sn, NS, key, &parent, HashMap::new())
                .await
                .unwrap()
        } else {
            s.view(sn, NS, key, &parent, HashMap::new()).await.unwrap()
        };
        let m = TempMount::new(&mounts, tmp).unwrap();
        for i in 0..128 {
            let got = std::fs::read_to_string(m.path().join(format!("f{i}"))).unwrap();
            assert_eq!(got, i.to_string());
        }
    }
}

pub async fn usage_of_a_thin_layer<S: SnapshotStore>(s: &S, sn: &str, tmp: &Path) {
    let big: String = "x".repeat(1 << 20);
    layer(s, sn, tmp, "img", "", &[("big", &big)]).await;
    let u = s.usage(sn, NS, "img").await.unwrap();
    assert!(u.size >= 1 << 20, "{u:?}");
    let mounts = s
        .prepare(sn, NS, "ctr", "img", HashMap::new())
        .await
        .unwrap();
    {
        let m = TempMount::new(&mounts, tmp).unwrap();
        std::fs::write(m.path().join("small"), "hello").unwrap();
    }
    let u = s.usage(sn, NS, "ctr").await.unwrap();
    if sn == "overlayfs" {
        // The container's layer holds only what it wrote, not the image.
        assert!(u.size < 64 << 10, "{u:?}");
        assert_eq!(u.inodes, 2, "{u:?}");
    } else {
        assert!(u.size >= 1 << 20, "native copies the parent: {u:?}");
    }
}

pub async fn labels_and_filters<S: SnapshotStore>(s: &S, sn: &str, tmp: &Path) {
    layer(s, sn, tmp, "l1", "", &[("f", "1")]).await;
    s.prepare(sn, NS, "k", "l1", labels(&[("a", "1"), ("b", "2")]))
        .await
        .unwrap();
    let mut info = s.stat(sn, NS, "k").await.unwrap();
    info.labels = labels(&[("b", "20")]);
    let got = s
        .update(
            sn,
            NS,
            info.clone(),
            &["labels.b".into(), "labels.a".into()],
        )
        .await
        .unwrap();
    assert_eq!(got.labels, labels(&[("b", "20")]));
    let e = s
        .update(sn, NS, info, &["parent".into()])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrKind::InvalidArgument, "{e}");
    let names = |v: Vec<strata_core::snapshots::Info>| {
        let mut n: Vec<_> = v.into_iter().map(|i| i.name).collect();
        n.sort();
        n
    };
    assert_eq!(names(s.list(sn, NS, &[]).await.unwrap()), ["k", "l1"]);
    assert_eq!(
        names(s.list(sn, NS, &["kind==committed".into()]).await.unwrap()),
        ["l1"]
    );
    assert_eq!(
        names(s.list(sn, NS, &["labels.b==20".into()]).await.unwrap()),
        ["k"]
    );
    assert_eq!(
        names(s.list(sn, NS, &["parent==l1".into()]).await.unwrap()),
        ["k"]
    );
    // Keys are per namespace.
    assert!(s.list(sn, "other", &[]).await.unwrap().is_empty());
    s.prepare(sn, "other", "k", "", HashMap::new())
        .await
        .unwrap();
    assert_eq!(s.stat(sn, "other", "k").await.unwrap().parent, "");
}

/// Calls the macro `$run` with the name of every case of this suite, so that each place that
/// runs the suite (against the local store, the service, the gateway) runs all of it.
#[macro_export]
macro_rules! snapshots_cases {
    ($run:ident) => {
        $run!(
            prepare_commit_view_chain,
            errors,
            removal_rules,
            long_chain_mounts,
            usage_of_a_thin_layer,
            labels_and_filters,
        );
    };
}
