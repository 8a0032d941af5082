//! Pushing to a registry, as the OCI distribution spec describes it: a blob is looked for first
//! (`HEAD`) and skipped when the repository has it; one that another repository of the same
//! registry holds is mounted from there; any other is uploaded, in one `PUT` when small, in
//! `PATCH` chunks with `Content-Range` then a closing `PUT` when large. Manifests are put last,
//! by tag or digest, so nothing names a blob the registry lacks.
//!
//! Authentication is pull's (cached bearer tokens or basic credentials, from explicit
//! credentials or the Docker config file), with the `pull,push` scope. Blob bytes come from a
//! [`BlobSource`] in ranges, never whole in memory; a failed upload starts again from a new
//! upload session, up to [`ClientConfig::max_attempts`](crate::ClientConfig) times.

use crate::client::{Client, read_limited, same_origin, status_error};
use crate::error::{RegistryError, Result};
use crate::reference::Reference;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use strata_core::Digest;
use tracing::{debug, warn};

/// Header carrying the registry's idea of a manifest's digest.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// How much of a successful answer is read (and dropped) so its connection can be reused.
const DRAIN_LIMIT: u64 = 64 << 10;

/// A stream of a blob's bytes, as a [`BlobSource`] hands it out.
pub type ByteStream = Pin<Box<dyn Stream<Item = strata_core::Result<Bytes>> + Send + 'static>>;

/// Where the bytes of a blob to push come from. [`open`](BlobSource::open) may be called
/// several times for one blob: once per chunk, and again when an upload is retried.
pub trait BlobSource: Send + Sync {
    /// The bytes from `offset`, `len` of them.
    fn open(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = strata_core::Result<ByteStream>> + Send;
}

/// What pushing a blob took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPushed {
    /// The repository had it already.
    Exists,
    /// Mounted from another repository of the registry: no bytes sent.
    Mounted,
    /// Its bytes were sent.
    Uploaded,
}

/// The error a [`BlobSource`] stream broke with, kept aside: the HTTP client only sees that
/// the body ended badly.
#[derive(Default, Clone)]
struct SourceError(Arc<Mutex<Option<strata_core::Error>>>);

