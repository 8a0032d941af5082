//! Images made and taken out: `strata commit` (a container's changes as a new image, through the
//! snapshotter's Diff service) and `strata save`/`load` (an OCI layout with Docker's
//! manifest.json), read back by strata, containerd's `ctr` and `skopeo`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::gateway::v1::gateway_client::GatewayClient;
use strata_testkit::registry::{Entry, busybox_layer, host_arch, layer, oci_image};
use strata_testkit::stack::Stack;
use strata_testkit::{ok, run, tool};

mod common;
use common::{World, world};

fn inspect(w: &World, name: &str) -> Value {
    let v: Value = serde_json::from_str(&w.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

fn history(w: &World, name: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&w.ok(&["history", "--json", name])).unwrap();
    v.as_array().unwrap().clone()
}

/// A container of the base image that wrote /w/file, committed as `name` with `extra` args.
fn committed(w: &World, container: &str, name: &str, extra: &[&str]) -> String {
    w.ok(&[
        "run",
        "--name",
        container,
        &w.image,
        "sh",
        "-c",
        "mkdir -p /w && echo hello > /w/file && rm /etc/os-release",
    ]);
    let mut args = vec!["commit"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[container, name]);
    w.ok(&args).trim().to_owned()
}

#[test]
fn a_committed_container_s_files_are_in_the_new_image() {
    let w = world();
    let base = inspect(&w, &w.image);
    let base_history = history(&w, &w.image);
    let id = committed(
        &w,
        "c1",
        "committed:1",
        &[
            "-c",
            r#"CMD ["cat", "file"]"#,
            "-c",
            "ENV A=1 B=\"x y\"",
            "-c",
            "WORKDIR /w",
            "-c",
            "EXPOSE 8080",
            "-c",
            "LABEL team=core",
            "-m",
            "first commit",
        ],
    );
    // The image ID printed is the new config's digest.
    let img = inspect(&w, "committed:1");
    assert_eq!(img["Id"], Value::String(id.clone()), "{img}");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_ne!(img["Id"], base["Id"]);
    let config = &img["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["cat", "file"]));
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(env, ["PATH=/bin", "A=1", "B=x y"]);
    assert_eq!(config["WorkingDir"], "/w");
    assert_eq!(config["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(config["Labels"], serde_json::json!({"team": "core"}));
    // One layer more, the base's below it.
    let layers = |v: &Value| v["RootFS"]["Layers"].as_array().unwrap().clone();
    assert_eq!(layers(&img).len(), layers(&base).len() + 1);
    assert_eq!(layers(&img)[..layers(&base).len()], layers(&base)[..]);
    // The layer is unpacked under its chain ID: a container of the image reuses it.
    let top = img["ChainIDs"].as_array().unwrap().last().unwrap().clone();
    assert!(
        w.snapshots().contains(top.as_str().unwrap()),
        "{}",
        w.snapshots()
    );
    // The back reference that kept the layer blob before the lease held it is gone.
    let content = ok(w.stack.ctr().args(["content", "ls"]), None);
    assert!(!content.contains("gc.bref.snapshot"), "{content}");
    // One history entry more: the container's command, the message.
    let h = history(&w, "committed:1");
    assert_eq!(h.len(), base_history.len() + 1);
    assert_eq!(
        h[0]["CreatedBy"],
        "sh -c mkdir -p /w && echo hello > /w/file && rm /etc/os-release"
    );
    assert_eq!(h[0]["Comment"], "first commit");
    assert_eq!(h[0]["EmptyLayer"], false);
    assert!(h[0]["Size"].as_i64().unwrap() > 0, "{h:?}");

    // A container of the new image sees what the first wrote, in the new working directory,
    // and not what it removed.
    assert_eq!(w.ok(&["run", "--rm", "committed:1"]), "hello\n");
    let out = w.cli(&["run", "--rm", "committed:1", "cat", "/etc/os-release"]);
    assert!(!out.status.success(), "a removed file came back");
    assert_eq!(
        w.ok(&[
            "run",
            "--rm",
            "committed:1",
            "sh",
            "-c",
            "echo $A; echo $B; pwd"
        ]),
        "1\nx y\n/w\n"
    );
    // The first container is untouched by it.
    w.ok(&["rm", "c1"]);
    // The image lives on its own: the content service holds its blobs and the collector
    // leaves them (grace period 0 in the test stack).
    assert_eq!(w.ok(&["run", "--rm", "committed:1"]), "hello\n");
}

#[test]
fn an_unchanged_container_gives_an_empty_layer_entry() {
    let w = world();
    let base = inspect(&w, &w.image);
    let base_history = history(&w, &w.image);
    w.ok(&["create", "--name", "idle", &w.image]);
    let id = w.ok(&["commit", "-c", "USER nobody", "idle", "same:1"]);
    let img = inspect(&w, "same:1");
    assert_eq!(img["Id"].as_str().unwrap(), id.trim());
    assert_eq!(img["RootFS"], base["RootFS"]);
    assert_eq!(img["Config"]["User"], "nobody");
    let h = history(&w, "same:1");
    assert_eq!(h.len(), base_history.len() + 1);
    assert_eq!(h[0]["EmptyLayer"], true, "{h:?}");
    assert_eq!(h[0]["Size"], 0);
    // Without a name, the image is known by its ID.
    let id = w.ok(&["commit", "idle"]).trim().to_owned();
    let by_id = inspect(&w, &id["sha256:".len()..][..12]);
    assert_eq!(by_id["Id"].as_str().unwrap(), id);
}

/// `ctr events` of the stack, its lines forwarded by a thread.
struct Events {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Events {
    /// Subscribes; returns once the subscription sees events (an exec in `container`).
    fn start(w: &World, container: &str) -> Self {
        let mut child = w
            .stack
            .ctr()
            .arg("events")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let e = Self { child, lines: rx };
        // Until an event of ours arrives the subscription may not be there yet: exec again
        // (the wait only paces the retries; nothing is asserted about time).
        let start = std::time::Instant::now();
        loop {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "ctr events never saw an exec\n{}",
                w.stack.logs()
            );
            w.ok(&["exec", container, "true"]);
            let got = e.lines.recv_timeout(std::time::Duration::from_millis(500));
            if got.is_ok_and(|l| l.contains("/tasks/")) {
                return e;
            }
        }
    }

    /// Lines up to (and with) the first that has `topic` and `also`.
    fn until(&self, topic: &str, also: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {topic} event; saw {seen:#?}"));
            let hit = line.contains(topic) && line.contains(also);
            seen.push(line);
            if hit {
                return seen;
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_running_container_is_paused_while_committed() {
    let w = world();
    w.ok(&["run", "-d", "--name", "busy", &w.image, "sleep", "300"]);
    w.ok(&["exec", "busy", "sh", "-c", "echo live > /live"]);
    let events = Events::start(&w, "busy");
    // --pause=false: not paused. An exec after it marks where its events end (the execs of
    // the subscription's start come before, with their exits).
    w.ok(&["commit", "--pause=false", "busy", "live:2"]);
    assert_eq!(
        w.cli(&["exec", "busy", "sh", "-c", "exit 42"])
            .status
            .code(),
        Some(42)
    );
    let before = events.until("/tasks/exit", "42");
    assert!(
        !before.iter().any(|l| l.contains("/tasks/paused")),
        "{before:#?}"
    );
    // By default: paused, then resumed.
    w.ok(&["commit", "busy", "live:1"]);
    let during = events.until("/tasks/resumed", "busy");
    assert!(
        during.iter().any(|l| l.contains("/tasks/paused")),
        "{during:#?}"
    );
    // Resumed after the commit: it still answers.
    assert_eq!(w.ok(&["exec", "busy", "cat", "/live"]), "live\n");
    assert_eq!(w.ok(&["run", "--rm", "live:1", "cat", "/live"]), "live\n");
    assert_eq!(w.ok(&["run", "--rm", "live:2", "cat", "/live"]), "live\n");
    w.ok(&["rm", "-f", "busy"]);
}

#[test]
fn bad_commits_are_refused_naming_the_input() {
    let w = world();
    let out = w.cli(&["commit", "nope", "x:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container \"nope\": not found"), "{err}");
    // NotFound on the wire, for other clients of the gateway.
    let socket = w.stack.socket().display().to_string();
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let channel = strata_grpc::client::channel(&socket).unwrap();
            let mut client = GatewayClient::new(channel);
            let req = strata_grpc::metadata::with_namespace(
                "default",
                pb::CommitRequest {
                    container: "nope".into(),
                    ..Default::default()
                },
            )
            .unwrap();
            client.commit(req).await.unwrap_err()
        });
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains("\"nope\""), "{status:?}");
    w.ok(&["create", "--name", "c", &w.image]);
    let out = w.cli(&["commit", "-c", "RUN echo", "c", "x:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"RUN\" is not an instruction commit takes"),
        "{err}"
    );
    let out = w.cli(&["commit", "-c", "EXPOSE 99999", "c", "x:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("EXPOSE 99999"),
        "{err}"
    );
    // Nothing was made.
    assert!(!w.cli(&["inspect", "x:1"]).status.success());
}

/// The files of a tar, by path.
fn tar_files(path: &Path) -> HashMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = HashMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(p, data);
        }
    }
    out
}

/// The layout of the archives `save` wrote (`one` of committed:1, `both` of it and the base
/// image): index.json names the image both ways; manifest.json as Docker writes it, its paths
/// in the archive; every blob matches its name. Answers committed:1 as inspected.
fn check_saved_layout(w: &World, one: &Path, both: &Path) -> Value {
    let files = tar_files(one);
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        "docker.io/library/committed:1"
    );
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "1");
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["committed:1"]));
    let config_path = manifest[0]["Config"].as_str().unwrap();
    let img = inspect(w, "committed:1");
    assert_eq!(
        config_path,
        format!(
            "blobs/sha256/{}",
            img["Id"].as_str().unwrap().trim_start_matches("sha256:")
        )
    );
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 2);
    for p in manifest[0]["Layers"].as_array().unwrap() {
        assert!(files.contains_key(p.as_str().unwrap()), "{p}");
    }
    for (p, data) in &files {
        if let Some(hex) = p.strip_prefix("blobs/sha256/") {
            let got = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(data));
            assert_eq!(got, hex, "{p}");
        }
    }
    let files = tar_files(both);
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 2);
    img
}

