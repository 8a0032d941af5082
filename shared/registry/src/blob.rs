//! Streaming blob bodies and a stream adapter that verifies their digest.

use crate::error::{RegistryError, Result};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use strata_core::Digest;

type Inner = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// The body of a blob as it arrives from the registry.
///
/// When a fetch asked for an offset, [`BlobStream::offset`] says where the body really starts:
/// the requested offset if the server honoured the range (206), or 0 if it sent the whole blob
/// (200) — then the caller must discard what it had and start over.
pub struct BlobStream {
    digest: Digest,
    offset: u64,
    total_size: Option<u64>,
    inner: Inner,
    /// The size the blob's descriptor declares, with what to call the blob in an error: the
    /// stream fails, and reads no further, once the blob would grow past it.
    declared: Option<(u64, String)>,
    /// Bytes yielded so far.
    seen: u64,
    failed: bool,
}

impl BlobStream {
    pub(crate) fn new(digest: Digest, offset: u64, total_size: Option<u64>, inner: Inner) -> Self {
        Self {
            digest,
            offset,
            total_size,
            inner,
            declared: None,
            seen: 0,
            failed: false,
        }
    }

    /// Makes the stream end with [`RegistryError::BeyondDeclaredSize`] as soon as the blob
    /// (from byte 0) would be longer than `size`: the chunk that crosses it is not yielded and
    /// nothing more is read.
    pub(crate) fn limit(mut self, size: u64, what: String) -> Self {
        self.declared = Some((size, what));
        self
    }

    /// The digest the blob was requested by.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The position in the blob of the first byte this stream yields.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True when the server honoured the range request (206) and the stream continues at
    /// [`offset`](Self::offset) > 0.
    pub fn resumed(&self) -> bool {
        self.offset > 0
    }

    /// The size of the whole blob, when the server said (`Content-Range` total or
    /// `Content-Length`).
    pub fn total_size(&self) -> Option<u64> {
        self.total_size
    }

    /// The number of bytes this stream will yield, when known.
    pub fn remaining(&self) -> Option<u64> {
        self.total_size.map(|t| t.saturating_sub(self.offset))
    }

    /// The next chunk; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        self.next().await
    }

    /// Wraps this stream so that it fails at the end unless the blob hashes to its digest.
    /// For a resumed stream, pass the hash state of the bytes before [`offset`](Self::offset)
    /// with [`Verify::resume`] instead.
    pub fn verify(self) -> Verify<Self> {
        let digest = self.digest.clone();
        let size = self.total_size;
        let v = Verify::new(self, digest);
        match size {
            Some(s) => v.expect_size(s),
            None => v,
        }
    }
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("digest", &self.digest)
            .field("offset", &self.offset)
            .field("total_size", &self.total_size)
            .finish_non_exhaustive()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            let seen = self.seen.saturating_add(chunk.len() as u64);
            let end = self.offset.saturating_add(seen);
            if let Some((declared, what)) = &self.declared
                && end > *declared
            {
                let err = RegistryError::BeyondDeclaredSize {
                    what: what.clone(),
                    declared: *declared,
                };
                self.failed = true;
                // Nothing more of the body is read: the connection is dropped with the stream.
                self.inner = Box::pin(futures_util::stream::empty());
                return Poll::Ready(Some(Err(err)));
            }
            self.seen = seen;
        }
        polled
    }
}

/// A stream adapter that hashes what passes through and, at the end, yields a
/// [`RegistryError::DigestMismatch`] (or `SizeMismatch`) naming the expected and actual values
/// instead of ending cleanly when they differ.
pub struct Verify<S> {
    inner: S,
    expected: Digest,
    hasher: sha2::Sha256,
    seen: u64,
    expected_size: Option<u64>,
    done: bool,
}

/// Verifies a whole blob stream against `expected`.
pub fn verify<S>(stream: S, expected: Digest) -> Verify<S>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    Verify::new(stream, expected)
}

impl<S> Verify<S>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    /// Verifies `stream` as the whole blob, from byte 0, against `expected`.
    pub fn new(stream: S, expected: Digest) -> Self {
        Self::resume(stream, expected, sha2::Sha256::new(), 0)
    }

    /// Continues a verification: `hasher` has already hashed the first `prefix_len` bytes of
    /// the blob, and `stream` yields the rest.
    pub fn resume(stream: S, expected: Digest, hasher: sha2::Sha256, prefix_len: u64) -> Self {
        Self {
            inner: stream,
            expected,
            hasher,
            seen: prefix_len,
            expected_size: None,
            done: false,
        }
    }

    /// Also require the whole blob (prefix included) to be `size` bytes.
    pub fn expect_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// The next chunk; `None` after the blob verified.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        self.next().await
    }

    fn finish(&mut self) -> Option<RegistryError> {
        let what = format!("blob {}", self.expected);
        if let Some(size) = self.expected_size
            && size != self.seen
        {
            return Some(RegistryError::SizeMismatch {
                what,
                expected: size,
                actual: self.seen,
            });
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        (actual != self.expected).then(|| RegistryError::DigestMismatch {
            what,
            expected: self.expected.clone(),
            actual,
        })
    }
}

impl<S> Stream for Verify<S>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.hasher.update(&chunk);
                self.seen += chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.finish().map(Err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    async fn drain<S: Stream<Item = Result<Bytes>> + Unpin>(mut s: S) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn verifies_whole_and_resumed() {
        let d = Digest::of(b"hello world");
        let got = drain(verify(chunks(&[b"hello", b" world"]), d.clone()))
            .await
            .expect("verified");
        assert_eq!(got, b"hello world");

        let mut h = sha2::Sha256::new();
        h.update(b"hello");
        let v = Verify::resume(chunks(&[b" world"]), d.clone(), h, 5).expect_size(11);
        assert_eq!(drain(v).await.expect("resumed"), b" world");

        let err = drain(verify(chunks(&[b"hello", b" there"]), d.clone()))
            .await
            .expect_err("mismatch");
        let msg = err.to_string();
        assert!(msg.contains(&d.to_string()), "{msg}");
        assert!(
            msg.contains(&Digest::of(b"hello there").to_string()),
            "{msg}"
        );
        assert_eq!(
            strata_core::Error::from(err).kind(),
            strata_core::Kind::FailedPrecondition
        );

        let err = drain(verify(chunks(&[b"hello"]), d.clone()).expect_size(11))
            .await
            .expect_err("short");
        assert!(
            err.to_string().contains("expected 11 bytes, got 5"),
            "{err}"
        );
    }
}
