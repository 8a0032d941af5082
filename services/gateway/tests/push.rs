//! Tag and push end to end: a real registry (Debian's docker-registry on 127.0.0.1), the whole
//! strata stack on temporary sockets, the `strata` CLI, and skopeo reading what was pushed.
//! An image pushed from one stack and pulled back on a fresh one has the same digest; the
//! registry's access log tells which blobs were skipped, mounted or uploaded, and how.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use strata_core::Digest;
use strata_testkit::registry::{
    Entry, Layer, Registry, busybox_layer, host_arch, layer, oci_image, oci_index,
};
use strata_testkit::stack::Stack;
use strata_testkit::{ok, run, tool};

fn layout(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn app_layer() -> Layer {
    layer(&[
        Entry::Dir("app".into()),
        Entry::File("app/hello".into(), b"hello from app\n".to_vec(), 0o644),
    ])
}

/// The digest the stack's image `name` points at, from `strata images --json`.
fn image_digest(stack: &Stack, name: &str) -> String {
    let out = ok(stack.cli().args(["images", "--json"]), None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|i| i["Name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in {out}"))["Digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `Digest:` line of a pull's output.
fn pulled_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .trim()
        .to_owned()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    run(Command::new(tool("skopeo", "skopeo")).args(args), None)
}

/// sha256 of what the registry serves for `reference`'s manifest, read by skopeo.
fn raw_digest(reference: &str, creds: Option<&str>) -> String {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    let target = format!("docker://{reference}");
    args.push(&target);
    let out = skopeo(&args);
    assert!(
        out.status.success(),
        "skopeo inspect --raw {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Digest::of(&out.stdout).to_string()
}

/// The registry's access-log lines for requests of `method` under `path_prefix`.
fn requests(reg: &Registry, method: &str, path_prefix: &str) -> Vec<String> {
    let needle = format!("\"{method} {path_prefix}");
    reg.log_text()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// Uploads (not mounts) the registry received for repository `repo`: session starts without
/// `mount=`, chunks and closing PUTs.
fn uploads(reg: &Registry, repo: &str) -> usize {
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    let starts = requests(reg, "POST", &prefix)
        .iter()
        .filter(|l| !l.contains("mount="))
        .count();
    starts + requests(reg, "PATCH", &prefix).len() + requests(reg, "PUT", &prefix).len()
}

fn write_blob(layout: &Path, data: &[u8]) -> serde_json::Value {
    let d = Digest::of(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(d.hex()), data).unwrap();
    serde_json::json!({"digest": d.to_string(), "size": data.len()})
}

fn with_type(mut desc: serde_json::Value, media_type: &str) -> serde_json::Value {
    desc["mediaType"] = media_type.into();
    desc
}

/// An OCI layout whose index has one manifest per platform in `arches`, all over the same
/// config and `layers` (they differ by an annotation): every blob of every platform stays
/// referenced from the one an import unpacks.
fn shared_index(layout: &Path, layers: &[Layer], arches: &[&str]) {
    let descs: Vec<_> = layers
        .iter()
        .map(|(blob, _)| {
            with_type(
                write_blob(layout, blob),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        })
        .collect();
    let config = serde_json::json!({
        "architecture": arches[0],
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()},
    });
    let config = with_type(
        write_blob(layout, &serde_json::to_vec(&config).unwrap()),
        "application/vnd.oci.image.config.v1+json",
    );
    let children: Vec<_> = arches
        .iter()
        .map(|arch| {
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config,
                "layers": descs,
                "annotations": {"test.platform": arch},
            });
            let mut d = with_type(
                write_blob(layout, &serde_json::to_vec(&m).unwrap()),
                "application/vnd.oci.image.manifest.v1+json",
            );
            d["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
            d
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    });
    let mut root = with_type(
        write_blob(layout, &serde_json::to_vec(&index).unwrap()),
        "application/vnd.oci.image.index.v1+json",
    );
    root["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "1"});
    let outer = serde_json::json!({"schemaVersion": 2, "manifests": [root]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&outer).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

fn tar_of(dir: &Path, out: &Path) {
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(out)
            .arg("."),
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_image_pulls_back_the_same_with_mounts_and_skips() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let l = layout(stack.dir.path(), "app-layout");
    oci_image(&l, &[busybox_layer(), app_layer()], host_arch());
    let src = reg.push(&l, "src/app:1");
    let src_digest = raw_digest(&src, None);

    ok(stack.cli().args(["pull", "-q", &src]), None);
    let dst = format!("{}/dst/app:2", reg.addr);
    // By ID prefix, as `docker tag` takes it.
    let id = {
        let out = ok(stack.cli().args(["images", "--json"]), None);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["ID"].as_str().unwrap()[7..19].to_owned()
    };
    ok(stack.cli().args(["tag", &id, &dst]), None);
    assert_eq!(image_digest(&stack, &dst), image_digest(&stack, &src));

    let out = ok(stack.cli().args(["push", "-q", &dst]), None);
    assert!(out.contains("The push refers to repository"), "{out}");
    assert!(out.contains(&format!("2: digest: {src_digest}")), "{out}");
    // Every blob (config and both layers) came from src/app on this registry: mounted.
    let mounts = requests(&reg, "POST", "/v2/dst/app/blobs/uploads/?");
    assert_eq!(
        mounts.iter().filter(|l| l.contains("mount=")).count(),
        3,
        "{mounts:?}"
    );
    assert_eq!(out.matches("Mounted from src/app").count(), 3, "{out}");
    assert_eq!(uploads(&reg, "dst/app"), 0, "{}", reg.log_text());

    // skopeo reads it, and the registry serves exactly the manifest strata has.
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{dst}")]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], src_digest.as_str());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(raw_digest(&dst, None), src_digest);

    // A second push sends no blob: HEAD finds each.
    let before = requests(&reg, "POST", "/v2/dst/app/blobs/uploads/").len();
    let out = ok(stack.cli().args(["push", "-q", &dst]), None);
    assert_eq!(out.matches("Layer already exists").count(), 3, "{out}");
    assert_eq!(
        requests(&reg, "POST", "/v2/dst/app/blobs/uploads/").len(),
        before,
        "{}",
        reg.log_text()
    );

    // A fresh stack pulls it back: same digest, same files.
    let fresh = Stack::start();
    let out = ok(fresh.cli().args(["pull", &dst]), None);
    assert_eq!(pulled_digest(&out), src_digest);
    assert_eq!(image_digest(&fresh, &dst), src_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_index_is_uploaded_whole_and_in_chunks() {
    let mut stack = Stack::start();
    // Chunks of 16 MiB (the default pushes blobs up to 1 GiB whole).
    stack
        .gateway
        .restart_with_env(&[("STRATA_CHUNKED_UPLOAD_THRESHOLD", "16777216")]);
    let reg = Registry::start(stack.dir.path());
    // A layer larger than the chunked-upload threshold (16 MiB): incompressible bytes.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let big: Vec<u8> = (0..20 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let big = layer(&[Entry::File("big".into(), big, 0o644)]);
    let big_digest = Digest::of(&big.0).to_string();
    assert!(big.0.len() > 16 << 20);
    let small = app_layer();
    let small_digest = Digest::of(&small.0).to_string();
    // Two platforms over the same blobs, so the import keeps both complete.
    let other = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let l = layout(stack.dir.path(), "multi");
    shared_index(&l, &[small, big], &[host_arch(), other]);
    let archive = stack.dir.path().join("multi.tar");
    tar_of(&l, &archive);
    let name = format!("{}/multi/app:1", reg.addr);
    ok(
        stack.cli().args(["import", "--name", &name]).arg(&archive),
        None,
    );
    let index_digest = image_digest(&stack, &name);

    let out = ok(stack.cli().args(["push", "-q", &name]), None);
    assert!(out.contains(&format!("1: digest: {index_digest}")), "{out}");
    let prefix = "/v2/multi/app/blobs/uploads/";
    // The big layer went in chunks (PATCH with Content-Range), then a closing PUT.
    let patches = requests(&reg, "PATCH", prefix);
    assert_eq!(patches.len(), 2, "{}", reg.log_text());
    // The small ones whole: one PUT with the digest each, the big one's closing PUT.
    let puts = requests(&reg, "PUT", prefix);
    let with = |d: &str| {
        let encoded = d.replace(':', "%3A");
        puts.iter()
            .filter(|l| {
                l.contains(&format!("digest={encoded}")) || l.contains(&format!("digest={d}"))
            })
            .count()
    };
    assert_eq!(with(&small_digest), 1, "{puts:?}");
    assert_eq!(with(&big_digest), 1, "{puts:?}");
    // Child manifests by digest first, then the index by tag.
    let manifests = requests(&reg, "PUT", "/v2/multi/app/manifests/");
    assert_eq!(manifests.len(), 3, "{manifests:?}");
    assert!(manifests[2].contains("/manifests/1 "), "{manifests:?}");
    assert_eq!(raw_digest(&name, None), index_digest);

    let fresh = Stack::start();
    let out = ok(fresh.cli().args(["pull", &name]), None);
    assert_eq!(pulled_digest(&out), index_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_index_pushes_its_one_platform_with_a_note() {
    let stack = Stack::start();
    let reg = Registry::start(stack.dir.path());
    let other = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let mine = layer(&[Entry::File("platform".into(), b"mine".to_vec(), 0o644)]);
    let theirs = layer(&[Entry::File("platform".into(), b"theirs".to_vec(), 0o644)]);
    let l = layout(stack.dir.path(), "multi");
    oci_index(&l, &[(other, vec![theirs]), (host_arch(), vec![mine])]);
    let src = reg.push(&l, "src/multi:1");
    ok(stack.cli().args(["pull", "-q", &src]), None);
    let dst = format!("{}/dst/one:1", reg.addr);
    ok(stack.cli().args(["tag", &src, &dst]), None);
    let out = ok(stack.cli().args(["push", "-q", &dst]), None);
    assert!(out.contains("Note: index"), "{out}");
    assert!(out.contains("missing here"), "{out}");
    // What went is this platform's manifest, the one strata pulled.
    let pushed = raw_digest(&dst, None);
    let inspect = ok(stack.cli().args(["inspect", &src]), None);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Manifest"]["Digest"], pushed.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_refuses_without_credentials_and_accepts_with_them() {
    let mut stack = Stack::start();
    let reg = Registry::start_with_htpasswd(stack.dir.path(), "pusher", "s3cret-pw");
    let l = layout(stack.dir.path(), "img");
    oci_image(&l, &[app_layer()], host_arch());
    let archive = stack.dir.path().join("img.tar");
    tar_of(&l, &archive);
    let name = format!("{}/secure/app:1", reg.addr);
    ok(
        stack.cli().args(["import", "--name", &name]).arg(&archive),
        None,
    );
    // The gateway reads credentials where `docker login` writes them: none there yet.
    let docker_config = stack.dir.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    stack
        .gateway
        .restart_with_env(&[("DOCKER_CONFIG", docker_config.to_str().unwrap())]);

    let out = run(stack.cli().args(["push", "-q", &name]), None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // The registry's own error code and message.
    assert!(err.contains("UNAUTHORIZED"), "{err}");
    assert!(err.contains("authentication required"), "{err}");
    assert!(err.contains(&reg.addr), "{err}");
    let creds = "pusher:s3cret-pw";
    let inspect = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        creds,
        &format!("docker://{name}"),
    ]);
    assert!(!inspect.status.success(), "a refused push left a manifest");

    // Wrong password: refused with the registry's message.
    let auth = |u: &str, p: &str| {
        serde_json::json!({"auths": {reg.addr.clone(): {"auth": base64_line(&format!("{u}:{p}"))}}})
            .to_string()
    };
    std::fs::write(docker_config.join("config.json"), auth("pusher", "wrong")).unwrap();
    let out = run(stack.cli().args(["push", "-q", &name]), None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("UNAUTHORIZED"), "{err}");

    // With the credentials (read at once, as after `docker login`), the push goes through.
    std::fs::write(
        docker_config.join("config.json"),
        auth("pusher", "s3cret-pw"),
    )
    .unwrap();
    let out = ok(stack.cli().args(["push", "-q", &name]), None);
    let digest = image_digest(&stack, &name);
    assert!(out.contains(&format!("1: digest: {digest}")), "{out}");
    assert_eq!(raw_digest(&name, Some(creds)), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_images_are_named_in_the_error() {
    let stack = Stack::start();
    let out = run(stack.cli().args(["push", "127.0.0.1:1/nosuch:1"]), None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("image \"127.0.0.1:1/nosuch:1\": not found"),
        "{err}"
    );
    let out = run(stack.cli().args(["tag", "nosuch", "other"]), None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("image \"nosuch\": not found"), "{err}");
}

/// Standard base64, for a Docker config's `auth` field.
fn base64_line(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
