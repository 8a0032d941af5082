//! The gRPC adapters: containerd's Images, Leases and Namespaces APIs over any [`ImageStore`],
//! [`LeaseStore`] and [`NamespaceStore`], and `strata.images.v1.GarbageCollector` over any
//! [`Collect`]. Only protobuf ⇄ domain conversion and error mapping here.

use crate::gc::Collect;
use std::sync::Arc;
use strata_api::containerd::events as ev;
use strata_api::containerd::services::images::v1 as ipb;
use strata_api::containerd::services::images::v1::images_server::{Images, ImagesServer};
use strata_api::containerd::services::leases::v1 as lpb;
use strata_api::containerd::services::leases::v1::leases_server::{Leases, LeasesServer};
use strata_api::containerd::services::namespaces::v1 as npb;
use strata_api::containerd::services::namespaces::v1::namespaces_server::{
    Namespaces, NamespacesServer,
};
use strata_api::strata::images::v1 as gpb;
use strata_api::strata::images::v1::garbage_collector_server::{
    GarbageCollector, GarbageCollectorServer,
};
use strata_core::events::{EventSink, NoEvents, topics, types};
use strata_core::images::{DeleteOptions, ImageStore};
use strata_core::leases::LeaseStore;
use strata_core::namespaces::NamespaceStore;
use strata_grpc::convert::opt_digest;
use strata_grpc::convert_images::{images, leases, namespaces};
use strata_grpc::metadata::{events_wanted, namespace};
use strata_grpc::remote::event_queue::encode;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

/// Full names of the services this crate serves, for health and reflection.
pub mod names {
    pub const IMAGES: &str = "containerd.services.images.v1.Images";
    pub const LEASES: &str = "containerd.services.leases.v1.Leases";
    pub const NAMESPACES: &str = "containerd.services.namespaces.v1.Namespaces";
    pub const GARBAGE_COLLECTOR: &str = "strata.images.v1.GarbageCollector";
    pub const ALL: &[&str] = &[IMAGES, LEASES, NAMESPACES, GARBAGE_COLLECTOR];
}

fn paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

/// Serves the Images API over any image store.
pub struct ImagesService<I> {
    store: Arc<I>,
    events: Arc<dyn EventSink>,
}

impl<I: ImageStore> ImagesService<I> {
    /// A service that publishes no events.
    pub fn new(store: Arc<I>) -> Self {
        Self {
            store,
            events: Arc::new(NoEvents),
        }
    }

    /// Posts `/images/create`, `/images/update` and `/images/delete` to `events`.
    #[must_use]
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    pub fn into_server(self) -> ImagesServer<Self> {
        ImagesServer::new(self)
    }
}

#[tonic::async_trait]
impl<I: ImageStore> Images for ImagesService<I> {
    async fn get(
        &self,
        request: Request<ipb::GetImageRequest>,
    ) -> Result<Response<ipb::GetImageResponse>, Status> {
        let ns = namespace(&request)?;
        let image = self
            .store
            .get(&ns, &request.get_ref().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ipb::GetImageResponse {
            image: Some(images::to_pb(image)),
        }))
    }

    async fn list(
        &self,
        request: Request<ipb::ListImagesRequest>,
    ) -> Result<Response<ipb::ListImagesResponse>, Status> {
        let ns = namespace(&request)?;
        let list = self
            .store
            .list(&ns, &request.get_ref().filters)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ipb::ListImagesResponse {
            images: list.into_iter().map(images::to_pb).collect(),
        }))
    }

    async fn create(
        &self,
        request: Request<ipb::CreateImageRequest>,
    ) -> Result<Response<ipb::CreateImageResponse>, Status> {
        let ns = namespace(&request)?;
        let wanted = events_wanted(&request);
        let image = request
            .into_inner()
            .image
            .ok_or_else(|| Status::invalid_argument("create request needs an image"))?;
        let image = images::from_pb(image).map_err(to_status)?;
        let image = self.store.create(&ns, image).await.map_err(to_status)?;
        if wanted {
            let event = ipb::ImageCreate {
                name: image.name.clone(),
                labels: image.labels.clone().into_iter().collect(),
            };
            let event = encode(types::IMAGE_CREATE, &event);
            self.events.post(&ns, topics::IMAGE_CREATE, event);
        }
        Ok(Response::new(ipb::CreateImageResponse {
            image: Some(images::to_pb(image)),
        }))
    }

    async fn update(
        &self,
        request: Request<ipb::UpdateImageRequest>,
    ) -> Result<Response<ipb::UpdateImageResponse>, Status> {
        let ns = namespace(&request)?;
        let wanted = events_wanted(&request);
        let req = request.into_inner();
        let image = req
            .image
            .ok_or_else(|| Status::invalid_argument("update request needs an image"))?;
        let paths = paths(req.update_mask);
        let image = images::from_pb_for_update(image, &paths).map_err(to_status)?;
        let image = self
            .store
            .update(&ns, image, &paths)
            .await
            .map_err(to_status)?;
        if wanted {
            let event = ipb::ImageUpdate {
                name: image.name.clone(),
                labels: image.labels.clone().into_iter().collect(),
            };
            let event = encode(types::IMAGE_UPDATE, &event);
            self.events.post(&ns, topics::IMAGE_UPDATE, event);
        }
        Ok(Response::new(ipb::UpdateImageResponse {
            image: Some(images::to_pb(image)),
        }))
    }

    async fn delete(
        &self,
        request: Request<ipb::DeleteImageRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let wanted = events_wanted(&request);
        let req = request.into_inner();
        let target = match &req.target {
            Some(t) => opt_digest(&t.digest)
                .map_err(|e| to_status(e.context(format!("image {:?}: target", req.name))))?,
            None => None,
        };
        self.store
            .delete(
                &ns,
                &req.name,
                DeleteOptions {
                    sync: req.sync,
                    target,
                },
            )
            .await
            .map_err(to_status)?;
        if wanted {
            let event = encode(types::IMAGE_DELETE, &ipb::ImageDelete { name: req.name });
            self.events.post(&ns, topics::IMAGE_DELETE, event);
        }
        Ok(Response::new(()))
    }
}

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
