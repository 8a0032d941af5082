//! `strata.images.v1.GarbageCollector` over any [`Collect`].

use crate::gc::Collect;
use std::sync::Arc;
use strata_api::strata::images::v1 as gpb;
use strata_api::strata::images::v1::garbage_collector_server::{
    GarbageCollector, GarbageCollectorServer,
};
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

/// Serves `strata.images.v1.GarbageCollector`.
pub struct GcService<G> {
    collector: Arc<G>,
}

impl<G: Collect> GcService<G> {
    pub fn new(collector: Arc<G>) -> Self {
        Self { collector }
    }

    pub fn into_server(self) -> GarbageCollectorServer<Self> {
        GarbageCollectorServer::new(self)
    }
}

#[tonic::async_trait]
impl<G: Collect> GarbageCollector for GcService<G> {
    async fn collect(
        &self,
        _request: Request<gpb::CollectRequest>,
    ) -> Result<Response<gpb::CollectResponse>, Status> {
        let stats = self.collector.collect().await.map_err(to_status)?;
        Ok(Response::new(gpb::CollectResponse {
            content_removed: stats.content_removed,
            snapshots_removed: stats.snapshots_removed,
            bytes_freed: stats.bytes_freed,
            leases_expired: stats.leases_expired,
            namespaces: stats.namespaces,
        }))
    }
}
