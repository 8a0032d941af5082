//! containerd's `ctr` (Debian's containerd 1.6) driving strata's gateway and a private
//! containerd through the same workflows; answers compared column by column.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use strata_compat::image::{HELLO, HELLO_PATH, OS_RELEASE, WHITED_OUT};
use strata_compat::table::{self, column, labels, quiet};
use strata_compat::{Env, Obs, Out, Side, documented, entries, eventually, file_digest};

/// What kind of error a failed ctr command reported (the errdefs suffix of its message), so
/// that failures compare by kind rather than by wording.
fn err_kind(out: &Out) -> String {
    if out.code == 0 {
        return "ok".into();
    }
    let last = out.stderr.lines().rev().find(|l| !l.trim().is_empty());
    let last = last.unwrap_or_default();
    for kind in [
        "not found",
        "already exists",
        "failed precondition",
        "invalid argument",
        "unavailable",
        "not implemented",
        "unknown",
    ] {
        if last.contains(kind) {
            return kind.into();
        }
    }
    "error".into()
}

/// `code kind` of an invocation.
fn status(out: &Out) -> String {
    format!("{} {}", out.code, err_kind(out))
}

fn sorted(v: Vec<String>) -> String {
    let set: BTreeSet<String> = v.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn image_rows(side: &Side) -> Vec<table::Row> {
    let ls = side.ctr(&["images", "ls"]);
    table::parse(
        ls.ok(),
        &["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"],
    )
}

fn note_images(o: &mut Obs, step: &str, side: &Side) {
    let rows = image_rows(side);
    o.note(
        format!("{step}: images ls refs"),
        column(&rows, "REF").join(","),
    );
    for r in &rows {
        o.note(
            format!("{step}: images ls {}", r["REF"]),
            format!(
                "{} {} {} {} {}",
                r["TYPE"],
                r["DIGEST"],
                r["SIZE"],
                r["PLATFORMS"],
                labels(&r["LABELS"])
            ),
        );
    }
}

fn note_content(o: &mut Obs, step: &str, side: &Side, ns: &str) {
    let list = || {
        let ls = side.ctr_in(ns, &["content", "ls"]);
        table::parse(ls.ok(), &["DIGEST", "SIZE", "AGE", "LABELS"])
    };
    let mut rows = list();
    // Blobs a client wrote under a lease it has dropped (an import's own index) are garbage
    // both servers collect in the background, each in its own time: give that a moment, so
    // the listing compares what is kept, not how far each collector has got.
    for _ in 0..100 {
        let unreferenced = rows.iter().any(|r| {
            r["LABELS"].contains("containerd.io/gc.ref.content.m.")
                && !rows
                    .iter()
                    .any(|o| o["LABELS"].contains(r["DIGEST"].as_str()))
        });
        if !unreferenced {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        rows = list();
    }
    o.note(
        format!("{step}: content ls digests"),
        sorted(column(&rows, "DIGEST")),
    );
    for r in &rows {
        o.note(
            format!("{step}: content ls {}", r["DIGEST"]),
            format!("{} {}", r["SIZE"], labels(&r["LABELS"])),
        );
    }
}

fn note_check(o: &mut Obs, step: &str, side: &Side, ns: &str) {
    let check = side.ctr_in(ns, &["images", "check"]);
    let rows = table::parse(
        check.ok(),
        &["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"],
    );
    for r in &rows {
        o.note(
            format!("{step}: images check {}", r["REF"]),
            format!(
                "{} {} {} {}",
                r["DIGEST"], r["STATUS"], r["SIZE"], r["UNPACKED"]
            ),
        );
    }
}

/// `snapshots ls` of the image's unpacked layers alone, as [`note_snapshots`] records it.
fn image_snapshots(img: &strata_compat::TestImage) -> String {
    let mut v = [
        format!("{} <-  (Committed)", img.chain[0]),
        format!("{} <- {} (Committed)", img.chain[1], img.chain[0]),
    ];
    v.sort();
    v.join("; ")
}

fn snapshot_rows(side: &Side, ns: &str) -> Vec<table::Row> {
    let ls = side.ctr_in(ns, &["snapshots", "ls"]);
    table::parse(ls.ok(), &["KEY", "PARENT", "KIND"])
}

fn note_snapshots(o: &mut Obs, step: &str, side: &Side, ns: &str) {
    let rows = snapshot_rows(side, ns);
    let mut list: Vec<String> = rows
        .iter()
        .map(|r| format!("{} <- {} ({})", r["KEY"], r["PARENT"], r["KIND"]))
        .collect();
    list.sort();
    o.note(format!("{step}: snapshots ls"), list.join("; "));
}

/// Pull, list, check, read, export, remove (reclaiming), import, fetch: the image store.
fn images_workflow(env: &Env, side: &Side) -> Obs {
    let r = env.image.reference.as_str();
    let ns = side.ns.as_str();
    let mut o = Obs::new();
    o.note(
        "pull",
        status(&side.ctr(&["images", "pull", "--plain-http", r])),
    );
    note_images(&mut o, "pulled", side);
    note_content(&mut o, "pulled", side, ns);
    note_check(&mut o, "pulled", side, ns);
    note_snapshots(&mut o, "pulled", side, ns);
    o.note("pulled: blob files", entries(&side.blob_dir));
    o.note("pulled: snapshot directories", entries(&side.snapshot_dir));

    let get = side.ctr(&["content", "get", &env.image.manifest]);
    o.note(
        "content get manifest: sha256",
        strata_compat::digest_of(get.ok().as_bytes()),
    );
    let zero = format!("sha256:{}", "0".repeat(64));
    o.note(
        "content get missing",
        status(&side.ctr(&["content", "get", &zero])),
    );
    o.note(
        "pull again",
        status(&side.ctr(&["images", "pull", "--plain-http", r])),
    );
    note_snapshots(&mut o, "pulled again", side, ns);

    // Export, remove with a synchronous collection, import the archive back.
    let archive = side.scratch.join("export.tar");
    let ex = side.ctr(&["images", "export", archive.to_str().unwrap(), r]);
    o.note("export", status(&ex));
    o.note("export: archive sha256", file_digest(&archive));
    let missing = side.ctr(&[
        "images",
        "export",
        side.scratch.join("none.tar").to_str().unwrap(),
        "compat/none:1",
    ]);
    o.note("export of a missing image", status(&missing));

    o.note(
        "rm --sync",
        status(&side.ctr(&["images", "rm", "--sync", r])),
    );
    o.note(
        "removed: images ls -q",
        quiet(side.ctr(&["images", "ls", "-q"]).ok()).join(","),
    );
    o.note(
        "removed: content ls -q",
        quiet(side.ctr(&["content", "ls", "-q"]).ok()).join(","),
    );
    note_snapshots(&mut o, "removed", side, ns);
    // Reclaimed on disk too: no blob file, no snapshot directory left.
    o.note("removed: blob files", entries(&side.blob_dir));
    o.note("removed: snapshot directories", entries(&side.snapshot_dir));
    o.note(
        "rm of a missing image",
        status(&side.ctr(&["images", "rm", r])),
    );

    let im = side.ctr(&["images", "import", archive.to_str().unwrap()]);
    o.note("import", status(&im));
    note_images(&mut o, "imported", side);
    note_content(&mut o, "imported", side, ns);
    note_check(&mut o, "imported", side, ns);
    note_snapshots(&mut o, "imported", side, ns);

    // content fetch: the blobs and an image record, nothing unpacked.
    let fetch_ns = format!("{ns}-fetch");
    let fetch = side.ctr_in(&fetch_ns, &["content", "fetch", "--plain-http", r]);
    o.note("content fetch", status(&fetch));
    note_content(&mut o, "fetched", side, &fetch_ns);
    note_check(&mut o, "fetched", side, &fetch_ns);
    note_snapshots(&mut o, "fetched", side, &fetch_ns);
    o
}

#[test]
fn images_pull_check_export_remove_import_fetch() {
    let env = Env::start("images");
    let img = &env.image;
    let r = img.reference.clone();
    env.compare(
        |side| images_workflow(&env, side),
        |o| {
            o.expect("pull", "0 ok");
            o.expect("pulled: images ls refs", &r);
            let row = o.value(&format!("pulled: images ls {r}"));
            assert!(
                row.starts_with(&format!(
                    "application/vnd.oci.image.manifest.v1+json {} ",
                    img.manifest
                )),
                "{row}"
            );
            o.expect("pulled: content ls digests", &img.blobs().join(","));
            let check = o.value(&format!("pulled: images check {r}"));
            assert!(
                check.starts_with(&format!("{} complete (3/3) ", img.manifest))
                    && check.ends_with(" true"),
                "{check}"
            );
            let chain = image_snapshots(img);
            o.expect("pulled: snapshots ls", &chain);
            o.expect("content get manifest: sha256", &img.manifest);
            o.expect("content get missing", "1 not found");
            o.expect("pull again", "0 ok");
            o.expect("export", "0 ok");
            o.expect("rm --sync", "0 ok");
            // Reclaimed synchronously: nothing left once the command has returned.
            o.expect("removed: images ls -q", "");
            o.expect("removed: content ls -q", "");
            o.expect("removed: snapshots ls", "");
            o.expect("pulled: blob files", "4");
            o.expect("pulled: snapshot directories", "2");
            o.expect("removed: blob files", "0");
            o.expect("removed: snapshot directories", "0");
            o.expect("import", "0 ok");
            o.expect("imported: images ls refs", &r);
            o.expect("imported: content ls digests", &img.blobs().join(","));
            o.expect("imported: snapshots ls", &chain);
            o.expect("content fetch", "0 ok");
            o.expect("fetched: content ls digests", &img.blobs().join(","));
            let check = o.value(&format!("fetched: images check {r}"));
            assert!(check.ends_with(" false"), "fetch unpacks nothing: {check}");
            o.expect("fetched: snapshots ls", "");
        },
        |_| {},
    );

    // The exported archive: an OCI layout naming the image, with its three blobs.
    let archive = env.strata.scratch.join("export.tar");
    let mut names = BTreeSet::new();
    let mut index = None;
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        if path == "index.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            index = Some(s);
        }
        names.insert(path);
    }
    for b in img.blobs() {
        let p = format!("blobs/sha256/{}", b.trim_start_matches("sha256:"));
        assert!(names.contains(&p), "{p} not in the archive: {names:?}");
    }
    let index: serde_json::Value = serde_json::from_str(&index.unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], img.manifest.as_str());

    // strata's own front end sees what ctr pulled: one store for both.
    let out = strata_testkit::ok(
        env.stack
            .cli()
            .args(["--namespace", &env.strata.ns, "images", "-q"]),
        None,
    );
    assert!(!out.trim().is_empty(), "strata images lists nothing");
    let out = strata_testkit::ok(
        env.stack
            .cli()
            .args(["--namespace", &env.strata.ns, "images"]),
        None,
    );
    assert!(out.contains("compat/images"), "{out}");
    // ... and runs it, over the layers ctr unpacked.
    let out = strata_testkit::ok(
        env.stack.cli().args([
            "--namespace",
            &env.strata.ns,
            "run",
            "--rm",
            &r,
            "cat",
            HELLO_PATH,
        ]),
        None,
    );
    assert_eq!(out, HELLO);
}

