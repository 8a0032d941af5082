//! The gRPC adapter: turns `containerd.services.content.v1.Content` calls into calls on any
//! [`ContentStore`], and domain errors into containerd's status codes. No storage logic here.

use bytes::Bytes;
use std::sync::Arc;
use strata_api::containerd::events as ev;
use strata_api::containerd::services::content::v1 as pb;
use strata_api::containerd::services::content::v1::content_server::{Content, ContentServer};
use strata_core::content::futures_like::ChunkStream;
use strata_core::content::{CommitOptions, ContentStore, ContentWriter, WriterOptions};
use strata_core::events::{EventSink, NoEvents, topics, types};
use strata_core::{Digest, Error};
use strata_grpc::convert::{
    info_from_pb, info_to_pb, opt_digest, size, status_to_pb, timestamp, wire_size,
};
use strata_grpc::metadata::{events_wanted, namespace};
use strata_grpc::remote::event_queue::encode;
use strata_grpc::to_status;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How many infos go in one List message.
const LIST_BATCH: usize = 100;
/// Largest message accepted: writes come in chunks of 1 MiB from containerd clients.
pub const MAX_MESSAGE: usize = 16 << 20;

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// Serves the Content API over any store.
pub struct ContentService<S> {
    store: Arc<S>,
    events: Arc<dyn EventSink>,
}

impl<S: ContentStore> ContentService<S> {
    /// A service that publishes no events.
    pub fn new(store: Arc<S>) -> Self {
        Self {
            store,
            events: Arc::new(NoEvents),
        }
    }

