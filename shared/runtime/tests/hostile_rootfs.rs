//! Hostile images: a root file system whose links point at host paths must change nothing
//! outside the container while it is set up, and what the runtime mounts, masks, binds and
//! writes must land where the container sees it. Needs root and a static busybox.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::{Bundle, Outcome, add_bind, bundle, create, mounted_at, names, run, spec, wait};
use nix::sys::wait::WaitStatus;
use oci_spec::runtime::Spec;
use strata_runtime::Stdio;

/// A host directory of the test holding one regular file, and a way to check that nothing of
/// it changed.
struct HostDir {
    dir: tempfile::TempDir,
    file: &'static str,
    content: &'static str,
}

impl HostDir {
    fn new(file: &'static str, content: &'static str) -> HostDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file);
        fs::write(&path, content).expect("write host file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        HostDir { dir, file, content }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The host path without its leading `/`: where the same path is inside a root.
    fn relative(&self) -> &Path {
        self.path().strip_prefix("/").expect("absolute temp dir")
    }

    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            names(self.path()),
            vec![self.file.to_string()],
            "{what}: entries appeared in the host directory {}",
            self.path().display()
        );
        let path = self.path().join(self.file);
        let md = fs::symlink_metadata(&path).expect("host file");
        assert!(
            md.file_type().is_file(),
            "{what}: host file {} is now {:?}",
            path.display(),
            md.file_type()
        );
        assert_eq!(
            md.mode() & 0o7777,
            0o644,
            "{what}: mode of {}",
            path.display()
        );
        assert_eq!(
            fs::read_to_string(&path).expect("read host file"),
            self.content,
            "{what}: content of {}",
            path.display()
        );
        assert!(!mounted_at(self.path()), "{what}: mount on the host dir");
        assert!(!mounted_at(&path), "{what}: mount on the host file");
    }
}

/// Replaces the root's /dev by a symlink to `target`.
fn dev_link(b: &Bundle, target: &Path) {
    fs::remove_dir(b.rootfs.join("dev")).expect("rmdir dev");
    symlink(target, b.rootfs.join("dev")).expect("symlink dev");
}

/// The spec without the tmpfs on /dev: the image's own /dev is used.
fn without_dev_tmpfs(spec: &mut Spec) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new("/dev"));
    spec.set_mounts(Some(mounts));
}

fn add_masked(spec: &mut Spec, path: &str) {
    let linux = spec.linux_mut().as_mut().expect("linux");
    let mut masked = linux.masked_paths().clone().unwrap_or_default();
    masked.push(path.to_string());
    linux.set_masked_paths(Some(masked));
}

/// (1) An image whose /dev is a symlink to a host directory holding a file `null`: the
/// runtime's device nodes and /dev links go where the container sees /dev (that path inside
/// the root), and the host directory keeps its file and gains nothing.
#[test]
fn dev_symlinked_to_a_host_directory_changes_nothing_there() {
    let host = HostDir::new("null", "host data\n");
    let b = bundle();
    dev_link(&b, host.path());
    let script = "echo hi > /dev/null && test -c /dev/null && readlink /dev && ls /dev";
    let outcome = run(&b, "dev-host", &spec(&b, &["sh", "-c", script]));
    host.assert_untouched("tmpfs /dev");
    let out = outcome.success();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(Path::new(lines[0]), host.path(), "{out}");
    for name in [
        "null", "zero", "urandom", "tty", "fd", "stdout", "pts", "shm",
    ] {
        assert!(lines.contains(&name), "{name} missing in /dev: {out}");
    }
    // The link's target was made inside the root.
    assert!(b.rootfs.join(host.relative()).is_dir());

    // Without a tmpfs on /dev the image's /dev is used as it is: the /dev links and the
    // devpts, shm and mqueue mount points go inside the root too.
    let b = bundle();
    dev_link(&b, host.path());
    let mut s = spec(&b, &["sh", "-c", "ls /dev"]);
    without_dev_tmpfs(&mut s);
    let outcome = run(&b, "dev-host-notmpfs", &s);
    host.assert_untouched("image /dev");
    let out = outcome.success();
    assert!(out.lines().any(|l| l == "stdout"), "{out}");
    let inside = b.rootfs.join(host.relative());
    assert!(
        fs::symlink_metadata(inside.join("stdout")).is_ok_and(|m| m.file_type().is_symlink()),
        "no /dev links inside the root"
    );
}

