//! `strata build`: Dockerfiles built on a real stack from a base image in a real registry; the
//! images run, the cache is hit and missed as it should be, bad input is refused clearly and
//! leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use strata_testkit::stack::Stack;
use strata_testkit::{ok, run};

mod common;
use common::{World, build_base_layer, world_of};

pub fn build_world() -> World {
    world_of(Stack::start(), vec![build_base_layer()], "base:1")
}

/// A context directory with `files` (path, contents) and a Dockerfile.
fn context(w: &World, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = w.stack.path().join("contexts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile.replace("BASE", &w.image)).unwrap();
    for (p, data) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    dir
}

fn build(w: &World, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build".to_owned()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(dir.display().to_string());
    run(w.stack.cli().args(&args), None)
}

fn build_ok(w: &World, dir: &Path, extra: &[&str]) -> String {
    let out = build(w, dir, extra);
    assert!(
        out.status.success(),
        "strata build: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w.stack.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn image_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("built "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image ID in {out}"))
        .to_owned()
}

fn inspect(w: &World, name: &str) -> Value {
    let v: Value = serde_json::from_str(&w.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

const APP: &str = r#"FROM BASE
ARG GREETING=hello
ENV APP_HOME=/app PATH=/bin
WORKDIR $APP_HOME
COPY greet.sh ./
RUN chmod +x greet.sh && echo "$GREETING from RUN" > built.txt
COPY --chown=app:staff data/ /app/data/
USER app
EXPOSE 8080
LABEL org.example.team=core
CMD ["./greet.sh"]
"#;

#[test]
fn a_dockerfile_builds_an_image_that_runs_and_a_rebuild_is_all_cached() {
    let w = build_world();
    let dir = context(
        &w,
        "app",
        APP,
        &[
            (
                "greet.sh",
                "#!/bin/sh\ncat /app/built.txt /app/data/a.txt\nid -u\n",
            ),
            ("data/a.txt", "data a\n"),
        ],
    );
    let out = build_ok(&w, &dir, &["-t", "app:1"]);
    assert!(
        out.contains("hello from RUN") || out.contains("RUN"),
        "{out}"
    );
    let id = image_id(&out);
    let ran = w.ok(&["run", "--rm", "app:1"]);
    assert_eq!(ran, "hello from RUN\ndata a\n1000\n");
    let img = inspect(&w, "app:1");
    assert_eq!(img["Id"], Value::String(id.clone()));
    let c = &img["Config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "app");
    assert_eq!(c["Cmd"], serde_json::json!(["./greet.sh"]));
    assert_eq!(c["Labels"]["org.example.team"], "core");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"APP_HOME=/app"), "{env:?}");
    // The build argument is no part of the image's environment.
    assert!(!env.iter().any(|e| e.starts_with("GREETING")), "{env:?}");
    // Owners as --chown said, resolved from the image's accounts.
    let owners = w.ok(&[
        "run",
        "--rm",
        "app:1",
        "stat",
        "-c",
        "%u:%g %a",
        "/app/data/a.txt",
        "/app/greet.sh",
    ]);
    assert_eq!(owners, "1000:50 644\n0:0 755\n");

    // Nothing changed: every step is cached and the image is the same.
    let again = build_ok(&w, &dir, &["-t", "app:1"]);
    assert_eq!(image_id(&again), id, "{again}");
    assert!(again.contains("0 steps run"), "{again}");

    // One copied file changed: the steps from its COPY on run again.
    std::fs::write(dir.join("data/a.txt"), "data b\n").unwrap();
    let changed = build_ok(&w, &dir, &["-t", "app:2"]);
    assert_ne!(image_id(&changed), id);
    let cached: Vec<&str> = changed.lines().filter(|l| l.ends_with(" CACHED")).collect();
    // FROM, WORKDIR, COPY greet.sh, RUN stay cached; ENV and the ARG are config steps.
    assert!(
        cached.iter().any(|l| l.contains("RUN chmod")),
        "the RUN before the changed COPY ran again: {changed}"
    );
    assert!(
        !cached.iter().any(|l| l.contains("COPY --chown")),
        "the changed COPY was taken from the cache: {changed}"
    );
    assert_eq!(
        w.ok(&["run", "--rm", "app:2", "cat", "/app/data/a.txt"]),
        "data b\n"
    );
    // A build argument changes what RUN sees: RUN runs again.
    let other = build_ok(&w, &dir, &["-t", "app:3", "--build-arg", "GREETING=hi"]);
    assert_eq!(
        w.ok(&["run", "--rm", "app:3", "cat", "/app/built.txt"]),
        "hi from RUN\n",
        "{other}"
    );
    // The cache's records are no images of the user's.
    let images = w.ok(&["images"]);
    assert!(!images.contains("strata-build-cache"), "{images}");
    // History reads like BuildKit's.
    let h = w.ok(&["history", "--json", "app:1"]);
    assert!(
        h.contains("RUN |1 GREETING=hello /bin/sh -c chmod +x greet.sh"),
        "{h}"
    );
    assert!(
        h.contains("COPY --chown=app:staff data/ /app/data/ # buildkit"),
        "{h}"
    );
    assert!(h.contains("CMD [\\\"./greet.sh\\\"]"), "{h}");
}

#[test]
fn a_multi_stage_build_copies_from_an_earlier_stage_and_skips_unneeded_ones() {
    let w = build_world();
    let dir = context(
        &w,
        "multi",
        r#"FROM BASE AS builder
RUN mkdir -p /out && echo compiled > /out/app.bin && chmod 750 /out/app.bin

FROM BASE AS unused
RUN echo this stage is not needed && exit 1

FROM scratch
COPY --from=builder /out/ /opt/
COPY --from=0 /bin/busybox /bin/
"#,
        &[],
    );
    let out = build_ok(&w, &dir, &["-t", "multi:1"]);
    assert!(!out.contains("not needed"), "{out}");
    let img = inspect(&w, "multi:1");
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        2,
        "{img}"
    );
    let ran = w.ok(&[
        "run",
        "--rm",
        "multi:1",
        "/bin/busybox",
        "cat",
        "/opt/app.bin",
    ]);
    assert_eq!(ran, "compiled\n");
    let mode = w.ok(&[
        "run",
        "--rm",
        "multi:1",
        "/bin/busybox",
        "stat",
        "-c",
        "%a",
        "/opt/app.bin",
    ]);
    assert_eq!(mode, "750\n");
    // --target builds a stage and what it needs only.
    let t = build_ok(&w, &dir, &["--target", "builder", "-t", "multi:builder"]);
    assert!(t.contains("CACHED"), "{t}");
}

