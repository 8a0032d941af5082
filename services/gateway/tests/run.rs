//! `strata run` and its siblings end to end: a real registry, the whole stack on temporary
//! sockets, the `strata` CLI; containers run by the tasks service's default (built-in) runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use strata_testkit::ok;

mod common;
use common::{World, world};

#[test]
fn run_streams_output_and_returns_the_exit_code() {
    let w = world();
    let out = w.cli(&[
        "run",
        "--rm",
        "--name",
        "r1",
        &w.image,
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; seq 1 3000 | tail -n 1; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", w.stack.logs());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "to-stdout\n3000\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    // --rm: the container and its thin layer are gone when the command returns.
    assert!(!w.ok(&["ps", "-a"]).contains("r1"));
    assert!(!w.snapshots().lines().any(|l| l.starts_with("r1 ")));
}

/// The root mount's line of a container's /proc/self/mountinfo.
fn root_mount(w: &World, args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[&w.image, "cat", "/proc/self/mountinfo"]);
    let info = w.ok(&all);
    info.lines()
        .find(|l| l.contains(" / / "))
        .unwrap_or_else(|| panic!("no root mount in {info}"))
        .to_owned()
}

#[test]
fn rm_containers_have_a_volatile_layer_and_others_a_synced_one() {
    let w = world();
    // --rm: the layer goes with the container, so overlayfs is not asked to sync it.
    let rm = root_mount(&w, &["--rm"]);
    assert!(rm.contains("overlay") && rm.contains("volatile"), "{rm}");
    let kept = root_mount(&w, &["--name", "kept"]);
    assert!(
        kept.contains("overlay") && !kept.contains("volatile"),
        "{kept}"
    );
    w.ok(&["rm", "kept"]);
    // The label alone asks for it; the layer is mounted again at the next start (overlayfs's
    // marker is removed after a clean unmount) and keeps what the first run wrote.
    let label = "io.strata.rootfs.volatile=true";
    let script = "echo run >> /runs; cat /runs; cat /proc/self/mountinfo";
    let first = w.ok(&[
        "run", "--name", "v", "-l", label, &w.image, "sh", "-c", script,
    ]);
    assert!(
        first.starts_with("run\n") && first.contains("volatile"),
        "{first}"
    );
    let second = w.ok(&["start", "-a", "v"]);
    assert!(
        second.starts_with("run\nrun\n") && second.contains("volatile"),
        "{second}"
    );
    w.ok(&["rm", "v"]);
}

#[test]
fn containers_are_isolated_and_write_only_to_their_own_layer() {
    let w = world();
    let image_snapshots = w.snapshots();
    w.ok(&["run", "-d", "--name", "a", &w.image, "sleep", "300"]);
    w.ok(&["run", "-d", "--name", "b", &w.image, "sleep", "300"]);
    // pid 1 is the container's command; host processes are invisible; own hostname.
    assert_eq!(
        w.ok(&["exec", "a", "cat", "/proc/1/cmdline"]),
        "sleep\x00300\x00"
    );
    let pids = w.ok(&["exec", "a", "sh", "-c", "ls /proc | grep -c '^[0-9]'"]);
    assert!(
        pids.trim().parse::<u32>().unwrap() <= 4,
        "processes: {pids}"
    );
    assert_eq!(w.ok(&["exec", "a", "hostname"]).trim(), "a");
    // A write lands in a's upper directory only.
    w.ok(&["exec", "a", "sh", "-c", "echo secret > /written"]);
    assert_eq!(w.ok(&["exec", "a", "cat", "/written"]), "secret\n");
    let out = w.cli(&["exec", "b", "cat", "/written"]);
    assert_eq!(out.status.code(), Some(1));
    let mounts = ok(
        w.stack.ctr().args(["snapshots", "mounts", "/mnt", "a"]),
        None,
    );
    let upper = mounts
        .split(['=', ','])
        .skip_while(|s| !s.ends_with("upperdir"))
        .nth(1)
        .expect("upperdir in the mount")
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&upper).join("written")).unwrap(),
        "secret\n"
    );
    // The image's committed snapshots are what they were (plus the containers' own).
    let words = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let now = words(&w.snapshots());
    for line in words(&image_snapshots).iter().skip(1) {
        assert!(now.contains(line), "{line} changed: {now:?}");
    }
    // ps -s: a's own layer holds the write; virtual adds the image.
    let ps = w.ok(&["ps", "-s"]);
    assert!(ps.contains("a ") && ps.contains("b "), "{ps}");
    assert!(ps.contains("virtual"), "{ps}");
    // rm -f deletes the running container and its layer.
    w.ok(&["rm", "-f", "a", "b"]);
    assert!(!w.snapshots().lines().any(|l| l.starts_with("a ")));
    assert!(!upper.is_empty() && !std::path::Path::new(&upper).exists());
}

