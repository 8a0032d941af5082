//! The client against a real `docker-registry` (images pushed with skopeo) and against small
//! scripted HTTP servers for retries, tokens, redirects and bad digests.
#![allow(clippy::unwrap_used)]

mod common;

use common::{FakeServer, OciLayout, Registry, Response, guard, noise};
use futures_util::StreamExt;
use std::collections::HashMap;
use strata_core::{Digest, Kind};
use strata_registry::{
    Client, ClientConfig, Credentials, ImageConfig, ImageIndex, ImageManifest, Manifest, Platform,
    Reference, RegistryError, Verify, media_types, select,
};

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn kind(e: RegistryError) -> (Kind, String) {
    let msg = e.to_string();
    (strata_core::Error::from(e).kind(), msg)
}

async fn drain<S>(mut s: S) -> Result<Vec<u8>, RegistryError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, RegistryError>> + Unpin,
{
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A registry holding `app:v1`, a single-platform image with a small layer and a ~1.5 MiB one.
async fn registry_with_image() -> (Registry, OciLayout, common::Image) {
    let registry = Registry::start();
    let mut layout = OciLayout::new();
    let image = layout.add_image(
        "linux/amd64",
        &[
            vec![("etc/hello", b"hello\n".to_vec())],
            vec![("data/noise", noise(1_500_000, 7))],
        ],
    );
    layout.tag("v1", &image.manifest);
    registry.push(&layout, "v1", "app", false).await;
    (registry, layout, image)
}

#[tokio::test]
async fn resolve_by_tag_and_by_digest() {
    guard(async {
        let (registry, _layout, image) = registry_with_image().await;
        let client = common::client();
        let by_tag = reference(&format!("{}/app:v1", registry.addr));

        let resolved = client.resolve(&by_tag).await.unwrap();
        assert_eq!(resolved.digest, image.manifest.digest);
        assert_eq!(resolved.media_type, media_types::OCI_MANIFEST);
        assert_eq!(resolved.size, image.manifest.bytes.len() as u64);
        assert_eq!(resolved.bytes, image.manifest.bytes);

        let pinned = by_tag.with_digest(resolved.digest.clone());
        assert_eq!(client.resolve(&pinned).await.unwrap(), resolved);
        let by_digest = reference(&format!("{}/app@{}", registry.addr, resolved.digest));
        assert_eq!(client.resolve(&by_digest).await.unwrap(), resolved);
        let bytes = client
            .fetch_manifest(&by_tag, &resolved.digest)
            .await
            .unwrap();
        assert_eq!(bytes, image.manifest.bytes);

        // Follow the manifest to its config.
        let Manifest::Image(manifest) =
            Manifest::from_slice(&resolved.media_type, &resolved.bytes).unwrap()
        else {
            panic!("expected an image manifest");
        };
        assert_eq!(manifest.layers.len(), 2);
        assert_eq!(manifest.config.digest, image.config.digest);
        let config_bytes = drain(
            client
                .fetch_blob(&by_tag, &manifest.config.digest, 0)
                .await
                .unwrap()
                .verify(),
        )
        .await
        .unwrap();
        let config = ImageConfig::from_slice(&config_bytes).unwrap();
        assert_eq!(config.architecture, "amd64");
        assert_eq!(config.rootfs.diff_ids.len(), 2);
        let cc = config.config.unwrap();
        assert_eq!(cc.cmd, Some(vec!["/bin/sh".to_owned()]));

        // Unknown tag, unknown repository, unknown digest: NotFound naming the reference.
        for missing in [
            format!("{}/app:nope", registry.addr),
            format!("{}/nothing/here:v1", registry.addr),
            format!("{}/app@{}", registry.addr, Digest::of(b"absent")),
        ] {
            let err = client.resolve(&reference(&missing)).await.unwrap_err();
            let (k, msg) = kind(err);
            assert_eq!(k, Kind::NotFound, "{missing}: {msg}");
            assert!(msg.contains(&missing), "{msg}");
        }
        let err = client
            .fetch_blob(&by_tag, &Digest::of(b"absent blob"), 0)
            .await
            .unwrap_err();
        let (k, msg) = kind(err);
        assert_eq!(k, Kind::NotFound, "{msg}");
        assert!(
            msg.contains(&Digest::of(b"absent blob").to_string()),
            "{msg}"
        );
    })
    .await;
}

#[tokio::test]
async fn blob_whole_and_resumed_from_offset() {
    guard(async {
        let (registry, _layout, image) = registry_with_image().await;
        let client = common::client();
        let r = reference(&format!("{}/app:v1", registry.addr));
        let layer = &image.layers[1];
        let len = layer.bytes.len() as u64;
        assert!(len > 1_000_000, "layer is large enough to stream in chunks");

        let whole = client.fetch_blob(&r, &layer.digest, 0).await.unwrap();
        assert_eq!(whole.offset(), 0);
        assert!(!whole.resumed());
        assert_eq!(whole.total_size(), Some(len));
        assert_eq!(whole.digest(), &layer.digest);
        assert_eq!(drain(whole.verify()).await.unwrap(), layer.bytes);

        // Resume as an interrupted pull would: keep the first part, ask for the rest.
        let cut = 654_321usize;
        let offset = cut as u64;
        let mut rest = client.fetch_blob(&r, &layer.digest, offset).await.unwrap();
        assert!(rest.resumed(), "docker-registry honours ranges");
        assert_eq!(rest.offset(), offset);
        assert_eq!(rest.total_size(), Some(len));
        assert_eq!(rest.remaining(), Some(len - offset));
        let mut tail = Vec::new();
        while let Some(chunk) = rest.next_chunk().await {
            tail.extend_from_slice(&chunk.unwrap());
        }
        let prefix = &layer.bytes[..cut];
        assert_eq!(tail.as_slice(), &layer.bytes[cut..]);

        // The verifier picks up from the prefix's hash state.
        let again = client.fetch_blob(&r, &layer.digest, offset).await.unwrap();
        let verified = Verify::resume(
            again,
            layer.digest.clone(),
            common::hasher_of(prefix),
            offset,
        )
        .expect_size(len);
        assert_eq!(drain(verified).await.unwrap(), tail);

        // A prefix that is not the blob's start fails verification at the end.
        let again = client.fetch_blob(&r, &layer.digest, offset).await.unwrap();
        let wrong = Verify::resume(again, layer.digest.clone(), common::hasher_of(b"x"), 1);
        let (k, msg) = kind(drain(wrong).await.unwrap_err());
        assert_eq!(k, Kind::FailedPrecondition, "{msg}");

        // Past the end: the server cannot satisfy the range.
        let err = client
            .fetch_blob(&r, &layer.digest, len + 10)
            .await
            .unwrap_err();
        let (k, msg) = kind(err);
        assert_eq!(k, Kind::OutOfRange, "{msg}");
        assert!(msg.contains(&layer.digest.to_string()), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn index_selects_the_host_platform() {
    guard(async {
        let registry = Registry::start();
        let mut layout = OciLayout::new();
        let amd64 = layout.add_image("linux/amd64", &[vec![("arch", b"amd64".to_vec())]]);
        let arm64 = layout.add_image("linux/arm64/v8", &[vec![("arch", b"arm64".to_vec())]]);
        let index = layout.add_index(&[&amd64, &arm64]);
        layout.tag("multi", &index);
        registry.push(&layout, "multi", "multi", true).await;

        let client = common::client();
        let r = reference(&format!("{}/multi:multi", registry.addr));
        let resolved = client.resolve(&r).await.unwrap();
        assert_eq!(resolved.media_type, media_types::OCI_INDEX);
        assert_eq!(resolved.digest, index.digest);
        let parsed = ImageIndex::from_slice(&resolved.bytes).unwrap();
        assert_eq!(parsed.manifests.len(), 2);

        let host = Platform::host();
        let expected = match host.architecture.as_str() {
            "amd64" => Some(&amd64),
            "arm64" => Some(&arm64),
            _ => None,
        };
        let chosen = select(&parsed, &host);
        assert_eq!(
            chosen.map(|d| &d.digest),
            expected.map(|i| &i.manifest.digest),
            "host {host}"
        );
        for (platform, image) in [("linux/amd64", &amd64), ("linux/arm64", &arm64)] {
            let p = Platform::parse(platform).unwrap();
            let d = select(&parsed, &p).unwrap();
            assert_eq!(d.digest, image.manifest.digest, "{platform}");
            // Every image of the index was pushed and resolves by digest.
            let bytes = client.fetch_manifest(&r, &d.digest).await.unwrap();
            let m = ImageManifest::from_slice(&bytes).unwrap();
            assert_eq!(m.config.digest, image.config.digest);
        }
        assert!(select(&parsed, &Platform::parse("linux/s390x").unwrap()).is_none());
    })
    .await;
}

#[tokio::test]
async fn tampered_registry_storage_is_detected() {
    guard(async {
        let (registry, _layout, image) = registry_with_image().await;
        let client = common::client();
        let by_tag = reference(&format!("{}/app:v1", registry.addr));

        // Wrong blob bytes of the right length: the stream completes, verify names the digest.
        let layer = &image.layers[0];
        let path = registry.blob_path(&layer.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let blob = client.fetch_blob(&by_tag, &layer.digest, 0).await.unwrap();
        let err = drain(blob.verify()).await.unwrap_err();
        let (k, msg) = kind(err);
        assert_eq!(k, Kind::FailedPrecondition, "{msg}");
        assert!(msg.contains(&layer.digest.to_string()), "{msg}");
        assert!(msg.contains(&Digest::of(&bytes).to_string()), "{msg}");

        // A manifest whose stored bytes changed (still valid JSON): by tag the registry's
        // Docker-Content-Digest disagrees; by digest the reference does.
        let mpath = registry.blob_path(&image.manifest.digest);
        let mut mbytes = std::fs::read(&mpath).unwrap();
        mbytes.extend_from_slice(b"\n");
        std::fs::write(&mpath, &mbytes).unwrap();
        let actual = Digest::of(&mbytes).to_string();
        let expected = image.manifest.digest.to_string();
        for r in [
            by_tag.clone(),
            by_tag.with_digest(image.manifest.digest.clone()),
        ] {
            let err = client.resolve(&r).await.unwrap_err();
            let (k, msg) = kind(err);
            assert_eq!(k, Kind::FailedPrecondition, "{r}: {msg}");
            assert!(
                msg.contains(&expected) && msg.contains(&actual),
                "{r}: {msg}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn manifest_digest_checks_against_a_fake_server() {
    guard(async {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let real = Digest::of(body);
        let liar = Digest::of(b"something else");
        let liar_header = liar.to_string();
        let server = FakeServer::start(move |req, _| {
            let r = Response::new(200)
                .header("Content-Type", "application/json")
                .body(body.to_vec());
            if req.path.contains("/lying/") {
                r.header("Docker-Content-Digest", liar_header.clone())
            } else {
                r
            }
        })
        .await;
        let client = common::client();

        // No header and no media type header: digest computed, media type from the body.
        let ok = client
            .resolve(&reference(&format!("{}/plain:t", server.host())))
            .await
            .unwrap();
        assert_eq!(ok.digest, real);
        assert_eq!(ok.media_type, media_types::OCI_INDEX);

        // Pinned to another digest: the bytes do not hash to it.
        let pinned = reference(&format!("{}/plain@{liar}", server.host()));
        let (k, msg) = kind(client.resolve(&pinned).await.unwrap_err());
        assert_eq!(k, Kind::FailedPrecondition);
        assert!(msg.contains(&liar.to_string()) && msg.contains(&real.to_string()), "{msg}");
        let (k, _) = kind(
            client
                .fetch_manifest(&reference(&format!("{}/plain:t", server.host())), &liar)
                .await
                .unwrap_err(),
        );
        assert_eq!(k, Kind::FailedPrecondition);

        // The server's own header disagrees with its bytes.
        let lying = reference(&format!("{}/lying/repo:t", server.host()));
        let (k, msg) = kind(client.resolve(&lying).await.unwrap_err());
        assert_eq!(k, Kind::FailedPrecondition);
        assert!(msg.contains("Docker-Content-Digest"), "{msg}");
        assert!(msg.contains(&liar.to_string()) && msg.contains(&real.to_string()), "{msg}");

        // The Accept header lists all four manifest types.
        let accept = server.requests()[0].header("accept").unwrap().to_owned();
        for mt in media_types::MANIFEST_ACCEPT {
            assert!(accept.contains(mt), "{accept}");
        }
    })
    .await;
}

#[tokio::test]
async fn basic_auth_from_a_docker_config_file() {
    guard(async {
        let registry = Registry::start_with_auth();
        let mut layout = OciLayout::new();
        let image = layout.add_image("linux/amd64", &[vec![("f", b"private".to_vec())]]);
        layout.tag("v1", &image.manifest);
        registry.push(&layout, "v1", "private", false).await;
        let r = reference(&format!("{}/private:v1", registry.addr));

        // Anonymous: 401, named.
        let (k, msg) = kind(common::client().resolve(&r).await.unwrap_err());
        assert_eq!(k, Kind::Internal, "{msg}");
        assert!(
            msg.contains("unauthorized") && msg.contains(&registry.addr),
            "{msg}"
        );

        // Credentials from $DOCKER_CONFIG/config.json.
        let docker_config = tempfile::tempdir().unwrap();
        let auth = base64_encode(&format!("{}:{}", common::USER, common::PASSWORD));
        std::fs::write(
            docker_config.path().join("config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr),
        )
        .unwrap();
        let client = Client::new(ClientConfig {
            docker_config_dir: Some(docker_config.path().to_owned()),
            ..common::config()
        })
        .unwrap();
        let resolved = client.resolve(&r).await.unwrap();
        assert_eq!(resolved.digest, image.manifest.digest);
        let layer = &image.layers[0];
        let blob = client.fetch_blob(&r, &layer.digest, 0).await.unwrap();
        assert_eq!(drain(blob.verify()).await.unwrap(), layer.bytes);

        // Explicit credentials win over the file; wrong ones are refused.
        let wrong = Client::new(ClientConfig {
            docker_config_dir: Some(docker_config.path().to_owned()),
            credentials: HashMap::from([(
                registry.addr.clone(),
                Credentials::new(common::USER, "wrong"),
            )]),
            ..common::config()
        })
        .unwrap();
        let (k, msg) = kind(wrong.resolve(&r).await.unwrap_err());
        assert_eq!(k, Kind::Internal, "{msg}");
        assert!(msg.contains("401"), "{msg}");

        // A broken config file is an error naming the file.
        std::fs::write(docker_config.path().join("config.json"), b"{broken").unwrap();
        let broken = Client::new(ClientConfig {
            docker_config_dir: Some(docker_config.path().to_owned()),
            ..common::config()
        })
        .unwrap();
        let msg = broken.resolve(&r).await.unwrap_err().to_string();
        assert!(msg.contains("config.json"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn retries_5xx_but_never_4xx() {
    guard(async {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        // Fails twice with 503, then answers.
        let flaky = FakeServer::start(move |_, n| {
            if n < 2 {
                Response::new(503).body("busy")
            } else {
                Response::new(200)
                    .header("Content-Type", media_types::OCI_INDEX)
                    .body(body.to_vec())
            }
        })
        .await;
        let client = common::client();
        let resolved = client
            .resolve(&reference(&format!("{}/r:t", flaky.host())))
            .await
            .unwrap();
        assert_eq!(resolved.digest, Digest::of(body));
        assert_eq!(flaky.requests().len(), 3);

        // 429 is retried too; a lasting 5xx gives up after max_attempts, as Unavailable.
        let down = FakeServer::start(|_, n| {
            if n == 0 {
                Response::new(429).header("Retry-After", "0")
            } else {
                Response::new(500).body(r#"{"errors":[{"code":"UNKNOWN","message":"boom"}]}"#)
            }
        })
        .await;
        let (k, msg) = kind(
            client
                .resolve(&reference(&format!("{}/r:t", down.host())))
                .await
                .unwrap_err(),
        );
        assert_eq!(k, Kind::Unavailable, "{msg}");
        assert!(msg.contains("4 attempts") && msg.contains("boom"), "{msg}");
        assert_eq!(down.requests().len(), 4);

        // 4xx: one request only.
        for (status, want) in [(404, Kind::NotFound), (400, Kind::Internal), (403, Kind::Internal)] {
            let server = FakeServer::start(move |_, _| Response::new(status)).await;
            let (k, msg) = kind(
                client
                    .resolve(&reference(&format!("{}/r:t", server.host())))
                    .await
                    .unwrap_err(),
            );
            assert_eq!(k, want, "{status}: {msg}");
            assert_eq!(server.requests().len(), 1, "{status} is not retried");
        }

        // Nothing listening: connection errors are retried, then Unavailable.
        let port = common::free_port();
        let (k, msg) = kind(
            client
                .resolve(&reference(&format!("127.0.0.1:{port}/r:t")))
                .await
                .unwrap_err(),
        );
        assert_eq!(k, Kind::Unavailable, "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn bearer_tokens_are_fetched_and_cached() {
    guard(async {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let basic = Credentials::new("u", "p").basic_header();
        let realm: std::sync::Arc<std::sync::OnceLock<String>> = Default::default();
        let realm_in = realm.clone();
        let server = FakeServer::start(move |req, _| {
            if req.path.starts_with("/token") {
                if req.header("authorization") != Some(basic.as_str()) {
                    return Response::new(401);
                }
                return Response::new(200)
                    .body(r#"{"access_token":"tok-1","expires_in":300}"#);
            }
            if req.header("authorization") == Some("Bearer tok-1") {
                return Response::new(200)
                    .header("Content-Type", media_types::OCI_INDEX)
                    .body(body.to_vec());
            }
            Response::new(401).header(
                "WWW-Authenticate",
                format!(
                    r#"Bearer realm="{}",service="fake",scope="repository:team/app:pull""#,
                    realm_in.get().unwrap()
                ),
            )
        })
        .await;
        realm.set(format!("http://{}/token", server.host())).unwrap();
        let r = reference(&format!("{}/team/app:t", server.host()));

        let client = Client::new(ClientConfig {
            credentials: HashMap::from([(server.host(), Credentials::new("u", "p"))]),
            ..common::config()
        })
        .unwrap();
        client.resolve(&r).await.unwrap();
        client.resolve(&r).await.unwrap();
        let reqs = server.requests();
        let tokens: Vec<_> = reqs.iter().filter(|q| q.path.starts_with("/token")).collect();
        assert_eq!(tokens.len(), 1, "token cached: {reqs:?}");
        assert!(tokens[0].path.contains("service=fake"), "{}", tokens[0].path);
        assert!(
            tokens[0].path.contains("scope=repository%3Ateam%2Fapp%3Apull"),
            "{}",
            tokens[0].path
        );
        // anonymous, token, authorized, then straight to authorized.
        assert_eq!(reqs.len(), 4, "{reqs:?}");

        // Without credentials the token endpoint refuses: an error naming the realm.
        let (k, msg) = kind(common::client().resolve(&r).await.unwrap_err());
        assert_eq!(k, Kind::Internal, "{msg}");
        assert!(msg.contains("/token"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn redirects_never_carry_credentials_to_another_host() {
    guard(async {
        let blob = b"blob served from a CDN".to_vec();
        let digest = Digest::of(&blob);
        let cdn_body = blob.clone();
        let cdn = FakeServer::start(move |_, _| Response::new(200).body(cdn_body.clone())).await;
        let cdn_url = format!("http://{}/cdn/blob?sig=1", cdn.host());
        let basic = Credentials::new("u", "p").basic_header();
        let registry = FakeServer::start(move |req, _| {
            if req.header("authorization") != Some(basic.as_str()) {
                return Response::new(401).header("WWW-Authenticate", r#"Basic realm="fake""#);
            }
            if req.path.starts_with("/v2/repo/blobs/") {
                // Same origin first, then off to the CDN.
                return Response::new(307).header("Location", "/moved/blob");
            }
            Response::new(302).header("Location", cdn_url.clone())
        })
        .await;
        let client = Client::new(ClientConfig {
            credentials: HashMap::from([(registry.host(), Credentials::new("u", "p"))]),
            ..common::config()
        })
        .unwrap();
        let r = reference(&format!("{}/repo:t", registry.host()));
        let stream = client.fetch_blob(&r, &digest, 0).await.unwrap();
        assert_eq!(drain(stream.verify()).await.unwrap(), blob);

        let reg_reqs = registry.requests();
        assert_eq!(reg_reqs.len(), 3, "{reg_reqs:?}");
        assert!(reg_reqs[2].path == "/moved/blob" && reg_reqs[2].header("authorization").is_some());
        let cdn_reqs = cdn.requests();
        assert_eq!(cdn_reqs.len(), 1);
        assert_eq!(cdn_reqs[0].path, "/cdn/blob?sig=1");
        assert_eq!(
            cdn_reqs[0].header("authorization"),
            None,
            "credentials leaked to another host"
        );
    })
    .await;
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Set in the child process of [`docker_config_from_the_environment`].
const CHILD_REF: &str = "STRATA_REGISTRY_TEST_CHILD_REF";
const CHILD_DIGEST: &str = "STRATA_REGISTRY_TEST_CHILD_DIGEST";

/// `ClientConfig::default()` finds credentials through `$DOCKER_CONFIG`. The environment is
/// process-wide, so the check runs in a child process of this test binary with the variable
/// set, rather than mutating this process's environment under parallel tests.
#[tokio::test]
async fn docker_config_from_the_environment() {
    if let (Some(r), Some(d)) = (std::env::var_os(CHILD_REF), std::env::var_os(CHILD_DIGEST)) {
        let r = reference(r.to_str().unwrap());
        let client = Client::new(ClientConfig::default()).unwrap();
        let resolved = client.resolve(&r).await.unwrap();
        assert_eq!(resolved.digest.to_string(), d.to_str().unwrap());
        return;
    }
    guard(async {
        let registry = Registry::start_with_auth();
        let mut layout = OciLayout::new();
        let image = layout.add_image("linux/amd64", &[vec![("f", b"env".to_vec())]]);
        layout.tag("v1", &image.manifest);
        registry.push(&layout, "v1", "env", false).await;
        let docker_config = tempfile::tempdir().unwrap();
        std::fs::write(
            docker_config.path().join("config.json"),
            format!(
                r#"{{"auths":{{"http://{}/v2/":{{"username":"{}","password":"{}"}}}}}}"#,
                registry.addr,
                common::USER,
                common::PASSWORD
            ),
        )
        .unwrap();
        let out = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "docker_config_from_the_environment",
                "--exact",
                "--nocapture",
            ])
            .env("DOCKER_CONFIG", docker_config.path())
            .env(CHILD_REF, format!("{}/env:v1", registry.addr))
            .env(CHILD_DIGEST, image.manifest.digest.to_string())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}