impl SourceError {
    fn set(&self, e: strata_core::Error) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn take(&self) -> Option<strata_core::Error> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A chunk error for the HTTP client's body stream.
#[derive(Debug, thiserror::Error)]
#[error("reading the blob to send: {0}")]
struct BodyError(String);

impl Client {
    /// True when `reference`'s repository has blob `digest` (`HEAD`, with the push scope).
    pub async fn blob_exists(&self, reference: &Reference, digest: &Digest) -> Result<bool> {
        let what = format!("blob {digest} in {:?}", reference.name());
        let url = self.endpoint(reference, "blobs", &digest.to_string())?;
        let resp = self
            .request(
                reference,
                &reference.push_scope(),
                &Method::HEAD,
                url,
                &HeaderMap::new(),
                None,
                &what,
            )
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(resp, &what).await),
        }
    }

    /// Makes sure `reference`'s repository has blob `digest` of `size` bytes: skipped when it
    /// is there, mounted from repository `mount_from` of the same registry when given (the
    /// registry falls back to an upload when it cannot), else uploaded from `source`. Bytes
    /// sent are added to `sent` as they go (it is set back to 0 when an upload starts over).
    pub async fn push_blob<S: BlobSource>(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
        source: &S,
        sent: &Arc<AtomicU64>,
    ) -> Result<BlobPushed> {
        match self.blob_exists(reference, digest).await {
            Ok(true) => {
                debug!(%reference, %digest, "blob already in the repository");
                return Ok(BlobPushed::Exists);
            }
            Ok(false) => {}
            // A refused HEAD carries no body: the POST below gets the registry's own words.
            Err(RegistryError::Unauthorized { .. }) => {}
            Err(e) => return Err(e),
        }
        let what = format!("upload of blob {digest} to {:?}", reference.name());
        let mount_from = mount_from.filter(|f| !f.is_empty() && *f != reference.repository());
        let max = self.max_attempts();
        let mut attempt = 1;
        loop {
            sent.store(0, Ordering::Relaxed);
            let r = self
                .upload_once(reference, digest, size, mount_from, source, sent, &what)
                .await;
            match r {
                Err(e) if attempt < max && retryable(&e) => {
                    let delay = self.backoff(attempt);
                    warn!(%reference, %digest, attempt, ?delay, error = %e, "blob upload failed; starting it again");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Puts a manifest or index (`bytes`, of `media_type`) under `reference`'s tag or digest;
    /// returns its digest. Every blob and child manifest it names must be in the repository.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let what = format!("push of manifest {:?}", reference.to_string());
        let digest = Digest::of(bytes);
        if let Some(d) = reference.digest()
            && *d != digest
        {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: d.clone(),
                actual: digest,
            });
        }
        let url = self.endpoint(reference, "manifests", &reference.manifest_reference())?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header_value(media_type, &what)?);
        let body = Bytes::copy_from_slice(bytes);
        let resp = self
            .request(
                reference,
                &reference.push_scope(),
                &Method::PUT,
                url,
                &headers,
                Some(&body),
                &what,
            )
            .await?;
        if resp.status() != StatusCode::CREATED && resp.status() != StatusCode::OK {
            return Err(status_error(resp, &what).await);
        }
        if let Some(announced) = resp
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v.trim()).ok())
            && announced != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("{what} (Docker-Content-Digest header)"),
                expected: digest,
                actual: announced,
            });
        }
        drain(resp).await;
        debug!(%reference, %digest, media_type, "manifest pushed");
        Ok(digest)
    }

    /// One upload session: mount or start, then one PUT or PATCH chunks and a closing PUT.
    #[allow(clippy::too_many_arguments)]
    async fn upload_once<S: BlobSource>(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
        source: &S,
        sent: &Arc<AtomicU64>,
        what: &str,
    ) -> Result<BlobPushed> {
        let scope = reference.push_scope();
        let mut url = self.endpoint(reference, "blobs", "uploads/")?;
        if let Some(from) = mount_from {
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let empty = Bytes::new();
        let resp = self
            .request(
                reference,
                &scope,
                &Method::POST,
                url.clone(),
                &headers,
                Some(&empty),
                what,
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount_from.is_some() => {
                drain(resp).await;
                debug!(%reference, %digest, from = mount_from, "blob mounted");
                return Ok(BlobPushed::Mounted);
            }
            StatusCode::ACCEPTED => {}
            _ => return Err(status_error(resp, what).await),
        }
        let location = upload_location(&resp, &url, what)?;
        drain(resp).await;
        let threshold = self.config().chunked_upload_threshold;
        if size <= threshold {
            let mut put = location;
            put.query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            let body = source
                .open(0, size)
                .await
                .map_err(|e| source_error(e, what))?;
            let resp = self
                .send_body(reference, &Method::PUT, put, size, None, body, sent, what)
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(resp, what).await);
            }
            drain(resp).await;
            return Ok(BlobPushed::Uploaded);
        }
        let location = self
            .send_chunks(reference, location, size, source, sent, what)
            .await?;
        let mut put = location;
        put.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .request(
                reference,
                &scope,
                &Method::PUT,
                put,
                &headers,
                Some(&empty),
                what,
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(resp, what).await);
        }
        drain(resp).await;
        Ok(BlobPushed::Uploaded)
    }

    /// Sends the `size` bytes of `source` to the upload session at `location` as PATCH chunks,
    /// checking the range the registry acknowledges; the session's location for the closing PUT.
    async fn send_chunks<S: BlobSource>(
        &self,
        reference: &Reference,
        mut location: Url,
        size: u64,
        source: &S,
        sent: &Arc<AtomicU64>,
        what: &str,
    ) -> Result<Url> {
        let chunk = self.config().upload_chunk_size.max(1);
        let mut offset = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let last = offset + len - 1;
            let body = source
                .open(offset, len)
                .await
                .map_err(|e| source_error(e, what))?;
            let resp = self
                .send_body(
                    reference,
                    &Method::PATCH,
                    location.clone(),
                    len,
                    Some(format!("{offset}-{last}")),
                    body,
                    sent,
                    what,
                )
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(resp, what).await);
            }
            if let Some(range) = resp.headers().get(header::RANGE)
                && let Some(end) = range_end(range.to_str().unwrap_or_default())
                && end != last
            {
                return Err(RegistryError::Protocol {
                    what: what.to_owned(),
                    reason: format!("sent bytes up to {last}, the registry has up to {end}"),
                });
            }
            location = match resp.headers().get(header::LOCATION) {
                Some(_) => upload_location(&resp, &location, what)?,
                None => location,
            };
            drain(resp).await;
            offset += len;
        }
        Ok(location)
    }

    /// Sends a streamed body once, with the push scope's cached authorization (the `HEAD` and
    /// `POST` before it answered any challenge). Not retried here: the caller starts over.
    #[allow(clippy::too_many_arguments)]
    async fn send_body(
        &self,
        reference: &Reference,
        method: &Method,
        url: Url,
        len: u64,
        content_range: Option<String>,
        body: ByteStream,
        sent: &Arc<AtomicU64>,
        what: &str,
    ) -> Result<reqwest::Response> {
        let key = (reference.registry().to_owned(), reference.push_scope());
        let base = self.endpoint(reference, "blobs", "uploads/")?;
        // Credentials only to the registry itself, should an upload location point elsewhere.
        let auth = if same_origin(&base, &url) {
            self.cached_auth(&key)?
        } else {
            None
        };
        let failed = SourceError::default();
        let counter = Arc::clone(sent);
        let slot = failed.clone();
        let stream = body.map(move |chunk| match chunk {
            Ok(b) => {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(b)
            }
            Err(e) => {
                let text = e.to_string();
                slot.set(e);
                Err(BodyError(text))
            }
        });
        let mut req = self
            .http_for(&url)
            .request(method.clone(), url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(range) = content_range {
            req = req.header(header::CONTENT_RANGE, range);
        }
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let result = req.send().await;
        if let Some(e) = failed.take() {
            return Err(source_error(e, what));
        }
        match result {
            Ok(resp) => {
                debug!(%url, %method, status = resp.status().as_u16(), "upload response");
                Ok(resp)
            }
            Err(source) => Err(RegistryError::Connect {
                what: what.to_owned(),
                url: url.to_string(),
                attempts: 1,
                source,
            }),
        }
    }
}