#[test]
fn stdin_terminal_and_limits() {
    let w = world();
    // -i: stdin reaches the container and its end closes the container's stdin.
    let mut child = w
        .stack
        .cli()
        .args(["run", "-i", "--rm", &w.image, "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line one\nline two\ndone\n"
    );
    // -t: a terminal, with a terminal's line endings.
    let out = w.ok(&["run", "-t", "--rm", &w.image, "sh", "-c", "tty; echo x"]);
    assert_eq!(out, "/dev/pts/0\r\nx\r\n");
    // A memory hog is killed by the limit: 128 + SIGKILL.
    let out = w.cli(&[
        "run",
        "--rm",
        "--memory",
        "16m",
        &w.image,
        "sh",
        "-c",
        "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", w.stack.logs());
    // A pids limit caps forks: six background sleeps do not fit in four pids, but do in ten.
    let forks = "for i in 1 2 3 4 5 6; do sleep 1 & done; echo all-started";
    let out = w.cli(&[
        "run",
        "--rm",
        "--pids-limit",
        "4",
        &w.image,
        "sh",
        "-c",
        forks,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("can't fork"));
    let out = w.ok(&[
        "run",
        "--rm",
        "--pids-limit",
        "10",
        &w.image,
        "sh",
        "-c",
        forks,
    ]);
    assert_eq!(out, "all-started\n");
    // Environment, working dir, user, read-only root, volume.
    let vol = w.stack.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), "from host").unwrap();
    let v = format!("{}:/data:ro", vol.display());
    let out = w.ok(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "--read-only",
        "-v",
        &v,
        &w.image,
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u):$(id -g) $(cat /data/f); touch /x 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "1 /tmp 1000:1000 from host\nro\n");
}

#[test]
fn detached_containers_logs_stop_start_and_signals() {
    let w = world();
    let id = w.ok(&[
        "run",
        "-d",
        &w.image,
        "sh",
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    let id = id.trim().to_owned();
    w.eventually("output in the log", || {
        w.ok(&["logs", &id]).contains("started")
    });
    // logs -f follows until the container exits; stop delivers SIGTERM.
    let mut follow = w
        .stack
        .cli()
        .args(["logs", "-f", &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    w.ok(&["stop", &id]);
    let mut followed = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(follow.wait().unwrap().success());
    assert_eq!(followed, "started\ngot-term\n");
    assert!(w.ok(&["ps", "-a"]).contains("Exited (3)"));
    // start runs it again over the same layer; the log keeps both runs.
    w.ok(&["start", &id]);
    w.eventually("second run's output", || {
        w.ok(&["logs", &id]).matches("started").count() == 2
    });
    assert_eq!(w.ok(&["logs", "--tail", "1", &id]), "started\n");
    w.ok(&["kill", "-s", "TERM", &id]);
    assert_eq!(w.ok(&["wait", &id]).trim(), "3");
    // rm refuses nothing now; the log goes with the container.
    w.ok(&["rm", &id]);
    assert!(!w.cli(&["logs", &id]).status.success());
    // --rm -d: removed by the gateway once it exits.
    let id = w.ok(&["run", "-d", "--rm", &w.image, "true"]);
    let id = id.trim().to_owned();
    w.eventually("auto-removal", || !w.ok(&["ps", "-a"]).contains(&id));
    // The CLI forwards SIGINT to an attached container (no terminal).
    let mut child = w
        .stack
        .cli()
        .args([
            "run",
            "--rm",
            &w.image,
            "sh",
            "-c",
            "trap 'echo interrupted; exit 42' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "interrupted\n");
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

#[test]
fn bad_requests_name_their_input() {
    let w = world();
    let out = w.cli(&["run", "--rm", "no-such-image:1", "true"]);
    assert!(!out.status.success());
    let out = w.cli(&["exec", "nothing-here", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing-here"), "{err}");
    w.ok(&["create", "--name", "dup", &w.image, "true"]);
    let err =
        String::from_utf8_lossy(&w.cli(&["create", "--name", "dup", &w.image]).stderr).into_owned();
    assert!(err.contains("dup") && err.contains("in use"), "{err}");
    let err = String::from_utf8_lossy(
        &w.cli(&["run", "--rm", "--net", "bridge", &w.image, "true"])
            .stderr,
    )
    .into_owned();
    assert!(err.contains("bridge"), "{err}");
    let out = w.cli(&["exec", "dup", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn auto_remove_survives_a_gateway_restart() {
    let mut w = world();
    let id = w.ok(&["run", "-d", "--rm", &w.image, "sleep", "1"]);
    let id = id.trim().to_owned();
    w.stack.gateway.kill9();
    // The task ends while no gateway runs (asked of the tasks service itself).
    let tasks = w.stack.tasks.address();
    w.eventually("the task's exit", || {
        let out = ok(
            Command::new(strata_testkit::stack::ctr_path()).args([
                "--address",
                &tasks,
                "tasks",
                "ls",
            ]),
            None,
        );
        out.lines()
            .any(|l| l.starts_with(&id) && l.contains("STOPPED"))
    });
    w.stack.gateway.restart();
    w.eventually("removal by the restarted gateway", || {
        !w.ok(&["ps", "-a"]).contains(&id)
    });
    assert!(!w.snapshots().lines().any(|l| l.starts_with(&id)));
}

/// Listings racing with `--rm` removals never fail: a supervisor that is leaving may close a
/// state query unanswered, and that is "no task", not an error (`ps -a` failed with "Broken
/// pipe" about 1 time in 40 here before).
#[test]
fn listings_racing_with_removals_never_fail() {
    let w = world();
    let stack_socket = w.stack.socket().to_owned();
    let image = w.image.clone();
    let runs = std::thread::spawn(move || {
        for _ in 0..40 {
            let out = std::process::Command::new(strata_testkit::sibling_bin("strata"))
                .arg("--address")
                .arg(&stack_socket)
                .args(["run", "-d", "--rm", &image, "true"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    let mut listed = 0;
    while !runs.is_finished() || listed == 0 {
        w.ok(&["ps", "-a"]);
        listed += 1;
    }
    runs.join().unwrap();
    w.eventually("every --rm container removed", || {
        w.ok(&["ps", "-a", "-q"]).trim().is_empty()
    });
}
