//! containerd's Namespaces API over any [`NamespaceStore`].

use super::paths;
use std::sync::Arc;
use strata_api::containerd::events as ev;
use strata_api::containerd::services::namespaces::v1 as npb;
use strata_api::containerd::services::namespaces::v1::namespaces_server::{
    Namespaces, NamespacesServer,
};
use strata_core::events::{EventSink, NoEvents, topics, types};
use strata_core::namespaces::NamespaceStore;
use strata_grpc::convert_images::namespaces;
use strata_grpc::metadata::{events_wanted, namespace};
use strata_grpc::remote::event_queue::encode;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

/// Serves the Namespaces API (not itself namespaced: no header needed) over any store.
pub struct NamespacesService<N> {
    store: Arc<N>,
    events: Arc<dyn EventSink>,
}

impl<N: NamespaceStore> NamespacesService<N> {
    /// A service that publishes no events.
    pub fn new(store: Arc<N>) -> Self {
        Self {
            store,
            events: Arc::new(NoEvents),
        }
    }

    /// Posts `/namespaces/create`, `/namespaces/update` and `/namespaces/delete` to `events`,
    /// in the caller's namespace (`default` when the call names none), as containerd does.
    #[must_use]
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// Where an event of `request` goes: None when it wants none.
    fn event_namespace<T>(request: &Request<T>) -> Option<String> {
        events_wanted(request).then(|| namespace(request).unwrap_or_else(|_| "default".to_owned()))
    }

    pub fn into_server(self) -> NamespacesServer<Self> {
        NamespacesServer::new(self)
    }
}

fn namespace_arg(what: &str, ns: Option<npb::Namespace>) -> Result<npb::Namespace, Status> {
    ns.ok_or_else(|| Status::invalid_argument(format!("{what} request needs a namespace")))
}

#[tonic::async_trait]
impl<N: NamespaceStore> Namespaces for NamespacesService<N> {
    async fn get(
        &self,
        request: Request<npb::GetNamespaceRequest>,
    ) -> Result<Response<npb::GetNamespaceResponse>, Status> {
        let ns = self
            .store
            .get(&request.get_ref().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::GetNamespaceResponse {
            namespace: Some(namespaces::to_pb(ns)),
        }))
    }

    async fn list(
        &self,
        request: Request<npb::ListNamespacesRequest>,
    ) -> Result<Response<npb::ListNamespacesResponse>, Status> {
        let list = self
            .store
            .list(&request.get_ref().filter)
            .await
            .map_err(to_status)?;
        Ok(Response::new(npb::ListNamespacesResponse {
            namespaces: list.into_iter().map(namespaces::to_pb).collect(),
        }))
    }

    async fn create(
        &self,
        request: Request<npb::CreateNamespaceRequest>,
    ) -> Result<Response<npb::CreateNamespaceResponse>, Status> {
        let to = Self::event_namespace(&request);
        let ns = namespace_arg("create", request.into_inner().namespace)?;
        let ns = self
            .store
            .create(namespaces::from_pb(ns))
            .await
            .map_err(to_status)?;
        if let Some(to) = to {
            let event = ev::NamespaceCreate {
                name: ns.name.clone(),
                labels: ns.labels.clone().into_iter().collect(),
            };
            let event = encode(types::NAMESPACE_CREATE, &event);
            self.events.post(&to, topics::NAMESPACE_CREATE, event);
        }
        Ok(Response::new(npb::CreateNamespaceResponse {
            namespace: Some(namespaces::to_pb(ns)),
        }))
    }

    async fn update(
        &self,
        request: Request<npb::UpdateNamespaceRequest>,
    ) -> Result<Response<npb::UpdateNamespaceResponse>, Status> {
        let to = Self::event_namespace(&request);
        let req = request.into_inner();
        let ns = namespace_arg("update", req.namespace)?;
        let ns = self
            .store
            .update(namespaces::from_pb(ns), &paths(req.update_mask))
            .await
            .map_err(to_status)?;
        if let Some(to) = to {
            let event = ev::NamespaceUpdate {
                name: ns.name.clone(),
                labels: ns.labels.clone().into_iter().collect(),
            };
            let event = encode(types::NAMESPACE_UPDATE, &event);
            self.events.post(&to, topics::NAMESPACE_UPDATE, event);
        }
        Ok(Response::new(npb::UpdateNamespaceResponse {
            namespace: Some(namespaces::to_pb(ns)),
        }))
    }

    async fn delete(
        &self,
        request: Request<npb::DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let to = Self::event_namespace(&request);
        let name = request.into_inner().name;
        self.store.delete(&name).await.map_err(to_status)?;
        if let Some(to) = to {
            let event = encode(types::NAMESPACE_DELETE, &ev::NamespaceDelete { name });
            self.events.post(&to, topics::NAMESPACE_DELETE, event);
        }
        Ok(Response::new(()))
    }
}
