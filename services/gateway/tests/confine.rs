//! What confines a container, end to end through the `strata` CLI and the built-in runtime:
//! Docker's flags (`--cap-add`, `--cap-drop`, `--privileged`, `--device`, `--sysctl`,
//! `--group-add`, `--tmpfs`, `--ulimit`, `--security-opt`), what is refused rather than dropped,
//! and images whose account files are hostile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use strata_testkit::registry::{Entry, busybox_layer, host_arch, layer, oci_image};

mod common;
use common::{World, world};

/// The capability bits of `CapEff` in a container run with `flags`.
fn effective_caps(w: &World, flags: &[&str]) -> u64 {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&w.image, "cat", "/proc/self/status"]);
    let status = w.ok(&args);
    let line = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {status}"));
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap()
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_owned())
        .unwrap_or_default()
}

const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

#[test]
fn capabilities_follow_the_flags() {
    let w = world();
    let default = effective_caps(&w, &[]);
    assert_eq!(default & CAP_CHOWN, CAP_CHOWN);
    assert_eq!(default & CAP_SYS_ADMIN, 0);
    let changed = effective_caps(&w, &["--cap-add", "sys_admin", "--cap-drop", "CAP_CHOWN"]);
    assert_eq!(changed, (default | CAP_SYS_ADMIN) & !CAP_CHOWN);
    assert_eq!(
        effective_caps(&w, &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"]),
        CAP_NET_ADMIN
    );
    // Every capability the host can grant: those of the test's own bounding set (it runs as
    // root, like the services).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let all = u64::from_str_radix(&field(&status, "CapBnd:"), 16).unwrap();
    assert_eq!(effective_caps(&w, &["--privileged"]), all);
    let out = w.cli(&["run", "--rm", "--cap-add", "FLY", &w.image, "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"FLY\"") && err.contains("no such capability"),
        "{err}"
    );
}

#[test]
fn privileged_sees_the_hosts_devices_and_a_writable_sys() {
    let w = world();
    let script =
        "ls /dev | wc -l; grep ' /sys ' /proc/self/mounts; grep Seccomp: /proc/self/status";
    let plain = w.ok(&["run", "--rm", &w.image, "/bin/busybox", "sh", "-c", script]);
    let privileged = w.ok(&[
        "run",
        "--rm",
        "--privileged",
        &w.image,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    let count = |s: &str| s.lines().next().unwrap().trim().parse::<usize>().unwrap();
    assert!(
        count(&privileged) > count(&plain),
        "{plain}\n---\n{privileged}"
    );
    assert!(plain.contains(" ro,"), "{plain}");
    assert!(privileged.contains(" rw,"), "{privileged}");
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
}

#[test]
fn devices_sysctls_tmpfs_ulimits_and_groups_reach_the_container() {
    let w = world();
    let out = w.ok(&[
        "run",
        "--rm",
        "--device",
        "/dev/null:/dev/mynull:rw",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--sysctl",
        "kernel.shmmni=1234",
        "--tmpfs",
        "/scratch:size=1m",
        "--ulimit",
        "nofile=100:200",
        "--group-add",
        "4321",
        &w.image,
        "/bin/busybox",
        "sh",
        "-c",
        "busybox stat -c '%t:%T' /dev/mynull; echo x > /dev/mynull && echo written; \
         cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni; \
         grep ' /scratch ' /proc/self/mounts; ulimit -n; ulimit -Hn; id -G",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1:3", "{out}");
    assert_eq!(lines[1], "written", "{out}");
    assert_eq!(&lines[2..4], ["1", "1234"], "{out}");
    assert!(
        lines[4].starts_with("tmpfs /scratch tmpfs rw,nosuid,nodev,noexec")
            && lines[4].contains("size=1024k"),
        "{out}"
    );
    assert_eq!(&lines[5..7], ["100", "200"], "{out}");
    assert!(lines[7].split(' ').any(|g| g == "4321"), "{out}");
}

#[test]
fn what_cannot_be_enforced_is_refused() {
    let w = world();
    for (flags, needle) in [
        (
            &["--sysctl", "kernel.hostname=x"][..],
            "sysctl \"kernel.hostname\": not namespaced",
        ),
        (
            &["--net", "host", "--sysctl", "net.ipv4.ip_forward=1"][..],
            "needs the container's own network namespace",
        ),
        (
            &["--security-opt", "apparmor=docker-default"][..],
            "does not enforce AppArmor",
        ),
        (
            &["--security-opt", "label=type:container_t"][..],
            "does not enforce SELinux",
        ),
        (
            &["--device", "/etc/hostname"][..],
            "not a character or block device",
        ),
        (&["--ulimit", "nofile=300:200"][..], "above the hard limit"),
        (&["--group-add", "nosuchgroup"][..], "\"nosuchgroup\""),
        (&["--tmpfs", "relative"][..], "must be an absolute path"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&w.image, "true"]);
        let out = w.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} ran");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    // Nothing was left behind by the refusals.
    assert_eq!(w.ok(&["ps", "-a", "-q"]), "");
}

/// Pushes an image of busybox plus `entries` as `name`.
fn hostile_image(w: &World, name: &str, entries: &[Entry]) -> String {
    let layout = w.stack.path().join(format!("layout-{name}"));
    oci_image(&layout, &[busybox_layer(), layer(entries)], host_arch());
    let image = w.registry.push(&layout, &format!("{name}:1"));
    w.ok(&["pull", "-q", &image]);
    image
}

#[test]
fn an_images_account_files_are_read_inside_it_and_bounded() {
    let w = world();
    // /etc/passwd a FIFO: the old reader waited for a writer forever.
    let fifo = hostile_image(&w, "fifo-passwd", &[Entry::Fifo("etc/passwd".into())]);
    let mut child = w
        .stack
        .cli()
        .args(["run", "--rm", "--user", "someone", &fifo, "true"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Bounds a hang only: the answer comes at once.
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!(
                "run --user with a FIFO /etc/passwd hung\n{}",
                w.stack.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/etc/passwd") && err.contains("not a regular file"),
        "{err}"
    );

    // /etc/passwd a link to a host file: the host's accounts are not the image's.
    let host = w.stack.path().join("host-passwd");
    std::fs::write(&host, "hostuser:x:4242:4242::/:/bin/sh\n").unwrap();
    let linked = hostile_image(
        &w,
        "linked-passwd",
        &[Entry::Symlink(
            "etc/passwd".into(),
            host.display().to_string(),
        )],
    );
    let out = w.cli(&["run", "--rm", "--user", "hostuser", &linked, "id", "-u"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "resolved a host account: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("no such user"), "{err}");

    // A huge /etc/group is refused, not read whole.
    let big = hostile_image(
        &w,
        "big-group",
        &[Entry::File("etc/group".into(), vec![b'#'; 2 << 20], 0o644)],
    );
    let out = w.cli(&["run", "--rm", "--group-add", "audio", &big, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/etc/group") && err.contains("allowed"),
        "{err}"
    );
}

#[test]
fn a_seccomp_profile_by_default_or_as_asked() {
    let w = world();
    let seccomp = |flags: &[&str], script: &str| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&w.image, "/bin/busybox", "sh", "-c", script]);
        w.cli(&args)
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let status = "grep Seccomp: /proc/self/status";
    assert!(text(&seccomp(&[], status)).contains("Seccomp:\t2"));
    assert!(
        text(&seccomp(&["--security-opt", "seccomp=unconfined"], status)).contains("Seccomp:\t0")
    );
    // The default refuses what Docker's does: a new user namespace.
    let out = seccomp(&[], "busybox unshare -U true; echo rc=$?");
    assert!(
        text(&out).contains("rc=1") && text(&out).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    let out = seccomp(
        &["--cap-add", "SYS_ADMIN"],
        "busybox unshare -U true; echo rc=$?",
    );
    assert!(text(&out).contains("rc=0"), "{}", text(&out));

    // A profile of the user's, in Docker's format, read by the CLI.
    let profile = w.stack.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let out = seccomp(&["--security-opt", &opt], "mkdir /tmp/x; echo rc=$?");
    assert!(
        text(&out).contains("rc=1") && text(&out).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    // A profile naming a system call no architecture has is refused when the container is made.
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["frobnicate"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let out = seccomp(&["--security-opt", &opt], "true");
    assert!(!out.status.success());
    assert!(text(&out).contains("frobnicate"), "{}", text(&out));
    assert_eq!(w.ok(&["ps", "-a", "-q"]), "");
}
