//! Producing layers: `write_diff` between two trees and `write_overlay_diff` of an overlayfs upper
//! directory, checked by applying the result and comparing trees with their metadata.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};
use std::path::{Path, PathBuf};

use common::{Overlay, assert_same, copy_tree, mknod, set_mtime, set_xattr, sha256, snapshot};
use strata_archive::{ApplyOptions, Compression, WhiteoutMode, write_diff, write_overlay_diff};
use tar::EntryType;

fn write(p: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("mkdir -p");
    }
    fs::write(p, data).expect("write");
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Sets every mtime below `root` (links included, directories last) to `secs`.
fn touch_all(root: &Path, secs: i64) {
    for entry in fs::read_dir(root).expect("read_dir") {
        let p = entry.expect("entry").path();
        if fs::symlink_metadata(&p).expect("lstat").is_dir() {
            touch_all(&p, secs);
        }
        set_mtime(&p, secs);
    }
}

fn lower_tree(root: &Path) {
    write(&root.join("etc/passwd"), b"root:x:0:0\n", 0o644);
    write(&root.join("etc/hosts"), b"127.0.0.1 localhost\n", 0o644);
    write(&root.join("etc/shadow"), b"root:*\n", 0o640);
    chown(root.join("etc/shadow"), Some(0), Some(42)).expect("chown");
    write(&root.join("usr/bin/ls"), b"ls binary", 0o755);
    write(&root.join("usr/bin/cat"), b"cat binary", 0o755);
    write(&root.join("var/lib/old/a"), b"a", 0o644);
    write(&root.join("var/lib/old/sub/b"), b"b", 0o644);
    write(&root.join("var/log/keep.log"), b"log", 0o644);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    write(&root.join("data/big"), &big, 0o644);
    write(&root.join("dir2file/x"), b"x", 0o644);
    write(&root.join("file2dir"), b"f", 0o644);
    symlink("etc/passwd", root.join("unchanged_link")).expect("symlink");
    write(&root.join("xattr_file"), b"xa", 0o644);
    set_xattr(&root.join("xattr_file"), "user.a", b"1");
    fs::create_dir_all(root.join("emptydir")).expect("mkdir");
    touch_all(root, 1_500_000_000);
}

/// Changes made to a copy of `lower_tree` (directly, or through an overlay mount).
fn modify(root: &Path) {
    write(&root.join("etc/new.conf"), b"new", 0o600);
    chown(root.join("etc/new.conf"), Some(1000), Some(1000)).expect("chown");
    fs::write(root.join("etc/hosts"), b"10.0.0.1 other\n").expect("modify");
    chmod(&root.join("usr/bin/ls"), 0o4755);
    chown(root.join("usr/bin/cat"), Some(0), Some(50)).expect("chown");
    fs::remove_file(root.join("var/log/keep.log")).expect("rm");
    fs::remove_dir_all(root.join("var/lib/old")).expect("rm -r");
    symlink("ls", root.join("usr/bin/sh")).expect("symlink");
    lchown(root.join("usr/bin/sh"), Some(3), Some(4)).expect("lchown");
    write(&root.join("usr/bin/h1"), b"hard", 0o755);
    fs::hard_link(root.join("usr/bin/h1"), root.join("usr/bin/h2")).expect("link");
    fs::create_dir(root.join("run")).expect("mkdir");
    mknod(&root.join("run/fifo"), libc::S_IFIFO | 0o600, 0, 0);
    fs::create_dir(root.join("dev")).expect("mkdir");
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, 1, 3);
    fs::remove_dir_all(root.join("dir2file")).expect("rm -r");
    write(&root.join("dir2file"), b"now a file", 0o644);
    fs::remove_file(root.join("file2dir")).expect("rm");
    write(&root.join("file2dir/child"), b"child", 0o644);
    set_xattr(&root.join("xattr_file"), "user.b", b"2");
    let deep = root.join(format!(
        "deep/{}/{}/{}.txt",
        "x".repeat(60),
        "y".repeat(60),
        "z".repeat(160)
    ));
    write(&deep, b"long path", 0o644);
    symlink(format!("/{}", "t".repeat(150)), root.join("longlink")).expect("symlink");
    fs::set_permissions(root.join("emptydir"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    // Same size, same whole-second mtime, other bytes: only a content comparison can tell.
    let mut big = fs::read(root.join("data/big")).expect("read");
    big[500_000] ^= 0xff;
    fs::write(root.join("data/big"), &big).expect("write");
    set_mtime(&root.join("data/big"), 1_500_000_000);
}

fn entries(tar: &[u8]) -> Vec<(String, EntryType, Option<String>)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
            )
        })
        .collect()
}

fn tmpdirs(names: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let t = tempfile::tempdir().expect("tempdir");
    let dirs = names.iter().map(|n| t.path().join(n)).collect::<Vec<_>>();
    for d in &dirs {
        fs::create_dir(d).expect("mkdir");
    }
    (t, dirs)
}