#[test]
fn bad_dockerfiles_and_failing_steps_stop_the_build_and_leave_nothing() {
    let w = build_world();
    let syntax = context(&w, "syntax", "FROM BASE\nFOOBAR x\n", &[]);
    let out = build(&w, &syntax, &["-t", "bad:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.to_lowercase().contains("foobar"),
        "{err}"
    );

    let mount = context(
        &w,
        "mount",
        "FROM BASE\nRUN --mount=type=cache,target=/c true\n",
        &[],
    );
    let out = build(&w, &mount, &["-t", "bad:4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("RUN --mount: not supported"),
        "{err}"
    );

    let unreachable = context(
        &w,
        "unreachable",
        "FROM 127.0.0.1:1/nothing:1\nRUN true\n",
        &[],
    );
    let out = build(&w, &unreachable, &["-t", "bad:5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1") && err.contains("127.0.0.1:1/nothing:1") && err.contains("pulling"),
        "{err}"
    );

    let missing = context(&w, "missing", "FROM BASE\nCOPY nope.txt /\n", &[]);
    let out = build(&w, &missing, &["-t", "bad:2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.txt") && err.contains("line 2"), "{err}");

    let failing = context(
        &w,
        "failing",
        "FROM BASE\nRUN echo about to fail && exit 3\n",
        &[],
    );
    let out = build(&w, &failing, &["-t", "bad:3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited with code 3"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("about to fail"),
        "the step's output was not shown"
    );
    // No image, container or lease is left.
    let images = w.ok(&["images"]);
    assert!(!images.contains("bad"), "{images}");
    let ps = w.ok(&["ps", "-a"]);
    assert!(!ps.contains("strata-build"), "{ps}");
    let leases = ok(w.stack.ctr().args(["leases", "ls"]), None);
    assert_eq!(leases.lines().count(), 1, "{leases}");
}

#[test]
fn dockerignore_and_wildcards_decide_what_is_copied() {
    let w = build_world();
    let dir = context(
        &w,
        "ignore",
        "FROM BASE\nCOPY . /ctx/\nCOPY src/*.txt /txt/\n",
        &[
            (".dockerignore", "*.log\nsecret/\n!keep.log\n"),
            ("a.log", "x"),
            ("keep.log", "k"),
            ("secret/key", "s"),
            ("src/one.txt", "1"),
            ("src/two.txt", "2"),
            ("src/three.md", "3"),
        ],
    );
    build_ok(&w, &dir, &["-t", "ignore:1"]);
    let ls = w.ok(&["run", "--rm", "ignore:1", "ls", "-A", "/ctx", "/txt"]);
    assert_eq!(
        ls,
        "/ctx:\n.dockerignore\nDockerfile\nkeep.log\nsrc\n\n/txt:\none.txt\ntwo.txt\n"
    );
}

#[test]
fn the_build_cache_survives_a_restart_and_prune_frees_it() {
    let mut w = build_world();
    let dir = context(&w, "prune", "FROM BASE\nRUN echo cached > /f\n", &[]);
    let base_snapshots = w.snapshots().lines().count();
    let first = image_id(&build_ok(&w, &dir, &["-t", "p:1"]));
    // The image goes; the collector runs (grace period 0): the cache still holds the layer.
    w.ok(&["rmi", "p:1"]);
    w.stack.gateway.restart();
    w.stack.images.restart();
    let again = build_ok(&w, &dir, &["-t", "p:1"]);
    assert!(again.contains("0 steps run"), "{again}");
    assert_eq!(image_id(&again), first);
    // Pruned and the image removed, the build's layer is freed.
    let pruned = w.ok(&["builder", "prune", "-f"]);
    assert!(!pruned.starts_with("removed 0 "), "{pruned}");
    w.ok(&["rmi", "p:1"]);
    w.eventually("the build's snapshot to be collected", || {
        w.snapshots().lines().count() == base_snapshots
    });
    let after = build_ok(&w, &dir, &["-t", "p:1"]);
    assert!(!after.contains("0 steps run"), "{after}");
}

/// The entries of the top layer of image `name`, read from `strata save`.
fn top_layer_entries(w: &World, name: &str) -> Vec<String> {
    use std::io::Read as _;
    let file = w
        .stack
        .path()
        .join(format!("{}.tar", name.replace([':', '/'], "_")));
    w.ok(&["save", "-o", file.to_str().unwrap(), name]);
    let mut blobs = std::collections::HashMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(&file).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        blobs.insert(p, data);
    }
    let blob =
        |d: &str| blobs[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))].clone();
    let index: Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let top = blob(layers.last().unwrap()["digest"].as_str().unwrap());
    let mut names = Vec::new();
    let mut t = tar::Archive::new(flate2::read::GzDecoder::new(&top[..]));
    for e in t.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    names.sort();
    names
}