/// skopeo reads the archive `one` both as an OCI archive and as a Docker archive.
fn read_with_skopeo(dir: &Path, one: &Path) {
    let skopeo = tool("skopeo", "skopeo");
    for transport in ["oci-archive", "docker-archive"] {
        let src = format!("{transport}:{}", one.display());
        let out = ok(
            std::process::Command::new(&skopeo).args(["inspect", &src]),
            None,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{transport}: {v}");
        let copy = dir.join(format!("copy-{transport}"));
        ok(
            std::process::Command::new(&skopeo).args([
                "copy",
                &src,
                &format!("oci:{}:copied", copy.display()),
            ]),
            None,
        );
    }
}

#[test]
fn saved_images_are_read_by_ctr_skopeo_and_strata_load() {
    let w = world();
    committed(
        &w,
        "c1",
        "committed:1",
        &["-c", r#"CMD ["cat", "/w/file"]"#],
    );
    let dir = w.stack.path();
    let one = dir.join("one.tar");
    let both = dir.join("both.tar");
    w.ok(&["save", "-o", one.to_str().unwrap(), "committed:1"]);
    w.ok(&[
        "save",
        "-o",
        both.to_str().unwrap(),
        "committed:1",
        &w.image,
    ]);
    // To standard output when it is not a terminal: the same bytes (the archive depends only
    // on the images).
    let piped = run(w.stack.cli().args(["save", "committed:1"]), None);
    assert!(piped.status.success());
    assert!(piped.stdout == std::fs::read(&one).unwrap());

    let img = check_saved_layout(&w, &one, &both);
    read_with_skopeo(dir, &one);

    // containerd's ctr imports it into a fresh stack, where strata runs it.
    let fresh = Stack::start();
    ok(
        fresh
            .ctr()
            .args(["images", "import", one.to_str().unwrap()]),
        None,
    );
    let out = run(fresh.cli().args(["run", "--rm", "committed:1"]), None);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fresh.logs()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    // strata load, into another fresh stack: both images, runnable; from standard input too.
    let fresh = Stack::start();
    ok(
        fresh.cli().args(["load", "-i", both.to_str().unwrap()]),
        None,
    );
    ok(fresh.cli().arg("load"), Some(&std::fs::read(&one).unwrap()));
    let images = ok(fresh.cli().args(["images"]), None);
    assert!(
        images.contains("committed") && images.contains("busybox"),
        "{images}"
    );
    let out = ok(fresh.cli().args(["run", "--rm", "committed:1"]), None);
    assert_eq!(out, "hello\n");
    // The same image: same ID on both sides.
    let loaded: Value =
        serde_json::from_str(&ok(fresh.cli().args(["inspect", "committed:1"]), None)).unwrap();
    assert_eq!(loaded[0]["Id"], img["Id"]);
}

#[test]
fn save_of_an_unknown_image_fails_and_leaves_no_file() {
    let w = world();
    let out_file = w.stack.path().join("none.tar");
    let out = w.cli(&["save", "-o", out_file.to_str().unwrap(), "nope:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nope:1\""), "{err}");
    assert!(!out_file.exists());
    let leftovers: Vec<_> = std::fs::read_dir(w.stack.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The entries of layer `n` of image `name`, as `tar tv` lists them.
fn layer_entries(w: &World, name: &str, n: usize) -> String {
    let img = inspect(w, name);
    let d = img["Manifest"]["Layers"][n]["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let ctr = strata_testkit::stack::ctr_path();
    let script = format!(
        "{} --address {} content get {d} | tar tz",
        ctr.display(),
        w.stack.socket().display()
    );
    ok(std::process::Command::new("sh").args(["-c", &script]), None)
}

#[test]
fn a_container_that_ran_and_changed_nothing_gives_an_empty_layer_entry() {
    // As real images do, this one has the directories the runtime mounts on.
    let w = world();
    let layout = w.stack.path().join("with-mountpoints");
    let dirs = ["dev", "proc", "sys"].map(|d| Entry::Dir(d.into()));
    oci_image(&layout, &[busybox_layer(), layer(&dirs)], host_arch());
    let image = w.registry.push(&layout, "full:1");
    w.ok(&["pull", "-q", &image]);
    w.ok(&["run", "--name", "ran", &image, "true"]);
    w.ok(&["commit", "ran", "ran:1"]);
    let h = history(&w, "ran:1");
    assert_eq!(h[0]["EmptyLayer"], true, "{h:?}");
    assert_eq!(h[0]["CreatedBy"], "true");
    // One that wrote has exactly what it wrote (and its parent directory) in its layer.
    w.ok(&[
        "run",
        "--name",
        "wrote",
        &image,
        "sh",
        "-c",
        "echo x > /tmp/x",
    ]);
    w.ok(&["commit", "wrote", "wrote:1"]);
    assert_eq!(layer_entries(&w, "wrote:1", 2), "tmp/\ntmp/x\n");
}

#[test]
fn an_image_with_a_docker_manifest_commits_to_one() {
    let w = world();
    // A classic `docker save` archive (manifest.json, uncompressed layers, no index.json), made
    // from a saved one: import makes a Docker schema 2 manifest for it.
    let saved = w.stack.path().join("saved.tar");
    w.ok(&["save", "-o", saved.to_str().unwrap(), &w.image]);
    let files = tar_files(&saved);
    let mut manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let classic = w.stack.path().join("classic.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&classic).unwrap());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    };
    let config = manifest[0]["Config"].as_str().unwrap().to_owned();
    add(&config, &files[&config]);
    for (i, l) in manifest[0]["Layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        let gz = w.stack.path().join(format!("layer{i}.gz"));
        std::fs::write(&gz, &files[l.as_str().unwrap()]).unwrap();
        let tar = run(std::process::Command::new("gzip").arg("-dc").arg(&gz), None);
        assert!(tar.status.success());
        let path = format!("layer{i}/layer.tar");
        add(&path, &tar.stdout);
        *l = Value::String(path);
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap();
    w.ok(&["rmi", &w.image]);
    w.ok(&["load", "-i", classic.to_str().unwrap()]);
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    assert_eq!(inspect(&w, &w.image)["Manifest"]["MediaType"], docker);

    committed(&w, "c1", "docker:1", &[]);
    let img = inspect(&w, "docker:1");
    assert_eq!(img["Manifest"]["MediaType"], docker);
    assert_eq!(
        img["Manifest"]["Layers"][1]["MediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        w.ok(&["run", "--rm", "docker:1", "cat", "/w/file"]),
        "hello\n"
    );
}