/// Errors worth starting an upload again for: the network, a busy or failing registry.
fn retryable(e: &RegistryError) -> bool {
    match e {
        RegistryError::Connect { .. }
        | RegistryError::Exhausted { .. }
        | RegistryError::Body { .. } => true,
        RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

fn source_error(e: strata_core::Error, what: &str) -> RegistryError {
    RegistryError::Source {
        what: what.to_owned(),
        source: e,
    }
}

fn header_value(v: &str, what: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(v).map_err(|e| RegistryError::Protocol {
        what: what.to_owned(),
        reason: format!("invalid header value {v:?}: {e}"),
    })
}

/// The upload session's URL from an answer's `Location`, which may be relative to `base`.
fn upload_location(resp: &reqwest::Response, base: &Url, what: &str) -> Result<Url> {
    let raw = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| RegistryError::Protocol {
            what: what.to_owned(),
            reason: format!("{} without a Location", resp.status()),
        })?;
    base.join(raw.trim()).map_err(|e| RegistryError::Protocol {
        what: what.to_owned(),
        reason: format!("invalid Location {raw:?}: {e}"),
    })
}

/// `0-<end>` (or `bytes=0-<end>`) → end.
fn range_end(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (_, end) = v.split_once('-')?;
    end.trim().parse().ok()
}

/// Reads a little of a successful answer's body and drops it.
async fn drain(resp: reqwest::Response) {
    let _ = read_limited(resp, DRAIN_LIMIT, "").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges() {
        assert_eq!(range_end("0-1023"), Some(1023));
        assert_eq!(range_end("bytes=0-9"), Some(9));
        assert_eq!(range_end("nonsense"), None);
    }

    #[test]
    fn what_is_retried() {
        let status = |s| RegistryError::Status {
            what: String::new(),
            status: s,
            detail: String::new(),
        };
        assert!(retryable(&status(503)));
        assert!(retryable(&status(429)));
        assert!(!retryable(&status(400)));
        assert!(!retryable(&RegistryError::Unauthorized {
            what: String::new(),
            status: 401,
            detail: String::new(),
        }));
    }
}
