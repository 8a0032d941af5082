//! [`SnapshotStore`] over gRPC: strata-snapshotter, the gateway, or containerd.

use crate::convert::mounts;
use crate::convert::snapshots::{info_from_pb, info_to_pb};
use crate::metadata::with_namespace;
use crate::status::from_status;
use std::collections::HashMap;
use strata_api::containerd::services::snapshots::v1 as pb;
use strata_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_core::mount::Mount;
use strata_core::snapshots::{Info, SnapshotStore, Usage};
use strata_core::{Error, Result};
use tonic::transport::Channel;

#[derive(Debug, Clone)]
/// A [`SnapshotStore`] answered by a server of the Snapshots API.
pub struct RemoteSnapshots {
    client: SnapshotsClient<Channel>,
    /// Removals ask for no `/snapshot/remove` event (the collector's).
    quiet: bool,
}

impl RemoteSnapshots {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: SnapshotsClient::new(channel),
            quiet: false,
        }
    }

    /// This store's removals are strata's own bookkeeping (the garbage collector's): the
    /// snapshotter publishes no `/snapshot/remove` for them, as containerd publishes none for
    /// what its collector removes.
    #[must_use]
    pub fn without_events(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }
}

fn missing(what: &str) -> Error {
    Error::internal(format!("{what} came back without a body"))
}

impl SnapshotStore for RemoteSnapshots {
    async fn stat(&self, sn: &str, ns: &str, key: &str) -> Result<Info> {
        let req = with_namespace(
            ns,
            pb::StatSnapshotRequest {
                snapshotter: sn.to_owned(),
                key: key.to_owned(),
            },
        )?;
        let resp = self.client.clone().stat(req).await.map_err(from_status)?;
        Ok(info_from_pb(
            resp.into_inner().info.ok_or_else(|| missing("stat"))?,
        ))
    }

    async fn update(&self, sn: &str, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let req = with_namespace(
            ns,
            pb::UpdateSnapshotRequest {
                snapshotter: sn.to_owned(),
                info: Some(info_to_pb(info)),
                update_mask: (!fieldpaths.is_empty()).then(|| prost_types::FieldMask {
                    paths: fieldpaths.to_vec(),
                }),
            },
        )?;
        let resp = self.client.clone().update(req).await.map_err(from_status)?;
        Ok(info_from_pb(
            resp.into_inner().info.ok_or_else(|| missing("update"))?,
        ))
    }

    async fn usage(&self, sn: &str, ns: &str, key: &str) -> Result<Usage> {
        let req = with_namespace(
            ns,
            pb::UsageRequest {
                snapshotter: sn.to_owned(),
                key: key.to_owned(),
            },
        )?;
        let u = self
            .client
            .clone()
            .usage(req)
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(Usage {
            size: crate::convert::size("size", u.size)?,
            inodes: crate::convert::size("inodes", u.inodes)?,
        })
    }

    async fn mounts(&self, sn: &str, ns: &str, key: &str) -> Result<Vec<Mount>> {
        let req = with_namespace(
            ns,
            pb::MountsRequest {
                snapshotter: sn.to_owned(),
                key: key.to_owned(),
            },
        )?;
        let resp = self.client.clone().mounts(req).await.map_err(from_status)?;
        Ok(mounts::all_from_pb(resp.into_inner().mounts))
    }

    async fn prepare(
        &self,
        sn: &str,
        ns: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let req = with_namespace(
            ns,
            pb::PrepareSnapshotRequest {
                snapshotter: sn.to_owned(),
                key: key.to_owned(),
                parent: parent.to_owned(),
                labels,
            },
        )?;
        let resp = self
            .client
            .clone()
            .prepare(req)
            .await
            .map_err(from_status)?;
        Ok(mounts::all_from_pb(resp.into_inner().mounts))
    }

    async fn view(
        &self,
        sn: &str,
        ns: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let req = with_namespace(
            ns,
            pb::ViewSnapshotRequest {
                snapshotter: sn.to_owned(),
                key: key.to_owned(),
                parent: parent.to_owned(),
                labels,
            },
        )?;
        let resp = self.client.clone().view(req).await.map_err(from_status)?;
        Ok(mounts::all_from_pb(resp.into_inner().mounts))
    }

    async fn commit(
        &self,
        sn: &str,
        ns: &str,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let req = with_namespace(
            ns,
            pb::CommitSnapshotRequest {
                snapshotter: sn.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
                labels,
                parent: String::new(),
            },
        )?;
        self.client.clone().commit(req).await.map_err(from_status)?;
        Ok(())
    }

    async fn remove(&self, sn: &str, ns: &str, key: &str) -> Result<()> {
        let mut req = with_namespace(
            ns,
            pb::RemoveSnapshotRequest {
                snapshotter: sn.to_owned(),
                key: key.to_owned(),
            },
        )?;
        if self.quiet {
            crate::metadata::without_events(&mut req);
        }
        self.client.clone().remove(req).await.map_err(from_status)?;
        Ok(())
    }

    async fn list(&self, sn: &str, ns: &str, filters: &[String]) -> Result<Vec<Info>> {
        let req = with_namespace(
            ns,
            pb::ListSnapshotsRequest {
                snapshotter: sn.to_owned(),
                filters: filters.to_vec(),
            },
        )?;
        let mut stream = self
            .client
            .clone()
            .list(req)
            .await
            .map_err(from_status)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(batch) = stream.message().await.map_err(from_status)? {
            out.extend(batch.info.into_iter().map(info_from_pb));
        }
        Ok(out)
    }

    async fn cleanup(&self, sn: &str) -> Result<()> {
        // Cleanup is not namespaced; containerd's clients still send a namespace.
        let req = with_namespace(
            "default",
            pb::CleanupRequest {
                snapshotter: sn.to_owned(),
            },
        )?;
        self.client
            .clone()
            .cleanup(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }
}
