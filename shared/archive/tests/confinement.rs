//! Nothing a layer contains may create, change or read anything outside the root. Every case
//! runs in a fresh sandbox `T` holding `T/outside/sentinel` and the root `T/root`, and checks
//! afterwards that `T` holds exactly those, with the sentinel's content and metadata unchanged.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{Layer, Opts, get_xattr, names, try_apply};
use strata_archive::{ApplyStats, ArchiveError, WhiteoutMode};
use strata_core::Kind;
use tar::EntryType;

struct Sandbox {
    dir: tempfile::TempDir,
    before: Vec<(PathBuf, u32, u32, i64, u64)>,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("outside")).expect("mkdir outside");
        fs::create_dir(dir.path().join("root")).expect("mkdir root");
        fs::write(dir.path().join("outside/sentinel"), b"original").expect("sentinel");
        common::set_mtime(&dir.path().join("outside/sentinel"), 1_000_000_000);
        common::set_mtime(&dir.path().join("outside"), 1_000_000_000);
        let mut s = Self {
            dir,
            before: Vec::new(),
        };
        s.before = s.outside_state();
        s
    }

    fn t(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.t().join("root")
    }

    /// The sandbox's absolute path without its leading '/', for entries that name it.
    fn t_rel(&self) -> String {
        self.t()
            .display()
            .to_string()
            .trim_start_matches('/')
            .to_owned()
    }

    fn outside_state(&self) -> Vec<(PathBuf, u32, u32, i64, u64)> {
        ["outside", "outside/sentinel"]
            .iter()
            .map(|p| {
                let md = fs::symlink_metadata(self.t().join(p)).expect("outside entry");
                (
                    PathBuf::from(p),
                    md.mode(),
                    md.uid(),
                    md.mtime(),
                    md.nlink(),
                )
            })
            .collect()
    }

    fn apply(&self, tar: &[u8], mode: WhiteoutMode) -> Result<ApplyStats, ArchiveError> {
        let r = try_apply(tar, &self.root(), mode);
        self.assert_outside_untouched();
        r
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            names(self.t()),
            ["outside", "root"],
            "nothing appears next to the root"
        );
        assert_eq!(
            names(&self.t().join("outside")),
            ["sentinel"],
            "nothing appears outside"
        );
        assert_eq!(
            fs::read(self.t().join("outside/sentinel")).expect("sentinel"),
            b"original"
        );
        assert_eq!(
            self.outside_state(),
            self.before,
            "metadata outside unchanged"
        );
        for p in ["outside", "outside/sentinel"] {
            assert_eq!(
                common::xattrs(&self.t().join(p)),
                Vec::new(),
                "no xattr on {p}"
            );
            assert_eq!(
                get_xattr(&self.t().join(p), "trusted.overlay.opaque"),
                None,
                "no opaque on {p}"
            );
        }
    }
}

