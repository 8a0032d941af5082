//! [`ContentStore`] over gRPC: talks to strata-content, the gateway, or containerd itself.

use crate::convert::{info_from_pb, info_to_pb, size, status_from_pb, wire_size};
use crate::metadata::with_namespace;
use crate::status::from_status;
use bytes::Bytes;
use strata_api::containerd::services::content::v1 as pb;
use strata_api::containerd::services::content::v1::content_client::ContentClient;
use strata_core::content::futures_like::ChunkStream;
use strata_core::content::{
    CommitOptions, ContentStore, ContentWriter, Info, ReadChunk, Status, WriterOptions,
};
use strata_core::{Digest, Error, Result};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Largest message accepted from a server: reads arrive in chunks of up to 1 MiB.
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, Clone)]
/// A [`ContentStore`] answered by a server of the Content API.
pub struct RemoteContentStore {
    client: ContentClient<Channel>,
    /// Deletions ask for no `/content/delete` event (the collector's).
    quiet: bool,
}

impl RemoteContentStore {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ContentClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            quiet: false,
        }
    }

    /// This store's deletions are strata's own bookkeeping (the garbage collector's): the
    /// content service publishes no `/content/delete` for them, as containerd publishes none
    /// for what its collector removes.
    #[must_use]
    pub fn without_events(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }
}

/// A blob being read: the chunks of a `Read` call's response stream.
pub struct RemoteReader {
    stream: Streaming<pb::ReadContentResponse>,
}

impl ChunkStream for RemoteReader {
    async fn next_chunk(&mut self) -> Option<ReadChunk> {
        match self.stream.message().await {
            Ok(Some(m)) => Some(size("offset", m.offset).map(|o| (o, m.data))),
            Ok(None) => None,
            Err(s) => Some(Err(from_status(s))),
        }
    }
}

/// A blob being written: one `Write` call's bidirectional stream, one request answered at a
/// time.
pub struct RemoteWriter {
    reference: String,
    tx: mpsc::Sender<pb::WriteContentRequest>,
    rx: Streaming<pb::WriteContentResponse>,
    total: u64,
    /// The server's offset after the last answer: a COMMIT must carry it, since offset 0 means
    /// "start over".
    offset: u64,
    digest: Option<Digest>,
}

impl RemoteWriter {
    async fn round_trip(
        &mut self,
        req: pb::WriteContentRequest,
    ) -> Result<pb::WriteContentResponse> {
        let closed =
            || Error::internal(format!("write stream for ref {:?} closed", self.reference));
        self.tx.send(req).await.map_err(|_| closed())?;
        match self.rx.message().await {
            Ok(Some(resp)) => {
                self.offset = u64::try_from(resp.offset).unwrap_or(0);
                if let Ok(Some(d)) = crate::convert::opt_digest(&resp.digest) {
                    self.digest = Some(d);
                }
                Ok(resp)
            }
            Ok(None) => Err(closed()),
            Err(s) => Err(from_status(s)),
        }
    }
}

impl ContentWriter for RemoteWriter {
    async fn status(&mut self) -> Result<Status> {
        let resp = self
            .round_trip(pb::WriteContentRequest {
                action: pb::WriteAction::Stat.into(),
                r#ref: self.reference.clone(),
                ..Default::default()
            })
            .await?;
        status_from_pb(pb::Status {
            started_at: resp.started_at,
            updated_at: resp.updated_at,
            r#ref: self.reference.clone(),
            offset: resp.offset,
            total: resp.total,
            expected: String::new(),
        })
    }

    async fn write(&mut self, offset: u64, data: Bytes) -> Result<u64> {
        let resp = self
            .round_trip(pb::WriteContentRequest {
                action: pb::WriteAction::Write.into(),
                r#ref: self.reference.clone(),
                offset: wire_size(offset),
                data,
                total: wire_size(self.total),
                ..Default::default()
            })
            .await?;
        size("offset", resp.offset)
    }

    async fn commit(&mut self, opts: CommitOptions) -> Result<Digest> {
        let resp = self
            .round_trip(pb::WriteContentRequest {
                action: pb::WriteAction::Commit.into(),
                r#ref: self.reference.clone(),
                offset: wire_size(self.offset),
                total: wire_size(opts.size),
                expected: opts.expected.map(|d| d.to_string()).unwrap_or_default(),
                labels: opts.labels,
                ..Default::default()
            })
            .await?;
        Digest::parse(&resp.digest)
    }

    fn digest(&self) -> Digest {
        self.digest.clone().unwrap_or_else(|| Digest::of(b""))
    }
}

impl ContentStore for RemoteContentStore {
    type Writer = RemoteWriter;
    type Reader = RemoteReader;

    async fn info(&self, ns: &str, digest: &Digest) -> Result<Info> {
        let req = with_namespace(
            ns,
            pb::InfoRequest {
                digest: digest.to_string(),
            },
        )?;
        let resp = self.client.clone().info(req).await.map_err(from_status)?;
        let info = resp.into_inner().info.ok_or_else(|| {
            Error::internal(format!("info for {digest} came back without a body"))
        })?;
        info_from_pb(info)
    }

