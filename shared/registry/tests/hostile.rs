//! A hostile registry cannot make the client read or hold more than its bounds: manifests,
//! indexes and configs stop at their size caps, blobs at their declared size, whether the
//! server announces the excess, lies about it or announces no length at all. After each refusal
//! the same client still pulls from the same server.
//!
//! The server is written here (std `TcpListener`, HTTP/1.1 by hand) because a real registry
//! never sends a body longer than the blob.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use strata_core::Digest;
use strata_registry::{
    Client, ClientConfig, MAX_CONFIG_SIZE, MAX_INDEX_SIZE, MAX_MANIFEST_SIZE, Reference,
    RegistryError, media_types,
};

/// What the server answers to one request.
#[derive(Clone)]
enum Answer {
    /// 200 with this content type and body, and a true `Content-Length`.
    Body(&'static str, Vec<u8>),
    /// 200 with no `Content-Length`; the body goes on until the client hangs up (HTTP/1.0
    /// style, the end marked by closing the connection).
    Endless(&'static str),
    /// The same in chunked transfer encoding.
    EndlessChunked(&'static str),
    /// 200 announcing a `Content-Length` of this many bytes, then sending them (or until the
    /// client hangs up).
    Announce(&'static str, u64),
}

/// A registry that answers each path as its table says (404 otherwise). One request per
/// connection. Counts the bytes of body it managed to send.
struct Hostile {
    host: String,
    routes: Arc<Mutex<Vec<(String, Answer)>>>,
    sent: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Hostile {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let routes: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
        let sent = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (r, s, q) = (routes.clone(), sent.clone(), requests.clone());
        // The thread lives as long as the test process; it only ever waits in accept.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (r, s, q) = (r.clone(), s.clone(), q.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &r, &s, &q);
                });
            }
        });
        Self {
            host,
            routes,
            sent,
            requests,
        }
    }

    fn route(&self, path: &str, answer: Answer) {
        let mut routes = self.routes.lock().unwrap();
        routes.retain(|(p, _)| p != path);
        routes.push((path.to_owned(), answer));
    }

    fn reference(&self, tail: &str) -> Reference {
        Reference::parse(&format!("{}/hostile/repo{tail}", self.host)).unwrap()
    }
}

fn serve(
    mut conn: TcpStream,
    routes: &Mutex<Vec<(String, Answer)>>,
    sent: &AtomicUsize,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let answer = routes
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, a)| a.clone());
    let filler = vec![b' '; 64 << 10];
    let send = |conn: &mut TcpStream, bytes: &[u8]| -> std::io::Result<()> {
        conn.write_all(bytes)?;
        sent.fetch_add(bytes.len(), Ordering::SeqCst);
        Ok(())
    };
    match answer {
        None => conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
        Some(Answer::Body(ct, body)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes())?;
            send(&mut conn, &body)?;
        }
        Some(Answer::Endless(ct)) => {
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nConnection: close\r\n\r\n");
            conn.write_all(head.as_bytes())?;
            // Ends when the client hangs up (the write fails).
            loop {
                send(&mut conn, &filler)?;
            }
        }
        Some(Answer::EndlessChunked(ct)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n"
            );
            conn.write_all(head.as_bytes())?;
            loop {
                conn.write_all(format!("{:x}\r\n", filler.len()).as_bytes())?;
                send(&mut conn, &filler)?;
                conn.write_all(b"\r\n")?;
            }
        }
        Some(Answer::Announce(ct, len)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\
                 Connection: close\r\n\r\n"
            );
            conn.write_all(head.as_bytes())?;
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left.min(filler.len() as u64)).unwrap();
                send(&mut conn, &filler[..n])?;
                left -= n as u64;
            }
        }
    }
    conn.flush()
}

fn client(config: ClientConfig) -> Client {
    Client::new(ClientConfig {
        max_attempts: 1,
        ..config
    })
    .unwrap()
}

fn manifest_json(config: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {
            "mediaType": media_types::OCI_CONFIG,
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": [],
    }))
    .unwrap()
}