fn assert_escape(r: Result<ApplyStats, ArchiveError>, entry: &str) {
    let err = r.expect_err("escape must be refused");
    assert!(matches!(err, ArchiveError::Escape { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{entry:?}")),
        "error names the entry {entry:?}: {err}"
    );
    assert_eq!(strata_core::Error::from(err).kind(), Kind::InvalidArgument);
}

#[test]
fn dot_dot_climbing_out_is_refused() {
    for (name, mode) in [
        ("../outside/sentinel", WhiteoutMode::Overlay),
        ("a/../../outside/sentinel", WhiteoutMode::Delete),
        ("/../outside/new", WhiteoutMode::Overlay),
        ("./../root/../outside/new", WhiteoutMode::Delete),
    ] {
        let s = Sandbox::new();
        let mut l = Layer::new();
        l.file("first", b"ok")
            .raw(name.as_bytes(), EntryType::Regular, b"", b"pwned");
        assert_escape(s.apply(&l.finish(), mode), name);
    }
    // The same for directories, symbolic links and devices.
    for ty in [EntryType::Directory, EntryType::Symlink, EntryType::Fifo] {
        let s = Sandbox::new();
        let mut l = Layer::new();
        l.raw(b"../outside/x", ty, b"/", b"");
        assert_escape(s.apply(&l.finish(), WhiteoutMode::Overlay), "../outside/x");
    }
}

#[test]
fn absolute_paths_stay_inside() {
    let s = Sandbox::new();
    let host = format!("/{}/outside/sentinel", s.t_rel());
    let mut l = Layer::new();
    l.raw(b"/abs/file", EntryType::Regular, b"", b"abs").raw(
        host.as_bytes(),
        EntryType::Regular,
        b"",
        b"pwned",
    );
    s.apply(&l.finish(), WhiteoutMode::Overlay)
        .expect("absolute names are relative to the root");
    assert_eq!(fs::read(s.root().join("abs/file")).expect("abs"), b"abs");
    assert_eq!(
        fs::read(s.root().join(&host[1..])).expect("inside copy"),
        b"pwned"
    );
}

#[test]
fn writing_through_symlinks_lands_inside() {
    let s = Sandbox::new();
    let t = s.t_rel();
    let mut l = Layer::new();
    l.symlink("up", "../outside")
        .file("up/sentinel", b"pwned 1")
        .file("up/new", b"pwned 2")
        .symlink("rootlink", "/")
        .file(&format!("rootlink/{t}/outside/three"), b"pwned 3")
        .symlink("abs", &format!("/{t}/outside"))
        .file("abs/four", b"pwned 4")
        .symlink("deep", "../../../../../../../..")
        // (Named below the sandbox so that a broken resolver would only write into it.)
        .file(&format!("deep/{t}/outside/five"), b"pwned 5")
        // A link as the final component is replaced, never followed.
        .symlink("s", &format!("/{t}/outside/sentinel"))
        .file("s", b"pwned 6")
        .symlink("s2", &format!("/{t}/outside/sentinel"))
        .fifo("s2", Opts::default())
        .symlink("dl", &format!("/{t}/outside"))
        .dir_with("dl", common::mode(0o777));
    s.apply(&l.finish(), WhiteoutMode::Overlay)
        .expect("confined");
    let r = s.root();
    assert_eq!(fs::read(r.join("outside/sentinel")).expect("1"), b"pwned 1");
    assert_eq!(fs::read(r.join("outside/new")).expect("2"), b"pwned 2");
    assert_eq!(
        fs::read(r.join(format!("{t}/outside/three"))).expect("3"),
        b"pwned 3"
    );
    assert_eq!(
        fs::read(r.join(format!("{t}/outside/four"))).expect("4"),
        b"pwned 4"
    );
    assert_eq!(
        fs::read(r.join(format!("{t}/outside/five"))).expect("5"),
        b"pwned 5"
    );
    assert!(fs::symlink_metadata(r.join("s")).expect("s").is_file());
    assert!(fs::symlink_metadata(r.join("dl")).expect("dl").is_dir());
}

#[test]
fn replaced_directory_is_not_used_from_the_cache() {
    // `d` is first a directory (and resolved as a parent), then a link pointing outside: later
    // entries below `d` must follow the link inside the root, not the old directory or the host.
    let s = Sandbox::new();
    let t = s.t_rel();
    let mut l = Layer::new();
    l.dir("d")
        .file("d/a", b"a")
        .symlink("d", &format!("/{t}/outside"))
        .file("d/evil", b"pwned");
    s.apply(&l.finish(), WhiteoutMode::Overlay)
        .expect("confined");
    assert_eq!(
        fs::read(s.root().join(format!("{t}/outside/evil"))).expect("evil"),
        b"pwned"
    );
}

#[test]
fn hard_links_cannot_reach_outside() {
    let s = Sandbox::new();
    let mut l = Layer::new();
    l.raw(b"h", EntryType::Link, b"../outside/sentinel", b"");
    let err = s
        .apply(&l.finish(), WhiteoutMode::Overlay)
        .expect_err("escaping link target");
    assert!(matches!(err, ArchiveError::Escape { .. }), "{err:?}");
    assert!(
        err.to_string().contains("\"h\"") && err.to_string().contains("../outside/sentinel"),
        "{err}"
    );

    // Through a symbolic link or an absolute name the target is looked up inside the root, where
    // it does not exist.
    let t = s.t_rel();
    for (i, target) in [
        format!("rootlink/{t}/outside/sentinel"),
        format!("/{t}/outside/sentinel"),
        "up/sentinel".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let mut l = Layer::new();
        l.symlink("rootlink", "/").symlink("up", "../outside");
        let name = format!("h{i}");
        l.raw(name.as_bytes(), EntryType::Link, target.as_bytes(), b"");
        let err = s
            .apply(&l.finish(), WhiteoutMode::Delete)
            .expect_err("target not in root");
        assert!(
            err.to_string().contains(&format!("{name:?}")) && err.to_string().contains("not found"),
            "{err}"
        );
    }

    // Also with lower layers to look in: they are searched inside their own roots.
    let lower = tempfile::tempdir().expect("lower");
    let mut l = Layer::new();
    l.symlink("up", "../outside")
        .raw(b"h", EntryType::Link, b"up/sentinel", b"");
    let opts = strata_archive::ApplyOptions {
        parents: vec![lower.path().to_owned()],
        ..strata_archive::ApplyOptions::new(WhiteoutMode::Overlay)
    };
    let err = strata_archive::apply(
        &l.finish()[..],
        strata_archive::Compression::None,
        &s.root(),
        &opts,
        None,
    )
    .expect_err("not in lower");
    assert!(err.to_string().contains("\"h\""), "{err}");
    s.assert_outside_untouched();

    // A hard link to a link pointing outside links the link itself; writing the name replaces it.
    let mut l = Layer::new();
    l.symlink("sl", &format!("/{t}/outside/sentinel"))
        .hardlink("hl", "sl")
        .file("hl", b"pwned");
    s.apply(&l.finish(), WhiteoutMode::Overlay)
        .expect("confined");
    assert_eq!(fs::read(s.root().join("hl")).expect("hl"), b"pwned");
}

#[test]
fn whiteouts_cannot_reach_outside() {
    let s = Sandbox::new();
    let mut l = Layer::new();
    l.raw(b"../.wh.outside", EntryType::Regular, b"", b"");
    assert_escape(s.apply(&l.finish(), WhiteoutMode::Delete), "../.wh.outside");

    for mode in [WhiteoutMode::Delete, WhiteoutMode::Overlay] {
        let s = Sandbox::new();
        let t = s.t_rel();
        let mut l = Layer::new();
        l.symlink("up", "../outside")
            .file("up/.wh.sentinel", b"")
            .opaque("up")
            .symlink("abs", &format!("/{t}/outside"))
            .file("abs/.wh.sentinel", b"")
            .opaque("abs");
        s.apply(&l.finish(), mode).expect("confined");
    }

    for name in [".wh..", ".wh..."] {
        let s = Sandbox::new();
        let mut l = Layer::new();
        l.raw(
            format!("root/{name}").as_bytes(),
            EntryType::Regular,
            b"",
            b"",
        );
        let err = s
            .apply(&l.finish(), WhiteoutMode::Delete)
            .expect_err("names no file");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn xattrs_are_not_set_through_symlinks() {
    let s = Sandbox::new();
    let t = s.t_rel();
    let mut l = Layer::new();
    // The PAX header applies to the symbolic link entry, whose target is outside.
    l.pax(&[
        ("SCHILY.xattr.user.evil", b"1"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
    ])
    .symlink("x", &format!("/{t}/outside/sentinel"))
    .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
    .symlink("y", &format!("/{t}/outside"));
    s.apply(&l.finish(), WhiteoutMode::Overlay)
        .expect("user xattrs on links are skipped with a warning");
}
