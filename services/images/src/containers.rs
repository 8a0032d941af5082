//! Containers as roots of garbage collection: a container keeps its snapshot (its thin
//! read-write layer and, through it, the image's layers) and its image. Containers live in the
//! tasks service; the collector asks it, namespace by namespace.

use crate::gc::{Object, Root, RootProvider};
use crate::store::BoxFuture;
use std::path::PathBuf;
use strata_core::Error;
use strata_core::containers::ContainerStore;
use strata_grpc::remote::RemoteContainers;

pub struct ContainerRoots {
    address: String,
    client: RemoteContainers,
}

impl ContainerRoots {
    pub fn new(address: &str) -> Result<Self, Error> {
        Ok(Self {
            address: address.to_owned(),
            client: RemoteContainers::connect(address)?,
        })
    }

    /// No tasks service is deployed here: its socket does not exist (a socket that exists but
    /// does not answer is an error, never "no containers").
    fn absent(&self) -> bool {
        let path = self
            .address
            .strip_prefix("unix://")
            .unwrap_or(&self.address);
        path.starts_with('/') && !PathBuf::from(path).exists()
    }
}

impl RootProvider for ContainerRoots {
    fn name(&self) -> &str {
        "containers"
    }

    fn roots<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<Vec<Root>, Error>> {
        Box::pin(async move {
            if self.absent() {
                return Ok(Vec::new());
            }
            let containers = self.client.list(ns, &[]).await.map_err(|e| {
                e.context(format!(
                    "listing containers at {} (collection of namespace {ns:?} skipped)",
                    self.address
                ))
            })?;
            let mut roots = Vec::new();
            for c in containers {
                if !c.snapshot_key.is_empty() {
                    roots.push(Root::new(Object::Snapshot {
                        snapshotter: c.snapshotter.clone(),
                        key: c.snapshot_key.clone(),
                    }));
                }
                if !c.image.is_empty() {
                    roots.push(Root::new(Object::Image(c.image.clone())));
                }
            }
            Ok(roots)
        })
    }

    fn residents<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async move {
            if self.absent() {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = self
                .client
                .list(ns, &[])
                .await
                .map_err(|e| e.context(format!("listing containers at {}", self.address)))?
                .into_iter()
                .map(|c| c.id)
                .collect();
            Ok(if ids.is_empty() {
                Vec::new()
            } else {
                vec![format!("containers {}", ids.join(", "))]
            })
        })
    }
}
