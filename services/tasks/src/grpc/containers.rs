//! containerd's Containers API over any [`ContainerStore`].

use super::BoxStream;
use futures_util::stream;
use std::sync::Arc;
use strata_api::containerd::services::containers::v1 as cpb;
use strata_api::containerd::services::containers::v1::containers_server::{
    Containers, ContainersServer,
};
use strata_core::containers::ContainerStore;
use strata_grpc::convert_containers::containers;
use strata_grpc::metadata::namespace;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

/// Serves the Containers API over any container store.
pub struct ContainersService<S> {
    store: Arc<S>,
}

impl<S: ContainerStore> ContainersService<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }

    pub fn into_server(self) -> ContainersServer<Self> {
        ContainersServer::new(self)
    }
}

fn container_arg(what: &str, c: Option<cpb::Container>) -> Result<cpb::Container, Status> {
    c.ok_or_else(|| Status::invalid_argument(format!("{what} request needs a container")))
}

#[tonic::async_trait]
impl<S: ContainerStore> Containers for ContainersService<S> {
    async fn get(
        &self,
        request: Request<cpb::GetContainerRequest>,
    ) -> Result<Response<cpb::GetContainerResponse>, Status> {
        let ns = namespace(&request)?;
        let c = self
            .store
            .get(&ns, &request.get_ref().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cpb::GetContainerResponse {
            container: Some(containers::to_pb(c)),
        }))
    }

    async fn list(
        &self,
        request: Request<cpb::ListContainersRequest>,
    ) -> Result<Response<cpb::ListContainersResponse>, Status> {
        let ns = namespace(&request)?;
        let list = self
            .store
            .list(&ns, &request.get_ref().filters)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cpb::ListContainersResponse {
            containers: list.into_iter().map(containers::to_pb).collect(),
        }))
    }

    type ListStreamStream = BoxStream<cpb::ListContainerMessage>;

    async fn list_stream(
        &self,
        request: Request<cpb::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace(&request)?;
        let list = self
            .store
            .list(&ns, &request.get_ref().filters)
            .await
            .map_err(to_status)?;
        let messages = list.into_iter().map(|c| {
            Ok(cpb::ListContainerMessage {
                container: Some(containers::to_pb(c)),
            })
        });
        Ok(Response::new(Box::pin(stream::iter(messages))))
    }

    async fn create(
        &self,
        request: Request<cpb::CreateContainerRequest>,
    ) -> Result<Response<cpb::CreateContainerResponse>, Status> {
        let ns = namespace(&request)?;
        let c = container_arg("create", request.into_inner().container)?;
        let c = self
            .store
            .create(&ns, containers::from_pb(c))
            .await
            .map_err(to_status)?;
        Ok(Response::new(cpb::CreateContainerResponse {
            container: Some(containers::to_pb(c)),
        }))
    }

    async fn update(
        &self,
        request: Request<cpb::UpdateContainerRequest>,
    ) -> Result<Response<cpb::UpdateContainerResponse>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let c = container_arg("update", req.container)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let c = self
            .store
            .update(&ns, containers::from_pb(c), &paths)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cpb::UpdateContainerResponse {
            container: Some(containers::to_pb(c)),
        }))
    }

    async fn delete(
        &self,
        request: Request<cpb::DeleteContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        self.store
            .delete(&ns, &request.get_ref().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }
}
