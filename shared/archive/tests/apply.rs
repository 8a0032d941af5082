//! Extraction: metadata, entry kinds, replacement rules, compression, diff IDs, hard links.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{Layer, Opts, Overlay, apply, get_xattr, gzip, mode, sha256};
use strata_archive::{ApplyOptions, ArchiveError, Compression, WhiteoutMode, detect_compression};
use strata_core::Kind;
use tar::EntryType;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A layer with every kind of entry and metadata: modes with setuid, setgid and sticky
/// bits, owners, times, xattrs, a FIFO, devices, PAX times and ids, long names and a long
/// link target, a file over 3 MiB.
fn metadata_layer(long_dir: &str, long_name: &str, long_target: &str) -> Vec<u8> {
    let mut l = Layer::new();
    l.dir_with(
        "bin",
        Opts {
            mode: 0o1777,
            uid: 12,
            gid: 34,
            mtime: 1_111_111_111,
            xattrs: vec![("user.dirattr".into(), b"dv".to_vec())],
        },
    )
    .file_with(
        "bin/su",
        b"#!/bin/true\n",
        Opts {
            mode: 0o4755,
            uid: 1000,
            gid: 1001,
            mtime: 1_234_567_890,
            xattrs: vec![("user.comment".into(), b"hello".to_vec())],
        },
    )
    .file_with("bin/sgid", b"x", mode(0o2711))
    .symlink_with(
        "bin/sh",
        "su",
        Opts {
            mode: 0o777,
            uid: 5,
            gid: 6,
            mtime: 1_222_222_222,
            xattrs: Vec::new(),
        },
    )
    .fifo(
        "run.fifo",
        Opts {
            mode: 0o620,
            uid: 7,
            gid: 8,
            ..Opts::default()
        },
    )
    .device("null", EntryType::Char, 1, 3, mode(0o666))
    .device("loop9", EntryType::Block, 7, 9, mode(0o660))
    .pax(&[
        ("mtime", b"1300000000.25"),
        ("uid", b"3000000"),
        ("gid", b"3000001"),
    ])
    .file("pax-times", b"p")
    .dir(long_dir)
    .file(long_name, b"long")
    .symlink("longlink", long_target)
    .file("bin/data", &vec![7u8; 3 * 1024 * 1024 + 17]);
    l.finish()
}

#[test]
fn metadata_is_reproduced() {
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "f".repeat(150));
    let long_target = format!("/{}", "t".repeat(200));
    let tar = metadata_layer(&long_dir, &long_name, &long_target);
    let root = tmp();
    let r = root.path();
    let stats = apply(&tar, r, WhiteoutMode::Overlay);
    assert_eq!(stats.diff_id, sha256(&tar));
    assert_eq!(stats.uncompressed_size, tar.len() as u64);
    // The PAX and GNU long-name headers are not counted.
    assert_eq!(stats.entries, 12);

    let md = fs::symlink_metadata(r.join("bin/su")).expect("su");
    assert_eq!(md.mode() & 0o7777, 0o4755, "setuid kept after chown");
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 0));
    assert_eq!(fs::read(r.join("bin/su")).expect("read"), b"#!/bin/true\n");
    assert_eq!(
        get_xattr(&r.join("bin/su"), "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        fs::symlink_metadata(r.join("bin/sgid"))
            .expect("sgid")
            .mode()
            & 0o7777,
        0o2711
    );

    let md = fs::symlink_metadata(r.join("bin")).expect("bin");
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o1777, "sticky bit");
    assert_eq!((md.uid(), md.gid()), (12, 34));
    assert_eq!(
        md.mtime(),
        1_111_111_111,
        "directory mtime set after its contents"
    );
    assert_eq!(
        get_xattr(&r.join("bin"), "user.dirattr").as_deref(),
        Some(&b"dv"[..])
    );

    let md = fs::symlink_metadata(r.join("bin/sh")).expect("sh");
    assert!(md.file_type().is_symlink());
    assert_eq!(
        fs::read_link(r.join("bin/sh")).expect("readlink"),
        Path::new("su")
    );
    assert_eq!((md.uid(), md.gid(), md.mtime()), (5, 6, 1_222_222_222));

    let md = fs::symlink_metadata(r.join("run.fifo")).expect("fifo");
    assert!(md.file_type().is_fifo());
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o620, 7, 8));

    let md = fs::symlink_metadata(r.join("null")).expect("null");
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    assert_eq!(md.mode() & 0o7777, 0o666);
    let md = fs::symlink_metadata(r.join("loop9")).expect("loop9");
    assert!(md.file_type().is_block_device());
    assert_eq!(md.rdev(), libc::makedev(7, 9));

    let md = fs::symlink_metadata(r.join("pax-times")).expect("pax");
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_300_000_000, 250_000_000));
    assert_eq!((md.uid(), md.gid()), (3_000_000, 3_000_001), "PAX uid/gid");

    assert_eq!(fs::read(r.join(&long_name)).expect("long name"), b"long");
    assert_eq!(
        fs::read_link(r.join("longlink")).expect("long link"),
        Path::new(&long_target)
    );
    assert_eq!(
        fs::metadata(r.join("bin/data")).expect("data").len(),
        3 * 1024 * 1024 + 17
    );
}

