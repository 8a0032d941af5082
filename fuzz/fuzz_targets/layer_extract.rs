//! Layer extraction (`strata_archive::apply`) of any byte stream as a tar: it may fail, never
//! panics, and nothing outside the root is created, changed or linked to.
//!
//! Every input is applied into `SANDBOX/root` of a fresh sandbox that also holds `outside/` (a
//! file, a directory, a link back into the root) and `lower/` (a read-only parent layer for the
//! overlay copy-up path, with a link out of it). Afterwards the sandbox must hold exactly those
//! three and `outside/` and `lower/` must be unchanged, down to link counts (a hard link from the
//! root to a file outside raises its count). The seed corpus aims symbolic links and hard links
//! at `../outside`, at `/tmp/strata-fuzz/sandbox/outside` and through links in the layer.
//!
//! The sandbox is on a private tmpfs mounted `nodev` in a mount namespace of this process
//! alone: device nodes a layer creates cannot be opened, so no input can reach a host device,
//! and nothing is left on the host. Run with `-jobs=1` (the sandbox path is fixed, so the corpus
//! can name it).
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use strata_archive::{ApplyOptions, Compression, WhiteoutMode, apply};

const BASE: &str = "/tmp/strata-fuzz";
const SANDBOX: &str = "/tmp/strata-fuzz/sandbox";

fn check(rc: libc::c_int, what: &str) {
    assert!(rc == 0, "{what}: {}", std::io::Error::last_os_error());
}

fn setup() {
    // SAFETY: unshare and mount with constant NUL-terminated strings; nothing is borrowed.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)");
        check(
            libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making mounts private",
        );
    }
    fs::create_dir_all(BASE).expect("creating the fuzz base directory");
    // SAFETY: as above.
    unsafe {
        check(
            libc::mount(
                c"strata-fuzz".as_ptr(),
                c"/tmp/strata-fuzz".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC,
                c"size=512m,mode=0700".as_ptr().cast(),
            ),
            "mounting the sandbox tmpfs",
        );
    }
}

/// What is checked of each path: type and permissions, owner, size, link count, modification
/// time, content of files and the target of links.
type Node = (u32, u32, u32, u64, u64, i64, Vec<u8>);

fn snapshot(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let path = dir.join(rel);
    let Ok(m) = fs::symlink_metadata(&path) else {
        return;
    };
    let content = if m.file_type().is_symlink() {
        fs::read_link(&path)
            .map(|t| t.into_os_string().into_encoded_bytes())
            .unwrap_or_default()
    } else if m.is_file() {
        fs::read(&path).unwrap_or_default()
    } else {
        Vec::new()
    };
    out.insert(
        rel.to_path_buf(),
        (
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.nlink(),
            m.mtime(),
            content,
        ),
    );
    if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        for n in names {
            snapshot(dir, &rel.join(n), out);
        }
    }
}

fn outside_state(sandbox: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    snapshot(sandbox, Path::new("outside"), &mut out);
    snapshot(sandbox, Path::new("lower"), &mut out);
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("listing")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn fresh_sandbox() -> PathBuf {
    let sandbox = PathBuf::from(SANDBOX);
    if fs::symlink_metadata(&sandbox).is_ok() {
        fs::remove_dir_all(&sandbox).expect("clearing the sandbox");
    }
    for d in ["root", "outside/dir", "lower/dir", "lower/etc"] {
        fs::create_dir_all(sandbox.join(d)).expect("sandbox directory");
    }
    fs::write(sandbox.join("outside/sentinel"), b"original").expect("sentinel");
    fs::write(sandbox.join("outside/dir/file"), b"outside").expect("outside file");
    symlink("../root", sandbox.join("outside/back")).expect("link back");
    fs::write(
        sandbox.join("lower/etc/passwd"),
        b"root:x:0:0::/root:/bin/sh\n",
    )
    .expect("lower");
    fs::write(sandbox.join("lower/dir/file"), b"lower").expect("lower file");
    symlink("../../outside", sandbox.join("lower/dir/out")).expect("lower link out");
    sandbox
}

static SETUP: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    SETUP.call_once(setup);
    let Some((&selector, tar)) = data.split_first() else {
        return;
    };
    let sandbox = fresh_sandbox();
    let before = outside_state(&sandbox);
    let mut opts = ApplyOptions::new(if selector & 1 == 0 {
        WhiteoutMode::Overlay
    } else {
        WhiteoutMode::Delete
    });
    if selector & 2 != 0 {
        opts.parents = vec![sandbox.join("lower")];
    }
    let root = sandbox.join("root");
    let _ = apply(tar, Compression::None, &root, &opts, None);

    assert_eq!(
        names(Path::new(BASE)),
        ["sandbox"],
        "created beside the sandbox"
    );
    assert_eq!(
        names(&sandbox),
        ["lower", "outside", "root"],
        "created beside the root"
    );
    let after = outside_state(&sandbox);
    if after != before {
        let changed: Vec<_> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        panic!("outside the root changed: {changed:?}");
    }
    assert!(
        fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()),
        "the root is no longer a directory"
    );
});
