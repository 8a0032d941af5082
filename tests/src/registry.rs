//! A real registry for tests: Debian's `docker-registry` on 127.0.0.1, and images built here
//! (layers from files, or from busybox-static) pushed to it with skopeo.

use crate::{ok, tool};
use sha2::Digest as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Option<Child>,
    pub addr: String,
    pub storage: PathBuf,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// A registry that wants HTTP basic authentication for every request: `user` with
    /// `password` (an htpasswd file made by apache2-utils' `htpasswd -B`).
    pub fn start_with_htpasswd(dir: &Path, user: &str, password: &str) -> Self {
        let line = ok(
            Command::new(tool("htpasswd", "apache2-utils")).args(["-Bbn", user, password]),
            None,
        );
        let file = dir.join("htpasswd");
        std::fs::write(&file, line.trim()).unwrap();
        Self::start_with(
            dir,
            &format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                file.display()
            ),
        )
    }

    /// A registry whose configuration ends with `extra` (YAML, top-level keys).
    fn start_with(dir: &Path, extra: &str) -> Self {
        let bin = tool("docker-registry", "docker-registry");
        let storage = dir.join("registry-storage");
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra}",
                storage.display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            addr,
            storage,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many GET requests for this blob the registry answered.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
            .count()
    }

    /// The file holding a blob's bytes in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes an OCI layout directory (its `latest`) as `repo:tag`; returns the full reference.
    pub fn push(&self, layout: &Path, repo_tag: &str) -> String {
        let dest = format!("{}/{repo_tag}", self.addr);
        ok(
            Command::new(tool("skopeo", "skopeo"))
                .args([
                    "copy",
                    "--all",
                    "--quiet",
                    "--dest-tls-verify=false",
                    "--insecure-policy",
                ])
                .arg(format!("oci:{}:latest", layout.display()))
                .arg(format!("docker://{dest}")),
            None,
        );
        dest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An entry of a layer.
pub enum Entry {
    File(String, Vec<u8>, u32),
    Dir(String),
    Symlink(String, String),
    /// `.wh.<name>` in the given directory.
    Whiteout(String),
    /// A named pipe.
    Fifo(String),
}

/// A gzip layer: (blob, diff ID).
pub fn layer(entries: &[Entry]) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::Whiteout(p) => {
                let path = Path::new(p);
                let name = format!(".wh.{}", path.file_name().unwrap().to_string_lossy());
                let full = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.join(name),
                    _ => PathBuf::from(name),
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, full, &[][..]).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// The busybox-static binary as a base layer: /bin/busybox and /bin/sh, /bin/ls, … links.
pub fn busybox_layer() -> Layer {
    busybox_layer_with(
        &[
            "sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "hostname", "ps", "mount",
            "dd", "head",
        ],
        vec![Entry::File(
            "etc/os-release".into(),
            b"NAME=strata-test\n".to_vec(),
            0o644,
        )],
    )
}

/// /bin/busybox with a link in /bin for each of `applets`, /etc and /tmp, and `extra` entries.
pub fn busybox_layer_with(applets: &[&str], extra: Vec<Entry>) -> Layer {
    let bin = std::fs::read("/bin/busybox")
        .or_else(|_| std::fs::read("/usr/bin/busybox"))
        .expect("busybox-static is not installed (apt-get install busybox-static)");
    let mut entries = vec![
        Entry::Dir("bin".into()),
        Entry::Dir("etc".into()),
        Entry::Dir("tmp".into()),
        Entry::File("bin/busybox".into(), bin, 0o755),
    ];
    entries.extend(extra);
    for cmd in applets {
        entries.push(Entry::Symlink(format!("bin/{cmd}"), "busybox".into()));
    }
    layer(&entries)
}

fn write_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let hex = hex::encode(sha2::Sha256::digest(data));
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len())
}

/// Writes a single-platform image (layers bottom first) into a new OCI layout at `layout`;
/// returns the manifest digest.
pub fn oci_image(layout: &Path, layers: &[Layer], arch: &str) -> String {
    let (digest, size) = image_manifest(layout, layers, arch);
    index(layout, &[(digest.clone(), size, None)]);
    digest
}

/// A layer as [`layer`] returns it: (gzip blob, diff ID).
pub type Layer = (Vec<u8>, String);

/// Writes a multi-platform index: one image per (arch, layers).
pub fn oci_index(layout: &Path, images: &[(&str, Vec<Layer>)]) {
    let mut entries = Vec::new();
    for (arch, layers) in images {
        let (d, s) = image_manifest(layout, layers, arch);
        entries.push((d, s, Some((*arch).to_owned())));
    }
    let children: Vec<_> = entries
        .iter()
        .map(|(d, s, arch)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d, "size": s,
                "platform": {"os": "linux", "architecture": arch.clone().unwrap_or_default()},
            })
        })
        .collect();
    let inner = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    });
    let bytes = serde_json::to_vec(&inner).unwrap();
    let (d, s) = write_blob(layout, &bytes);
    let outer = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d, "size": s,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
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

fn image_manifest(layout: &Path, layers: &[Layer], arch: &str) -> (String, usize) {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (i, (blob, diff_id)) in layers.iter().enumerate() {
        let (d, s) = write_blob(layout, blob);
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s,
        }));
        diff_ids.push(diff_id.clone());
        history.push(serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("strata-test layer {i}"),
        }));
    }
    history.push(serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "created_by": "CMD [\"/bin/sh\"]",
        "empty_layer": true,
    }));
    let config = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    let (cd, cs) = write_blob(layout, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    });
    write_blob(layout, &serde_json::to_vec(&manifest).unwrap())
}

fn index(layout: &Path, manifests: &[(String, usize, Option<String>)]) {
    let m: Vec<_> = manifests
        .iter()
        .map(|(d, s, _)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d, "size": s,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            })
        })
        .collect();
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": m});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