#[test]
fn entries_replace_what_exists() {
    let root = tmp();
    let r = root.path();
    let mut l = Layer::new();
    l.dir("a")
        .file("a/inner", b"1")
        .dir("f")
        .file("f/x", b"x")
        .file("g", b"file")
        .dir_with("keep", mode(0o700))
        .file("keep/child", b"c")
        .symlink("s", "/nowhere");
    apply(&l.finish(), r, WhiteoutMode::Delete);

    let mut l = Layer::new();
    l.file("f", b"now a file") // a file replaces a directory (and its contents)
        .dir("g") // a directory replaces a file
        .dir_with(
            "keep",
            Opts {
                mode: 0o751,
                uid: 9,
                ..Opts::default()
            },
        ) // an existing directory is kept, only its metadata changes
        .file("s", b"not a link any more")
        .file("a/inner", b"2"); // a file replaces a file
    apply(&l.finish(), r, WhiteoutMode::Delete);

    assert_eq!(fs::read(r.join("f")).expect("f"), b"now a file");
    assert!(fs::symlink_metadata(r.join("g")).expect("g").is_dir());
    let md = fs::symlink_metadata(r.join("keep")).expect("keep");
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o751, 9));
    assert_eq!(fs::read(r.join("keep/child")).expect("child kept"), b"c");
    assert!(fs::symlink_metadata(r.join("s")).expect("s").is_file());
    assert_eq!(fs::read(r.join("a/inner")).expect("inner"), b"2");
}

#[test]
fn missing_parents_are_created() {
    let root = tmp();
    let mut l = Layer::new();
    l.file("x/y/z", b"deep");
    apply(&l.finish(), root.path(), WhiteoutMode::Overlay);
    assert_eq!(fs::read(root.path().join("x/y/z")).expect("z"), b"deep");
    let md = fs::metadata(root.path().join("x/y")).expect("y");
    assert_eq!(md.mode() & 0o7777, 0o755);
}

