//! The real binary: kill -9 between steps, containerd's `ctr snapshots`, the systemd unit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use strata_core::snapshots::SnapshotStore;
use strata_grpc::remote::RemoteSnapshots;
use strata_testkit::{Service, ok, run, tool};

const BIN: &str = env!("CARGO_BIN_EXE_strata-snapshotter");
const NS: &str = "default";

/// Every directory under snapshots/ belongs to a listed snapshot and every listed snapshot has
/// its directory.
async fn assert_disk_matches_metadata(svc: &Service, store: &RemoteSnapshots, sn: &str) {
    let dir = svc.root.join(sn).join("snapshots");
    let on_disk: HashSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut mounted_dirs = HashSet::new();
    for info in store.list(sn, NS, &[]).await.unwrap() {
        if info.kind == strata_core::snapshots::Kind::Committed {
            continue;
        }
        for m in store.mounts(sn, NS, &info.name).await.unwrap() {
            let path = m
                .option("upperdir")
                .map(str::to_owned)
                .unwrap_or(m.source.clone());
            let id = Path::new(&path)
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(Path::new(&path).is_dir(), "{} has no directory", info.name);
            mounted_dirs.insert(id);
        }
    }
    for id in &mounted_dirs {
        assert!(on_disk.contains(id));
    }
    let listed = store.list(sn, NS, &[]).await.unwrap().len();
    assert_eq!(
        on_disk.len(),
        listed,
        "dirs {on_disk:?} vs {listed} snapshots"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_leaves_metadata_and_disk_in_agreement() {
    let dir = strata_testkit::tempdir();
    let mut svc = Service::start(BIN, dir.path(), "snapshotter", &[]);
    let store = RemoteSnapshots::connect(&svc.address()).unwrap();
    for round in 0..3 {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for t in 0..3 {
            let store = store.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10_000 {
                    let key = format!("r{round}-t{t}-{i}");
                    if store
                        .prepare("overlayfs", NS, &key, "", HashMap::new())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let name = format!("{key}-c");
                    if store
                        .commit("overlayfs", NS, &name, &key, HashMap::new())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if i % 3 == 0 && store.remove("overlayfs", NS, &name).await.is_err() {
                        return;
                    }
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(tx);
        for _ in 0..(20 + round * 10) {
            rx.recv().await.unwrap();
        }
        svc.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        svc.restart();
        assert_disk_matches_metadata(&svc, &store, "overlayfs").await;
    }

    // Half-made and half-removed directories a crash can leave are cleaned at start.
    assert!(svc.stop());
    let snaps = svc.root.join("overlayfs/snapshots");
    std::fs::create_dir_all(snaps.join("new-abc/fs")).unwrap();
    std::fs::create_dir_all(snaps.join("999999/fs")).unwrap();
    std::fs::create_dir_all(snaps.join("rm-5/fs")).unwrap();
    // A removal whose files a background deletion had not reached yet.
    let removed = svc.root.join("overlayfs/removed");
    std::fs::create_dir_all(removed.join("7/fs/deep/tree")).unwrap();
    svc.restart();
    for leftover in ["new-abc", "999999", "rm-5"] {
        assert!(!snaps.join(leftover).exists(), "{leftover} still there");
    }
    assert!(
        !removed.join("7").exists(),
        "a removed snapshot's files survived a restart"
    );
    assert_disk_matches_metadata(&svc, &store, "overlayfs").await;

    // A removal answers once committed; its directory leaves snapshots/ at once and its files
    // are then deleted in the background.
    store
        .prepare("overlayfs", NS, "doomed", "", HashMap::new())
        .await
        .unwrap();
    let m = store.mounts("overlayfs", NS, "doomed").await.unwrap()[0].clone();
    let upper = m.option("upperdir").map_or(m.source.clone(), str::to_owned);
    std::fs::write(Path::new(&upper).join("file"), b"x").unwrap();
    store.remove("overlayfs", NS, "doomed").await.unwrap();
    assert!(!Path::new(&upper).exists());
    assert_disk_matches_metadata(&svc, &store, "overlayfs").await;
    let start = std::time::Instant::now();
    while std::fs::read_dir(&removed).unwrap().next().is_some() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "removed snapshot files never deleted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn ctr(svc: &Service) -> Command {
    let mut c = Command::new(tool("ctr", "containerd"));
    c.arg("--address")
        .arg(&svc.socket)
        .args(["snapshots", "--snapshotter", "overlayfs"]);
    c
}

#[test]
fn ctr_snapshots_commands() {
    let dir = strata_testkit::tempdir();
    let svc = Service::start(BIN, dir.path(), "snapshotter", &[]);
    ok(ctr(&svc).args(["prepare", "base-key", ""]), None);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cmd = ok(ctr(&svc).arg("mounts").arg(&mnt).arg("base-key"), None);
    assert!(cmd.starts_with("mount -t bind"), "{cmd}");
    ok(Command::new("sh").arg("-c").arg(&cmd), None);
    std::fs::write(mnt.join("hello"), vec![b'x'; 100_000]).unwrap();
    ok(Command::new("umount").arg(&mnt), None);
    ok(ctr(&svc).args(["commit", "base", "base-key"]), None);
    ok(ctr(&svc).args(["prepare", "work", "base"]), None);
    let cmd = ok(ctr(&svc).arg("mounts").arg(&mnt).arg("work"), None);
    assert!(
        cmd.contains("mount -t overlay") && cmd.contains("lowerdir="),
        "{cmd}"
    );
    ok(Command::new("sh").arg("-c").arg(&cmd), None);
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap().len(), 100_000);
    std::fs::write(mnt.join("new"), "thin").unwrap();
    ok(Command::new("umount").arg(&mnt), None);

    let ls = ok(ctr(&svc).arg("ls"), None);
    assert!(ls.contains("base") && ls.contains("Committed"), "{ls}");
    assert!(ls.contains("work") && ls.contains("Active"), "{ls}");
    let usage = ok(ctr(&svc).arg("usage"), None);
    // The committed base holds the 100 kB file; the active layer only its own small file.
    let line = |k: &str| {
        usage
            .lines()
            .find(|l| l.split_whitespace().next() == Some(k))
            .unwrap()
            .to_owned()
    };
    assert!(line("base").contains("KiB"), "{usage}");
    assert!(
        line("work").contains(" 2 ") || line("work").ends_with('2'),
        "{usage}"
    );

    let out = run(ctr(&svc).args(["rm", "base"]), None);
    assert!(!out.status.success(), "removing a parent must fail");
    ok(ctr(&svc).args(["rm", "work"]), None);
    ok(ctr(&svc).args(["rm", "base"]), None);
    let ls = ok(ctr(&svc).arg("ls"), None);
    assert_eq!(ls.lines().count(), 1, "{ls}");
}

#[test]
fn systemd_unit_verifies() {
    strata_testkit::verify_unit("strata-snapshotter", BIN);
}

#[test]
fn shipped_config_loads_and_an_unknown_key_is_refused() {
    let logs = strata_testkit::assert_shipped_config_loads(BIN, "snapshotter", "snapshotter");
    assert!(
        logs.contains("lib/snapshotter") && logs.contains("\"default\":\"overlayfs\""),
        "config keys not honoured: {logs}"
    );
    strata_testkit::assert_unknown_key_refused(BIN, "default_snapshoter");
    strata_testkit::assert_bad_configs(
        BIN,
        &[
            ("snapshotters = \"native\"", "key \"snapshotters\""),
            ("content = 1", "key \"content\""),
        ],
    );
}
