//! `strata.gateway.v1.Gateway`: converts requests, calls the gateway's composition code.

use crate::Backends;
use crate::image::{ImageDetails, details};
use crate::run;
use std::collections::HashMap;
use std::sync::Arc;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::gateway::v1::gateway_server::{Gateway, GatewayServer};
use strata_api::strata::tasks::v1 as iopb;
use strata_core::images::{DeleteOptions, Image, ImageStore};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Kind, Result};
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

pub(crate) async fn list_images(
    b: &Backends,
    ns: &str,
    filters: Vec<String>,
) -> Result<Vec<Image>> {
    b.images.list(ns, &filters).await
}

/// Finds an image by name (as given, or normalized like `busybox` → docker.io/library/busybox:latest)
/// or by a prefix of its ID (the config digest).
pub async fn find_image(b: &Backends, ns: &str, name: &str) -> Result<Image> {
    let mut candidates = vec![name.to_owned()];
    if let Ok(r) = strata_registry::Reference::parse(name) {
        candidates.push(r.to_string());
    }
    for c in &candidates {
        match b.images.get(ns, c).await {
            Ok(img) => return Ok(img),
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let prefix = name.strip_prefix("sha256:").unwrap_or(name);
    if prefix.len() >= 4 && prefix.bytes().all(|c| c.is_ascii_hexdigit()) {
        for img in list_images(b, ns, Vec::new()).await? {
            let Ok(d) = details(b, ns, img.clone()).await else {
                continue;
            };
            if d.config_digest.hex().starts_with(prefix) {
                return Ok(img);
            }
        }
    }
    Err(Error::not_found(format!("image {name:?}: not found")))
}

/// Unpacked size of each chain ID (a committed snapshot's own layer).
async fn layer_sizes(
    b: &Backends,
    ns: &str,
    images: &[ImageDetails],
) -> Result<HashMap<String, u64>> {
    let mut sizes = HashMap::new();
    for img in images {
        for c in &img.chain_ids {
            let key = c.to_string();
            if sizes.contains_key(&key) {
                continue;
            }
            let size = match b.snapshots.usage(&b.snapshotter, ns, &key).await {
                Ok(u) => u.size,
                Err(e) if e.is(strata_core::Kind::NotFound) => 0,
                Err(e) => return Err(e),
            };
            sizes.insert(key, size);
        }
    }
    Ok(sizes)
}

async fn all_details(b: &Backends, ns: &str, images: Vec<Image>) -> Vec<ImageDetails> {
    let mut out = Vec::new();
    for img in images {
        let name = img.name.clone();
        match details(b, ns, img).await {
            Ok(d) => out.push(d),
            Err(e) => {
                tracing::warn!(image = %name, error = %e, "skipping an image whose content is incomplete")
            }
        }
    }
    out
}

fn created(d: &ImageDetails) -> Option<prost_types::Timestamp> {
    d.config
        .created
        .as_deref()
        .and_then(parse_time)
        .or(Some(strata_grpc::convert::timestamp(d.created_at)))
}

/// Parses an RFC 3339 timestamp (`2024-01-02T03:04:05.123Z` or with an offset) to seconds.
fn parse_time(s: &str) -> Option<prost_types::Timestamp> {
    s.parse::<prost_types::Timestamp>().ok()
}

fn usage_counts(images: &[ImageDetails]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for img in images {
        for c in &img.chain_ids {
            *counts.entry(c.to_string()).or_insert(0u64) += 1;
        }
    }
    counts
}

fn wire(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn inspect_json(d: &ImageDetails, size: u64) -> Result<String> {
    let repo = d.name.split('@').next().unwrap_or(&d.name);
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    let doc = serde_json::json!({
        "Id": d.config_digest.to_string(),
        "RepoTags": [d.name],
        "RepoDigests": [format!("{repo}@{}", d.target.digest)],
        "Created": d.config.created,
        "Author": d.config.author,
        "Architecture": d.config.architecture,
        "Variant": d.config.variant,
        "Os": d.config.os,
        "Config": d.config.config,
        "RootFS": {
            "Type": "layers",
            "Layers": d.diff_ids().iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "Size": size,
        "Manifest": {
            "Digest": d.manifest_digest.to_string(),
            "MediaType": d.target.media_type,
            "Layers": d.manifest.layers.iter().map(|l| serde_json::json!({
                "Digest": l.digest.to_string(),
                "MediaType": l.media_type,
                "Size": l.size,
            })).collect::<Vec<_>>(),
        },
        "ChainIDs": d.chain_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "Labels": d.labels,
    });
    serde_json::to_string_pretty(&[doc]).map_err(|e| Error::internal(format!("inspect: {e}")))
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    type PullStream = ReceiverStream<Result<pb::PullProgress, Status>>;

    async fn pull(
        &self,
        request: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let b = self.b.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::pull::pull(&b, &ns, &req, tx.clone()).await {
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
            if let Err(e) = crate::import::import(&b, &ns, stream, tx.clone()).await {
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
        let cache = |i: &Image| i.name.starts_with(crate::build::CACHE_PREFIX);
        let mut records = list_images(b, &ns, filters).await.map_err(to_status)?;
        records.retain(|i| !cache(i));
        // Sharing counts over every image of the namespace, not only the listed ones; the
        // build cache's records are not images a user made.
        let mut every = list_images(b, &ns, Vec::new()).await.map_err(to_status)?;
        every.retain(|i| !cache(i));
        let all = all_details(b, &ns, every).await;
        let counts = usage_counts(&all);
        let sizes = layer_sizes(b, &ns, &all).await.map_err(to_status)?;
        let by_name: HashMap<&str, &ImageDetails> =
            all.iter().map(|d| (d.name.as_str(), d)).collect();
        let mut out = Vec::new();
        for r in records {
            let Some(d) = by_name.get(r.name.as_str()) else {
                continue;
            };
            let (mut size, mut shared) = (0, 0);
            for c in &d.chain_ids {
                let s = sizes.get(&c.to_string()).copied().unwrap_or(0);
                size += s;
                if counts.get(&c.to_string()).copied().unwrap_or(0) > 1 {
                    shared += s;
                }
            }
            out.push(pb::ImageSummary {
                name: d.name.clone(),
                digest: d.target.digest.to_string(),
                config_digest: d.config_digest.to_string(),
                created: created(d),
                size: wire(size),
                shared_size: wire(shared),
                labels: d.labels.clone(),
            });
        }
        out.sort_by(|a, b| {
            b.created
                .as_ref()
                .map(|t| t.seconds)
                .cmp(&a.created.as_ref().map(|t| t.seconds))
                .then(a.name.cmp(&b.name))
        });
        Ok(Response::new(pb::ListImagesResponse { images: out }))
    }

    async fn inspect_image(
        &self,
        request: Request<pb::InspectImageRequest>,
    ) -> Result<Response<pb::InspectImageResponse>, Status> {
        let ns = namespace(&request)?;
        let name = request.into_inner().name;
        let b = &self.b;
        let img = find_image(b, &ns, &name).await.map_err(to_status)?;
        let d = details(b, &ns, img).await.map_err(to_status)?;
        let sizes = layer_sizes(b, &ns, std::slice::from_ref(&d))
            .await
            .map_err(to_status)?;
        let json = inspect_json(&d, sizes.values().sum()).map_err(to_status)?;
        Ok(Response::new(pb::InspectImageResponse { json }))
    }

    async fn image_history(
        &self,
        request: Request<pb::ImageHistoryRequest>,
    ) -> Result<Response<pb::ImageHistoryResponse>, Status> {
        let ns = namespace(&request)?;
        let name = request.into_inner().name;
        let b = &self.b;
        let img = find_image(b, &ns, &name).await.map_err(to_status)?;
        let d = details(b, &ns, img).await.map_err(to_status)?;
        let sizes = layer_sizes(b, &ns, std::slice::from_ref(&d))
            .await
            .map_err(to_status)?;
        let mut layer = 0usize;
        let mut entries = Vec::new();
        for h in &d.config.history {
            let empty = h.empty_layer;
            let size = if empty {
                0
            } else {
                let s = d
                    .chain_ids
                    .get(layer)
                    .and_then(|c| sizes.get(&c.to_string()))
                    .copied()
                    .unwrap_or(0);
                layer += 1;
                s
            };
            entries.push(pb::HistoryEntry {
                created: h.created.as_deref().and_then(parse_time),
                created_by: h.created_by.clone().unwrap_or_default(),
                size: wire(size),
                empty_layer: empty,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        // Layers the history does not describe still count.
        while layer < d.chain_ids.len() {
            let s = sizes
                .get(&d.chain_ids[layer].to_string())
                .copied()
                .unwrap_or(0);
            entries.push(pb::HistoryEntry {
                created: None,
                created_by: String::new(),
                size: wire(s),
                empty_layer: false,
                comment: format!("layer {}", d.diff_ids()[layer]),
            });
            layer += 1;
        }
        entries.reverse();
        Ok(Response::new(pb::ImageHistoryResponse { entries }))
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let b = &self.b;
        let img = find_image(b, &ns, &req.name).await.map_err(to_status)?;
        let digest = img.target.digest.to_string();
        let opts = DeleteOptions {
            sync: req.sync,
            target: None,
        };
        b.images
            .delete(&ns, &img.name, opts)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RemoveImageResponse { digest }))
    }

    async fn disk_usage(
        &self,
        request: Request<pb::DiskUsageRequest>,
    ) -> Result<Response<pb::DiskUsageResponse>, Status> {
        use strata_core::content::ContentStore;
        let ns = namespace(&request)?;
        let b = &self.b;
        let all = all_details(
            b,
            &ns,
            list_images(b, &ns, Vec::new()).await.map_err(to_status)?,
        )
        .await;
        let counts = usage_counts(&all);
        let sizes = layer_sizes(b, &ns, &all).await.map_err(to_status)?;
        let mut resp = pb::DiskUsageResponse {
            images: wire(all.len() as u64),
            layers: wire(counts.len() as u64),
            ..Default::default()
        };
        let mut layers: Vec<_> = counts.iter().collect();
        layers.sort();
        for (chain, n) in layers {
            let size = sizes.get(chain).copied().unwrap_or(0);
            if *n > 1 {
                resp.shared_layers += 1;
                resp.shared_bytes += wire(size);
            } else {
                resp.unique_bytes += wire(size);
            }
            resp.total_bytes += wire(size);
            resp.layer_usage.push(pb::LayerUsage {
                chain_id: chain.clone(),
                size: wire(size),
                images: wire(*n),
            });
        }
        let content = b.content.list(&ns, &[]).await.map_err(to_status)?;
        resp.content_bytes = wire(content.iter().map(|i| i.size).sum());
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
        let id = run::create(&self.b, &ns, request.into_inner())
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
        let att = run::attach(&self.b, &ns, &start).await.map_err(to_status)?;
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
                    Some(Event::Resize(r)) => run::resize(&b, &ns2, id, exec, r).await,
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
                    m = output.message() => m,
                    () = tx.closed() => break,
                };
                match next {
                    Ok(Some(ev)) => {
                        if tx.send(Ok(ev)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
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
        let (exec_id, pid) = run::exec(&self.b, &ns, request.into_inner())
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
        let made = crate::commit::commit(&self.b, &ns, request.into_inner())
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
            if let Err(e) = crate::save::save(&b, &ns, &images, tx.clone()).await {
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
        let resp = crate::push::tag(&self.b, &ns, &r.source, &r.target)
            .await
            .map_err(to_status)?;
        Ok(Response::new(resp))
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
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let b = self.b.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::push::push(&b, &ns, &req, tx.clone()).await {
                let _ = tx.send(Err(to_status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Largest build context accepted (the tar stream as sent).
const MAX_CONTEXT: u64 = 16 << 30;

/// One `Build` call: receives the context, runs the build, reports as it goes.
async fn build_call(
    b: &Arc<Backends>,
    ns: &str,
    start: pb::BuildStart,
    mut stream: Streaming<pb::BuildRequest>,
    tx: mpsc::Sender<Result<pb::BuildProgress, Status>>,
    cleanup: &crate::build::Cleanup,
) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let dir_parent = b.root.join("builds");
    tokio::fs::create_dir_all(&dir_parent)
        .await
        .map_err(|e| Error::internal(format!("{}: {e}", dir_parent.display())))?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&dir_parent)
        .map_err(|e| Error::internal(format!("{}: {e}", dir_parent.display())))?;
    let tar = work.path().join("context.tar");
    let mut f = tokio::fs::File::create(&tar)
        .await
        .map_err(|e| Error::internal(format!("{}: {e}", tar.display())))?;
    let mut size = 0u64;
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| from_status(s).context("build: receiving the context"))?;
        match msg.and_then(|m| m.event) {
            Some(pb::build_request::Event::Context(data)) => {
                size += data.len() as u64;
                if size > MAX_CONTEXT {
                    return Err(Error::invalid_argument(format!(
                        "build: the context is larger than {MAX_CONTEXT} bytes"
                    )));
                }
                f.write_all(&data)
                    .await
                    .map_err(|e| Error::internal(format!("{}: {e}", tar.display())))?;
            }
            Some(pb::build_request::Event::ContextEnd(_)) => break,
            Some(pb::build_request::Event::Start(_)) => {
                return Err(Error::invalid_argument("build: `start` sent twice"));
            }
            None => {
                return Err(Error::invalid_argument(
                    "build: the context ended without `context_end`",
                ));
            }
        }
    }
    f.flush()
        .await
        .map_err(|e| Error::internal(format!("{}: {e}", tar.display())))?;
    drop(f);
    let context = work.path().join("context");
    {
        let (tar, context) = (tar.clone(), context.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&context)
                .map_err(|e| Error::internal(format!("{}: {e}", context.display())))?;
            crate::build::unpack_context(&tar, &context)
        })
        .await
        .map_err(|e| Error::internal(format!("unpacking the build context: {e}")))??;
    }
    let _ = tokio::fs::remove_file(&tar).await;
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
    let (etx, mut erx) = mpsc::channel(64);
    let out = tx.clone();
    let forward = tokio::spawn(async move {
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
                crate::build::Event::Pull(p) => E::Pull(p),
            };
            if out
                .send(Ok(pb::BuildProgress { event: Some(event) }))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let built = crate::build::build(b, ns, &opts, &context, etx, cleanup).await;
    let _ = forward.await;
    // The unpacked context goes in the background: the answer does not wait for it.
    tokio::task::spawn_blocking(move || drop(work));
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