#[test]
fn compression_variants_and_diff_id() {
    let mut l = Layer::new();
    l.dir("etc").file("etc/hostname", b"strata\n");
    for i in 0..50 {
        l.file(
            &format!("etc/f{i}"),
            &vec![u8::try_from(i).expect("small"); 40_000],
        );
    }
    let tar = l.finish();
    let diff_id = sha256(&tar);

    // A multi-member gzip stream, as pigz and other parallel compressors write them.
    let third = tar.len() / 3;
    let mut multi = gzip(&tar[..third]);
    multi.extend(gzip(&tar[third..2 * third]));
    multi.extend(gzip(&tar[2 * third..]));
    let zst = zstd::stream::encode_all(&tar[..], 3).expect("zstd");

    for (name, blob, c) in [
        ("none", tar.clone(), Compression::None),
        ("gzip multi-member", multi, Compression::Gzip),
        ("zstd", zst, Compression::Zstd),
    ] {
        assert_eq!(detect_compression(&blob), c, "{name}");
        let root = tmp();
        let stats = strata_archive::apply(
            &blob[..],
            c,
            root.path(),
            &ApplyOptions::new(WhiteoutMode::Overlay),
            Some(&diff_id),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(stats.diff_id, diff_id, "{name}");
        assert_eq!(stats.uncompressed_size, tar.len() as u64, "{name}");
        assert_eq!(
            fs::read(root.path().join("etc/hostname")).expect("hostname"),
            b"strata\n",
            "{name}"
        );
        assert_eq!(
            fs::read(root.path().join("etc/f49")).expect("f49"),
            vec![49u8; 40_000],
            "{name}"
        );
    }
}

#[test]
fn diff_id_mismatch_is_an_error_naming_both() {
    let mut l = Layer::new();
    l.file("a", b"a");
    let tar = l.finish();
    let wrong = sha256(b"something else");
    let root = tmp();
    let err = strata_archive::apply(
        &gzip(&tar)[..],
        Compression::Gzip,
        root.path(),
        &ApplyOptions::new(WhiteoutMode::Overlay),
        Some(&wrong),
    )
    .expect_err("mismatch");
    assert!(
        matches!(err, ArchiveError::DiffIdMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong.to_string()) && msg.contains(&sha256(&tar).to_string()),
        "{msg}"
    );
    assert_eq!(strata_core::Error::from(err).kind(), Kind::InvalidArgument);
}

#[test]
fn trailing_bytes_after_the_archive_are_hashed() {
    let mut l = Layer::new();
    l.file("a", b"a");
    let mut tar = l.finish();
    tar.extend_from_slice(&[0u8; 10240]);
    let root = tmp();
    let stats = apply(&tar, root.path(), WhiteoutMode::Overlay);
    assert_eq!(stats.diff_id, sha256(&tar));
    assert_eq!(stats.uncompressed_size, tar.len() as u64);
}

#[test]
fn corrupt_input_is_reported() {
    let mut l = Layer::new();
    l.file("a", &[1u8; 100_000]);
    let tar = l.finish();

    // Corrupt deflate data.
    let mut gz = gzip(&tar);
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let root = tmp();
    let err = strata_archive::apply(
        &gz[..],
        Compression::Gzip,
        root.path(),
        &ApplyOptions::new(WhiteoutMode::Overlay),
        None,
    )
    .expect_err("corrupt gzip");
    assert!(matches!(err, ArchiveError::Decompress { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("decompressing gzip layer stream"),
        "{err}"
    );

    // A header with a bad checksum.
    let mut bad = tar.clone();
    bad[0] ^= 1;
    let err =
        common::try_apply(&bad, root.path(), WhiteoutMode::Overlay).expect_err("bad checksum");
    assert!(matches!(err, ArchiveError::MalformedTar { .. }), "{err:?}");
    assert_eq!(err.kind(), Kind::InvalidArgument);

    // Truncated in the middle of an entry's data.
    let err =
        common::try_apply(&tar[..5000], root.path(), WhiteoutMode::Overlay).expect_err("truncated");
    assert!(err.to_string().contains("\"a\""), "names the entry: {err}");
}

#[test]
fn sync_option() {
    let mut l = Layer::new();
    l.file("a", b"a");
    let root = tmp();
    let opts = ApplyOptions {
        sync: true,
        ..ApplyOptions::new(WhiteoutMode::Delete)
    };
    strata_archive::apply(&l.finish()[..], Compression::None, root.path(), &opts, None)
        .expect("apply with sync");
    assert_eq!(fs::read(root.path().join("a")).expect("a"), b"a");
}

#[test]
fn hard_links_within_a_layer() {
    let mut l = Layer::new();
    l.dir("bin")
        .file_with("bin/busybox", b"bb", mode(0o755))
        .hardlink("bin/ls", "bin/busybox")
        .raw(b"/bin/cat", EntryType::Link, b"/bin/busybox", b"") // absolute: relative to the root
        .symlink("bin/sl", "busybox")
        .hardlink("bin/sl2", "bin/sl"); // a hard link to a symbolic link links the link itself
    let root = tmp();
    let r = root.path();
    apply(&l.finish(), r, WhiteoutMode::Overlay);
    let ino = |p: &str| fs::symlink_metadata(r.join(p)).expect(p).ino();
    assert_eq!(ino("bin/ls"), ino("bin/busybox"));
    assert_eq!(ino("bin/cat"), ino("bin/busybox"));
    assert_eq!(
        fs::symlink_metadata(r.join("bin/busybox"))
            .expect("bb")
            .nlink(),
        3
    );
    assert_eq!(ino("bin/sl2"), ino("bin/sl"));
    assert!(
        fs::symlink_metadata(r.join("bin/sl2"))
            .expect("sl2")
            .file_type()
            .is_symlink()
    );

    // A target that does not exist is an error naming the entry.
    let mut l = Layer::new();
    l.hardlink("x", "missing");
    let err = common::try_apply(&l.finish(), tmp().path(), WhiteoutMode::Overlay)
        .expect_err("missing target");
    assert!(
        err.to_string().contains("\"x\"") && err.to_string().contains("missing"),
        "{err}"
    );
}

/// The lowest layer of `hard_link_to_a_lower_layer_copies_up`: `usr/bin/tool` whose file and
/// parents carry their own modes, owners, times and xattrs, and `gone`.
fn tool_layer() -> Vec<u8> {
    let mut layer1 = Layer::new();
    layer1
        .dir_with(
            "usr",
            Opts {
                mode: 0o751,
                uid: 3,
                gid: 4,
                mtime: 1_000_000_001,
                ..Opts::default()
            },
        )
        .dir_with(
            "usr/bin",
            Opts {
                mode: 0o750,
                uid: 5,
                gid: 6,
                mtime: 1_000_000_002,
                xattrs: vec![("user.d".into(), b"dir".to_vec())],
            },
        )
        .file_with(
            "usr/bin/tool",
            b"the tool",
            Opts {
                mode: 0o4755,
                uid: 7,
                gid: 8,
                mtime: 1_000_000_003,
                xattrs: vec![("user.f".into(), b"file".to_vec())],
            },
        )
        .file("gone", b"whited out above");
    layer1.finish()
}

#[test]
fn hard_link_to_a_lower_layer_copies_up() {
    let dirs = tmp();
    let d = dirs.path();
    let (l1, l2, l3, merged) = (d.join("l1"), d.join("l2"), d.join("l3"), d.join("m"));
    for p in [&l1, &l2, &l3, &merged] {
        fs::create_dir(p).expect("mkdir");
    }
    apply(&tool_layer(), &l1, WhiteoutMode::Overlay);

    let mut layer2 = Layer::new();
    layer2.whiteout("gone");
    apply(&layer2.finish(), &l2, WhiteoutMode::Overlay);

    let mut layer3 = Layer::new();
    layer3.hardlink("tool2", "usr/bin/tool");
    let opts = ApplyOptions {
        parents: vec![l2.clone(), l1.clone()],
        ..ApplyOptions::new(WhiteoutMode::Overlay)
    };
    strata_archive::apply(&layer3.finish()[..], Compression::None, &l3, &opts, None)
        .expect("apply layer 3");

    // The target was copied up with its metadata, parents included.
    let tool = fs::symlink_metadata(l3.join("usr/bin/tool")).expect("copied up");
    assert_eq!(
        fs::read(l3.join("usr/bin/tool")).expect("read"),
        b"the tool"
    );
    assert_eq!(
        (tool.mode() & 0o7777, tool.uid(), tool.gid(), tool.mtime()),
        (0o4755, 7, 8, 1_000_000_003)
    );
    assert_eq!(
        get_xattr(&l3.join("usr/bin/tool"), "user.f").as_deref(),
        Some(&b"file"[..])
    );
    assert_eq!(
        tool.ino(),
        fs::symlink_metadata(l3.join("tool2")).expect("tool2").ino()
    );
    let bin = fs::symlink_metadata(l3.join("usr/bin")).expect("usr/bin");
    assert_eq!(
        (bin.mode() & 0o7777, bin.uid(), bin.gid(), bin.mtime()),
        (0o750, 5, 6, 1_000_000_002)
    );
    assert_eq!(
        get_xattr(&l3.join("usr/bin"), "user.d").as_deref(),
        Some(&b"dir"[..])
    );
    let usr = fs::symlink_metadata(l3.join("usr")).expect("usr");
    assert_eq!(
        (usr.mode() & 0o7777, usr.uid(), usr.mtime()),
        (0o751, 3, 1_000_000_001)
    );
    // Nothing changed in the lower layers.
    assert_eq!(
        fs::symlink_metadata(l1.join("usr/bin/tool"))
            .expect("lower")
            .nlink(),
        1
    );

    // The merged view shows the link and the unchanged metadata.
    let _m = Overlay::mount(&[&l3, &l2, &l1], None, &merged);
    assert_eq!(
        fs::read(merged.join("tool2")).expect("merged tool2"),
        b"the tool"
    );
    let md = fs::symlink_metadata(merged.join("usr/bin")).expect("merged usr/bin");
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o750, 5));
    assert!(!merged.join("gone").exists());

    // A target whited out by a higher layer is not found.
    let mut layer4 = Layer::new();
    layer4.hardlink("again", "gone");
    let l4 = d.join("l4");
    fs::create_dir(&l4).expect("mkdir");
    let err = strata_archive::apply(&layer4.finish()[..], Compression::None, &l4, &opts, None)
        .expect_err("whited out");
    assert!(
        err.to_string().contains("\"again\"") && err.to_string().contains("not found"),
        "{err}"
    );
}

#[test]
fn unsupported_entry_types_are_refused() {
    let mut l = Layer::new();
    l.raw(b"weird", EntryType::new(b'V'), b"", b"");
    let err = common::try_apply(&l.finish(), tmp().path(), WhiteoutMode::Overlay)
        .expect_err("volume header");
    assert!(matches!(err, ArchiveError::InvalidEntry { .. }), "{err:?}");
    assert!(err.to_string().contains("\"weird\""), "{err}");
}
