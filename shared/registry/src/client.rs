//! The registry client: scheme choice, authentication, retries, redirects, and the three
//! operations a pull needs (resolve, fetch manifest, fetch blob); a push's are in `push.rs`.

use crate::auth::{
    Challenge, Credentials, DockerConfig, default_docker_config_dir, parse_challenges,
};
use crate::blob::BlobStream;
use crate::error::{RegistryError, Result};
use crate::manifest::{
    MAX_CONFIG_SIZE, MAX_INDEX_SIZE, MAX_MANIFEST_SIZE, detect_media_type, media_types,
};
use crate::reference::{Reference, is_loopback_host};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use strata_core::Digest;
use tracing::{debug, warn};

/// `host[:port]` of an insecure-registry entry, which may carry a scheme and a trailing slash.
fn normalize_host(h: &str) -> String {
    let h = h
        .strip_prefix("http://")
        .or_else(|| h.strip_prefix("https://"))
        .unwrap_or(h);
    h.trim_end_matches('/').to_lowercase()
}

/// Header carrying the registry's idea of a manifest's digest.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// How much of an error body is read for the message.
const ERROR_BODY_LIMIT: usize = 4096;
/// Upper bound for a token endpoint's answer.
const TOKEN_BODY_LIMIT: u64 = 1 << 20;
/// Lifetime of a token whose response gives no `expires_in` (the distribution spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Blobs above this size are pushed in chunks by default; below it, in one request, as Docker
/// and skopeo push (each chunk costs the registry a request and a write of its own: with 16 MiB
/// chunks a 100 MB push took 1.11 times skopeo's time).
pub const DEFAULT_CHUNKED_UPLOAD_THRESHOLD: u64 = 1 << 30;
/// The default size of an upload chunk.
pub const DEFAULT_UPLOAD_CHUNK_SIZE: u64 = 256 << 20;

/// How a [`Client`] reaches registries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Registries (`host[:port]`, as in references) spoken to over plain HTTP. Loopback
    /// registries (`localhost`, `127.0.0.0/8`, `[::1]`) always are.
    pub insecure_registries: Vec<String>,
    /// The directory holding a Docker `config.json` to take credentials from; `None` reads no
    /// file. [`ClientConfig::default`] uses `$DOCKER_CONFIG`, else `~/.docker`. The file is
    /// read when a registry asks for authentication, so `docker login` takes effect at once.
    pub docker_config_dir: Option<PathBuf>,
    /// Credentials by registry (`host[:port]`, `docker.io`); these win over the config file.
    pub credentials: HashMap<String, Credentials>,
    /// Tries per request for connection errors, 5xx and 429 (at least 1). 4xx is never
    /// retried.
    pub max_attempts: u32,
    /// Back-off before the second try; it doubles per try up to `max_backoff`. A
    /// `Retry-After` in seconds is honoured up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest back-off between tries.
    pub max_backoff: Duration,
    /// Longest wait for a connection to be established.
    pub connect_timeout: Duration,
    /// Longest wait for any single read from a server (not a whole transfer).
    pub read_timeout: Duration,
    /// Largest manifest accepted, in bytes ([`MAX_MANIFEST_SIZE`] by default, as containerd).
    pub max_manifest_size: u64,
    /// Largest image index accepted, in bytes ([`MAX_INDEX_SIZE`] by default).
    pub max_index_size: u64,
    /// Largest image config [`Client::fetch_config`] accepts, in bytes ([`MAX_CONFIG_SIZE`] by
    /// default).
    pub max_config_size: u64,
    /// The `User-Agent` sent with every request (`strata/<version>` by default).
    pub user_agent: String,
    /// Blobs larger than this are pushed in chunks (PATCH with `Content-Range`), smaller ones
    /// in one PUT.
    pub chunked_upload_threshold: u64,
    /// Size of each chunk of a chunked upload (the last may be smaller).
    pub upload_chunk_size: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            docker_config_dir: default_docker_config_dir(),
            credentials: HashMap::new(),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            max_manifest_size: MAX_MANIFEST_SIZE,
            max_index_size: MAX_INDEX_SIZE,
            max_config_size: MAX_CONFIG_SIZE,
            user_agent: format!("strata/{}", env!("CARGO_PKG_VERSION")),
            chunked_upload_threshold: DEFAULT_CHUNKED_UPLOAD_THRESHOLD,
            upload_chunk_size: DEFAULT_UPLOAD_CHUNK_SIZE,
        }
    }
}