#[test]
fn a_run_step_s_layer_holds_what_the_command_changed_and_nothing_of_its_sandbox() {
    let w = world_of(
        Stack::start_with_network(),
        vec![build_base_layer()],
        "base:1",
    );
    let dir = context(&w, "sandbox", "FROM BASE\nRUN echo x > /tmp/made\n", &[]);
    build_ok(&w, &dir, &["-t", "sandbox:1"]);
    // No mount point the runtime made (/proc, /sys, /dev, /etc/hosts, /etc/resolv.conf…).
    assert_eq!(top_layer_entries(&w, "sandbox:1"), vec!["tmp/", "tmp/made"]);
    let none = context(
        &w,
        "sandbox-none",
        "FROM BASE\nRUN echo y > /tmp/other\n",
        &[],
    );
    build_ok(&w, &none, &["-t", "sandbox:2", "--network", "none"]);
    assert_eq!(
        top_layer_entries(&w, "sandbox:2"),
        vec!["tmp/", "tmp/other"]
    );
}

#[test]
fn a_cancelled_build_stops_and_leaves_no_container() {
    let w = build_world();
    let dir = context(
        &w,
        "cancel",
        "FROM BASE\nRUN echo started && sleep 1000\n",
        &[],
    );
    let mut cli = w.stack.cli();
    cli.args(["build", "-t", "cancel:1", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped());
    // Ctrl-C as a terminal sends it: SIGINT's default action, whatever the test was started
    // with (a shell's background job, such as a CI run started with `&`, ignores SIGINT, and
    // the CLI would inherit that).
    // SAFETY: between fork and exec the closure only calls signal(2), which is
    // async-signal-safe, and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cli, || {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::SigHandler::SigDfl,
            )
            .map(drop)
            .map_err(std::io::Error::from)
        });
    }
    let mut child = cli.spawn().unwrap();
    // Until the step runs (its output is shown).
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the build ended before its RUN step started");
        if line.contains("started") {
            break;
        }
    }
    // Ctrl-C.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    child.wait().unwrap();
    w.eventually("the build's container to go", || {
        !w.ok(&["ps", "-a"]).contains("strata-build")
    });
    w.eventually("the build's lease to go", || {
        ok(w.stack.ctr().args(["leases", "ls"]), None)
            .lines()
            .count()
            == 1
    });
    assert!(!w.ok(&["images"]).contains("cancel"));
}

