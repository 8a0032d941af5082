//! The content store resource: committed blobs named by digest and in-progress ingests named by
//! ref, both per namespace. One trait, two implementations: the local store in `strata-content`
//! and the remote one (a gRPC client) in `strata-grpc`. Code written against [`ContentStore`]
//! cannot tell them apart, and one conformance suite runs against both.

use crate::digest::Digest;
use crate::errdefs::Result;
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

/// A committed blob as one namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's name: the digest of its bytes.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// When the namespace first held the blob.
    pub created_at: SystemTime,
    /// When its labels last changed (or its creation).
    pub updated_at: SystemTime,
    /// The namespace's labels on the blob.
    pub labels: HashMap<String, String>,
}

impl crate::filters::Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "digest" => Some(self.digest.to_string()),
            [f] if f == "size" => Some(self.size.to_string()),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
                self.labels.get(&rest.join(".")).cloned()
            }
            _ => None,
        }
    }
}

/// Progress of an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The ingest's ref, the client's name for it.
    pub reference: String,
    /// Bytes written so far.
    pub offset: u64,
    /// Expected total size, 0 when unknown.
    pub total: u64,
    /// Expected digest, when the writer was opened with one.
    pub expected: Option<Digest>,
    /// When the ingest was opened.
    pub started_at: SystemTime,
    /// When it was last written to.
    pub updated_at: SystemTime,
}

impl crate::filters::Adaptor for Status {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "ref" => Some(self.reference.clone()),
            [f] if f == "expected" => self.expected.as_ref().map(ToString::to_string),
            _ => None,
        }
    }
}

/// How a writer is opened.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// Expected size, 0 when unknown.
    pub total: u64,
    /// Expected digest: when the namespace already holds it, opening fails with AlreadyExists.
    pub expected: Option<Digest>,
}

/// Commits an ingest into a blob.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Size the blob must have, 0 for no check.
    pub size: u64,
    /// Digest the blob must have, if any.
    pub expected: Option<Digest>,
    /// Labels the committed blob gets.
    pub labels: HashMap<String, String>,
}

/// An open ingest. Only one writer per ref exists at a time; dropping it releases the ref, and
/// the ingest stays resumable until it is committed or aborted.
pub trait ContentWriter: Send {
    /// The ingest's progress.
    fn status(&mut self) -> impl Future<Output = Result<Status>> + Send;
    /// Writes `data` at `offset`, which must be the current offset, or 0 to restart from the
    /// beginning. Returns the new offset.
    fn write(&mut self, offset: u64, data: Bytes) -> impl Future<Output = Result<u64>> + Send;
    /// Verifies size and digest, makes the blob durable and visible, and ends the ingest.
    /// AlreadyExists when the namespace already holds the blob (the ingest is removed all the
    /// same).
    fn commit(&mut self, opts: CommitOptions) -> impl Future<Output = Result<Digest>> + Send;
    /// The digest of the bytes written so far.
    fn digest(&self) -> Digest;
}

/// A chunk read from a blob.
pub type ReadChunk = Result<(u64, Bytes)>;