/// The server's good image: a manifest under tag `good` and its config blob. Resolving it and
/// fetching its config proves the client (and the server) still work.
fn still_pulls(server: &Hostile, client: &Client) -> impl Future<Output = ()> {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = manifest_json(config);
    server.route(
        "/v2/hostile/repo/manifests/good",
        Answer::Body(media_types::OCI_MANIFEST, manifest.clone()),
    );
    let digest = Digest::of(config);
    server.route(
        &format!("/v2/hostile/repo/blobs/{digest}"),
        Answer::Body("application/octet-stream", config.to_vec()),
    );
    let reference = server.reference(":good");
    let client = client.clone();
    async move {
        let resolved = client.resolve(&reference).await.unwrap();
        assert_eq!(resolved.bytes, manifest);
        let got = client
            .fetch_config(&reference, &digest, config.len() as u64)
            .await
            .unwrap();
        assert_eq!(got, config);
    }
}

fn too_large(err: &RegistryError, limit: u64) {
    assert!(
        matches!(err, RegistryError::TooLarge { limit: l, .. } if *l == limit),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("larger than the limit of {limit} bytes")),
        "{msg}"
    );
}

#[tokio::test]
async fn manifests_without_length_or_with_a_huge_one_stop_at_the_cap() {
    common::guard(async {
        let server = Hostile::start();
        let client = client(common::config());
        for (tag, answer) in [
            ("endless", Answer::Endless(media_types::OCI_MANIFEST)),
            ("chunked", Answer::EndlessChunked(media_types::OCI_MANIFEST)),
            (
                "announced",
                Answer::Announce(media_types::OCI_MANIFEST, 1 << 40),
            ),
        ] {
            server.route(&format!("/v2/hostile/repo/manifests/{tag}"), answer);
            let before = server.sent.load(Ordering::SeqCst);
            let err = client
                .resolve(&server.reference(&format!(":{tag}")))
                .await
                .unwrap_err();
            too_large(&err, MAX_MANIFEST_SIZE.max(MAX_INDEX_SIZE));
            assert!(err.to_string().contains(tag), "{err}");
            // The client stopped reading: what the server got out is the cap plus what the
            // socket buffers hold, nowhere near the terabyte announced.
            let sent = server.sent.load(Ordering::SeqCst) - before;
            assert!(sent < 64 << 20, "{tag}: server sent {sent} bytes");
            still_pulls(&server, &client).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_index_is_held_to_its_own_cap() {
    common::guard(async {
        let server = Hostile::start();
        let client = client(ClientConfig {
            max_manifest_size: 256 << 10,
            max_index_size: 64 << 10,
            ..common::config()
        });
        // A valid index padded to 100 KiB: within the manifest cap, over the index cap.
        let mut index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": [],
        }))
        .unwrap();
        index.resize(100 << 10, b' ');
        server.route(
            "/v2/hostile/repo/manifests/index",
            Answer::Body(media_types::OCI_INDEX, index),
        );
        let err = client
            .resolve(&server.reference(":index"))
            .await
            .unwrap_err();
        too_large(&err, 64 << 10);

        // A manifest of the same size is within its cap.
        let mut manifest = manifest_json(b"{}");
        manifest.resize(100 << 10, b' ');
        server.route(
            "/v2/hostile/repo/manifests/manifest",
            Answer::Body(media_types::OCI_MANIFEST, manifest.clone()),
        );
        let resolved = client
            .resolve(&server.reference(":manifest"))
            .await
            .unwrap();
        assert_eq!(resolved.bytes, manifest);
        still_pulls(&server, &client).await;
    })
    .await;
}

#[test]
fn parsing_refuses_documents_over_their_caps() {
    let over = |limit: u64| {
        let mut v = b"{}".to_vec();
        v.resize(usize::try_from(limit).unwrap() + 1, b' ');
        v
    };
    let err = strata_registry::ImageManifest::from_slice(&over(MAX_MANIFEST_SIZE)).unwrap_err();
    too_large(&err, MAX_MANIFEST_SIZE);
    assert!(err.to_string().starts_with("manifest sha256:"), "{err}");
    let err = strata_registry::ImageIndex::from_slice(&over(MAX_INDEX_SIZE)).unwrap_err();
    too_large(&err, MAX_INDEX_SIZE);
    assert!(err.to_string().starts_with("index sha256:"), "{err}");
    let err = strata_registry::ImageConfig::from_slice(&over(MAX_CONFIG_SIZE)).unwrap_err();
    too_large(&err, MAX_CONFIG_SIZE);
    assert!(err.to_string().starts_with("image config sha256:"), "{err}");
}

#[tokio::test]
async fn configs_are_capped_and_held_to_their_declared_size() {
    common::guard(async {
        let server = Hostile::start();
        let client = client(common::config());
        let digest = Digest::of(b"some config");
        let path = format!("/v2/hostile/repo/blobs/{digest}");
        server.route(&path, Answer::Endless("application/octet-stream"));
        let reference = server.reference(":good");

        // Declared larger than the cap: refused before asking.
        let asked = server.requests.load(Ordering::SeqCst);
        let err = client
            .fetch_config(&reference, &digest, MAX_CONFIG_SIZE + 1)
            .await
            .unwrap_err();
        too_large(&err, MAX_CONFIG_SIZE);
        assert!(err.to_string().contains(&digest.to_string()), "{err}");
        assert_eq!(server.requests.load(Ordering::SeqCst), asked);

        // Declared small, served without end: cut at the declared size.
        for answer in [
            Answer::Endless("application/octet-stream"),
            Answer::EndlessChunked("application/octet-stream"),
            Answer::Announce("application/octet-stream", 1 << 40),
        ] {
            server.route(&path, answer);
            let err = client
                .fetch_config(&reference, &digest, 11)
                .await
                .unwrap_err();
            assert!(
                matches!(err, RegistryError::BeyondDeclaredSize { declared: 11, .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&digest.to_string()) && msg.contains("more than the declared 11"),
                "{msg}"
            );
            assert_eq!(
                strata_core::Error::from(err).kind(),
                strata_core::Kind::FailedPrecondition
            );
            still_pulls(&server, &client).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_blob_download_stops_at_its_declared_size() {
    common::guard(async {
        let server = Hostile::start();
        let client = client(common::config());
        let blob = common::noise(300_000, 7);
        let digest = Digest::of(&blob);
        let size = blob.len() as u64;
        let path = format!("/v2/hostile/repo/blobs/{digest}");
        let reference = server.reference(":good");

        for answer in [
            Answer::Endless("application/octet-stream"),
            Answer::EndlessChunked("application/octet-stream"),
        ] {
            server.route(&path, answer);
            let mut stream = client
                .fetch_blob_sized(&reference, &digest, size, 0)
                .await
                .unwrap();
            let mut got = 0u64;
            let err = loop {
                match stream.next_chunk().await {
                    Some(Ok(chunk)) => got += chunk.len() as u64,
                    Some(Err(e)) => break e,
                    None => panic!("the stream ended cleanly after {got} bytes"),
                }
            };
            assert!(got <= size, "yielded {got} bytes of a {size}-byte blob");
            assert!(
                matches!(err, RegistryError::BeyondDeclaredSize { declared, .. } if declared == size),
                "{err:?}"
            );
            assert!(stream.next_chunk().await.is_none(), "the stream goes on");
            still_pulls(&server, &client).await;
        }

        // Announcing more than declared: refused before the body is read.
        server.route(&path, Answer::Announce("application/octet-stream", size + 1));
        let err = client
            .fetch_blob_sized(&reference, &digest, size, 0)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::BeyondDeclaredSize { declared, .. } if declared == size),
            "{err:?}"
        );

        // The honest answer streams whole and verifies.
        server.route(&path, Answer::Body("application/octet-stream", blob.clone()));
        let mut stream = client
            .fetch_blob_sized(&reference, &digest, size, 0)
            .await
            .unwrap()
            .verify();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, blob);
        still_pulls(&server, &client).await;
    })
    .await;
}