#[test]
fn a_built_image_goes_out_pushed_with_basic_auth_and_saved_and_runs_elsewhere() {
    use base64::Engine as _;
    let mut w = build_world();
    let reg = strata_testkit::registry::Registry::start_with_htpasswd(
        w.stack.path(),
        "builder",
        "b-pass",
    );
    let auth = base64::engine::general_purpose::STANDARD.encode("builder:b-pass");
    let config = w.stack.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        serde_json::json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    w.stack
        .gateway
        .restart_with_env(&[("DOCKER_CONFIG", config.to_str().unwrap())]);
    let dir = context(
        &w,
        "out",
        "FROM BASE\nCOPY msg /msg\nRUN cat /msg > /copied\nCMD [\"cat\", \"/copied\"]\n",
        &[("msg", "built here\n")],
    );
    let name = format!("{}/team/built:1", reg.addr);
    build_ok(&w, &dir, &["-t", &name]);
    w.ok(&["push", "-q", &name]);

    // Pulled back on a fresh stack (with the same credentials): the same image, and it runs.
    let mut fresh = Stack::start();
    fresh
        .gateway
        .restart_with_env(&[("DOCKER_CONFIG", config.to_str().unwrap())]);
    ok(fresh.cli().args(["pull", "-q", &name]), None);
    assert_eq!(
        ok(fresh.cli().args(["run", "--rm", &name]), None),
        "built here\n"
    );
    let id = |s: &Stack| {
        let v: Value = serde_json::from_str(&ok(s.cli().args(["inspect", &name]), None)).unwrap();
        v[0]["Id"].clone()
    };
    assert_eq!(id(&fresh), id(&w.stack));

    // Saved, imported by containerd's ctr into another stack, run there.
    let archive = w.stack.path().join("built.tar");
    w.ok(&["save", "-o", archive.to_str().unwrap(), &name]);
    let other = Stack::start();
    ok(
        other
            .ctr()
            .args(["images", "import", archive.to_str().unwrap()]),
        None,
    );
    assert_eq!(
        ok(other.cli().args(["run", "--rm", &name]), None),
        "built here\n"
    );
}

#[test]
fn onbuild_triggers_run_in_the_builds_of_images_from_it() {
    let w = build_world();
    let parent = context(
        &w,
        "parent",
        "FROM BASE\nONBUILD COPY hello.txt /from-child/\nONBUILD RUN cat /from-child/hello.txt > /ran\n",
        &[],
    );
    build_ok(&w, &parent, &["-t", "parent:1"]);
    let img = inspect(&w, "parent:1");
    assert_eq!(
        img["Config"]["OnBuild"],
        serde_json::json!([
            "COPY hello.txt /from-child/",
            "RUN cat /from-child/hello.txt > /ran"
        ])
    );
    let child = context(
        &w,
        "child",
        "FROM parent:1\nCMD [\"cat\", \"/ran\"]\n",
        &[("hello.txt", "from the child's context\n")],
    );
    build_ok(&w, &child, &["-t", "child:1"]);
    assert_eq!(
        w.ok(&["run", "--rm", "child:1"]),
        "from the child's context\n"
    );
    // The triggers ran; they are not passed on.
    let img = inspect(&w, "child:1");
    assert!(img["Config"]["OnBuild"].is_null(), "{img}");
}