/// (2) A bind mount whose target is a symlink out of the root (`/mnt -> /host-dir`): the
/// mount lands on that path inside the root, nothing on the host directory.
#[test]
fn bind_target_symlinked_out_of_the_root_mounts_inside_it() {
    let host = HostDir::new("t-marker", "host target\n");
    let source = HostDir::new("s-marker", "from the source\n");
    let b = bundle();
    symlink(host.path(), b.rootfs.join("mnt")).expect("symlink mnt");
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "cat /mnt/s-marker; ls /mnt; grep -c \" $(readlink /mnt) \" /proc/self/mountinfo",
        ],
    );
    add_bind(&mut s, source.path(), "/mnt", &["ro"]);
    let out = run(&b, "bind-out", &s).success();
    host.assert_untouched("bind target");
    source.assert_untouched("bind source");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["from the source", "s-marker", "1"], "{out}");
    assert!(b.rootfs.join(host.relative()).is_dir());
}

/// (3) A masked path that is a symlink to a host file masks that path inside the root; the
/// host file is neither changed nor covered.
#[test]
fn masked_path_symlinked_to_a_host_file_masks_inside_the_root() {
    let host = HostDir::new("secret", "host secret\n");
    let b = bundle();
    let inside = b.rootfs.join(host.relative());
    fs::create_dir_all(&inside).expect("mkdir");
    fs::write(inside.join("secret"), "inside secret\n").expect("write");
    symlink(host.path().join("secret"), b.rootfs.join("etc/masked")).expect("symlink");
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "cat /etc/masked; stat -L -c '%F %t:%T' /etc/masked; echo end",
        ],
    );
    add_masked(&mut s, "/etc/masked");
    let out = run(&b, "mask-host", &s).success();
    host.assert_untouched("masked path");
    assert_eq!(out, "character special file 1:3\nend\n");
}

/// (3b, CVE-2025-31133) A masked path is covered by the host's `/dev/null`, never by the
/// container's: an image whose /dev/null is a link to one of its files does not get that file
/// bound over the masked paths.
#[test]
fn masking_binds_the_hosts_dev_null_not_the_images() {
    let b = bundle();
    fs::write(b.rootfs.join("etc/leak"), "leaked\n").expect("write");
    fs::write(b.rootfs.join("etc/masked-file"), "secret\n").expect("write");
    symlink("/etc/leak", b.rootfs.join("dev/null")).expect("symlink");
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "cat /etc/masked-file; stat -c '%F %t:%T' /etc/masked-file; echo end",
        ],
    );
    without_dev_tmpfs(&mut s);
    add_masked(&mut s, "/etc/masked-file");
    let out = run(&b, "mask-null", &s).success();
    assert_eq!(out, "character special file 1:3\nend\n");
    assert_eq!(
        fs::read_to_string(b.rootfs.join("etc/leak")).expect("read"),
        "leaked\n"
    );
}

/// (4) Relative symlinks resolve inside the root as the container sees them: a /dev that
/// climbs with `..` far above the root on the host stops at the root, and an ordinary relative
/// link to a mount target still works.
#[test]
fn relative_symlinks_resolve_inside_the_root() {
    let host = HostDir::new("null", "host data\n");
    let b = bundle();
    let climb = Path::new("../../../../../../../../../../../..").join(host.relative());
    dev_link(&b, &climb);
    let source = HostDir::new("s-marker", "from the source\n");
    fs::create_dir_all(b.rootfs.join("srv")).expect("mkdir");
    symlink("srv/data", b.rootfs.join("data")).expect("symlink");
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "test -c /dev/null && stat -c '%t:%T' /dev/null; cat /data/s-marker /srv/data/s-marker",
        ],
    );
    add_bind(&mut s, source.path(), "/data", &[]);
    let outcome = run(&b, "relative", &s);
    host.assert_untouched("relative /dev");
    let out = outcome.success();
    assert_eq!(out, "1:3\nfrom the source\nfrom the source\n");
    assert!(b.rootfs.join(host.relative()).is_dir());
    assert!(b.rootfs.join("srv/data").is_dir());
}

/// procfs and sysfs are mounted only on ordinary directories: an image whose /proc is a link
/// (even one inside the root) is refused, so the runtime's writes under /proc and the
/// container's view of it cannot be redirected.
#[test]
fn proc_on_a_symlink_is_refused() {
    let b = bundle();
    fs::create_dir_all(b.rootfs.join("tmp/fake-proc")).expect("mkdir");
    fs::remove_dir(b.rootfs.join("proc")).expect("rmdir proc");
    symlink("/tmp/fake-proc", b.rootfs.join("proc")).expect("symlink proc");
    match run(&b, "proc-link", &spec(&b, &["true"])) {
        Outcome::CreateFailed(msg) => {
            assert!(msg.contains("proc on /proc"), "{msg}");
            assert!(msg.contains("ordinary directory"), "{msg}");
        }
        Outcome::Ran(status, out, err) => panic!("ran: {status:?} {out} {err}"),
    }
    assert!(common::names(&b.rootfs.join("tmp/fake-proc")).is_empty());
}

