//! [`ContainerStore`] over gRPC: strata-tasks, the gateway, or containerd.

use crate::convert_containers::containers::{from_pb, to_pb};
use crate::metadata::with_namespace;
use crate::status::from_status;
use strata_api::containerd::services::containers::v1 as pb;
use strata_api::containerd::services::containers::v1::containers_client::ContainersClient;
use strata_core::containers::{Container, ContainerStore};
use strata_core::{Error, Result};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
/// A [`ContainerStore`] answered by a server of the Containers API.
pub struct RemoteContainers {
    client: ContainersClient<Channel>,
}

impl RemoteContainers {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ContainersClient::new(channel),
        }
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }

    /// As [`ContainerStore::list`], through `ListStream` (one container per message).
    pub async fn list_stream(&self, ns: &str, filters: &[String]) -> Result<Vec<Container>> {
        let req = with_namespace(
            ns,
            pb::ListContainersRequest {
                filters: filters.to_vec(),
            },
        )?;
        let mut stream = self
            .client
            .clone()
            .list_stream(req)
            .await
            .map_err(from_status)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(from_status)?;
            let c = msg.container.ok_or_else(|| {
                Error::internal(format!(
                    "list stream of namespace {ns:?}: message without a container"
                ))
            })?;
            out.push(from_pb(c));
        }
        Ok(out)
    }
}

fn body(what: &str, id: &str, c: Option<pb::Container>) -> Result<Container> {
    c.map(from_pb)
        .ok_or_else(|| Error::internal(format!("{what} of container {id:?} without a body")))
}

impl ContainerStore for RemoteContainers {
    async fn get(&self, ns: &str, id: &str) -> Result<Container> {
        let req = with_namespace(ns, pb::GetContainerRequest { id: id.to_owned() })?;
        let resp = self.client.clone().get(req).await.map_err(from_status)?;
        body("get", id, resp.into_inner().container)
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Container>> {
        let req = with_namespace(
            ns,
            pb::ListContainersRequest {
                filters: filters.to_vec(),
            },
        )?;
        let resp = self.client.clone().list(req).await.map_err(from_status)?;
        Ok(resp
            .into_inner()
            .containers
            .into_iter()
            .map(from_pb)
            .collect())
    }

    async fn create(&self, ns: &str, container: Container) -> Result<Container> {
        let id = container.id.clone();
        let req = with_namespace(
            ns,
            pb::CreateContainerRequest {
                container: Some(to_pb(container)),
            },
        )?;
        let resp = self.client.clone().create(req).await.map_err(from_status)?;
        body("create", &id, resp.into_inner().container)
    }

    async fn update(
        &self,
        ns: &str,
        container: Container,
        fieldpaths: &[String],
    ) -> Result<Container> {
        let id = container.id.clone();
        let req = with_namespace(
            ns,
            pb::UpdateContainerRequest {
                container: Some(to_pb(container)),
                update_mask: (!fieldpaths.is_empty()).then(|| prost_types::FieldMask {
                    paths: fieldpaths.to_vec(),
                }),
            },
        )?;
        let resp = self.client.clone().update(req).await.map_err(from_status)?;
        body("update", &id, resp.into_inner().container)
    }

    async fn delete(&self, ns: &str, id: &str) -> Result<()> {
        let req = with_namespace(ns, pb::DeleteContainerRequest { id: id.to_owned() })?;
        self.client.clone().delete(req).await.map_err(from_status)?;
        Ok(())
    }
}