    async fn update(&self, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let req = with_namespace(
            ns,
            pb::UpdateRequest {
                info: Some(info_to_pb(info)),
                update_mask: (!fieldpaths.is_empty()).then(|| prost_types::FieldMask {
                    paths: fieldpaths.to_vec(),
                }),
            },
        )?;
        let resp = self.client.clone().update(req).await.map_err(from_status)?;
        let info = resp
            .into_inner()
            .info
            .ok_or_else(|| Error::internal("update came back without a body"))?;
        info_from_pb(info)
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Info>> {
        let req = with_namespace(
            ns,
            pb::ListContentRequest {
                filters: filters.to_vec(),
            },
        )?;
        let mut stream = self
            .client
            .clone()
            .list(req)
            .await
            .map_err(from_status)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(batch) = stream.message().await.map_err(from_status)? {
            for info in batch.info {
                out.push(info_from_pb(info)?);
            }
        }
        Ok(out)
    }

    async fn delete(&self, ns: &str, digest: &Digest) -> Result<()> {
        let mut req = with_namespace(
            ns,
            pb::DeleteContentRequest {
                digest: digest.to_string(),
            },
        )?;
        if self.quiet {
            crate::metadata::without_events(&mut req);
        }
        self.client.clone().delete(req).await.map_err(from_status)?;
        Ok(())
    }

    async fn read(&self, ns: &str, digest: &Digest, offset: u64, len: u64) -> Result<RemoteReader> {
        let req = with_namespace(
            ns,
            pb::ReadContentRequest {
                digest: digest.to_string(),
                offset: wire_size(offset),
                size: wire_size(len),
            },
        )?;
        let stream = self
            .client
            .clone()
            .read(req)
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(RemoteReader { stream })
    }

    async fn status(&self, ns: &str, reference: &str) -> Result<Status> {
        let req = with_namespace(
            ns,
            pb::StatusRequest {
                r#ref: reference.to_owned(),
            },
        )?;
        let resp = self.client.clone().status(req).await.map_err(from_status)?;
        let st = resp
            .into_inner()
            .status
            .ok_or_else(|| Error::internal(format!("status of {reference:?} without a body")))?;
        status_from_pb(st)
    }

    async fn list_statuses(&self, ns: &str, filters: &[String]) -> Result<Vec<Status>> {
        let req = with_namespace(
            ns,
            pb::ListStatusesRequest {
                filters: filters.to_vec(),
            },
        )?;
        let resp = self
            .client
            .clone()
            .list_statuses(req)
            .await
            .map_err(from_status)?;
        resp.into_inner()
            .statuses
            .into_iter()
            .map(status_from_pb)
            .collect()
    }

    async fn abort(&self, ns: &str, reference: &str) -> Result<()> {
        let req = with_namespace(
            ns,
            pb::AbortRequest {
                r#ref: reference.to_owned(),
            },
        )?;
        self.client.clone().abort(req).await.map_err(from_status)?;
        Ok(())
    }

    async fn writer(&self, ns: &str, reference: &str, opts: WriterOptions) -> Result<RemoteWriter> {
        let (tx, rx) = mpsc::channel(4);
        let first = pb::WriteContentRequest {
            action: pb::WriteAction::Stat.into(),
            r#ref: reference.to_owned(),
            total: wire_size(opts.total),
            expected: opts
                .expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ..Default::default()
        };
        tx.send(first)
            .await
            .map_err(|_| Error::internal("write channel closed"))?;
        let req = with_namespace(ns, ReceiverStream::new(rx))?;
        let mut stream = self
            .client
            .clone()
            .write(req)
            .await
            .map_err(from_status)?
            .into_inner();
        // The answer to the opening STAT tells whether the writer could be opened at all.
        let resp = stream
            .message()
            .await
            .map_err(from_status)?
            .ok_or_else(|| Error::internal(format!("write stream for {reference:?} closed")))?;
        Ok(RemoteWriter {
            reference: reference.to_owned(),
            tx,
            rx: stream,
            total: opts.total,
            offset: u64::try_from(resp.offset).unwrap_or(0),
            digest: crate::convert::opt_digest(&resp.digest).ok().flatten(),
        })
    }
}

/// Opens (or resumes) the ingest `reference` as containerd's clients do (`content.OpenWriter`):
/// a ref held by another active writer (Unavailable) is waited for, with a doubling pause,
/// rather than failed, so concurrent pulls or imports of the same blob each succeed. When the
/// other writer commits the expected blob meanwhile, the store answers AlreadyExists, which the
/// caller takes as the blob being there. Waits as long as the other writer lives: its stream
/// holds the ref, and a writer that goes away releases it.
pub async fn open_writer<S: ContentStore>(
    store: &S,
    ns: &str,
    reference: &str,
    opts: WriterOptions,
) -> Result<S::Writer> {
    use std::time::Duration;
    let mut pause = Duration::from_millis(2);
    let mut logged = false;
    let started = std::time::Instant::now();
    loop {
        match store.writer(ns, reference, opts.clone()).await {
            Err(e) if e.is(strata_core::Kind::Unavailable) => {
                if !logged && started.elapsed() >= Duration::from_secs(5) {
                    logged = true;
                    tracing::debug!(reference, "waiting for another writer of this ref");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            r => return r,
        }
    }
}