/// A namespaced, content-addressed blob store.
pub trait ContentStore: Send + Sync + 'static {
    /// An open ingest of this store.
    type Writer: ContentWriter + 'static;
    /// A blob being read from this store.
    type Reader: futures_like::ChunkStream + 'static;

    /// The blob `digest`; NotFound unless the namespace holds it.
    fn info(&self, ns: &str, digest: &Digest) -> impl Future<Output = Result<Info>> + Send;
    /// Replaces labels; with field paths (`labels`, `labels.<key>`) only those are touched.
    fn update(
        &self,
        ns: &str,
        info: Info,
        fieldpaths: &[String],
    ) -> impl Future<Output = Result<Info>> + Send;
    /// The namespace's blobs that match any of `filters` (containerd's syntax), all of them
    /// without filters.
    fn list(&self, ns: &str, filters: &[String]) -> impl Future<Output = Result<Vec<Info>>> + Send;
    /// Removes the blob from the namespace.
    fn delete(&self, ns: &str, digest: &Digest) -> impl Future<Output = Result<()>> + Send;
    /// Reads `size` bytes from `offset` (0 = to the end) as a stream of chunks.
    fn read(
        &self,
        ns: &str,
        digest: &Digest,
        offset: u64,
        size: u64,
    ) -> impl Future<Output = Result<Self::Reader>> + Send;
    /// The progress of the ingest `reference`.
    fn status(&self, ns: &str, reference: &str) -> impl Future<Output = Result<Status>> + Send;
    /// The namespace's ingests that match any of `filters` (`ref`, `expected`), all of them
    /// without filters.
    fn list_statuses(
        &self,
        ns: &str,
        filters: &[String],
    ) -> impl Future<Output = Result<Vec<Status>>> + Send;
    /// Ends the ingest `reference` and discards what it wrote.
    fn abort(&self, ns: &str, reference: &str) -> impl Future<Output = Result<()>> + Send;
    /// Opens (or resumes) the ingest `reference`.
    fn writer(
        &self,
        ns: &str,
        reference: &str,
        opts: WriterOptions,
    ) -> impl Future<Output = Result<Self::Writer>> + Send;
}

/// A minimal pull-based stream of chunks, so this crate needs no futures dependency.
pub mod futures_like {
    use super::ReadChunk;
    use std::future::Future;

    /// Chunks of a blob, each with its offset, pulled one at a time.
    pub trait ChunkStream: Send {
        /// The next chunk, `None` at the end.
        fn next_chunk(&mut self) -> impl Future<Output = Option<ReadChunk>> + Send;
    }
}

/// Reads a whole blob into memory (for manifests, configs and tests).
pub async fn read_all<S: ContentStore>(store: &S, ns: &str, digest: &Digest) -> Result<Vec<u8>> {
    use futures_like::ChunkStream as _;
    let mut reader = store.read(ns, digest, 0, 0).await?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await {
        out.extend_from_slice(&chunk?.1);
    }
    Ok(out)
}

/// Writes a whole blob under `reference` and commits it; AlreadyExists is success.
pub async fn write_blob<S: ContentStore>(
    store: &S,
    ns: &str,
    reference: &str,
    data: &[u8],
    expected: Option<Digest>,
    labels: HashMap<String, String>,
) -> Result<Digest> {
    let opened = store
        .writer(
            ns,
            reference,
            WriterOptions {
                total: data.len() as u64,
                expected: expected.clone(),
            },
        )
        .await;
    write_opened(opened, data, expected, labels).await
}

/// Writes a whole blob into a writer already opened with `expected` and commits it; a writer
/// that could not be opened because the blob exists (AlreadyExists) is success, as is a commit
/// that finds it there.
pub async fn write_opened<W: ContentWriter>(
    opened: Result<W>,
    data: &[u8],
    expected: Option<Digest>,
    labels: HashMap<String, String>,
) -> Result<Digest> {
    let size = data.len() as u64;
    let mut w = match opened {
        Ok(w) => w,
        Err(e) if e.is(crate::Kind::AlreadyExists) => {
            return Ok(expected.unwrap_or_else(|| Digest::of(data)));
        }
        Err(e) => return Err(e),
    };
    let mut offset = w.status().await?.offset;
    if offset > size {
        // Longer than the blob: not a prefix of it, start over.
        offset = w.write(0, Bytes::new()).await?;
    }
    let mut pos = usize::try_from(offset).unwrap_or(0);
    while pos < data.len() {
        let end = (pos + (1 << 20)).min(data.len());
        offset = w
            .write(offset, Bytes::copy_from_slice(&data[pos..end]))
            .await?;
        pos = end;
    }
    match w
        .commit(CommitOptions {
            size,
            expected,
            labels,
        })
        .await
    {
        Ok(d) => Ok(d),
        Err(e) if e.is(crate::Kind::AlreadyExists) => Ok(w.digest()),
        Err(e) => Err(e),
    }
}
