//! Crash safety of the real binary: SIGKILL at any point loses nothing committed, never exposes a
//! partial or wrong blob, and leaves interrupted ingests resumable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use strata_core::content::{
    CommitOptions, ContentStore, ContentWriter, WriterOptions, read_all, write_blob,
};
use strata_core::{Digest, Kind};
use strata_grpc::remote::RemoteContentStore;
use strata_testkit::Service;

const NS: &str = "default";
const BIN: &str = env!("CARGO_BIN_EXE_strata-content");

fn blob(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every blob file on disk hashes to its name, and every listed blob reads back intact.
async fn assert_store_consistent(svc: &Service, store: &RemoteContentStore) {
    let dir = svc.root.join("blobs/sha256");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let data = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            name,
            "blob file {name} does not match its name"
        );
    }
    for info in store.list(NS, &[]).await.unwrap() {
        let data = read_all(store, NS, &info.digest).await.unwrap();
        assert_eq!(Digest::of(&data), info.digest);
        assert_eq!(data.len() as u64, info.size);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_commits_and_ingests_resume() {
    let dir = strata_testkit::tempdir();
    let mut svc = Service::start(BIN, dir.path(), "content", &[]);
    let store = RemoteContentStore::connect(&svc.address()).unwrap();

    let small = blob(10_000, 1);
    let committed = write_blob(&store, NS, "small", &small, None, HashMap::new())
        .await
        .unwrap();

    let big = blob(5_000_000, 2);
    let expected = Digest::of(&big);
    let opts = WriterOptions {
        total: big.len() as u64,
        expected: Some(expected.clone()),
    };
    let mut w = store.writer(NS, "big", opts.clone()).await.unwrap();
    let acked = w
        .write(0, Bytes::copy_from_slice(&big[..2_000_000]))
        .await
        .unwrap();
    assert_eq!(acked, 2_000_000);

    svc.kill9();
    let err = w
        .write(acked, Bytes::copy_from_slice(&big[acked as usize..]))
        .await
        .unwrap_err();
    assert_ne!(err.kind(), Kind::AlreadyExists);
    drop(w);
    svc.restart();

    // What was committed is there, intact.
    assert_eq!(read_all(&store, NS, &committed).await.unwrap(), small);
    // The interrupted ingest is listed with every acknowledged byte and can be resumed.
    let st = store.status(NS, "big").await.unwrap();
    assert_eq!(st.offset, acked);
    assert_eq!(st.expected, Some(expected.clone()));
    let mut w = store.writer(NS, "big", opts).await.unwrap();
    let off = w.status().await.unwrap().offset;
    assert_eq!(off, acked);
    w.write(off, Bytes::copy_from_slice(&big[off as usize..]))
        .await
        .unwrap();
    let d = w
        .commit(CommitOptions {
            size: big.len() as u64,
            expected: Some(expected.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d, expected);
    assert_eq!(read_all(&store, NS, &d).await.unwrap(), big);
    assert_store_consistent(&svc, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_storm_of_writes() {
    let dir = strata_testkit::tempdir();
    let mut svc = Service::start(BIN, dir.path(), "content", &[]);
    let store = RemoteContentStore::connect(&svc.address()).unwrap();
    let mut acked: Vec<(Digest, Vec<u8>)> = Vec::new();
    let mut seed = 100;

    for round in 0..3 {
        // Writers run concurrently; the server is killed after a number of commits, while the
        // others are mid-write or mid-commit.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let store = store.clone();
            let tx = tx.clone();
            seed += 10;
            let base = seed;
            tasks.push(tokio::spawn(async move {
                for i in 0..1000u64 {
                    let data = blob(100_000 + (i as usize % 7) * 150_000, base * 1000 + i);
                    let reference = format!("storm-{round}-{t}-{i}");
                    match write_blob(&store, NS, &reference, &data, None, HashMap::new()).await {
                        Ok(d) => {
                            if tx.send((d, data)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(tx);
        for _ in 0..(10 + 5 * round) {
            acked.push(rx.recv().await.expect("writers stopped before the crash"));
        }
        svc.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        // Commits acknowledged just before the kill count too.
        while let Ok(item) = rx.try_recv() {
            acked.push(item);
        }
        svc.restart();
        for (d, data) in &acked {
            assert_eq!(&read_all(&store, NS, d).await.unwrap(), data, "{d} lost");
        }
        assert_store_consistent(&svc, &store).await;
        // Interrupted ingests can all be aborted.
        for st in store.list_statuses(NS, &[]).await.unwrap() {
            store.abort(NS, &st.reference).await.unwrap();
        }
        assert!(store.list_statuses(NS, &[]).await.unwrap().is_empty());
    }
    assert!(svc.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crash_are_cleaned_at_start() {
    let dir = strata_testkit::tempdir();
    let mut svc = Service::start(BIN, dir.path(), "content", &[]);
    let store = RemoteContentStore::connect(&svc.address()).unwrap();
    let kept = write_blob(&store, NS, "kept", b"kept", None, HashMap::new())
        .await
        .unwrap();
    assert!(svc.stop());

    // A blob renamed into place whose database commit never happened, and an ingest directory
    // created before its record was written.
    let orphan = Digest::of(b"orphan");
    let orphan_path = svc.root.join("blobs/sha256").join(orphan.hex());
    std::fs::write(&orphan_path, b"orphan").unwrap();
    let stray = svc.root.join("ingest/0123abcd");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("data"), b"half").unwrap();

    svc.restart();
    assert!(!orphan_path.exists(), "orphan blob still on disk");
    assert!(!stray.exists(), "stray ingest still on disk");
    assert_eq!(
        store.info(NS, &orphan).await.unwrap_err().kind(),
        Kind::NotFound
    );
    assert_eq!(read_all(&store, NS, &kept).await.unwrap(), b"kept");
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let dir = strata_testkit::tempdir();
    let mut svc = Service::start(BIN, dir.path(), "content", &[]);
    assert!(svc.socket.exists());
    assert!(
        svc.stop(),
        "exit status on SIGTERM; log:\n{}",
        svc.log_text()
    );
    assert!(!svc.socket.exists(), "socket left behind");
}
