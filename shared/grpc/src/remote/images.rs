//! [`ImageStore`] over gRPC: strata-images, the gateway, or containerd.

use crate::convert_images::images::{from_pb, to_pb};
use crate::metadata::with_namespace;
use crate::status::from_status;
use strata_api::containerd::services::images::v1 as pb;
use strata_api::containerd::services::images::v1::images_client::ImagesClient;
use strata_core::images::{DeleteOptions, Image, ImageStore};
use strata_core::{Error, Result};
use tonic::transport::Channel;

#[derive(Debug, Clone)]
/// An [`ImageStore`] answered by a server of the Images API.
pub struct RemoteImages {
    client: ImagesClient<Channel>,
}

impl RemoteImages {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ImagesClient::new(channel),
        }
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }

    /// The same client, sending and accepting messages up to `bytes` (a long image list).
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.client = self
            .client
            .max_decoding_message_size(bytes)
            .max_encoding_message_size(bytes);
        self
    }
}

fn body(what: &str, name: &str, image: Option<pb::Image>) -> Result<Image> {
    let image =
        image.ok_or_else(|| Error::internal(format!("{what} of image {name:?} without a body")))?;
    from_pb(image)
}

impl ImageStore for RemoteImages {
    async fn get(&self, ns: &str, name: &str) -> Result<Image> {
        let req = with_namespace(
            ns,
            pb::GetImageRequest {
                name: name.to_owned(),
            },
        )?;
        let resp = self.client.clone().get(req).await.map_err(from_status)?;
        body("get", name, resp.into_inner().image)
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Image>> {
        let req = with_namespace(
            ns,
            pb::ListImagesRequest {
                filters: filters.to_vec(),
            },
        )?;
        let resp = self.client.clone().list(req).await.map_err(from_status)?;
        resp.into_inner().images.into_iter().map(from_pb).collect()
    }

    async fn create(&self, ns: &str, image: Image) -> Result<Image> {
        let name = image.name.clone();
        let req = with_namespace(
            ns,
            pb::CreateImageRequest {
                image: Some(to_pb(image)),
                source_date_epoch: None,
            },
        )?;
        let resp = self.client.clone().create(req).await.map_err(from_status)?;
        body("create", &name, resp.into_inner().image)
    }

    async fn update(&self, ns: &str, image: Image, fieldpaths: &[String]) -> Result<Image> {
        let name = image.name.clone();
        let req = with_namespace(
            ns,
            pb::UpdateImageRequest {
                image: Some(to_pb(image)),
                update_mask: (!fieldpaths.is_empty()).then(|| prost_types::FieldMask {
                    paths: fieldpaths.to_vec(),
                }),
                source_date_epoch: None,
            },
        )?;
        let resp = self.client.clone().update(req).await.map_err(from_status)?;
        body("update", &name, resp.into_inner().image)
    }

    async fn delete(&self, ns: &str, name: &str, opts: DeleteOptions) -> Result<()> {
        let req = with_namespace(
            ns,
            pb::DeleteImageRequest {
                name: name.to_owned(),
                sync: opts.sync,
                target: opts
                    .target
                    .map(|d| strata_api::containerd::types::Descriptor {
                        digest: d.to_string(),
                        ..Default::default()
                    }),
            },
        )?;
        self.client.clone().delete(req).await.map_err(from_status)?;
        Ok(())
    }
}