/// `ctr run --rm`: files of every layer as the container reads them, exit codes, output.
fn run_workflow(env: &Env, side: &Side) -> Obs {
    let r = env.image.reference.as_str();
    let mut o = Obs::new();
    o.note(
        "pull",
        status(&side.ctr(&["images", "pull", "--plain-http", r])),
    );
    let cases: &[(&str, &[&str])] = &[
        ("cat top-layer file", &["cat", HELLO_PATH]),
        ("cat replaced file", &["cat", "/etc/os-release"]),
        ("ls whited-out file", &["ls", WHITED_OUT]),
        ("exit code", &["sh", "-c", "exit 3"]),
        ("pid", &["sh", "-c", "echo $$"]),
        ("uid", &["id", "-u"]),
        ("cwd", &["pwd"]),
        ("env PATH", &["sh", "-c", "echo $PATH"]),
        (
            "stdout and stderr",
            &["sh", "-c", "echo to-out; echo to-err >&2"],
        ),
        (
            "write then read",
            &["sh", "-c", "echo w > /tmp/f && cat /tmp/f"],
        ),
    ];
    for (i, (what, cmd)) in cases.iter().enumerate() {
        let id = format!("r{i}");
        let mut args = vec!["run", "--rm", r, id.as_str()];
        args.extend_from_slice(cmd);
        let out = side.ctr(&args);
        o.note(format!("run {what}: exit code"), out.code);
        o.note(format!("run {what}: stdout"), &out.stdout);
        // stderr also carries ctr's own log lines; keep the container's.
        let err: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.starts_with("time=") && !l.starts_with("ctr: "))
            .collect();
        o.note(format!("run {what}: stderr"), err.join("\n"));
    }
    let dup = side.ctr(&["run", "-d", r, "dup", "sleep", "1000"]);
    o.note("run -d dup", status(&dup));
    o.note(
        "run with a taken id",
        status(&side.ctr(&["run", "--rm", r, "dup", "true"])),
    );
    o.note(
        "run of a missing image",
        status(&side.ctr(&["run", "--rm", "compat/none:1", "x", "true"])),
    );
    side.ctr(&["tasks", "kill", "-s", "SIGKILL", "dup"]);
    eventually("dup stops", || {
        let out = side.ctr(&["tasks", "rm", "dup"]);
        (out.code == 0).then_some(())
    });
    o.note(
        "containers rm dup",
        status(&side.ctr(&["containers", "rm", "dup"])),
    );
    // --rm left nothing behind: no container, only the image's snapshots.
    o.note(
        "after: containers ls -q",
        quiet(side.ctr(&["containers", "ls", "-q"]).ok()).join(","),
    );
    note_snapshots(&mut o, "after", side, &side.ns);
    o
}