    /// Posts `/content/delete` to `events` for every blob a client deletes.
    #[must_use]
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// The tonic server for this service, with message limits fit for 1 MiB chunks.
    pub fn into_server(self) -> ContentServer<Self> {
        ContentServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

fn digest_arg(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(to_status)
}

fn st(e: Error) -> Status {
    to_status(e)
}

#[tonic::async_trait]
impl<S: ContentStore> Content for ContentService<S> {
    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let ns = namespace(&request)?;
        let d = digest_arg(&request.get_ref().digest)?;
        let info = self.store.info(&ns, &d).await.map_err(st)?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let info = req
            .info
            .ok_or_else(|| Status::invalid_argument("update request needs an info"))?;
        let info = info_from_pb(info).map_err(st)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = self.store.update(&ns, info, &paths).await.map_err(st)?;
        Ok(Response::new(pb::UpdateResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    type ListStream = Stream<pb::ListContentResponse>;

    async fn list(
        &self,
        request: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&request)?;
        let infos = self
            .store
            .list(&ns, &request.get_ref().filters)
            .await
            .map_err(st)?;
        let batches = infos.len().div_ceil(LIST_BATCH).max(1);
        let (tx, rx) = mpsc::channel(batches);
        let mut infos = infos.into_iter().map(info_to_pb).peekable();
        while infos.peek().is_some() {
            let batch: Vec<_> = infos.by_ref().take(LIST_BATCH).collect();
            // The channel holds every batch, so this never waits.
            let _ = tx.try_send(Ok(pb::ListContentResponse { info: batch }));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteContentRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let d = digest_arg(&request.get_ref().digest)?;
        self.store.delete(&ns, &d).await.map_err(st)?;
        if events_wanted(&request) {
            let event = ev::ContentDelete {
                digest: d.to_string(),
            };
            self.events.post(
                &ns,
                topics::CONTENT_DELETE,
                encode(types::CONTENT_DELETE, &event),
            );
        }
        Ok(Response::new(()))
    }

    type ReadStream = Stream<pb::ReadContentResponse>;

    async fn read(
        &self,
        request: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let d = digest_arg(&req.digest)?;
        // containerd reads from 0 when the offset is negative and to the end when size <= 0.
        let offset = u64::try_from(req.offset).unwrap_or(0);
        let len = u64::try_from(req.size).unwrap_or(0);
        let mut reader = self.store.read(&ns, &d, offset, len).await.map_err(st)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(chunk) = reader.next_chunk().await {
                let msg = chunk
                    .map(|(offset, data)| pb::ReadContentResponse {
                        offset: wire_size(offset),
                        data,
                    })
                    .map_err(st);
                let failed = msg.is_err();
                if tx.send(msg).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ns = namespace(&request)?;
        let status = self
            .store
            .status(&ns, &request.get_ref().r#ref)
            .await
            .map_err(st)?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(status_to_pb(status)),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let ns = namespace(&request)?;
        let statuses = self
            .store
            .list_statuses(&ns, &request.get_ref().filters)
            .await
            .map_err(st)?;
        Ok(Response::new(pb::ListStatusesResponse {
            statuses: statuses.into_iter().map(status_to_pb).collect(),
        }))
    }

    type WriteStream = Stream<pb::WriteContentResponse>;

    async fn write(
        &self,
        request: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace(&request)?;
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument("write stream closed before its first message")
        })?;
        if first.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        let opts = WriterOptions {
            total: size("total", first.total).map_err(st)?,
            expected: opt_digest(&first.expected).map_err(st)?,
        };
        let writer = self
            .store
            .writer(&ns, &first.r#ref, opts.clone())
            .await
            .map_err(st)?;
        let (tx, rx) = mpsc::channel(4);
        let session = WriteSession {
            store: self.store.clone(),
            ns,
            reference: first.r#ref.clone(),
            total: opts.total,
            expected: opts.expected,
            tx,
        };
        tokio::spawn(session.run(writer, first, stream));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort(&self, request: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        self.store
            .abort(&ns, &request.get_ref().r#ref)
            .await
            .map_err(st)?;
        Ok(Response::new(()))
    }
}

/// One Write stream after its writer is open: STAT, WRITE and COMMIT messages in turn, each
/// answered with the writer's state, as containerd's server does.
struct WriteSession<S> {
    store: Arc<S>,
    ns: String,
    reference: String,
    total: u64,
    expected: Option<Digest>,
    tx: mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
}

impl<S: ContentStore> WriteSession<S> {
    async fn run(
        mut self,
        writer: S::Writer,
        first: pb::WriteContentRequest,
        mut stream: Streaming<pb::WriteContentRequest>,
    ) {
        let mut writer = Some(writer);
        let mut req = first;
        loop {
            let result = self.handle(&mut writer, &req).await;
            let done = match &result {
                Ok(msg) => msg.action == i32::from(pb::WriteAction::Commit),
                Err(_) => true,
            };
            if let Err(e) = &result
                && e.code() != tonic::Code::AlreadyExists
            {
                tracing::warn!(reference = %self.reference, error = %e.message(), "write failed");
            }
            if self.tx.send(result).await.is_err() || done {
                return;
            }
            req = match stream.message().await {
                Ok(Some(next)) => next,
                // The client went away; the ingest stays resumable by its ref.
                Ok(None) | Err(_) => return,
            };
        }
    }

    async fn handle(
        &mut self,
        writer: &mut Option<S::Writer>,
        req: &pb::WriteContentRequest,
    ) -> Result<pb::WriteContentResponse, Status> {
        let Some(w) = writer.as_mut() else {
            return Err(Status::failed_precondition("writer already closed"));
        };
        let action = pb::WriteAction::try_from(req.action).map_err(|_| {
            Status::invalid_argument(format!("unknown write action {}", req.action))
        })?;
        if !req.r#ref.is_empty() && req.r#ref != self.reference {
            return Err(Status::invalid_argument(format!(
                "ref {:?} does not match the stream's ref {:?}",
                req.r#ref, self.reference
            )));
        }
        let ws = w.status().await.map_err(st)?;
        let mut msg = pb::WriteContentResponse {
            action: req.action,
            offset: wire_size(ws.offset),
            ..Default::default()
        };
        if let Some(d) = opt_digest(&req.expected).map_err(st)? {
            if self.store.info(&self.ns, &d).await.is_ok() {
                // Already here: release the ref, drop the ingest, tell the client.
                *writer = None;
                if let Err(e) = self.store.abort(&self.ns, &self.reference).await
                    && !e.is(strata_core::Kind::NotFound)
                {
                    tracing::warn!(reference = %self.reference, error = %e, "abort failed");
                }
                return Err(Status::already_exists(format!(
                    "blob with expected digest {d} exists"
                )));
            }
            self.expected = Some(d);
        }
        let total = size("total", req.total).map_err(st)?;
        if total > 0 {
            self.total = total;
        }
        match action {
            pb::WriteAction::Stat => {
                msg.digest = w.digest().to_string();
                msg.started_at = Some(timestamp(ws.started_at));
                msg.updated_at = Some(timestamp(ws.updated_at));
                msg.total = wire_size(self.total);
            }
            pb::WriteAction::Write | pb::WriteAction::Commit => {
                let offset = size("offset", req.offset).map_err(st)?;
                if offset > 0 && offset != ws.offset {
                    return Err(Status::out_of_range(format!(
                        "write @{offset} must occur at current offset {}",
                        ws.offset
                    )));
                }
                if !req.data.is_empty() || (offset == 0 && ws.offset > 0) {
                    let data: Bytes = req.data.clone();
                    let new_offset = w.write(offset, data).await.map_err(st)?;
                    msg.offset = wire_size(new_offset);
                }
                if action == pb::WriteAction::Commit {
                    w.commit(CommitOptions {
                        size: self.total,
                        expected: self.expected.clone(),
                        labels: req.labels.clone(),
                    })
                    .await
                    .map_err(st)?;
                }
                msg.digest = w.digest().to_string();
            }
        }
        Ok(msg)
    }
}
