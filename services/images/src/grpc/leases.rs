//! containerd's Leases API over any [`LeaseStore`].

use std::sync::Arc;
use strata_api::containerd::services::leases::v1 as lpb;
use strata_api::containerd::services::leases::v1::leases_server::{Leases, LeasesServer};
use strata_core::leases::LeaseStore;
use strata_grpc::convert_images::leases;
use strata_grpc::metadata::namespace;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

/// Serves the Leases API over any lease store.
pub struct LeasesService<L> {
    store: Arc<L>,
}

impl<L: LeaseStore> LeasesService<L> {
    pub fn new(store: Arc<L>) -> Self {
        Self { store }
    }

    pub fn into_server(self) -> LeasesServer<Self> {
        LeasesServer::new(self)
    }
}

fn resource(id: &str, r: Option<lpb::Resource>) -> Result<strata_core::leases::Resource, Status> {
    r.map(leases::resource_from_pb).ok_or_else(|| {
        Status::invalid_argument(format!("request on lease {id:?} needs a resource"))
    })
}

#[tonic::async_trait]
impl<L: LeaseStore> Leases for LeasesService<L> {
    async fn create(
        &self,
        request: Request<lpb::CreateRequest>,
    ) -> Result<Response<lpb::CreateResponse>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let lease = self
            .store
            .create(&ns, &req.id, req.labels)
            .await
            .map_err(to_status)?;
        Ok(Response::new(lpb::CreateResponse {
            lease: Some(leases::to_pb(lease)),
        }))
    }

    async fn delete(&self, request: Request<lpb::DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let req = request.get_ref();
        self.store
            .delete(&ns, &req.id, req.sync)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        request: Request<lpb::ListRequest>,
    ) -> Result<Response<lpb::ListResponse>, Status> {
        let ns = namespace(&request)?;
        let list = self
            .store
            .list(&ns, &request.get_ref().filters)
            .await
            .map_err(to_status)?;
        Ok(Response::new(lpb::ListResponse {
            leases: list.into_iter().map(leases::to_pb).collect(),
        }))
    }

    async fn add_resource(
        &self,
        request: Request<lpb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let r = resource(&req.id, req.resource)?;
        self.store
            .add_resource(&ns, &req.id, r)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        request: Request<lpb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let r = resource(&req.id, req.resource)?;
        self.store
            .delete_resource(&ns, &req.id, r)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        request: Request<lpb::ListResourcesRequest>,
    ) -> Result<Response<lpb::ListResourcesResponse>, Status> {
        let ns = namespace(&request)?;
        let list = self
            .store
            .list_resources(&ns, &request.get_ref().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(lpb::ListResourcesResponse {
            resources: list.into_iter().map(leases::resource_to_pb).collect(),
        }))
    }
}
