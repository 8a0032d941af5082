//! Containers as roots of garbage collection: a container keeps its snapshot (its thin
//! read-write layer and, through it, the image's layers) and its image. Containers live in the
//! tasks service; the collector asks it, namespace by namespace.
//!
//! A container list that cannot be read (no socket, connection refused, no answer in
//! [`LIST_TIMEOUT`], an error answer) is never taken for "no containers": the namespace's
//! collection fails with Unavailable and nothing of it is removed. A deployment without a tasks
//! service says so explicitly with the address [`NO_TASKS`], and then has no container roots.

use crate::gc::{Object, Root, RootProvider};
use crate::store::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use strata_core::Error;
use strata_core::containers::{Container, ContainerStore};
use strata_grpc::remote::RemoteContainers;

/// The tasks address (`--tasks none`, config `tasks = "none"`) of a deployment that has no
/// tasks service: no container holds anything.
pub const NO_TASKS: &str = "none";

/// How long the collector waits for the tasks service's answer before giving up on the
/// namespace (it holds the metadata gate meanwhile, so image creation waits too).
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The container root provider for the tasks service at `address`, or none for [`NO_TASKS`].
pub fn for_tasks(address: &str) -> Result<Option<Arc<dyn RootProvider>>, Error> {
    if address == NO_TASKS {
        return Ok(None);
    }
    Ok(Some(Arc::new(ContainerRoots::new(address)?)))
}

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

    /// The containers of `ns`; any failure is Unavailable naming the tasks service.
    async fn containers(&self, ns: &str) -> Result<Vec<Container>, Error> {
        let unknown = |why: String| {
            Error::unavailable(format!(
                "containers of namespace {ns:?} unknown: the tasks service at {} {why}",
                self.address
            ))
        };
        match tokio::time::timeout(LIST_TIMEOUT, self.client.list(ns, &[])).await {
            Ok(Ok(list)) => Ok(list),
            Ok(Err(e)) => Err(unknown(format!("failed: {e}"))),
            Err(_) => Err(unknown(format!(
                "did not answer in {} s",
                LIST_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl RootProvider for ContainerRoots {
    fn name(&self) -> &str {
        "containers"
    }

    fn roots<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<Vec<Root>, Error>> {
        Box::pin(async move {
            let containers = self.containers(ns).await?;
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
            let ids: Vec<String> = self
                .containers(ns)
                .await?
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
