//! Pushing with the client alone: against a real `docker-registry` (skip, mount, monolithic and
//! chunked uploads, manifests read back, basic auth) and scripted servers (the token scope, the
//! registry's error text, a source that cannot be read).
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{FakeServer, Registry, Response, guard, noise};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use strata_core::{Digest, Kind};
use strata_registry::{
    BlobPushed, BlobSource, ByteStream, Client, ClientConfig, Credentials, Reference,
    RegistryError, media_types,
};

/// A blob in memory, handed out in 64 KiB pieces; remembers the ranges asked for.
struct Memory {
    data: Vec<u8>,
    opened: Mutex<Vec<(u64, u64)>>,
}

impl Memory {
    fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            opened: Mutex::default(),
        }
    }

    fn digest(&self) -> Digest {
        Digest::of(&self.data)
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

impl BlobSource for Memory {
    async fn open(&self, offset: u64, len: u64) -> strata_core::Result<ByteStream> {
        self.opened.lock().unwrap().push((offset, len));
        let (start, end) = (
            usize::try_from(offset).unwrap(),
            usize::try_from(offset + len).unwrap(),
        );
        let pieces: Vec<strata_core::Result<Bytes>> = self.data[start..end]
            .chunks(64 << 10)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(pieces)))
    }
}

/// A source whose blob is gone.
struct Missing;