/// A manifest as resolved from a tag or digest: its digest (sha256 of `bytes`), media type,
/// size and the bytes themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The sha256 of `bytes`.
    pub digest: Digest,
    /// The manifest's media type: the response's `Content-Type` when it names a manifest or
    /// index, else the manifest's `mediaType` (or the type its shape implies).
    pub media_type: String,
    /// The length of `bytes`.
    pub size: u64,
    /// The manifest exactly as served.
    pub bytes: Vec<u8>,
}

/// An OCI distribution client. Cheap to clone; clones share connections and cached tokens.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// For remote registries: honours the proxy environment variables.
    http: reqwest::Client,
    /// For loopback addresses: never through a proxy, as Go's `ProxyFromEnvironment`.
    direct: reqwest::Client,
    insecure: Vec<String>,
    /// Authorization per (registry, scope), shared with the clients made by
    /// [`Client::with_insecure_registry`].
    auth: Arc<Mutex<HashMap<(String, String), CachedAuth>>>,
}

#[derive(Debug, Clone)]
enum CachedAuth {
    Bearer { header: String, expires: Instant },
    Basic,
}

impl std::fmt::Debug for Inner {
    // Cached tokens stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client. This loads the system's certificate store, so build one and clone it;
    /// it fails only when the HTTP client cannot be set up.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                // Redirects are followed by hand so credentials never leave the registry host.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout)
                .user_agent(config.user_agent.clone())
                // A burst of pulls opens a connection per blob in flight; a few stay for the
                // next pull, the rest close (each held a file descriptor for 90 s).
                .pool_max_idle_per_host(4)
        };
        let http = builder().build().map_err(RegistryError::Client)?;
        let direct = builder()
            .no_proxy()
            .build()
            .map_err(RegistryError::Client)?;
        let insecure = config
            .insecure_registries
            .iter()
            .map(|h| normalize_host(h))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                direct,
                insecure,
                auth: Arc::default(),
            }),
        })
    }

    /// This client, also speaking plain HTTP to `registry` (`host[:port]`). It shares this
    /// client's connections, TLS set-up and cached tokens: making one is cheap, where
    /// [`Client::new`] loads the system's certificate store.
    pub fn with_insecure_registry(&self, registry: &str) -> Self {
        let inner = &self.inner;
        let mut config = inner.config.clone();
        config.insecure_registries.push(registry.to_owned());
        let mut insecure = inner.insecure.clone();
        insecure.push(normalize_host(registry));
        Self {
            inner: Arc::new(Inner {
                config,
                http: inner.http.clone(),
                direct: inner.direct.clone(),
                insecure,
                auth: Arc::clone(&inner.auth),
            }),
        }
    }

    /// The configuration this client uses (with any registries added by
    /// [`Client::with_insecure_registry`]).
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Fetches the manifest `reference` names (its digest if it has one, else its tag),
    /// accepting OCI and Docker schema 2 indexes and manifests. The digest is the sha256 of the
    /// bytes served; it must equal the reference's digest and any `Docker-Content-Digest`
    /// header.
    pub async fn resolve(&self, reference: &Reference) -> Result<Resolved> {
        let what = format!("manifest {:?}", reference.to_string());
        let mut attempt = 1;
        loop {
            match self.resolve_once(reference, &what).await {
                Err(RegistryError::Body { .. }) if attempt < self.max_attempts() => {
                    warn!(%reference, attempt, "manifest body broke off; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Fetches the manifest `digest` from `reference`'s repository and checks it hashes to
    /// `digest`.
    pub async fn fetch_manifest(&self, reference: &Reference, digest: &Digest) -> Result<Vec<u8>> {
        Ok(self
            .resolve(&reference.with_digest(digest.clone()))
            .await?
            .bytes)
    }

    /// Fetches the image config `digest` of `size` bytes (as the manifest's config descriptor
    /// declares) whole, checking its size and digest. A descriptor larger than
    /// [`ClientConfig::max_config_size`] is refused before any request; a registry sending
    /// more than `size` bytes is cut off there.
    pub async fn fetch_config(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>> {
        let limit = self.inner.config.max_config_size;
        let what = format!("config {digest} in {:?}", reference.name());
        if size > limit {
            return Err(RegistryError::TooLarge { what, limit });
        }
        let mut stream = self
            .fetch_blob_sized(reference, digest, size, 0)
            .await?
            .verify()
            .expect_size(size);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// [`fetch_blob`](Self::fetch_blob) for a blob whose descriptor declares `size` bytes: a
    /// response announcing more (`Content-Length`, `Content-Range`) is refused before its body
    /// is read, and a body running past `size` ends the stream with
    /// [`RegistryError::BeyondDeclaredSize`], so a hostile registry cannot make a pull write
    /// more than the manifest said.
    pub async fn fetch_blob_sized(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        offset: u64,
    ) -> Result<BlobStream> {
        let stream = self.fetch_blob(reference, digest, offset).await?;
        let what = format!("blob {digest} in {:?}", reference.name());
        if stream.total_size().is_some_and(|t| t > size) {
            return Err(RegistryError::BeyondDeclaredSize {
                what,
                declared: size,
            });
        }
        Ok(stream.limit(size, what))
    }

    /// Starts streaming blob `digest` from `reference`'s repository, from byte `offset`
    /// (`Range: bytes=<offset>-` when offset > 0). Check [`BlobStream::offset`]: a server that
    /// ignores ranges sends the whole blob. The body is not verified here; wrap it with
    /// [`BlobStream::verify`] or [`crate::Verify::resume`].
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream> {
        let what = format!("blob {digest} in {:?}", reference.name());
        let url = self.endpoint(reference, "blobs", &digest.to_string())?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            let range = HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|e| {
                RegistryError::Protocol {
                    what: what.clone(),
                    reason: e.to_string(),
                }
            })?;
            headers.insert(header::RANGE, range);
        }
        let resp = self.get(reference, url, &headers, &what).await?;
        let status = resp.status();
        let (start, total) = if status == StatusCode::PARTIAL_CONTENT && offset > 0 {
            let range = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let Some((first, total)) = parse_content_range(range) else {
                return Err(RegistryError::Protocol {
                    what,
                    reason: format!("206 with invalid Content-Range {range:?}"),
                });
            };
            if first != offset {
                return Err(RegistryError::Protocol {
                    what,
                    reason: format!("asked for bytes from {offset}, got Content-Range {range:?}"),
                });
            }
            let total = total.or_else(|| resp.content_length().map(|l| l + offset));
            (offset, total)
        } else if status == StatusCode::OK {
            if offset > 0 {
                debug!(%reference, %digest, offset, "registry ignored the range; restarting at 0");
            }
            (0, resp.content_length())
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE {
            let (detail, _) = read_error_body(resp).await;
            return Err(RegistryError::RangeNotSatisfiable {
                what,
                offset,
                detail,
            });
        } else {
            return Err(status_error(resp, &what).await);
        };
        let stream_what = what.clone();
        let body = resp.bytes_stream().map(move |r| {
            r.map_err(|source| RegistryError::Body {
                what: stream_what.clone(),
                source,
            })
        });
        Ok(BlobStream::new(
            digest.clone(),
            start,
            total,
            Box::pin(body),
        ))
    }

    async fn resolve_once(&self, reference: &Reference, what: &str) -> Result<Resolved> {
        let url = self.endpoint(reference, "manifests", &reference.manifest_reference())?;
        let mut headers = HeaderMap::new();
        let accept =
            HeaderValue::from_str(&media_types::MANIFEST_ACCEPT.join(", ")).map_err(|e| {
                RegistryError::Protocol {
                    what: what.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        headers.insert(header::ACCEPT, accept);
        let resp = self.get(reference, url, &headers, what).await?;
        if resp.status() != StatusCode::OK {
            return Err(status_error(resp, what).await);
        }
        let announced = match resp.headers().get(DOCKER_CONTENT_DIGEST) {
            Some(v) => {
                let s = v.to_str().unwrap_or_default().trim();
                match Digest::parse(s) {
                    Ok(d) => Some(d),
                    // Another algorithm: nothing to compare with.
                    Err(_) if !s.starts_with("sha256:") => None,
                    Err(e) => {
                        return Err(RegistryError::Protocol {
                            what: what.to_owned(),
                            reason: format!("invalid Docker-Content-Digest header: {e}"),
                        });
                    }
                }
            }
            None => None,
        };
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let config = &self.inner.config;
        let limit = config.max_manifest_size.max(config.max_index_size);
        let bytes = read_limited(resp, limit, what).await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest()
            && *expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: what.to_owned(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        if let Some(announced) = announced
            && announced != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("{what} (Docker-Content-Digest header)"),
                expected: announced,
                actual: digest,
            });
        }
        let media_type = match content_type {
            Some(ct) if media_types::is_index(&ct) || media_types::is_manifest(&ct) => ct,
            ct => match detect_media_type(&bytes).or(ct) {
                Some(mt) => mt,
                None => {
                    return Err(RegistryError::Protocol {
                        what: what.to_owned(),
                        reason: "no Content-Type and no mediaType in the manifest".to_owned(),
                    });
                }
            },
        };
        let limit = if media_types::is_index(&media_type) {
            config.max_index_size
        } else {
            config.max_manifest_size
        };
        if bytes.len() as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                limit,
            });
        }
        debug!(%reference, %digest, %media_type, size = bytes.len(), "resolved");
        Ok(Resolved {
            digest,
            media_type,
            size: bytes.len() as u64,
            bytes,
        })
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.inner.config.max_attempts.max(1)
    }

    pub(crate) fn endpoint(&self, reference: &Reference, kind: &str, tail: &str) -> Result<Url> {
        let scheme = if self.plain_http(reference) {
            "http"
        } else {
            "https"
        };
        let raw = format!(
            "{scheme}://{}/v2/{}/{kind}/{tail}",
            reference.api_host(),
            reference.repository()
        );
        Url::parse(&raw).map_err(|e| RegistryError::InvalidReference {
            input: reference.to_string(),
            reason: format!("cannot form URL {raw:?}: {e}"),
        })
    }

    fn plain_http(&self, reference: &Reference) -> bool {
        reference.is_loopback()
            || self.inner.insecure.iter().any(|h| {
                h.eq_ignore_ascii_case(reference.registry())
                    || h.eq_ignore_ascii_case(reference.api_host())
            })
    }

    /// Explicit credentials first, then the Docker config file.
    fn credentials_for(&self, registry: &str) -> Result<Option<Credentials>> {
        let config = &self.inner.config;
        if let Some(c) = config
            .credentials
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(registry))
            .map(|(_, c)| c.clone())
        {
            return Ok(Some(c));
        }
        let Some(dir) = &config.docker_config_dir else {
            return Ok(None);
        };
        match DockerConfig::load_dir(dir)? {
            Some(file) => file.credentials(registry),
            None => Ok(None),
        }
    }

    pub(crate) fn cached_auth(&self, key: &(String, String)) -> Result<Option<String>> {
        let cached = {
            let mut map = self
                .inner
                .auth
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match map.get(key) {
                Some(CachedAuth::Bearer { expires, .. }) if *expires <= Instant::now() => {
                    map.remove(key);
                    None
                }
                other => other.cloned(),
            }
        };
        match cached {
            Some(CachedAuth::Bearer { header, .. }) => Ok(Some(header)),
            Some(CachedAuth::Basic) => Ok(self.credentials_for(&key.0)?.map(|c| c.basic_header())),
            None => Ok(None),
        }
    }

    fn store_auth(&self, key: (String, String), value: CachedAuth) {
        self.inner
            .auth
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, value);
    }

    /// GET with authentication: anonymous (or cached authorization) first; on 401 answer the
    /// challenge once and retry. Returns whatever the registry finally answered.
    async fn get(
        &self,
        reference: &Reference,
        url: Url,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<reqwest::Response> {
        let scope = reference.pull_scope();
        self.request(reference, &scope, &Method::GET, url, headers, None, what)
            .await
    }

    /// One request with authentication for `scope` (a token scope such as
    /// `repository:a/b:pull`): anonymous (or cached authorization for that scope) first; on 401
    /// answer the challenge once and retry. `body` is sent again on each try, so it is whole in
    /// memory: small bodies only (manifests, empty POSTs); blobs go through the upload path.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn request(
        &self,
        reference: &Reference,
        scope: &str,
        method: &Method,
        url: Url,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        what: &str,
    ) -> Result<reqwest::Response> {
        let key = (reference.registry().to_owned(), scope.to_owned());
        let mut auth = self.cached_auth(&key)?;
        let mut challenged = false;
        loop {
            let resp = self
                .send(method, url.clone(), headers, body, auth.as_deref(), what)
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(resp);
            }
            challenged = true;
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            match self.authorize(reference, &key, &challenges, what).await? {
                Some(a) => auth = Some(a),
                None => {
                    let (detail, _) = read_error_body(resp).await;
                    return Err(RegistryError::Unauthorized {
                        what: what.to_owned(),
                        status: 401,
                        detail: join_detail(
                            &format!("no credentials for {:?}", reference.registry()),
                            &detail,
                        ),
                    });
                }
            }
        }
    }

    /// Answers a challenge: a bearer token from the realm (cached until it expires), or basic
    /// credentials. `None` when the registry wants basic auth and there are no credentials.
    async fn authorize(
        &self,
        reference: &Reference,
        key: &(String, String),
        challenges: &[Challenge],
        what: &str,
    ) -> Result<Option<String>> {
        let creds = self.credentials_for(reference.registry())?;
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let (token, lifetime) = self
                .fetch_token(bearer, &key.1, creds.as_ref(), what)
                .await?;
            let header = format!("Bearer {token}");
            // Renew a little early so a token does not expire in flight.
            let margin = (lifetime / 10).min(Duration::from_secs(10));
            self.store_auth(
                key.clone(),
                CachedAuth::Bearer {
                    header: header.clone(),
                    expires: Instant::now() + lifetime.saturating_sub(margin),
                },
            );
            return Ok(Some(header));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(creds) = creds else {
                return Ok(None);
            };
            self.store_auth(key.clone(), CachedAuth::Basic);
            return Ok(Some(creds.basic_header()));
        }
        Err(RegistryError::Unauthorized {
            what: what.to_owned(),
            status: 401,
            detail: "no Bearer or Basic challenge in WWW-Authenticate".to_owned(),
        })
    }

    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scope: &str,
        creds: Option<&Credentials>,
        what: &str,
    ) -> Result<(String, Duration)> {
        let Some(realm) = challenge.params.get("realm") else {
            return Err(RegistryError::Protocol {
                what: what.to_owned(),
                reason: "bearer challenge without realm".to_owned(),
            });
        };
        let token_what = format!("token for {what} from {realm:?}");
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
            what: token_what.clone(),
            reason: format!("invalid realm: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = challenge.params.get("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
            if let Some(extra) = challenge.params.get("scope").filter(|s| *s != scope) {
                q.append_pair("scope", extra);
            }
        }
        let auth = creds.map(Credentials::basic_header);
        let resp = self
            .send(
                &Method::GET,
                url,
                &HeaderMap::new(),
                None,
                auth.as_deref(),
                &token_what,
            )
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(status_error(resp, &token_what).await);
        }
        let body = read_limited(resp, TOKEN_BODY_LIMIT, &token_what).await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                what: token_what.clone(),
                reason: format!("invalid token response: {e}"),
            })?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| RegistryError::Protocol {
                what: token_what.clone(),
                reason: "token response has neither token nor access_token".to_owned(),
            })?;
        let lifetime = parsed
            .expires_in
            .filter(|s| *s > 0)
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        debug!(realm = %realm, scope, ?lifetime, "fetched registry token");
        Ok((token, lifetime))
    }

    /// One logical request: retries per hop, redirects followed by hand (for GET and HEAD
    /// only: an upload's answer is returned as it is). The `Authorization` header goes only to
    /// the origin of `url`; once a redirect leaves it, it is dropped for good.
    async fn send(
        &self,
        method: &Method,
        url: Url,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        auth: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response> {
        let mut url = url;
        let mut auth = auth;
        let follow = *method == Method::GET || *method == Method::HEAD;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self
                .send_with_retries(method, &url, headers, body, auth, what)
                .await?;
            let status = resp.status();
            if !follow || !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let next = url.join(location).map_err(|e| RegistryError::Protocol {
                what: what.to_owned(),
                reason: format!("{status} with invalid Location {location:?}: {e}"),
            })?;
            if !same_origin(&url, &next) {
                auth = None;
            }
            debug!(from = %url, to = %next, status = status.as_u16(), "following redirect");
            url = next;
        }
        Err(RegistryError::Protocol {
            what: what.to_owned(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    async fn send_with_retries(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        auth: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response> {
        let http = self.http_for(url);
        let max = self.max_attempts();
        let mut attempt = 1;
        loop {
            let mut req = http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = body {
                req = req.body(b.clone());
            }
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    debug!(%url, status = status.as_u16(), attempt, "registry response");
                    if !retryable(status) {
                        return Ok(resp);
                    }
                    if attempt >= max {
                        let (detail, _) = read_error_body(resp).await;
                        return Err(RegistryError::Exhausted {
                            what: what.to_owned(),
                            status: status.as_u16(),
                            attempts: attempt,
                            detail,
                        });
                    }
                    let delay = retry_after(&resp).map_or_else(
                        || self.backoff(attempt),
                        |d| d.min(self.inner.config.max_backoff),
                    );
                    warn!(%url, status = status.as_u16(), attempt, ?delay, "registry busy; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(source) => {
                    if source.is_builder() || attempt >= max {
                        return Err(RegistryError::Connect {
                            what: what.to_owned(),
                            url: url.to_string(),
                            attempts: attempt,
                            source,
                        });
                    }
                    let delay = self.backoff(attempt);
                    warn!(%url, attempt, ?delay, error = %source, "registry unreachable; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
        }
    }

    /// The HTTP client for `url`: loopback addresses never go through a proxy.
    pub(crate) fn http_for(&self, url: &Url) -> &reqwest::Client {
        if url_is_loopback(url) {
            &self.inner.direct
        } else {
            &self.inner.http
        }
    }

    /// Exponential back-off after try `attempt` (1-based), with up to 25% jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let cfg = &self.inner.config;
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let base = cfg
            .initial_backoff
            .saturating_mul(factor)
            .min(cfg.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let jitter = f64::from(nanos % 1000) / 4000.0;
        base.mul_f64(1.0 + jitter)
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn url_is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// `bytes <first>-<last>/<total|*>` → (first, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first = first.trim().parse::<u64>().ok()?;
    let last = last.trim().parse::<u64>().ok()?;
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    Some((first, total))
}

/// Reads a whole body, failing past `limit` bytes.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(RegistryError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| RegistryError::Body {
        what: what.to_owned(),
        source,
    })? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Turns a final non-success response into an error, with the registry's error codes.
pub(crate) async fn status_error(resp: reqwest::Response, what: &str) -> RegistryError {
    let status = resp.status().as_u16();
    let (detail, codes) = read_error_body(resp).await;
    let unknown = codes.iter().any(|c| {
        matches!(
            c.as_str(),
            "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "NAME_UNKNOWN"
        )
    });
    let what = what.to_owned();
    match status {
        404 => RegistryError::NotFound { what, detail },
        401 | 403 => RegistryError::Unauthorized {
            what,
            status,
            detail,
        },
        _ if unknown => RegistryError::NotFound { what, detail },
        _ => RegistryError::Status {
            what,
            status,
            detail,
        },
    }
}

/// The start of an error body, as `CODE: message` items when it is the registry's JSON error
/// form, else as text.
pub(crate) async fn read_error_body(mut resp: reqwest::Response) -> (String, Vec<String>) {
    let mut buf = Vec::new();
    while buf.len() < ERROR_BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    buf.truncate(ERROR_BODY_LIMIT);
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(&buf) {
        let codes = parsed.errors.iter().map(|e| e.code.clone()).collect();
        let text = parsed
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        return (text, codes);
    }
    let text = String::from_utf8_lossy(&buf);
    let text: String = text.trim().chars().take(200).collect();
    (text, Vec::new())
}

fn join_detail(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a}; {b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("bytes 99-10/100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn origins_and_loopback() {
        let u = |s: &str| Url::parse(s).expect(s);
        assert!(same_origin(&u("https://a/x"), &u("https://a:443/y")));
        assert!(!same_origin(&u("https://a/x"), &u("http://a/x")));
        assert!(!same_origin(&u("http://a:1/x"), &u("http://a:2/x")));
        assert!(!same_origin(&u("http://a/x"), &u("http://b/x")));
        assert!(url_is_loopback(&u("http://127.0.0.1:5000/v2/")));
        assert!(url_is_loopback(&u("http://[::1]:5000/v2/")));
        assert!(url_is_loopback(&u("http://localhost/v2/")));
        assert!(!url_is_loopback(&u("https://registry-1.docker.io/v2/")));
    }

    #[test]
    fn scheme_choice() {
        let client = Client::new(ClientConfig {
            insecure_registries: vec!["http://Reg.example:5000/".into()],
            ..ClientConfig::default()
        })
        .expect("client");
        let url = |r: &str| {
            client
                .endpoint(&Reference::parse(r).expect(r), "manifests", "latest")
                .expect("url")
                .to_string()
        };
        assert_eq!(
            url("busybox"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        assert_eq!(
            url("reg.example:5000/a"),
            "http://reg.example:5000/v2/a/manifests/latest"
        );
        assert_eq!(
            url("reg.example/a"),
            "https://reg.example/v2/a/manifests/latest"
        );
        assert_eq!(
            url("localhost:1/a/b"),
            "http://localhost:1/v2/a/b/manifests/latest"
        );
        assert_eq!(url("127.0.0.2/a"), "http://127.0.0.2/v2/a/manifests/latest");
        assert_eq!(url("[::1]:9/a"), "http://[::1]:9/v2/a/manifests/latest");
    }

    #[test]
    fn a_derived_client_adds_one_plain_http_registry_and_shares_tokens() {
        let base = Client::new(ClientConfig::default()).expect("client");
        let derived = base.with_insecure_registry("Reg.example:5000");
        let url = |c: &Client, r: &str| {
            c.endpoint(&Reference::parse(r).expect(r), "manifests", "latest")
                .expect("url")
                .to_string()
        };
        assert_eq!(
            url(&derived, "reg.example:5000/a"),
            "http://reg.example:5000/v2/a/manifests/latest"
        );
        assert_eq!(
            url(&base, "reg.example:5000/a"),
            "https://reg.example:5000/v2/a/manifests/latest"
        );
        assert!(Arc::ptr_eq(&base.inner.auth, &derived.inner.auth));
        assert_eq!(
            derived.config().insecure_registries,
            vec!["Reg.example:5000".to_owned()]
        );
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_are_send() {
        let client = Client::new(ClientConfig::default()).expect("client");
        let r = Reference::parse("busybox").expect("reference");
        let d = Digest::of(b"");
        assert_send(&client.resolve(&r));
        assert_send(&client.fetch_manifest(&r, &d));
        assert_send(&client.fetch_blob(&r, &d, 0));
        let debug = format!("{client:?}");
        assert!(debug.contains("insecure_registries"), "{debug}");
    }

    #[test]
    fn backoff_is_bounded() {
        let client = Client::new(ClientConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..ClientConfig::default()
        })
        .expect("client");
        for attempt in 1..100 {
            let d = client.backoff(attempt);
            assert!(d >= Duration::from_millis(100), "{attempt}: {d:?}");
            assert!(d <= Duration::from_millis(1250), "{attempt}: {d:?}");
        }
        assert!(client.backoff(3) >= Duration::from_millis(400));
    }
}
