//! Fixtures for the registry client's tests: a real `docker-registry` on a free loopback port
//! with its own storage, OCI image layouts built by hand and pushed with `skopeo`, and a tiny
//! scriptable HTTP server for what a real registry will not do on demand.
#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use sha2::Digest as _;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_core::Digest;
use strata_registry::{Client, ClientConfig, media_types};

/// Liveness guard for a whole test; never a speed assertion.
pub const TEST_LIMIT: Duration = Duration::from_secs(180);
const START_LIMIT: Duration = Duration::from_secs(30);
const PUSH_LIMIT: Duration = Duration::from_secs(120);

/// User and password of the htpasswd-protected registry.
pub const USER: &str = "strata";
pub const PASSWORD: &str = "strata-secret";
/// bcrypt (cost 4) of [`PASSWORD`], as `htpasswd -B` writes it.
const PASSWORD_BCRYPT: &str = "$2b$04$njxVTPwD2wUXCqEteFgOu.gWt3Cw5LZ7sW.IxwAPervlQFNcr2UT.";

/// Runs a test body under [`TEST_LIMIT`].
pub async fn guard<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test did not finish in time (liveness guard)");
}

/// A client that reads no Docker config and retries quickly.
pub fn client() -> Client {
    Client::new(config()).unwrap()
}

pub fn config() -> ClientConfig {
    ClientConfig {
        docker_config_dir: None,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..ClientConfig::default()
    }
}

