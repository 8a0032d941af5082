//! Whiteouts and opaque directories across three layers: applied each into its own directory in
//! Overlay mode and mounted with overlayfs, and applied successively onto one directory in Delete
//! mode, both give the same tree.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{Layer, Opts, Overlay, apply, assert_same, get_xattr, names, snapshot};
use strata_archive::WhiteoutMode;

fn dir_opts(layer: u64) -> Opts {
    Opts {
        mode: 0o755,
        mtime: 1_000_000_000 + layer,
        ..Opts::default()
    }
}

fn file_opts(layer: u64) -> Opts {
    Opts {
        mode: 0o644,
        mtime: 1_100_000_000 + layer,
        ..Opts::default()
    }
}

fn layers() -> [Vec<u8>; 3] {
    let (d1, f1) = (dir_opts(1), file_opts(1));
    let mut l1 = Layer::new();
    l1.dir_with("a", d1.clone())
        .dir_with("a/b", d1.clone())
        .file_with("a/f1", b"f1 v1", f1.clone())
        .file_with("a/b/f2", b"f2", f1.clone())
        .dir_with("c", d1.clone())
        .file_with("c/f3", b"f3", f1.clone())
        .dir_with("d", d1.clone())
        .file_with("d/keep", b"keep?", f1.clone())
        .file_with("d/old", b"old", f1.clone())
        .dir_with("d/sub", d1.clone())
        .file_with("d/sub/x", b"x", f1.clone())
        .dir_with("e", d1.clone())
        .file_with("e/x", b"ex", f1.clone())
        .symlink("link", "a/f1")
        .file_with("t1", b"t1 v1", f1.clone())
        .dir_with("o", d1.clone())
        .file_with("o/lower1", b"hidden later", f1);

    let (d2, f2) = (dir_opts(2), file_opts(2));
    let mut l2 = Layer::new();
    l2.dir_with("a", d2.clone())
        .whiteout("a/f1")
        .whiteout("c")
        .dir_with("d", d2.clone())
        // Entries created before the opaque marker must survive it.
        .file_with("d/new", b"new", f2.clone())
        .dir_with("d/newdir", d2.clone())
        .file_with("d/newdir/deep", b"deep", f2.clone())
        .opaque("d")
        .dir_with("e", d2.clone())
        .file_with("e/y", b"ey", f2.clone())
        .file_with("t1", b"t1 v2", f2.clone())
        .dir_with("c2", d2.clone())
        .file_with("c2/z", b"z", f2.clone())
        .dir_with("o", d2.clone())
        // ... and entries after it, under the opaque directory, are created normally.
        .opaque("o")
        .file_with("o/upper2", b"u2", f2);

    let (d3, f3) = (dir_opts(3), file_opts(3));
    let mut l3 = Layer::new();
    l3.dir_with("a", d3.clone())
        .file_with("a/f1", b"f1 v3", f3.clone())
        .whiteout("link")
        .file_with("e", b"e is a file now", f3.clone())
        .dir_with("c", d3.clone())
        .file_with("c/again", b"again", f3.clone())
        .dir_with("d", d3.clone())
        .whiteout("d/new")
        .dir_with("o", d3)
        .file_with("o/upper3", b"u3", f3);
    [l1.finish(), l2.finish(), l3.finish()]
}

fn check_expected(root: &Path) {
    assert_eq!(names(root), ["a", "c", "c2", "d", "e", "o", "t1"]);
    assert_eq!(names(&root.join("a")), ["b", "f1"]);
    assert_eq!(fs::read(root.join("a/f1")).expect("f1"), b"f1 v3");
    assert_eq!(names(&root.join("c")), ["again"]);
    assert_eq!(names(&root.join("d")), ["newdir"]);
    assert_eq!(names(&root.join("d/newdir")), ["deep"]);
    assert_eq!(fs::read(root.join("e")).expect("e"), b"e is a file now");
    assert_eq!(names(&root.join("o")), ["upper2", "upper3"]);
    assert_eq!(fs::read(root.join("t1")).expect("t1"), b"t1 v2");
    assert_eq!(
        fs::metadata(root.join("a")).expect("a").mtime(),
        1_000_000_003
    );
    assert_eq!(
        fs::metadata(root.join("c2")).expect("c2").mtime(),
        1_000_000_002
    );
    assert_eq!(
        fs::metadata(root.join("a/b")).expect("a/b").mtime(),
        1_000_000_001
    );
}

#[test]
fn overlay_mount_and_delete_mode_agree() {
    let layers = layers();
    let t = tempfile::tempdir().expect("tempdir");
    let t = t.path();
    let ov: Vec<_> = (1..=3).map(|i| t.join(format!("o{i}"))).collect();
    let (plain, merged) = (t.join("plain"), t.join("merged"));
    for p in ov.iter().chain([&plain, &merged]) {
        fs::create_dir(p).expect("mkdir");
    }
    for (layer, dir) in layers.iter().zip(&ov) {
        apply(layer, dir, WhiteoutMode::Overlay);
    }

    // Overlay mode wrote overlayfs' own representation.
    let wh = fs::symlink_metadata(ov[1].join("a/f1")).expect("whiteout");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0/0 char device"
    );
    assert!(
        fs::symlink_metadata(ov[1].join("c"))
            .expect("c")
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        get_xattr(&ov[1].join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        get_xattr(&ov[1].join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        names(&ov[1].join("d")),
        ["new", "newdir"],
        "no marker entry is created"
    );
    assert_eq!(get_xattr(&ov[2].join("d"), "trusted.overlay.opaque"), None);

    let m = Overlay::mount(&[&ov[2], &ov[1], &ov[0]], None, &merged);
    check_expected(&m.target);
    let merged_view = snapshot(&m.target);

    for layer in &layers {
        apply(layer, &plain, WhiteoutMode::Delete);
    }
    check_expected(&plain);
    assert_same(
        &merged_view,
        &snapshot(&plain),
        "overlay mount vs Delete mode",
    );
}

#[test]
fn delete_mode_onto_a_mounted_overlay() {
    // Delete mode is meant for merged views: apply layers 2 and 3 through a writable overlay whose
    // lower is layer 1, and compare with the read-only stack.
    let layers = layers();
    let t = tempfile::tempdir().expect("tempdir");
    let t = t.path();
    let dirs: Vec<_> = ["l1", "up", "work", "m", "o1", "o2", "o3", "ro"]
        .iter()
        .map(|n| t.join(n))
        .collect();
    for p in &dirs {
        fs::create_dir(p).expect("mkdir");
    }
    apply(&layers[0], &dirs[0], WhiteoutMode::Overlay);
    {
        let m = Overlay::mount(&[&dirs[0]], Some((&dirs[1], &dirs[2])), &dirs[3]);
        apply(&layers[1], &m.target, WhiteoutMode::Delete);
        apply(&layers[2], &m.target, WhiteoutMode::Delete);
        check_expected(&m.target);
        let via_merged = snapshot(&m.target);
        for (layer, dir) in layers.iter().zip(&dirs[4..7]) {
            apply(layer, dir, WhiteoutMode::Overlay);
        }
        let ro = Overlay::mount(&[&dirs[6], &dirs[5], &dirs[4]], None, &dirs[7]);
        assert_same(
            &snapshot(&ro.target),
            &via_merged,
            "read-only stack vs writes through a merged mount",
        );
    }
}
