//! `containerd.services.snapshots.v1.Snapshots` over any [`SnapshotStore`].

use std::sync::Arc;
use strata_api::containerd::events as ev;
use strata_api::containerd::services::snapshots::v1 as pb;
use strata_api::containerd::services::snapshots::v1::snapshots_server::{
    Snapshots, SnapshotsServer,
};
use strata_core::containers::Any;
use strata_core::events::{EventSink, NoEvents, topics, types};
use strata_core::snapshots::SnapshotStore;
use strata_grpc::convert::mounts;
use strata_grpc::convert::snapshots::{info_from_pb, info_to_pb};
use strata_grpc::metadata::{events_wanted, namespace};
use strata_grpc::remote::event_queue::encode;
use strata_grpc::to_status;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const LIST_BATCH: usize = 100;

/// Serves the Snapshots API; requests naming no snapshotter go to `default`.
pub struct SnapshotsService<S> {
    store: Arc<S>,
    default: String,
    events: Arc<dyn EventSink>,
}

impl<S: SnapshotStore> SnapshotsService<S> {
    /// A service that publishes no events.
    pub fn new(store: Arc<S>, default: impl Into<String>) -> Self {
        Self {
            store,
            default: default.into(),
            events: Arc::new(NoEvents),
        }
    }

    /// Posts `/snapshot/prepare`, `/snapshot/commit` and `/snapshot/remove` to `events` for
    /// what clients do (as containerd, nothing for a view).
    #[must_use]
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    fn post(&self, wanted: bool, ns: &str, topic: &str, event: Any) {
        if wanted {
            self.events.post(ns, topic, event);
        }
    }

    pub fn into_server(self) -> SnapshotsServer<Self> {
        SnapshotsServer::new(self)
    }

    fn name<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.is_empty() {
            &self.default
        } else {
            requested
        }
    }
}

#[tonic::async_trait]
impl<S: SnapshotStore> Snapshots for SnapshotsService<S> {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let ns = namespace(&request)?;
        let wanted = events_wanted(&request);
        let r = request.into_inner();
        let sn = self.name(&r.snapshotter);
        let m = self
            .store
            .prepare(sn, &ns, &r.key, &r.parent, r.labels)
            .await
            .map_err(to_status)?;
        let event = ev::SnapshotPrepare {
            key: r.key.clone(),
            parent: r.parent.clone(),
            snapshotter: sn.to_owned(),
        };
        let event = encode(types::SNAPSHOT_PREPARE, &event);
        self.post(wanted, &ns, topics::SNAPSHOT_PREPARE, event);
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: mounts::all_to_pb(m),
        }))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let m = self
            .store
            .view(self.name(&r.snapshotter), &ns, &r.key, &r.parent, r.labels)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ViewSnapshotResponse {
            mounts: mounts::all_to_pb(m),
        }))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let m = self
            .store
            .mounts(self.name(&r.snapshotter), &ns, &r.key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts::all_to_pb(m),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let wanted = events_wanted(&request);
        let r = request.into_inner();
        let sn = self.name(&r.snapshotter);
        if !r.parent.is_empty() {
            let current = self.store.stat(sn, &ns, &r.key).await.map_err(to_status)?;
            if current.parent != r.parent {
                return Err(Status::invalid_argument(format!(
                    "cannot change parent of active snapshot {:?} on commit (from {:?} to {:?})",
                    r.key, current.parent, r.parent
                )));
            }
        }
        self.store
            .commit(sn, &ns, &r.name, &r.key, r.labels)
            .await
            .map_err(to_status)?;
        let event = ev::SnapshotCommit {
            key: r.key.clone(),
            name: r.name.clone(),
            snapshotter: sn.to_owned(),
        };
        let event = encode(types::SNAPSHOT_COMMIT, &event);
        self.post(wanted, &ns, topics::SNAPSHOT_COMMIT, event);
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let wanted = events_wanted(&request);
        let r = request.into_inner();
        let sn = self.name(&r.snapshotter);
        self.store
            .remove(sn, &ns, &r.key)
            .await
            .map_err(to_status)?;
        let event = ev::SnapshotRemove {
            key: r.key.clone(),
            snapshotter: sn.to_owned(),
        };
        let event = encode(types::SNAPSHOT_REMOVE, &event);
        self.post(wanted, &ns, topics::SNAPSHOT_REMOVE, event);
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let info = self
            .store
            .stat(self.name(&r.snapshotter), &ns, &r.key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("update request needs an info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = self
            .store
            .update(self.name(&r.snapshotter), &ns, info_from_pb(info), &paths)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    type ListStream = ReceiverStream<Result<pb::ListSnapshotsResponse, Status>>;

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let infos = self
            .store
            .list(self.name(&r.snapshotter), &ns, &r.filters)
            .await
            .map_err(to_status)?;
        let (tx, rx) = mpsc::channel(infos.len().div_ceil(LIST_BATCH).max(1));
        let mut it = infos.into_iter().map(info_to_pb).peekable();
        while it.peek().is_some() {
            let batch: Vec<_> = it.by_ref().take(LIST_BATCH).collect();
            // The channel holds every batch, so this never waits.
            let _ = tx.try_send(Ok(pb::ListSnapshotsResponse { info: batch }));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let u = self
            .store
            .usage(self.name(&r.snapshotter), &ns, &r.key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UsageResponse {
            size: strata_grpc::convert::wire_size(u.size),
            inodes: strata_grpc::convert::wire_size(u.inodes),
        }))
    }

    async fn cleanup(&self, request: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.store
            .cleanup(self.name(&r.snapshotter))
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }
}