/// A `docker-registry serve` process on 127.0.0.1; killed on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: String,
    log: PathBuf,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// A registry that requires basic auth as [`USER`]/[`PASSWORD`].
    pub fn start_with_auth() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(auth: bool) -> Self {
        let mut last_log = String::new();
        // A port probed free can be taken before the registry binds it: then try another.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let storage = dir.path().join("storage");
            let mut config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: strata-test\n",
                storage.display()
            );
            if auth {
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{USER}:{PASSWORD_BCRYPT}\n")).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let log = dir.path().join("registry.log");
            let log_file = std::fs::File::create(&log).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("starting docker-registry (Debian package docker-registry)");
            let mut reg = Self {
                child,
                dir,
                addr,
                log,
            };
            match reg.wait_ready() {
                Ok(()) => return reg,
                Err(log_text) => last_log = log_text,
            }
        }
        panic!("docker-registry did not start; last log:\n{last_log}");
    }

    /// Waits until `GET /v2/` answers 200 or 401. On failure returns the log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}:\n{}", self.log_text()));
            }
            if let Some(code) = http_status(&self.addr, "/v2/")
                && (code == 200 || code == 401)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready in time:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the filesystem driver keeps a blob's (or manifest's) bytes.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `skopeo copy` of `oci:<layout>:<tag>` to `<addr>/<repo>:<tag>`; `all` copies every
    /// image of an index.
    pub async fn push(&self, layout: &OciLayout, tag: &str, repo: &str, all: bool) {
        let creds = format!("{USER}:{PASSWORD}");
        let mut cmd = tokio::process::Command::new("skopeo");
        let home = layout.dir.join(".home");
        std::fs::create_dir_all(&home).unwrap();
        cmd.arg("--insecure-policy")
            .arg("copy")
            .arg("--quiet")
            .arg("--preserve-digests")
            .arg("--dest-tls-verify=false");
        if all {
            cmd.arg("--all");
        }
        if std::fs::metadata(self.dir.path().join("htpasswd")).is_ok() {
            cmd.arg("--dest-creds").arg(&creds);
        } else {
            cmd.arg("--dest-no-creds");
        }
        cmd.arg(format!("oci:{}:{tag}", layout.dir.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            // Keep skopeo away from the user's auth files and registries config.
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &home)
            .env("XDG_CONFIG_HOME", &home)
            .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(PUSH_LIMIT, cmd.output())
            .await
            .expect("skopeo copy did not finish in time")
            .expect("running skopeo (Debian package skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}\n{}\nregistry log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-shot blocking `GET` returning the status code, or `None` if nothing answered.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A blob written into a layout.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }
}

/// A single-platform image as built into a layout.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
pub struct OciLayout {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    refs: Vec<serde_json::Value>,
}

impl OciLayout {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Self {
            _tmp: tmp,
            dir,
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    pub fn add_blob(&self, media_type: &str, bytes: Vec<u8>) -> Blob {
        let digest = Digest::of(&bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
        Blob {
            media_type: media_type.to_owned(),
            digest,
            bytes,
        }
    }

    /// An image for `os/arch[/variant]` with one gzip layer per entry of `layers` (each a list
    /// of files).
    pub fn add_image(&self, platform: &str, layers: &[Vec<(&str, Vec<u8>)>]) -> Image {
        let parts: Vec<&str> = platform.split('/').collect();
        let (os, arch, variant) = (parts[0], parts[1], parts.get(2).copied().unwrap_or(""));
        let mut layer_blobs = Vec::new();
        let mut diff_ids = Vec::new();
        for files in layers {
            let tar = tar_of(files);
            diff_ids.push(Digest::of(&tar).to_string());
            layer_blobs.push(self.add_blob(media_types::OCI_LAYER_GZIP, gzip(&tar)));
        }
        let mut config = serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": os,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "/",
                "Labels": {"org.example.platform": platform},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "strata test"}],
        });
        if !variant.is_empty() {
            config["variant"] = serde_json::json!(variant);
        }
        let config = self.add_blob(
            media_types::OCI_CONFIG,
            serde_json::to_vec(&config).unwrap(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layer_blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = self.add_blob(
            media_types::OCI_MANIFEST,
            serde_json::to_vec_pretty(&manifest).unwrap(),
        );
        Image {
            manifest,
            config,
            layers: layer_blobs,
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant: variant.to_owned(),
        }
    }

    /// An OCI index over `images`, with their platforms.
    pub fn add_index(&self, images: &[&Image]) -> Blob {
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                let mut d = i.manifest.descriptor();
                let mut platform = serde_json::json!({"architecture": i.architecture, "os": i.os});
                if !i.variant.is_empty() {
                    platform["variant"] = serde_json::json!(i.variant);
                }
                d["platform"] = platform;
                d
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": manifests,
        });
        self.add_blob(media_types::OCI_INDEX, serde_json::to_vec(&index).unwrap())
    }

    /// Names `blob` (a manifest or index) `tag` in `index.json`.
    pub fn tag(&mut self, tag: &str, blob: &Blob) {
        let mut d = blob.descriptor();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(d);
        self.write_index();
    }

    fn write_index(&self) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": self.refs,
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A tar archive of regular files (deterministic: fixed mode, owner and time).
pub fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        builder.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// `n` bytes that do not compress (xorshift), so a gzip layer stays about that large.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// sha256 state after hashing `data`, for resuming a verification.
pub fn hasher_of(data: &[u8]) -> sha2::Sha256 {
    let mut h = sha2::Sha256::new();
    h.update(data);
    h
}

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_lowercase()).map(String::as_str)
    }
}

/// A response the fake server sends.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

type Handler = dyn Fn(&Request, usize) -> Response + Send + Sync;

/// A scriptable HTTP/1.1 server on 127.0.0.1: `handler(request, n)` answers the n-th request
/// (0-based, counting all requests). One request per connection. Stops on drop.
pub struct FakeServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(
        handler: impl Fn(&Request, usize) -> Response + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = serve_one(stream, handler, seen).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// `127.0.0.1:<port>`, the registry part of references to this server.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let req = Request {
        method,
        path,
        headers,
    };
    let n = {
        let mut s = seen.lock().unwrap();
        s.push(req.clone());
        s.len() - 1
    };
    let resp = handler(&req, n);
    let mut out = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    ));
    stream.write_all(out.as_bytes()).await?;
    stream.write_all(&resp.body).await?;
    stream.shutdown().await
}