#[test]
fn write_diff_round_trip() {
    let (_t, d) = tmpdirs(&["lower", "upper", "target"]);
    let (lower, upper, target) = (&d[0], &d[1], &d[2]);
    lower_tree(lower);
    copy_tree(lower, upper);
    modify(upper);

    let mut tar = Vec::new();
    let stats = write_diff(lower, upper, &mut tar).expect("write_diff");
    assert_eq!(stats.diff_id, sha256(&tar));
    assert_eq!(stats.size, tar.len() as u64);
    let mut again = Vec::new();
    write_diff(lower, upper, &mut again).expect("write_diff again");
    assert!(tar == again, "deterministic output");

    let list = entries(&tar);
    let paths: Vec<&str> = list.iter().map(|(p, _, _)| p.as_str()).collect();
    for expected in [
        "var/lib/.wh.old",
        "var/log/.wh.keep.log",
        "etc/hosts",
        "data/big",
        "usr/bin/ls",
        "usr/",
        "etc/",
    ] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    for absent in [
        "etc/shadow",
        "etc/passwd",
        "var/lib/old/a",
        "unchanged_link",
        "usr/bin/.wh.h2",
    ] {
        assert!(!paths.contains(&absent), "{absent} not in {paths:?}");
    }
    let h2 = list.iter().find(|(p, _, _)| p == "usr/bin/h2").expect("h2");
    assert_eq!(
        (h2.1, h2.2.as_deref()),
        (EntryType::Link, Some("usr/bin/h1")),
        "hard link within the layer"
    );
    // Parents come before their children.
    let pos = |p: &str| paths.iter().position(|x| *x == p).expect(p);
    assert!(pos("usr/") < pos("usr/bin/") && pos("usr/bin/") < pos("usr/bin/h1"));

    copy_tree(lower, target);
    let applied = strata_archive::apply(
        &tar[..],
        Compression::None,
        target,
        &ApplyOptions::new(WhiteoutMode::Delete),
        Some(&stats.diff_id),
    )
    .expect("apply diff");
    assert_eq!(applied.diff_id, stats.diff_id);
    assert_same(&snapshot(upper), &snapshot(target), "upper vs lower + diff");

    // From an empty lower the diff is the whole tree.
    let (_t2, e) = tmpdirs(&["empty", "full"]);
    let mut full = Vec::new();
    write_diff(&e[0], upper, &mut full).expect("full diff");
    common::apply(&full, &e[1], WhiteoutMode::Overlay);
    assert_same(
        &snapshot(upper),
        &snapshot(&e[1]),
        "upper vs empty + full diff",
    );
}

#[test]
fn write_overlay_diff_of_a_mounted_overlay() {
    let (_t, d) = tmpdirs(&[
        "lower", "upper", "work", "merged", "target", "layer", "remerged",
    ]);
    lower_tree(&d[0]);
    let expected = {
        let m = Overlay::mount(&[&d[0]], Some((&d[1], &d[2])), &d[3]);
        modify(&m.target);
        // Deleting a directory and creating it again makes it opaque in the upper directory.
        fs::remove_dir_all(m.target.join("usr/bin")).expect("rm -r");
        write(&m.target.join("usr/bin/only"), b"only this", 0o755);
        snapshot(&m.target)
    };

    let mut tar = Vec::new();
    let stats = write_overlay_diff(&d[1], &mut tar).expect("write_overlay_diff");
    assert_eq!(stats.diff_id, sha256(&tar));
    let list = entries(&tar);
    let paths: Vec<&str> = list.iter().map(|(p, _, _)| p.as_str()).collect();
    for expected in [
        "var/lib/.wh.old",
        "var/log/.wh.keep.log",
        "usr/bin/",
        "usr/bin/.wh..wh..opq",
        "usr/bin/only",
        "etc/hosts",
    ] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    assert!(
        !paths.contains(&"etc/shadow"),
        "unchanged files are not in the upper"
    );
    assert!(
        paths
            .iter()
            .position(|p| *p == "usr/bin/")
            .expect("usr/bin")
            + 1
            == paths
                .iter()
                .position(|p| *p == "usr/bin/.wh..wh..opq")
                .expect("opq")
    );

    // Applied in Delete mode onto a copy of the lower, or in Overlay mode and mounted: both give
    // the merged view.
    copy_tree(&d[0], &d[4]);
    common::apply(&tar, &d[4], WhiteoutMode::Delete);
    assert_same(
        &expected,
        &snapshot(&d[4]),
        "merged view vs lower + overlay diff (Delete)",
    );

    common::apply(&tar, &d[5], WhiteoutMode::Overlay);
    let m = Overlay::mount(&[&d[5], &d[0]], None, &d[6]);
    assert_same(
        &expected,
        &snapshot(&m.target),
        "merged view vs overlay diff mounted",
    );
}
