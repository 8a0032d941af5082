//! `strata.gateway.v1.Gateway`: converts requests, calls the gateway's composition code.

use super::convert::{self, wire};
use crate::Backends;
use crate::catalog;
use crate::{import, pull, run};
use std::sync::Arc;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::gateway::v1::gateway_server::{Gateway, GatewayServer};
use strata_api::strata::tasks::v1 as iopb;
use strata_core::{Error, Result};
use strata_grpc::metadata::namespace;
use strata_grpc::{from_status, to_status};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct GatewayService {
    b: Arc<Backends>,
}

impl GatewayService {
    pub fn new(b: Arc<Backends>) -> Self {
        Self { b }
    }

    pub fn into_server(self) -> GatewayServer<Self> {
        GatewayServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

/// The sender of a pull's or import's progress stream.
type Progress = mpsc::Sender<Result<pb::PullProgress, Status>>;

/// Runs `work` with an event channel whose events go on to `out` as `PullProgress` messages,
/// in order; answers how `work` ended.
async fn with_progress<F, Fut>(out: &Progress, work: F) -> Result<()>
where
    F: FnOnce(pull::Events) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (events, mut rx) = mpsc::channel(64);
    let forward = async {
        while let Some(e) = rx.recv().await {
            // A client gone does not stop the work: its events are dropped.
            let _ = out.send(Ok(pull_progress(e))).await;
        }
    };
    let (r, ()) = tokio::join!(work(events), forward);
    r
}

/// An import's request stream: the first message names the image and snapshotter, every
/// message carries archive bytes, handed to the import as they arrive.
async fn import_stream(
    b: &Backends,
    ns: &str,
    mut stream: Streaming<pb::ImportRequest>,
    out: &Progress,
) -> Result<()> {
    let first = stream
        .message()
        .await
        .map_err(from_status)?
        .ok_or_else(|| Error::invalid_argument("import stream closed before any data"))?;
    let req = import::Request {
        name: first.name,
        snapshotter: first.snapshotter,
    };
    let (data_tx, data_rx) = mpsc::channel::<bytes::Bytes>(8);
    let feeder = tokio::spawn(async move {
        if !first.data.is_empty() && data_tx.send(first.data).await.is_err() {
            return;
        }
        while let Ok(Some(msg)) = stream.message().await {
            if data_tx.send(msg.data).await.is_err() {
                return;
            }
        }
    });
    let r = with_progress(out, |events| import::import(b, ns, req, data_rx, events)).await;
    feeder.abort();
    r
}

/// A pull's or import's event as the wire has it.
fn pull_progress(e: pull::Event) -> pb::PullProgress {
    use pb::pull_progress::Event as E;
    let event = match e {
        pull::Event::Resolved {
            name,
            digest,
            layers,
        } => E::Resolved(pb::Resolved {
            name,
            digest: digest.to_string(),
            layers: convert::layer_infos(layers),
        }),
        pull::Event::Layer {
            digest,
            state,
            current,
            total,
        } => E::Layer(pb::LayerProgress {
            digest: digest.to_string(),
            state: layer_state(state).into(),
            current: wire(current),
            total: wire(total),
        }),
        pull::Event::Done(d) => E::Done(pb::PullDone {
            name: d.name,
            digest: d.digest.to_string(),
            fetched_bytes: wire(d.fetched_bytes),
            reused_bytes: wire(d.reused_bytes),
            layers_fetched: wire(d.layers_fetched),
            layers_reused: wire(d.layers_reused),
            layers_unpacked: wire(d.layers_unpacked),
        }),
    };
    pb::PullProgress { event: Some(event) }
}

fn layer_state(s: pull::LayerState) -> pb::layer_progress::State {
    use pb::layer_progress::State;
    match s {
        pull::LayerState::Waiting => State::Waiting,
        pull::LayerState::Exists => State::Exists,
        pull::LayerState::Downloading => State::Downloading,
        pull::LayerState::Shared => State::Shared,
        pull::LayerState::Extracting => State::Extracting,
        pull::LayerState::Done => State::Done,
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    type PullStream = ReceiverStream<Result<pb::PullProgress, Status>>;

    async fn pull(
        &self,
        request: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let req = pull::Request {
            reference: r.reference,
            platform: r.platform,
            plain_http: r.plain_http,
            snapshotter: r.snapshotter,
        };
        let (tx, rx) = mpsc::channel(64);
        let b = self.b.clone();
        tokio::spawn(async move {
            let r = with_progress(&tx, |events| pull::pull(&b, &ns, &req, events)).await;
            if let Err(e) = r {
                let _ = tx.send(Err(to_status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ImportStream = ReceiverStream<Result<pb::PullProgress, Status>>;

    async fn import(
        &self,
        request: Request<Streaming<pb::ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let ns = namespace(&request)?;
        let stream = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let b = self.b.clone();
        tokio::spawn(async move {
            if let Err(e) = import_stream(&b, &ns, stream, &tx).await {
                let _ = tx.send(Err(to_status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = namespace(&request)?;
        let b = &self.b;
        let filters = request.into_inner().filters;
        let images = catalog::list(b, &ns, filters).await.map_err(to_status)?;
        let out = images
            .into_iter()
            .map(|s| pb::ImageSummary {
                name: s.name,
                digest: s.digest,
                config_digest: s.config_digest,
                created: s.created,
                size: wire(s.size),
                shared_size: wire(s.shared_size),
                labels: s.labels,
            })
            .collect();
        Ok(Response::new(pb::ListImagesResponse { images: out }))
    }

    async fn inspect_image(
        &self,
        request: Request<pb::InspectImageRequest>,
    ) -> Result<Response<pb::InspectImageResponse>, Status> {
        let ns = namespace(&request)?;
        let name = request.into_inner().name;
        let b = &self.b;
        let json = catalog::inspect(b, &ns, &name).await.map_err(to_status)?;
        Ok(Response::new(pb::InspectImageResponse { json }))
    }

    async fn image_history(
        &self,
        request: Request<pb::ImageHistoryRequest>,
    ) -> Result<Response<pb::ImageHistoryResponse>, Status> {
        let ns = namespace(&request)?;
        let name = request.into_inner().name;
        let b = &self.b;
        let entries = catalog::history(b, &ns, &name)
            .await
            .map_err(to_status)?
            .into_iter()
            .map(|h| pb::HistoryEntry {
                created: h.created,
                created_by: h.created_by,
                size: wire(h.size),
                empty_layer: h.empty_layer,
                comment: h.comment,
            })
            .collect();
        Ok(Response::new(pb::ImageHistoryResponse { entries }))
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let b = &self.b;
        let digest = catalog::remove(b, &ns, &req.name, req.sync)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RemoveImageResponse { digest }))
    }

    async fn disk_usage(
        &self,
        request: Request<pb::DiskUsageRequest>,
    ) -> Result<Response<pb::DiskUsageResponse>, Status> {
        let ns = namespace(&request)?;
        let u = catalog::disk_usage(&self.b, &ns).await.map_err(to_status)?;
        let resp = pb::DiskUsageResponse {
            images: wire(u.images),
            layers: wire(u.layers),
            shared_layers: wire(u.shared_layers),
            unique_bytes: wire(u.unique_bytes),
            shared_bytes: wire(u.shared_bytes),
            total_bytes: wire(u.total_bytes),
            content_bytes: wire(u.content_bytes),
            layer_usage: u
                .layer_usage
                .into_iter()
                .map(|l| pb::LayerUsage {
                    chain_id: l.chain_id,
                    size: wire(l.size),
                    images: wire(l.images),
                })
                .collect(),
        };
        Ok(Response::new(resp))
    }

    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionInfo>, Status> {
        Ok(Response::new(pb::VersionInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: option_env!("STRATA_REVISION").unwrap_or("").to_owned(),
        }))
    }

    type AttachStream = ReceiverStream<Result<iopb::LogsEvent, Status>>;

    async fn create_container(
        &self,
        request: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let ns = namespace(&request)?;
        let id = run::create(&self.b, &ns, convert::run_options(request.into_inner()))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateContainerResponse { id }))
    }

    async fn start_container(
        &self,
        request: Request<pb::StartContainerRequest>,
    ) -> Result<Response<pb::StartContainerResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let pid = run::start(&self.b, &ns, &r.id, r.attach)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::StartContainerResponse { pid }))
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let ns = namespace(&request)?;
        let mut incoming = request.into_inner();
        let start = match incoming.message().await? {
            Some(pb::AttachRequest {
                event: Some(pb::attach_request::Event::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "attach: the first message must be `start`",
                ));
            }
        };
        let att = run::attach(
            &self.b,
            &ns,
            &run::AttachStart {
                container_id: start.container_id.clone(),
                exec_id: start.exec_id.clone(),
                logs: start.logs,
                stdin: start.stdin,
            },
        )
        .await
        .map_err(to_status)?;
        let run::Attach {
            mut output,
            stdin,
            guard,
        } = att;
        let (tx, rx) = mpsc::channel(64);
        // Client → process: stdin, end of stdin, terminal size.
        let (b, ns2, start2) = (self.b.clone(), ns.clone(), start.clone());
        let input = tokio::spawn(async move {
            while let Ok(Some(msg)) = incoming.message().await {
                use pb::attach_request::Event;
                let (id, exec) = (&start2.container_id, &start2.exec_id);
                let r = match msg.event {
                    Some(Event::Stdin(data)) => match &stdin {
                        Some(s) => run::write_stdin(s, &data).await,
                        None => Err(Error::failed_precondition(
                            "attach: stdin was not asked for in `start`",
                        )),
                    },
                    Some(Event::CloseStdin(true)) => {
                        run::end_stdin(&b, &ns2, id, exec).await;
                        Ok(())
                    }
                    Some(Event::Resize(r)) => {
                        run::resize(&b, &ns2, id, exec, r.width, r.height).await
                    }
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    tracing::debug!(container = %id, error = %e, "attach input");
                }
            }
        });
        // Process → client: output until the process has exited.
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                // A client that goes away ends the attach at once, not at the next output.
                let next = tokio::select! {
                    m = output.next() => m,
                    () = tx.closed() => break,
                };
                match next {
                    Ok(Some(ev)) => {
                        if tx.send(Ok(convert::logs_event(ev))).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        break;
                    }
                }
            }
            input.abort();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn exec(
        &self,
        request: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let ns = namespace(&request)?;
        let (exec_id, pid) = run::exec(&self.b, &ns, convert::exec_options(request.into_inner()))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ExecResponse { exec_id, pid }))
    }

    async fn remove_container(
        &self,
        request: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        run::remove(&self.b, &ns, &r.id, r.force)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RemoveContainerResponse {}))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let ns = namespace(&request)?;
        let made =
            crate::commit::commit(&self.b, &ns, convert::commit_options(request.into_inner()))
                .await
                .map_err(to_status)?;
        Ok(Response::new(pb::CommitResponse {
            id: made.id.to_string(),
            name: made.name,
        }))
    }

    type SaveStream = ReceiverStream<Result<pb::SaveChunk, Status>>;

    async fn save(
        &self,
        request: Request<pb::SaveRequest>,
    ) -> Result<Response<Self::SaveStream>, Status> {
        let ns = namespace(&request)?;
        let images = request.into_inner().images;
        let (tx, rx) = mpsc::channel(4);
        let b = self.b.clone();
        tokio::spawn(async move {
            let (chunks, mut crx) = mpsc::channel(1);
            let out = tx.clone();
            let forward = async move {
                while let Some(data) = crx.recv().await {
                    if out.send(Ok(pb::SaveChunk { data })).await.is_err() {
                        // The client went: the save stops at its next chunk.
                        break;
                    }
                }
            };
            let (r, ()) = tokio::join!(crate::save::save(&b, &ns, &images, chunks), forward);
            if let Err(e) = r {
                let _ = tx.send(Err(to_status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn tag(
        &self,
        request: Request<pb::TagRequest>,
    ) -> Result<Response<pb::TagResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let tagged = crate::push::tag(&self.b, &ns, &r.source, &r.target)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::TagResponse {
            name: tagged.name,
            digest: tagged.digest.to_string(),
        }))
    }

    type BuildStream = ReceiverStream<Result<pb::BuildProgress, Status>>;

    async fn build(
        &self,
        request: Request<Streaming<pb::BuildRequest>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let ns = namespace(&request)?;
        let mut stream = request.into_inner();
        let start = match stream.message().await? {
            Some(pb::BuildRequest {
                event: Some(pb::build_request::Event::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "build: the first message must be `start`",
                ));
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let b = self.b.clone();
        tokio::spawn(async move {
            let cleanup = crate::build::Cleanup::default();
            let closed = tx.clone();
            let work = build_call(&b, &ns, start, stream, tx.clone(), &cleanup);
            let r = tokio::select! {
                r = work => r,
                // The client went (Ctrl-C): the build stops where it is.
                () = closed.closed() => Err(Error::new(strata_core::Kind::Canceled, "build: the client cancelled it")),
            };
            cleanup.run(&b, &ns).await;
            if let Err(e) = r {
                let _ = tx.send(Err(to_status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn prune_build_cache(
        &self,
        request: Request<pb::PruneBuildCacheRequest>,
    ) -> Result<Response<pb::PruneBuildCacheResponse>, Status> {
        let ns = namespace(&request)?;
        let n = crate::build::prune(&self.b, &ns).await.map_err(to_status)?;
        Ok(Response::new(pb::PruneBuildCacheResponse {
            removed: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }

    type PushStream = ReceiverStream<Result<pb::PushProgress, Status>>;

    async fn push(
        &self,
        request: Request<pb::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let ns = namespace(&request)?;
        let opts = convert::push_options(request.into_inner());
        let (tx, rx) = mpsc::channel(64);
        let b = self.b.clone();
        tokio::spawn(async move {
            let (events, mut erx) = mpsc::channel(64);
            let out = tx.clone();
            let forward = async move {
                while let Some(e) = erx.recv().await {
                    // A client gone does not stop the push: its events are dropped.
                    let _ = out.send(Ok(convert::push_progress(e))).await;
                }
            };
            let (r, ()) = tokio::join!(crate::push::push(&b, &ns, &opts, events), forward);
            if let Err(e) = r {
                let _ = tx.send(Err(to_status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The context a `Build` stream carries after its `start`, handed on as it arrives: its
/// bytes, then the end of the channel at `context_end`, or an error when the stream breaks
/// the protocol or fails. Once the context is complete it holds the request stream until it is
/// dropped, with the call.
async fn feed_context(
    mut stream: Streaming<pb::BuildRequest>,
    context: mpsc::Sender<Result<bytes::Bytes>>,
) {
    use pb::build_request::Event;
    loop {
        let item = match stream.message().await {
            Ok(Some(pb::BuildRequest {
                event: Some(Event::Context(data)),
            })) => Ok(data),
            Ok(Some(pb::BuildRequest {
                event: Some(Event::ContextEnd(_)),
            })) => {
                // The context is complete. The request stream stays open for as long as the
                // call (this future goes with it), as it did when the call read the context
                // itself.
                drop(context);
                let _stream = stream;
                std::future::pending::<()>().await;
                return;
            }
            Ok(Some(pb::BuildRequest {
                event: Some(Event::Start(_)),
            })) => Err(Error::invalid_argument("build: `start` sent twice")),
            Ok(Some(pb::BuildRequest { event: None }) | None) => Err(Error::invalid_argument(
                "build: the context ended without `context_end`",
            )),
            Err(s) => Err(from_status(s).context("build: receiving the context")),
        };
        let failed = item.is_err();
        if context.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// One `Build` call: hands the context on, runs the build, reports as it goes.
async fn build_call(
    b: &Arc<Backends>,
    ns: &str,
    start: pb::BuildStart,
    stream: Streaming<pb::BuildRequest>,
    tx: mpsc::Sender<Result<pb::BuildProgress, Status>>,
    cleanup: &crate::build::Cleanup,
) -> Result<()> {
    let opts = crate::build::Options {
        dockerfile: start.dockerfile,
        dockerfile_name: start.dockerfile_name,
        tags: start.tags,
        build_args: start.build_args.into_iter().collect(),
        target: start.target,
        no_cache: start.no_cache,
        network: start.network,
        pull: start.pull,
    };
    let (ctx, crx) = mpsc::channel(8);
    let feed = feed_context(stream, ctx);
    let (etx, mut erx) = mpsc::channel(64);
    let out = tx.clone();
    let forward = async move {
        use pb::build_progress::Event as E;
        while let Some(e) = erx.recv().await {
            let event = match e {
                crate::build::Event::Step(s) => E::Step(pb::BuildStep {
                    stage: u32::try_from(s.stage).unwrap_or(u32::MAX),
                    stage_name: s.stage_name,
                    number: u32::try_from(s.number).unwrap_or(u32::MAX),
                    total: u32::try_from(s.total).unwrap_or(u32::MAX),
                    instruction: s.instruction,
                    cached: s.cached,
                }),
                crate::build::Event::Output(d) => E::Output(d),
                crate::build::Event::Pull(p) => E::Pull(pull_progress(p)),
            };
            if out
                .send(Ok(pb::BuildProgress { event: Some(event) }))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let work = async {
        tokio::join!(
            crate::build::build_streamed(b, ns, &opts, crx, etx, cleanup),
            forward
        )
    };
    tokio::pin!(work, feed);
    // The context is fed while the build runs; a feed that ended early (a broken stream) has
    // told the build, which ends with that error.
    let (built, ()) = tokio::select! {
        r = &mut work => r,
        () = &mut feed => work.await,
    };
    let built = built?;
    let _ = tx
        .send(Ok(pb::BuildProgress {
            event: Some(pb::build_progress::Event::Done(pb::BuildDone {
                id: built.id.to_string(),
                names: built.names,
                steps_run: u32::try_from(built.steps_run).unwrap_or(u32::MAX),
                steps_cached: u32::try_from(built.steps_cached).unwrap_or(u32::MAX),
            })),
        }))
        .await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::{Digest, Kind};

    #[tokio::test]
    async fn progress_keeps_the_events_order_then_the_outcome() {
        // A one-message stream: the work waits for the client, the events stay in order.
        let (out, mut rx) = mpsc::channel(1);
        let collector = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await {
                got.push(m);
            }
            got
        });
        let r = with_progress(&out, |events: pull::Events| async move {
            for current in 0..5 {
                let e = pull::Event::Layer {
                    digest: Digest::of(b"layer"),
                    state: pull::LayerState::Downloading,
                    current,
                    total: 5,
                };
                events.send(e).await.unwrap();
            }
            Err(Error::not_found("image \"x\": not found"))
        })
        .await;
        drop(out);
        let got = collector.await.unwrap();
        assert_eq!(r.unwrap_err().kind(), Kind::NotFound);
        let layers: Vec<(i64, i32)> = got
            .into_iter()
            .map(|m| match m.unwrap().event {
                Some(pb::pull_progress::Event::Layer(l)) => (l.current, l.state),
                other => panic!("not a layer event: {other:?}"),
            })
            .collect();
        let downloading = pb::layer_progress::State::Downloading as i32;
        assert_eq!(layers, (0..5).map(|c| (c, downloading)).collect::<Vec<_>>());
    }
}
