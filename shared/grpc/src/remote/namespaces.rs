//! [`NamespaceStore`] over gRPC: strata-images, the gateway, or containerd. The Namespaces API
//! is not itself namespaced: no `containerd-namespace` header is sent.

use crate::convert_images::namespaces::{from_pb, to_pb};
use crate::status::from_status;
use strata_api::containerd::services::namespaces::v1 as pb;
use strata_api::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use strata_core::namespaces::{Namespace, NamespaceStore};
use strata_core::{Error, Result};
use tonic::Request;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
/// A [`NamespaceStore`] answered by a server of the Namespaces API.
pub struct RemoteNamespaces {
    client: NamespacesClient<Channel>,
}

impl RemoteNamespaces {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: NamespacesClient::new(channel),
        }
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }
}

fn body(what: &str, name: &str, ns: Option<pb::Namespace>) -> Result<Namespace> {
    ns.map(from_pb)
        .ok_or_else(|| Error::internal(format!("{what} of namespace {name:?} without a body")))
}

impl NamespaceStore for RemoteNamespaces {
    async fn get(&self, name: &str) -> Result<Namespace> {
        let req = Request::new(pb::GetNamespaceRequest {
            name: name.to_owned(),
        });
        let resp = self.client.clone().get(req).await.map_err(from_status)?;
        body("get", name, resp.into_inner().namespace)
    }

    async fn list(&self, filter: &str) -> Result<Vec<Namespace>> {
        let req = Request::new(pb::ListNamespacesRequest {
            filter: filter.to_owned(),
        });
        let resp = self.client.clone().list(req).await.map_err(from_status)?;
        Ok(resp
            .into_inner()
            .namespaces
            .into_iter()
            .map(from_pb)
            .collect())
    }

    async fn create(&self, namespace: Namespace) -> Result<Namespace> {
        let name = namespace.name.clone();
        let req = Request::new(pb::CreateNamespaceRequest {
            namespace: Some(to_pb(namespace)),
        });
        let resp = self.client.clone().create(req).await.map_err(from_status)?;
        body("create", &name, resp.into_inner().namespace)
    }

    async fn update(&self, namespace: Namespace, fieldpaths: &[String]) -> Result<Namespace> {
        let name = namespace.name.clone();
        let req = Request::new(pb::UpdateNamespaceRequest {
            namespace: Some(to_pb(namespace)),
            update_mask: (!fieldpaths.is_empty()).then(|| prost_types::FieldMask {
                paths: fieldpaths.to_vec(),
            }),
        });
        let resp = self.client.clone().update(req).await.map_err(from_status)?;
        body("update", &name, resp.into_inner().namespace)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let req = Request::new(pb::DeleteNamespaceRequest {
            name: name.to_owned(),
        });
        self.client.clone().delete(req).await.map_err(from_status)?;
        Ok(())
    }
}
