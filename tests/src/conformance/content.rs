//! The conformance suite of the [`ContentStore`] trait: each case takes a store that starts
//! empty and checks containerd's rules through the trait alone, so the same case runs against the
//! local store, the content service's gRPC server and the gateway's router in front of it (as
//! containerd's `core/content/testsuite` runs against any store).
#![allow(clippy::cast_possible_truncation)]

use bytes::Bytes;
use std::collections::HashMap;
use strata_core::content::{
    CommitOptions, ContentStore, ContentWriter, WriterOptions, read_all, write_blob,
};
use strata_core::{Digest, Kind};

use super::labels;

const NS: &str = "default";

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Opens a writer, waiting while a just-dropped remote writer still holds the ref.
async fn open_retry<S: ContentStore>(s: &S, reference: &str, opts: WriterOptions) -> S::Writer {
    for _ in 0..500 {
        match s.writer(NS, reference, opts.clone()).await {
            Ok(w) => return w,
            Err(e) if e.kind() == Kind::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("ref {reference} stayed locked");
}

pub async fn round_trip<S: ContentStore>(s: &S) {
    let blob = data(3 << 20, 1);
    let d = write_blob(s, NS, "ref-1", &blob, None, labels(&[("a", "1")]))
        .await
        .unwrap();
    assert_eq!(d, Digest::of(&blob));
    let info = s.info(NS, &d).await.unwrap();
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.labels, labels(&[("a", "1")]));
    assert_eq!(read_all(s, NS, &d).await.unwrap(), blob);
    let listed = s.list(NS, &[]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, d);
    // The ingest is gone once committed.
    let err = s.status(NS, "ref-1").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
}

pub async fn empty_blob<S: ContentStore>(s: &S) {
    let d = write_blob(s, NS, "empty", b"", None, HashMap::new())
        .await
        .unwrap();
    assert_eq!(d, Digest::of(b""));
    assert_eq!(s.info(NS, &d).await.unwrap().size, 0);
    assert!(read_all(s, NS, &d).await.unwrap().is_empty());
}

pub async fn already_exists<S: ContentStore>(s: &S) {
    let blob = b"present".to_vec();
    let d = Digest::of(&blob);
    write_blob(s, NS, "x", &blob, Some(d.clone()), HashMap::new())
        .await
        .unwrap();
    let Err(err) = s
        .writer(
            NS,
            "y",
            WriterOptions {
                total: blob.len() as u64,
                expected: Some(d.clone()),
            },
        )
        .await
    else {
        panic!("a writer for a present blob must be refused");
    };
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    assert!(err.message().contains(&d.to_string()), "{err}");
    // Writing it again without saying what it is: the commit reports AlreadyExists.
    let mut w = s.writer(NS, "z", WriterOptions::default()).await.unwrap();
    w.write(0, Bytes::from(blob.clone())).await.unwrap();
    let err = w.commit(CommitOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    assert_eq!(s.list(NS, &[]).await.unwrap().len(), 1);
    assert!(s.list_statuses(NS, &[]).await.unwrap().is_empty());
}

pub async fn commit_checks_size_and_digest<S: ContentStore>(s: &S) {
    let mut w = s.writer(NS, "sz", WriterOptions::default()).await.unwrap();
    w.write(0, Bytes::from_static(b"12345")).await.unwrap();
    let err = w
        .commit(CommitOptions {
            size: 6,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition, "{err}");
    assert!(err.message().contains("sz"), "{err}");
    drop(w);

    let wrong = Digest::of(b"something else");
    let mut w = s.writer(NS, "dg", WriterOptions::default()).await.unwrap();
    w.write(0, Bytes::from_static(b"12345")).await.unwrap();
    let err = w
        .commit(CommitOptions {
            size: 5,
            expected: Some(wrong.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition, "{err}");
    assert!(err.message().contains(&wrong.to_string()), "{err}");
    drop(w);
    // Nothing became visible.
    assert!(s.list(NS, &[]).await.unwrap().is_empty());
    let err = s.info(NS, &Digest::of(b"12345")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound);
}

pub async fn not_found<S: ContentStore>(s: &S) {
    let d = Digest::of(b"never written");
    for err in [
        s.info(NS, &d).await.unwrap_err(),
        s.delete(NS, &d).await.unwrap_err(),
        s.read(NS, &d, 0, 0).await.err().unwrap(),
        s.status(NS, "no-such-ref").await.unwrap_err(),
        s.abort(NS, "no-such-ref").await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), Kind::NotFound, "{err}");
    }
    let err = s.info(NS, &d).await.unwrap_err();
    assert!(err.message().contains(&d.to_string()), "{err}");
    let err = s.status(NS, "no-such-ref").await.unwrap_err();
    assert!(err.message().contains("no-such-ref"), "{err}");
}

pub async fn ranged_reads<S: ContentStore>(s: &S) {
    let blob = data(2_500_000, 7);
    let d = write_blob(s, NS, "r", &blob, None, HashMap::new())
        .await
        .unwrap();
    use strata_core::content::futures_like::ChunkStream as _;
    for (offset, size) in [
        (0u64, 10u64),
        (1_000_000, 1_200_000),
        (2_499_999, 0),
        (2_500_000, 0),
    ] {
        let mut r = s.read(NS, &d, offset, size).await.unwrap();
        let mut got = Vec::new();
        let mut next = offset;
        while let Some(chunk) = r.next_chunk().await {
            let (at, bytes) = chunk.unwrap();
            assert_eq!(at, next);
            next += bytes.len() as u64;
            got.extend_from_slice(&bytes);
        }
        let end = if size == 0 {
            blob.len()
        } else {
            (offset + size) as usize
        };
        assert_eq!(got, &blob[offset as usize..end], "read {offset}+{size}");
    }
    // Size past the end is cut at the end.
    let mut r = s.read(NS, &d, 2_499_990, 100).await.unwrap();
    let mut n = 0;
    while let Some(c) = r.next_chunk().await {
        n += c.unwrap().1.len();
    }
    assert_eq!(n, 10);
    let err = s.read(NS, &d, 2_500_001, 0).await.err().unwrap();
    assert_eq!(err.kind(), Kind::OutOfRange, "{err}");
}

pub async fn resume_after_writer_closes<S: ContentStore>(s: &S) {
    let blob = data(3_000_000, 3);
    let expected = Digest::of(&blob);
    let opts = WriterOptions {
        total: blob.len() as u64,
        expected: Some(expected.clone()),
    };
    let mut w = s.writer(NS, "resume", opts.clone()).await.unwrap();
    let off = w
        .write(0, Bytes::copy_from_slice(&blob[..1_234_567]))
        .await
        .unwrap();
    assert_eq!(off, 1_234_567);
    drop(w);
    let st = s.status(NS, "resume").await.unwrap();
    assert_eq!(st.offset, 1_234_567);
    assert_eq!(st.total, blob.len() as u64);
    assert_eq!(st.expected.as_ref(), Some(&expected));
    let listed = s.list_statuses(NS, &["ref==resume".into()]).await.unwrap();
    assert_eq!(listed.len(), 1);

    let mut w = s.writer(NS, "resume", opts.clone()).await.unwrap();
    assert_eq!(w.status().await.unwrap().offset, 1_234_567);
    // Writing anywhere but the current offset (or 0) is refused (and, over gRPC, ends the
    // stream as containerd's server does); the ingest is untouched.
    let err = w.write(5, Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::OutOfRange, "{err}");
    drop(w);
    let mut w = open_retry(s, "resume", opts).await;
    assert_eq!(w.status().await.unwrap().offset, 1_234_567);
    w.write(1_234_567, Bytes::copy_from_slice(&blob[1_234_567..]))
        .await
        .unwrap();
    let d = w
        .commit(CommitOptions {
            size: blob.len() as u64,
            expected: Some(expected.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d, expected);
    assert_eq!(read_all(s, NS, &d).await.unwrap(), blob);
}

pub async fn restart_from_zero<S: ContentStore>(s: &S) {
    let mut w = s
        .writer(NS, "again", WriterOptions::default())
        .await
        .unwrap();
    w.write(0, Bytes::from_static(b"garbage garbage"))
        .await
        .unwrap();
    // Offset 0 truncates and starts over.
    let off = w.write(0, Bytes::from_static(b"good")).await.unwrap();
    assert_eq!(off, 4);
    let d = w.commit(CommitOptions::default()).await.unwrap();
    assert_eq!(d, Digest::of(b"good"));
}

pub async fn one_writer_per_ref<S: ContentStore>(s: &S) {
    let w = s
        .writer(NS, "busy", WriterOptions::default())
        .await
        .unwrap();
    let Err(err) = s.writer(NS, "busy", WriterOptions::default()).await else {
        panic!("a second writer on a busy ref must be refused");
    };
    assert_eq!(err.kind(), Kind::Unavailable, "{err}");
    assert!(err.message().contains("busy"), "{err}");
    let err = s.abort(NS, "busy").await.unwrap_err();
    assert_eq!(err.kind(), Kind::Unavailable, "{err}");
    // The same ref in another namespace is another ingest.
    let other = s
        .writer("other", "busy", WriterOptions::default())
        .await
        .unwrap();
    drop(other);
    drop(w);
    // Released: the remote side notices the closed stream asynchronously.
    drop(open_retry(s, "busy", WriterOptions::default()).await);
}

pub async fn abort_removes_ingest<S: ContentStore>(s: &S) {
    let mut w = s
        .writer(NS, "gone", WriterOptions::default())
        .await
        .unwrap();
    w.write(0, Bytes::from_static(b"partial")).await.unwrap();
    drop(w);
    let mut tries = 0;
    loop {
        match s.abort(NS, "gone").await {
            Ok(()) => break,
            Err(e) if e.kind() == Kind::Unavailable && tries < 200 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        s.status(NS, "gone").await.unwrap_err().kind(),
        Kind::NotFound
    );
    assert!(s.list_statuses(NS, &[]).await.unwrap().is_empty());
}

pub async fn labels_update<S: ContentStore>(s: &S) {
    let d = write_blob(
        s,
        NS,
        "l",
        b"labelled",
        None,
        labels(&[("a", "1"), ("b", "2")]),
    )
    .await
    .unwrap();
    let mut info = s.info(NS, &d).await.unwrap();
    info.labels = labels(&[("b", "20"), ("c", "3")]);
    // Only the named paths change: b set, a removed (absent from the update), c untouched.
    let got = s
        .update(NS, info.clone(), &["labels.b".into(), "labels.a".into()])
        .await
        .unwrap();
    assert_eq!(got.labels, labels(&[("b", "20")]));
    let got = s.update(NS, info.clone(), &[]).await.unwrap();
    assert_eq!(got.labels, labels(&[("b", "20"), ("c", "3")]));
    let err = s
        .update(NS, info.clone(), &["size".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("size"), "{err}");
    info.labels = labels(&[("k", &"v".repeat(5000))]);
    let err = s.update(NS, info, &[]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert_eq!(
        s.info(NS, &d).await.unwrap().labels,
        labels(&[("b", "20"), ("c", "3")])
    );
}

pub async fn list_filters<S: ContentStore>(s: &S) {
    let a = write_blob(s, NS, "fa", b"aaa", None, labels(&[("kind", "layer")]))
        .await
        .unwrap();
    let b = write_blob(
        s,
        NS,
        "fb",
        b"bbb",
        None,
        labels(&[("kind", "config"), ("x.y/z", "1")]),
    )
    .await
    .unwrap();
    let names = |v: Vec<strata_core::content::Info>| {
        let mut v: Vec<_> = v.into_iter().map(|i| i.digest).collect();
        v.sort();
        v
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(names(s.list(NS, &[]).await.unwrap()), both);
    assert_eq!(
        names(s.list(NS, &["labels.kind==layer".into()]).await.unwrap()),
        vec![a.clone()]
    );
    assert_eq!(
        names(s.list(NS, &[format!("digest=={b}")]).await.unwrap()),
        vec![b.clone()]
    );
    assert_eq!(
        names(s.list(NS, &["labels.\"x.y/z\"".into()]).await.unwrap()),
        vec![b.clone()]
    );
    assert_eq!(
        names(
            s.list(
                NS,
                &["labels.kind==layer".into(), "labels.kind==config".into()]
            )
            .await
            .unwrap()
        ),
        both
    );
    assert_eq!(
        names(s.list(NS, &["labels.kind~=^c".into()]).await.unwrap()),
        vec![b]
    );
    let err = s.list(NS, &["labels.kind=~x".into()]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
}

pub async fn namespaces_share_blobs<S: ContentStore>(s: &S) {
    let blob = data(100_000, 9);
    let d = write_blob(s, "ns-a", "r", &blob, None, HashMap::new())
        .await
        .unwrap();
    assert_eq!(s.info("ns-b", &d).await.unwrap_err().kind(), Kind::NotFound);
    assert!(s.list("ns-b", &[]).await.unwrap().is_empty());
    // The other namespace commits it without sending the bytes again.
    let mut w = s
        .writer(
            "ns-b",
            "r",
            WriterOptions {
                total: blob.len() as u64,
                expected: Some(d.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(w.status().await.unwrap().offset, blob.len() as u64);
    let got = w
        .commit(CommitOptions {
            size: blob.len() as u64,
            expected: Some(d.clone()),
            labels: labels(&[("b", "yes")]),
        })
        .await
        .unwrap();
    assert_eq!(got, d);
    assert_eq!(
        s.info("ns-b", &d).await.unwrap().labels,
        labels(&[("b", "yes")])
    );
    assert!(s.info("ns-a", &d).await.unwrap().labels.is_empty());
    // Deleting it from one namespace leaves the other's intact.
    s.delete("ns-a", &d).await.unwrap();
    assert_eq!(s.info("ns-a", &d).await.unwrap_err().kind(), Kind::NotFound);
    assert_eq!(read_all(s, "ns-b", &d).await.unwrap(), blob);
    s.delete("ns-b", &d).await.unwrap();
    assert_eq!(s.info("ns-b", &d).await.unwrap_err().kind(), Kind::NotFound);
}

pub async fn bad_namespace<S: ContentStore>(s: &S) {
    let err = s.list("bad/ns", &[]).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.message().contains("bad/ns"), "{err}");
}

/// Calls the macro `$run` with the name of every case of this suite, so that each place that
/// runs the suite (against the local store, the service, the gateway) runs all of it.
#[macro_export]
macro_rules! content_cases {
    ($run:ident) => {
        $run!(
            round_trip,
            empty_blob,
            already_exists,
            commit_checks_size_and_digest,
            not_found,
            ranged_reads,
            resume_after_writer_closes,
            restart_from_zero,
            one_writer_per_ref,
            abort_removes_ingest,
            labels_update,
            list_filters,
            namespaces_share_blobs,
            bad_namespace,
        );
    };
}