#[test]
fn run_rm_reads_every_layer_and_returns_exit_codes() {
    let env = Env::start("run");
    env.compare(
        |side| run_workflow(&env, side),
        |o| {
            o.expect("pull", "0 ok");
            o.expect("run cat top-layer file: exit code", "0");
            o.expect("run cat top-layer file: stdout", HELLO);
            o.expect("run cat replaced file: stdout", OS_RELEASE);
            o.expect("run ls whited-out file: exit code", "1");
            o.expect("run exit code: exit code", "3");
            o.expect("run pid: stdout", "1\n");
            o.expect("run uid: stdout", "0\n");
            o.expect("run stdout and stderr: stdout", "to-out\n");
            o.expect("run stdout and stderr: stderr", "to-err");
            o.expect("run write then read: stdout", "w\n");
            o.expect("run -d dup", "0 ok");
            o.expect("containers rm dup", "0 ok");
            o.expect("after: containers ls -q", "");
            let img = &env.image;
            o.expect("after: snapshots ls", &image_snapshots(img));
            let taken = o.value("run with a taken id");
            assert!(taken.starts_with("1 "), "{taken}");
        },
        |_| {},
    );
}

/// Execs in task `d1`: output, exit codes, the pid namespace, refusals.
fn note_execs(o: &mut Obs, side: &Side) {
    let exec = side.ctr(&["tasks", "exec", "--exec-id", "e1", "d1", "cat", HELLO_PATH]);
    o.note("exec cat: exit code", exec.code);
    o.note("exec cat: stdout", &exec.stdout);
    let exec = side.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "d1",
        "sh",
        "-c",
        "exit 4",
    ]);
    o.note("exec exit 4: exit code", exec.code);
    // An exec joins the container's pid namespace: init is 1, the exec is not.
    let exec = side.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e3",
        "d1",
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline",
    ]);
    let mut lines = exec.stdout.lines();
    o.note("exec: own pid is 1", lines.next() == Some("1"));
    o.note(
        "exec: pid 1's command line",
        lines.next().unwrap_or_default().replace('\0', " "),
    );
    o.note(
        "exec in a missing task",
        status(&side.ctr(&["tasks", "exec", "--exec-id", "e4", "ghost", "true"])),
    );
    o.note(
        "exec without --exec-id",
        status(&side.ctr(&["tasks", "exec", "d1", "true"])),
    );
}