/// (CVE-2025-52565) The console is bound on /dev/console itself: an image whose
/// /dev/console is a link to another file does not get the terminal bound over that file.
#[test]
fn console_is_not_bound_through_an_image_link() {
    let b = bundle();
    fs::write(b.rootfs.join("etc/target"), "target\n").expect("write");
    symlink("/etc/target", b.rootfs.join("dev/console")).expect("symlink");
    // A real null device in the image's /dev, as an image unpacked by root may have.
    nix::sys::stat::mknod(
        &b.rootfs.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "stat -c '%F' /etc/target; stat -c '%F %t' /dev/console",
        ],
    );
    without_dev_tmpfs(&mut s);
    s.process_mut()
        .as_mut()
        .expect("process")
        .set_terminal(Some(true));
    let (mut c, mut guard) = create(&b, "console", &s, Stdio::null()).expect("create");
    let master = c.take_console().expect("console");
    c.start().expect("start");
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    // Reading the master ends with EIO once the slave side is closed.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let status = wait(c.pid());
    guard.reaped = true;
    let out = String::from_utf8_lossy(&out).replace("\r\n", "\n");
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    // (A terminal bound there would make any read of the file wait for terminal input.)
    assert_eq!(lines[0], "regular file", "{out}");
    // The pty (major 136 = 0x88) is on /dev/console, which is no longer the link.
    assert_eq!(lines[1], "character special file 88", "{out}");
    assert_eq!(
        fs::read_to_string(b.rootfs.join("etc/target")).expect("read"),
        "target\n"
    );
}

/// (CVE-2025-52881) Writes under /proc go to procfs only: a file bound over a procfs file
/// (here by the spec, as a racing container would) does not receive the sysctl or
/// oom_score_adj writes; the container fails clearly instead.
#[test]
fn proc_writes_do_not_follow_mounts_over_procfs_files() {
    let host = HostDir::new("fake", "untouched\n");
    let fake: PathBuf = host.path().join("fake");

    let b = bundle();
    let mut s = spec(&b, &["true"]);
    add_bind(&mut s, &fake, "/proc/self/oom_score_adj", &[]);
    s.process_mut()
        .as_mut()
        .expect("process")
        .set_oom_score_adj(Some(500));
    match run(&b, "proc-oom", &s) {
        Outcome::CreateFailed(msg) => assert!(msg.contains("oom_score_adj"), "{msg}"),
        Outcome::Ran(status, _, err) => {
            assert!(
                !matches!(status, WaitStatus::Exited(_, 0)),
                "{status:?} {err}"
            )
        }
    }
    host.assert_untouched("oom_score_adj");

    let b = bundle();
    let mut s = spec(&b, &["true"]);
    add_bind(&mut s, &fake, "/proc/sys/kernel/shmmni", &[]);
    s.linux_mut()
        .as_mut()
        .expect("linux")
        .set_sysctl(Some(HashMap::from([(
            "kernel.shmmni".to_string(),
            "1234".to_string(),
        )])));
    match run(&b, "proc-sysctl", &s) {
        Outcome::CreateFailed(msg) => assert!(msg.contains("shmmni"), "{msg}"),
        Outcome::Ran(status, _, err) => panic!("ran: {status:?} {err}"),
    }
    host.assert_untouched("sysctl");

    // Without the mount both writes reach procfs.
    let b = bundle();
    let mut s = spec(
        &b,
        &[
            "sh",
            "-c",
            "cat /proc/self/oom_score_adj /proc/sys/kernel/shmmni",
        ],
    );
    s.process_mut()
        .as_mut()
        .expect("process")
        .set_oom_score_adj(Some(500));
    s.linux_mut()
        .as_mut()
        .expect("linux")
        .set_sysctl(Some(HashMap::from([(
            "kernel.shmmni".to_string(),
            "1234".to_string(),
        )])));
    assert_eq!(run(&b, "proc-ok", &s).success(), "500\n1234\n");
}

/// Sanity: a char device `mknod`'d in a host directory is what the first test looks for.
#[test]
fn the_untouched_check_sees_a_device() {
    let host = HostDir::new("null", "x");
    let path = host.path().join("null");
    fs::remove_file(&path).expect("rm");
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    assert!(
        fs::symlink_metadata(&path)
            .expect("stat")
            .file_type()
            .is_char_device()
    );
    let caught = std::panic::catch_unwind(|| host.assert_untouched("device"));
    assert!(caught.is_err());
}
