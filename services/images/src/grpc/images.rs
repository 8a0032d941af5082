//! containerd's Images API over any [`ImageStore`].

use super::paths;
use std::sync::Arc;
use strata_api::containerd::services::images::v1 as ipb;
use strata_api::containerd::services::images::v1::images_server::{Images, ImagesServer};
use strata_core::events::{EventSink, NoEvents, topics, types};
use strata_core::images::{DeleteOptions, ImageStore};
use strata_grpc::convert::opt_digest;
use strata_grpc::convert_images::images;
use strata_grpc::metadata::{events_wanted, namespace};
use strata_grpc::remote::event_queue::encode;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

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