/// The records of running container `d1`: `containers ls` and `info`, its snapshots, their
/// usage and tree.
fn note_records(o: &mut Obs, side: &Side) {
    let ls = side.ctr(&["containers", "ls"]);
    let rows = table::parse(ls.ok(), &["CONTAINER", "IMAGE", "RUNTIME"]);
    o.note(
        "containers ls",
        rows.iter()
            .map(|r| format!("{} {} {}", r["CONTAINER"], r["IMAGE"], r["RUNTIME"]))
            .collect::<Vec<_>>()
            .join(","),
    );
    let info = side.ctr(&["containers", "info", "d1"]);
    let mut info: serde_json::Value = serde_json::from_str(info.ok()).unwrap();
    for k in ["CreatedAt", "UpdatedAt"] {
        let present = info.as_object_mut().unwrap().remove(k).is_some();
        o.note(format!("containers info: {k} present"), present);
    }
    o.note("containers info", info);
    o.note(
        "containers info of a missing container",
        status(&side.ctr(&["containers", "info", "ghost"])),
    );

    note_snapshots(o, "running", side, &side.ns);
    let usage = side.ctr(&["snapshots", "usage"]);
    let rows = table::parse(usage.ok(), &["KEY", "SIZE", "INODES"]);
    for r in &rows {
        o.note(
            format!("snapshots usage {}", r["KEY"]),
            format!("{} {}", r["SIZE"], r["INODES"]),
        );
    }
    let tree = side.ctr(&["snapshots", "tree"]);
    o.note(
        "snapshots tree",
        tree.ok()
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

/// `ctr run -d` and everything ctr does with a running task and its container.
fn detached_workflow(env: &Env, side: &Side) -> Obs {
    let r = env.image.reference.as_str();
    let mut o = Obs::new();
    side.ctr(&["images", "pull", "--plain-http", r]).ok();
    o.note(
        "run -d",
        status(&side.ctr(&["run", "-d", r, "d1", "sleep", "1000"])),
    );
    let ls = side.ctr(&["tasks", "ls"]);
    let rows = table::parse(ls.ok(), &["TASK", "PID", "STATUS"]);
    o.note(
        "tasks ls",
        rows.iter()
            .map(|r| format!("{} {}", r["TASK"], r["STATUS"]))
            .collect::<Vec<_>>()
            .join(","),
    );
    let pid = rows.first().map(|r| r["PID"].clone()).unwrap_or_default();
    o.note(
        "tasks ls: pid is a number > 0",
        pid.parse::<u32>().is_ok_and(|p| p > 0),
    );
    o.note(
        "tasks ls -q",
        quiet(side.ctr(&["tasks", "ls", "-q"]).ok()).join(","),
    );
    let ps = side.ctr(&["tasks", "ps", "d1"]);
    let rows = table::parse(ps.ok(), &["PID", "INFO"]);
    o.note("tasks ps: processes", rows.len());
    o.note("tasks ps: init listed", column(&rows, "PID").contains(&pid));

    note_execs(&mut o, side);

    note_records(&mut o, side);

    // Removing what is running fails; SIGTERM is ignored by a pid 1 without a handler.
    o.note(
        "containers rm while running",
        status(&side.ctr(&["containers", "rm", "d1"])),
    );
    o.note(
        "tasks rm while running",
        status(&side.ctr(&["tasks", "rm", "d1"])),
    );
    o.note(
        "tasks kill (SIGTERM)",
        status(&side.ctr(&["tasks", "kill", "d1"])),
    );
    o.note(
        "tasks kill -s SIGKILL",
        status(&side.ctr(&["tasks", "kill", "-s", "SIGKILL", "d1"])),
    );
    let stopped = eventually("d1 stops", || {
        let ls = side.ctr(&["tasks", "ls"]);
        let rows = table::parse(ls.ok(), &["TASK", "PID", "STATUS"]);
        rows.iter()
            .find(|r| r["TASK"] == "d1" && r["STATUS"] == "STOPPED")
            .map(|r| r["STATUS"].clone())
    });
    o.note("tasks ls after kill", stopped);
    o.note(
        "tasks kill of a stopped task",
        status(&side.ctr(&["tasks", "kill", "-s", "SIGKILL", "d1"])),
    );
    let rm = side.ctr(&["tasks", "rm", "d1"]);
    o.note("tasks rm", status(&rm));
    o.note(
        "tasks rm: exit code reported",
        rm.stderr.contains("exit code 137"),
    );
    o.note(
        "tasks ls -q after rm",
        quiet(side.ctr(&["tasks", "ls", "-q"]).ok()).join(","),
    );
    o.note(
        "containers rm",
        status(&side.ctr(&["containers", "rm", "d1"])),
    );
    o.note(
        "containers rm again",
        status(&side.ctr(&["containers", "rm", "d1"])),
    );
    o.note(
        "tasks kill of a missing task",
        status(&side.ctr(&["tasks", "kill", "d1"])),
    );
    note_snapshots(&mut o, "removed", side, &side.ns);
    o
}

#[test]
fn detached_task_exec_kill_and_container_records() {
    let env = Env::start("detached");
    let img = &env.image;
    env.compare(
        |side| detached_workflow(&env, side),
        |o| {
            o.expect("run -d", "0 ok");
            o.expect("tasks ls", "d1 RUNNING");
            o.expect("tasks ls: pid is a number > 0", "true");
            o.expect("tasks ps: init listed", "true");
            o.expect("exec cat: exit code", "0");
            o.expect("exec cat: stdout", HELLO);
            o.expect("exec exit 4: exit code", "4");
            o.expect("exec: own pid is 1", "false");
            o.expect("exec: pid 1's command line", "sleep 1000 ");
            o.expect(
                "containers ls",
                &format!("d1 {} io.containerd.runc.v2", img.reference),
            );
            o.expect("containers info: CreatedAt present", "true");
            o.expect("containers info of a missing container", "1 not found");
            assert!(
                o.value("running: snapshots ls")
                    .contains(&format!("d1 <- {} (Active)", img.chain[1])),
                "{o}"
            );
            o.expect("tasks rm while running", "1 failed precondition");
            o.expect("tasks kill -s SIGKILL", "0 ok");
            o.expect("tasks ls after kill", "STOPPED");
            o.expect("tasks kill of a stopped task", "1 not found");
            o.expect("tasks rm", "0 ok");
            o.expect("tasks rm: exit code reported", "true");
            o.expect("tasks ls -q after rm", "");
            o.expect("containers rm", "0 ok");
            o.expect("containers rm again", "1 not found");
            assert!(!o.value("removed: snapshots ls").contains("d1"), "{o}");
        },
        |_| {},
    );
}

/// Notes namespace `a`'s leases as `ctr leases ls` and `ls -q` list them, all but the one
/// with the `generated` id, whose listing is noted as a fact.
fn note_leases(o: &mut Obs, side: &Side, a: &str, generated: &str) {
    let out = side.ctr_in(a, &["leases", "ls"]);
    let rows = table::parse(out.ok(), &["ID", "CREATED AT", "LABELS"]);
    let mut leases: Vec<String> = rows
        .iter()
        .filter(|r| r["ID"] != generated)
        .map(|r| {
            // The expiry label's value is a time: keep that it is there.
            let l: Vec<String> = labels(&r["LABELS"])
                .split(',')
                .map(|kv| match kv.split_once('=') {
                    Some(("containerd.io/gc.expire", _)) => "containerd.io/gc.expire=<t>".into(),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{} [{}]", r["ID"], l.join(","))
        })
        .collect();
    leases.sort();
    o.note("leases ls", leases.join(", "));
    let mut ids = quiet(side.ctr_in(a, &["leases", "ls", "-q"]).ok());
    let before = ids.len();
    ids.retain(|id| id != generated);
    o.note(
        "leases ls -q lists the generated id",
        ids.len() + 1 == before,
    );
    o.note("leases ls -q", sorted(ids));
}

/// Namespaces and leases: listing, creating, labels, removal rules.
fn namespaces_workflow(env: &Env, side: &Side) -> Obs {
    let r = env.image.reference.as_str();
    let mut o = Obs::new();
    let a = format!("{}-a", side.ns);
    let b = format!("{}-b", side.ns);
    let ls = |o: &mut Obs, step: &str| {
        let out = side.ctr_global(&["namespaces", "ls"]);
        let rows = table::parse(out.ok(), &["NAME", "LABELS"]);
        // Only this test's namespaces: another test's never shows on this side, but a
        // namespace recorded by an earlier step of this one does.
        let mine: Vec<String> = rows
            .iter()
            .filter(|r| r["NAME"].starts_with(&side.ns_norm))
            .map(|r| format!("{} [{}]", r["NAME"], labels(&r["LABELS"])))
            .collect();
        o.note(format!("{step}: namespaces ls"), mine.join(", "));
    };
    ls(&mut o, "start");
    let run = |args: &[&str]| side.ctr_global(args);
    o.note(
        "create a",
        status(&run(&["namespaces", "create", &a, "team=x", "tier=1"])),
    );
    o.note(
        "create a again",
        status(&run(&["namespaces", "create", &a])),
    );
    o.note(
        "create invalid name",
        status(&run(&["namespaces", "create", "bad..name"])),
    );
    o.note(
        "label a",
        status(&run(&["namespaces", "label", &a, "tier=2"])),
    );
    ls(&mut o, "created");

    // Leases in a.
    o.note(
        "lease create L1",
        status(&side.ctr_in(&a, &["leases", "create", "--id", "L1", "owner=compat"])),
    );
    o.note(
        "lease create L1 again",
        status(&side.ctr_in(&a, &["leases", "create", "--id", "L1"])),
    );
    o.note(
        "lease create L2 (no expiry)",
        status(&side.ctr_in(&a, &["leases", "create", "--id", "L2", "-x", "0"])),
    );
    let created = side.ctr_in(&a, &["leases", "create"]);
    o.note("lease create with a generated id", status(&created));
    let generated = created.stdout.trim().to_owned();
    o.note("generated lease id is not empty", !generated.is_empty());
    note_leases(&mut o, side, &a, &generated);
    o.note(
        "leases in another namespace",
        quiet(side.ctr_in(&b, &["leases", "ls", "-q"]).ok()).join(","),
    );
    o.note(
        "namespace rm a while it holds leases",
        status(&run(&["namespaces", "rm", &a])),
    );
    ls(&mut o, "after rm with leases");
    // From here on the namespace is emptied before removal on both sides.
    let rm = side.ctr_in(&a, &["leases", "rm", "L1", "L2", &generated]);
    o.note("leases rm", status(&rm));
    o.note(
        "leases rm of a missing lease",
        status(&side.ctr_in(&a, &["leases", "rm", "L1"])),
    );
    o.note("namespace rm a", status(&run(&["namespaces", "rm", &a])));
    ls(&mut o, "removed a");

    // b holds an image: removal refused until it is gone.
    run(&["namespaces", "create", &b]).ok();
    let pull = side.ctr_in(&b, &["content", "fetch", "--plain-http", r]);
    o.note("fetch into b", status(&pull));
    o.note(
        "namespace rm b while it holds an image",
        status(&run(&["namespaces", "rm", &b])),
    );
    o.note(
        "images rm --sync in b",
        status(&side.ctr_in(&b, &["images", "rm", "--sync", r])),
    );
    o.note(
        "b: content ls -q",
        quiet(side.ctr_in(&b, &["content", "ls", "-q"]).ok()).join(","),
    );
    o.note(
        "namespace rm b once empty",
        status(&run(&["namespaces", "rm", &b])),
    );
    o.note(
        "namespace rm of a missing namespace",
        status(&run(&["namespaces", "rm", &format!("{}-none", side.ns)])),
    );
    ls(&mut o, "end");
    o
}

#[test]
fn namespaces_and_leases() {
    let env = Env::start("ns");
    let a = format!("{}-a [team=x,tier=2]", env.strata.ns_norm);
    env.compare(
        |side| namespaces_workflow(&env, side),
        |o| {
            o.expect("start: namespaces ls", "");
            o.expect("create a", "0 ok");
            o.expect("create a again", "1 already exists");
            o.expect("create invalid name", "1 invalid argument");
            o.expect("label a", "0 ok");
            o.expect("created: namespaces ls", &a);
            o.expect("lease create L1", "0 ok");
            o.expect("lease create L1 again", "1 already exists");
            o.expect(
                "leases ls",
                "L1 [containerd.io/gc.expire=<t>,owner=compat], L2 [-]",
            );
            o.expect("leases in another namespace", "");
            o.expect("leases rm", "0 ok");
            o.expect("leases rm of a missing lease", "1 not found");
            o.expect("namespace rm a", "0 ok");
            o.expect("removed a: namespaces ls", "");
            o.expect("fetch into b", "0 ok");
            o.expect(
                "namespace rm b while it holds an image",
                "1 failed precondition",
            );
            o.expect("b: content ls -q", "");
            o.expect("namespace rm b once empty", "0 ok");
            o.expect("end: namespaces ls", "");
            // Documented: a namespace holding leases is not removed.
            o.expect(
                "namespace rm a while it holds leases",
                "1 failed precondition",
            );
            o.expect("after rm with leases: namespaces ls", &a);
        },
        |c| {
            documented("namespace-leases");
            c.set(
                "namespace rm a while it holds leases",
                "1 failed precondition",
            );
            c.set("after rm with leases: namespaces ls", &a);
            // containerd removed the namespace with its leases: the leases rm that strata
            // needs first finds nothing there.
            c.set("leases rm", "0 ok");
            c.set("namespace rm a", "0 ok");
        },
    );
}

/// `ctr version` and `ctr plugins ls`.
fn plugins_workflow(side: &Side) -> Obs {
    let mut o = Obs::new();
    let v = side.ctr_global(&["version"]);
    o.note("version", status(&v));
    let server = v.stdout.split("Server:").nth(1).unwrap_or_default();
    let field = |name: &str| {
        server
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    o.note("version: server version", field("Version:"));
    let uuid = field("UUID:");
    o.note(
        "version: server uuid is a uuid",
        uuid.len() == 36 && uuid.chars().filter(|c| *c == '-').count() == 4,
    );
    let out = side.ctr_global(&["plugins", "ls"]);
    let rows = table::parse(out.ok(), &["TYPE", "ID", "PLATFORMS", "STATUS"]);
    let mut plugins: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["TYPE"].clone(),
                r["ID"].clone(),
                r["PLATFORMS"].clone(),
                r["STATUS"].clone(),
            )
        })
        .collect();
    plugins.sort();
    // The gRPC services a client can call, and the storage plugins behind them.
    for (ty, id, platforms, st) in &plugins {
        let listed = match ty.as_str() {
            "io.containerd.grpc.v1" => true,
            "io.containerd.content.v1" | "io.containerd.differ.v1" => true,
            "io.containerd.snapshotter.v1" => st == "ok",
            _ => false,
        };
        if listed {
            o.note(format!("plugin {ty} {id}"), format!("{platforms} {st}"));
        }
    }
    let filtered = side.ctr_global(&["plugins", "ls", "type==io.containerd.content.v1"]);
    o.note(
        "plugins ls filtered by type",
        column(
            &table::parse(filtered.ok(), &["TYPE", "ID", "PLATFORMS", "STATUS"]),
            "ID",
        )
        .join(","),
    );
    o
}

#[test]
fn version_and_plugins() {
    let env = Env::start("plugins");
    env.compare(
        plugins_workflow,
        |o| {
            o.expect("version", "0 ok");
            o.expect("version: server uuid is a uuid", "true");
            assert!(
                o.value("version: server version").starts_with("strata "),
                "{o}"
            );
            // Every containerd service strata's gateway serves is listed, and healthy.
            for id in [
                "containers",
                "content",
                "diff",
                "events",
                "healthcheck",
                "images",
                "introspection",
                "leases",
                "namespaces",
                "snapshots",
                "tasks",
                "version",
            ] {
                o.expect(&format!("plugin io.containerd.grpc.v1 {id}"), "- ok");
            }
            o.expect("plugin io.containerd.content.v1 content", "- ok");
            o.expect("plugins ls filtered by type", "content");
        },
        |c| {
            documented("version");
            let v = format!("strata {}", env!("CARGO_PKG_VERSION"));
            c.set("version: server version", v);
        },
    );
}

/// Notes the events seen (`topics`, each with its event): the topics as a multiset, each
/// source's in its order, and the fields that say what each event is about.
fn note_topics(o: &mut Obs, topics: &[(String, serde_json::Value)]) {
    // Services publish independently, so only each one's own order is compared, and the
    // whole list as a multiset.
    let mut sorted: Vec<&str> = topics.iter().map(|t| t.0.as_str()).collect();
    sorted.sort_unstable();
    o.note("topics (sorted)", sorted.join(" "));
    for (source, prefixes) in [
        ("execution", &["/containers/", "/tasks/"][..]),
        ("snapshots", &["/snapshot/"][..]),
        ("images", &["/images/", "/namespaces/"][..]),
        ("content", &["/content/"][..]),
    ] {
        let order: Vec<&str> = topics
            .iter()
            .map(|t| t.0.as_str())
            .filter(|t| prefixes.iter().any(|p| t.starts_with(p)))
            .collect();
        o.note(format!("topics of {source}"), order.join(" "));
    }
    for (topic, ev) in topics {
        match topic.as_str() {
            "/tasks/exit" => {
                o.note("tasks/exit: exit_status", &ev["exit_status"]);
                o.note("tasks/exit: id", &ev["id"]);
            }
            "/snapshot/prepare" if ev["key"] == "ev1" => {
                o.note("snapshot/prepare ev1: has parent", ev["parent"].is_string());
            }
            "/images/create" | "/images/delete" => {
                o.note(format!("{topic}: name"), &ev["name"]);
            }
            "/content/delete" => o.note("content/delete: digest", &ev["digest"]),
            "/namespaces/update" => {
                o.note("namespaces/update: label", &ev["labels"]["compat"]);
            }
            _ => {}
        }
    }
}

/// Starts `ctr events` on `side` and waits until it prints (a marker is published until it
/// does): the process, the lines it prints, the thread reading them, the lines read so far.
fn subscribe(
    side: &Side,
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
    Vec<String>,
) {
    let mut child = side
        .ctr_command()
        .arg("events")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // ctr subscribes some time after it starts: publish a marker until it shows (bounded).
    let mut lines = Vec::new();
    let mut subscribed = false;
    for _ in 0..100 {
        publish_marker(side);
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "[{}] ctr events printed nothing", side.name());
    (child, rx, reader, lines)
}

/// `ctr events` in the background while the side pulls an image, runs a container of it,
/// labels its namespace, writes and deletes a blob and removes the image: every topic published
/// in the side's namespace, storage (content, snapshots, images, namespaces) and execution
/// (containers, tasks) alike.
fn events_workflow(env: &Env, side: &Side) -> Obs {
    let r = env.image.reference.as_str();
    let mut o = Obs::new();
    let (mut child, rx, reader, lines) = subscribe(side);

    // The blob is written and deleted first: `ctr content ingest` holds no lease, so once
    // anything has been deleted (the pull's lease, the run's container) containerd's collector,
    // started by later writes, may take the blob before `content rm` and publish nothing.
    let blob = b"compat events\n";
    let mut ingest = side.ctr_command();
    ingest.args(["--namespace", &side.ns, "content", "ingest", "compat-ev"]);
    let out = strata_testkit::run(&mut ingest, Some(blob));
    assert!(out.status.success(), "[{}] content ingest", side.name());
    let digest = strata_compat::digest_of(blob);
    side.ctr(&["content", "rm", &digest]).ok();
    side.ctr(&["images", "pull", "--plain-http", r]).ok();
    let run = side.ctr(&["run", "--rm", r, "ev1", "sh", "-c", "exit 3"]);
    o.note("run", run.code);
    side.ctr(&["namespaces", "label", &side.ns, "compat=events"])
        .ok();
    side.ctr(&["images", "rm", "--sync", r]).ok();

    // Each service delivers its events in order; these are the last each one publishes here
    // (the images service's, the snapshotter's, the content service's, the tasks service's).
    let mut last = BTreeSet::from([
        "/images/delete",
        "/snapshot/remove ev1",
        "/content/delete",
        "/containers/delete ev1",
    ]);
    let mut topics = Vec::new();
    let accept = |l: &str, topics: &mut Vec<(String, serde_json::Value)>| {
        let l = side.normalize(l);
        // "<date> <time> +0000 UTC <namespace> <topic> <event JSON>"
        let f: Vec<&str> = l.splitn(7, ' ').collect();
        if f.len() < 7 || f[4] != side.ns_norm {
            return None;
        }
        let (topic, json) = (f[5].to_owned(), f[6]);
        let ev = serde_json::from_str::<serde_json::Value>(json).unwrap_or_default();
        if ev["id"].as_str() == Some("compat-marker") {
            return None;
        }
        let subject = ev["key"]
            .as_str()
            .or(ev["id"].as_str())
            .or(ev["container_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        topics.push((topic.clone(), ev));
        Some(format!("{topic} {subject}"))
    };
    for l in &lines {
        if let Some(seen) = accept(l, &mut topics) {
            last.remove(seen.as_str());
            last.remove(seen.split(' ').next().unwrap_or_default());
        }
    }
    for _ in 0..300 {
        if last.is_empty() {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                if let Some(seen) = accept(&l, &mut topics) {
                    last.remove(seen.as_str());
                    last.remove(seen.split(' ').next().unwrap_or_default());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    assert!(
        last.is_empty(),
        "[{}] never saw {last:?}; saw {:?}",
        side.name(),
        topics.iter().map(|t| &t.0).collect::<Vec<_>>()
    );

    note_topics(&mut o, &topics);
    o
}

/// Publishes a containerd.events.ContainerDelete for `compat-marker` in the side's namespace.
fn publish_marker(side: &Side) {
    use containerd_client::services::v1::PublishRequest;
    use containerd_client::tonic::Request;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = containerd_client::Client::from_path(&side.socket)
            .await
            .unwrap();
        let event = containerd_client::to_any(&containerd_client::events::ContainerDelete {
            id: "compat-marker".into(),
        });
        let mut req = Request::new(PublishRequest {
            topic: "/containers/delete".into(),
            event: Some(event),
        });
        req.metadata_mut()
            .insert("containerd-namespace", side.ns.parse().unwrap());
        client.events().publish(req).await.unwrap();
    });
}

#[test]
fn events_of_a_run() {
    let env = Env::start("events");
    env.compare(
        |side| events_workflow(&env, side),
        |o| {
            o.expect("run", "3");
            o.expect(
                "topics of execution",
                "/containers/create /tasks/create /tasks/start /tasks/exit /tasks/delete \
                 /containers/delete",
            );
            o.expect("tasks/exit: exit_status", "3");
            let snapshots = o.value("topics of snapshots");
            assert!(
                snapshots.starts_with("/snapshot/prepare /snapshot/commit")
                    && snapshots.ends_with("/snapshot/prepare /snapshot/remove"),
                "{snapshots}"
            );
            o.expect(
                "topics of images",
                "/images/create /namespaces/update /images/delete",
            );
            o.expect("topics of content", "/content/delete");
            o.expect("namespaces/update: label", "\"events\"");
        },
        |_| {},
    );
}