impl BlobSource for Missing {
    async fn open(&self, _offset: u64, _len: u64) -> strata_core::Result<ByteStream> {
        Err(strata_core::Error::not_found(
            "content sha256:00: not found",
        ))
    }
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// Chunked above 1 MiB, in 512 KiB chunks.
fn small_chunks() -> ClientConfig {
    ClientConfig {
        chunked_upload_threshold: 1 << 20,
        upload_chunk_size: 512 << 10,
        ..common::config()
    }
}

fn manifest(config: &Memory, layers: &[&Memory]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": config.digest().to_string(), "size": config.size()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": media_types::OCI_LAYER_GZIP, "digest": l.digest().to_string(), "size": l.size(),
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn blobs_and_a_manifest_round_trip() {
    guard(async {
        let registry = Registry::start();
        let client = Client::new(small_chunks()).unwrap();
        let r = reference(&format!("{}/team/app:v1", registry.addr));
        let config = Memory::new(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec(),
        );
        let big = Memory::new(noise(1_500_000, 3));
        let sent = Arc::new(AtomicU64::new(0));

        let got = client
            .push_blob(&r, &config.digest(), config.size(), None, &config, &sent)
            .await
            .unwrap();
        assert_eq!(got, BlobPushed::Uploaded);
        // Small: one PUT with the whole blob.
        assert_eq!(*config.opened.lock().unwrap(), vec![(0, config.size())]);

        let got = client
            .push_blob(&r, &big.digest(), big.size(), None, &big, &sent)
            .await
            .unwrap();
        assert_eq!(got, BlobPushed::Uploaded);
        assert_eq!(sent.load(std::sync::atomic::Ordering::Relaxed), big.size());
        // Large: three chunks in order, then the closing PUT.
        assert_eq!(
            *big.opened.lock().unwrap(),
            vec![
                (0, 512 << 10),
                (512 << 10, 512 << 10),
                (1 << 20, 1_500_000 - (1 << 20))
            ]
        );
        assert_eq!(
            std::fs::read(registry.blob_path(&big.digest())).unwrap(),
            big.data
        );

        let bytes = manifest(&config, &[&big]);
        let digest = client
            .push_manifest(&r, media_types::OCI_MANIFEST, &bytes)
            .await
            .unwrap();
        assert_eq!(digest, Digest::of(&bytes));
        let resolved = client.resolve(&r).await.unwrap();
        assert_eq!(resolved.digest, digest);
        assert_eq!(resolved.bytes, bytes);

        // Again: HEAD finds it, nothing is read.
        big.opened.lock().unwrap().clear();
        let got = client
            .push_blob(&r, &big.digest(), big.size(), None, &big, &sent)
            .await
            .unwrap();
        assert_eq!(got, BlobPushed::Exists);
        assert!(big.opened.lock().unwrap().is_empty());

        // Another repository mounts it from this one without reading a byte.
        let other = reference(&format!("{}/other/app:v1", registry.addr));
        let got = client
            .push_blob(
                &other,
                &big.digest(),
                big.size(),
                Some("team/app"),
                &big,
                &sent,
            )
            .await
            .unwrap();
        assert_eq!(got, BlobPushed::Mounted);
        assert!(big.opened.lock().unwrap().is_empty());
        assert!(client.blob_exists(&other, &big.digest()).await.unwrap());

        // A mount from a repository without it falls back to an upload.
        let third = reference(&format!("{}/third/app:v1", registry.addr));
        let got = client
            .push_blob(
                &third,
                &config.digest(),
                config.size(),
                Some("nowhere/app"),
                &config,
                &sent,
            )
            .await
            .unwrap();
        assert_eq!(got, BlobPushed::Uploaded);

        // A manifest naming a blob the repository lacks: the registry's own words.
        let err = client
            .push_manifest(&third, media_types::OCI_MANIFEST, &bytes)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("BLOB_UNKNOWN") || msg.contains("MANIFEST_BLOB_UNKNOWN"),
            "{msg}"
        );
    })
    .await;
}

#[tokio::test]
async fn basic_auth_is_asked_for_and_used() {
    guard(async {
        let registry = Registry::start_with_auth();
        let r = reference(&format!("{}/private/app:v1", registry.addr));
        let blob = Memory::new(b"private bytes".to_vec());
        let sent = Arc::new(AtomicU64::new(0));

        let err = common::client()
            .push_blob(&r, &blob.digest(), blob.size(), None, &blob, &sent)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
        let msg = err.to_string();
        // The registry's error JSON, from the POST (a refused HEAD has no body).
        assert!(
            msg.contains("UNAUTHORIZED: authentication required"),
            "{msg}"
        );
        assert!(msg.contains(&registry.addr), "{msg}");

        let client = Client::new(ClientConfig {
            credentials: HashMap::from([(
                registry.addr.clone(),
                Credentials::new(common::USER, common::PASSWORD),
            )]),
            ..common::config()
        })
        .unwrap();
        let got = client
            .push_blob(&r, &blob.digest(), blob.size(), None, &blob, &sent)
            .await
            .unwrap();
        assert_eq!(got, BlobPushed::Uploaded);
        assert!(client.blob_exists(&r, &blob.digest()).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_token_with_the_push_scope_and_the_registry_error_text() {
    guard(async {
        let realm: Arc<std::sync::OnceLock<String>> = Arc::default();
        let realm_in = realm.clone();
        let server = FakeServer::start(move |req, _| {
            if req.path.starts_with("/token") {
                return Response::new(200).body(r#"{"token":"push-tok"}"#);
            }
            if req.header("authorization") != Some("Bearer push-tok") {
                return Response::new(401).header(
                    "WWW-Authenticate",
                    format!(
                        r#"Bearer realm="{}",service="fake",scope="repository:team/app:pull,push""#,
                        realm_in.get().unwrap()
                    ),
                );
            }
            match req.method.as_str() {
                "HEAD" => Response::new(404),
                "POST" => Response::new(202).header("Location", "/upload/1?_state=x"),
                "PUT" if req.path.starts_with("/upload/1") => Response::new(201),
                _ => Response::new(400)
                    .header("Content-Type", "application/json")
                    .body(
                        r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#,
                    ),
            }
        })
        .await;
        realm.set(format!("http://{}/token", server.host())).unwrap();
        let client = common::client();
        let r = reference(&format!("{}/team/app:v1", server.host()));
        let blob = Memory::new(b"tiny".to_vec());
        let sent = Arc::new(AtomicU64::new(0));
        let got = client
            .push_blob(&r, &blob.digest(), blob.size(), None, &blob, &sent)
            .await
            .unwrap();
        assert_eq!(got, BlobPushed::Uploaded);
        let reqs = server.requests();
        let tokens: Vec<_> = reqs.iter().filter(|q| q.path.starts_with("/token")).collect();
        assert_eq!(tokens.len(), 1, "token cached: {reqs:?}");
        assert!(
            tokens[0]
                .path
                .contains("scope=repository%3Ateam%2Fapp%3Apull%2Cpush"),
            "{}",
            tokens[0].path
        );
        let put = reqs
            .iter()
            .find(|q| q.method == "PUT")
            .expect("the upload's PUT");
        assert!(put.path.contains("_state=x"), "{}", put.path);
        assert!(
            put.path.contains(&format!("digest=sha256%3A{}", blob.digest().hex())),
            "{}",
            put.path
        );
        assert_eq!(put.header("authorization"), Some("Bearer push-tok"));

        let err = client
            .push_manifest(&r, media_types::OCI_MANIFEST, b"{}")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("MANIFEST_INVALID: manifest invalid"), "{msg}");
        assert!(msg.contains("team/app:v1"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn a_source_that_cannot_be_read_stops_the_push_unretried() {
    guard(async {
        let server = FakeServer::start(|req, _| match req.method.as_str() {
            "HEAD" => Response::new(404),
            "POST" => Response::new(202).header("Location", "/upload/1"),
            _ => Response::new(201),
        })
        .await;
        let client = common::client();
        let r = reference(&format!("{}/team/app:v1", server.host()));
        let sent = Arc::new(AtomicU64::new(0));
        let err = client
            .push_blob(&r, &Digest::of(b"gone"), 4, None, &Missing, &sent)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            strata_core::Error::from(err).kind(),
            Kind::NotFound,
            "{msg}"
        );
        assert!(msg.contains("not found"), "{msg}");
        let posts = server
            .requests()
            .iter()
            .filter(|q| q.method == "POST")
            .count();
        assert_eq!(posts, 1);
    })
    .await;
}
