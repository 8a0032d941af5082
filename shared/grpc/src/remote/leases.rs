//! [`LeaseStore`] over gRPC: strata-images, the gateway, or containerd.

use crate::convert_images::leases::{from_pb, resource_from_pb, resource_to_pb};
use crate::metadata::with_namespace;
use crate::status::from_status;
use std::collections::HashMap;
use strata_api::containerd::services::leases::v1 as pb;
use strata_api::containerd::services::leases::v1::leases_client::LeasesClient;
use strata_core::leases::{Lease, LeaseStore, Resource};
use strata_core::{Error, Result};
use tonic::transport::Channel;

#[derive(Debug, Clone)]
/// A [`LeaseStore`] answered by a server of the Leases API.
pub struct RemoteLeases {
    client: LeasesClient<Channel>,
}

impl RemoteLeases {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: LeasesClient::new(channel),
        }
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }
}

impl LeaseStore for RemoteLeases {
    async fn create(&self, ns: &str, id: &str, labels: HashMap<String, String>) -> Result<Lease> {
        let req = with_namespace(
            ns,
            pb::CreateRequest {
                id: id.to_owned(),
                labels,
            },
        )?;
        let resp = self.client.clone().create(req).await.map_err(from_status)?;
        let lease = resp
            .into_inner()
            .lease
            .ok_or_else(|| Error::internal(format!("create of lease {id:?} without a body")))?;
        Ok(from_pb(lease))
    }

    async fn delete(&self, ns: &str, id: &str, sync: bool) -> Result<()> {
        let req = with_namespace(
            ns,
            pb::DeleteRequest {
                id: id.to_owned(),
                sync,
            },
        )?;
        self.client.clone().delete(req).await.map_err(from_status)?;
        Ok(())
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Lease>> {
        let req = with_namespace(
            ns,
            pb::ListRequest {
                filters: filters.to_vec(),
            },
        )?;
        let resp = self.client.clone().list(req).await.map_err(from_status)?;
        Ok(resp.into_inner().leases.into_iter().map(from_pb).collect())
    }

    async fn add_resource(&self, ns: &str, id: &str, resource: Resource) -> Result<()> {
        let req = with_namespace(
            ns,
            pb::AddResourceRequest {
                id: id.to_owned(),
                resource: Some(resource_to_pb(resource)),
            },
        )?;
        self.client
            .clone()
            .add_resource(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn delete_resource(&self, ns: &str, id: &str, resource: Resource) -> Result<()> {
        let req = with_namespace(
            ns,
            pb::DeleteResourceRequest {
                id: id.to_owned(),
                resource: Some(resource_to_pb(resource)),
            },
        )?;
        self.client
            .clone()
            .delete_resource(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn list_resources(&self, ns: &str, id: &str) -> Result<Vec<Resource>> {
        let req = with_namespace(ns, pb::ListResourcesRequest { id: id.to_owned() })?;
        let resp = self
            .client
            .clone()
            .list_resources(req)
            .await
            .map_err(from_status)?;
        Ok(resp
            .into_inner()
            .resources
            .into_iter()
            .map(resource_from_pb)
            .collect())
    }
}
