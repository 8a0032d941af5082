//! [`Diff`] over gRPC: strata-snapshotter, the gateway, or containerd.

use crate::convert::{descriptors, mounts};
use crate::metadata::with_namespace;
use crate::status::from_status;
use std::collections::HashMap;
use strata_api::containerd::services::diff::v1 as pb;
use strata_api::containerd::services::diff::v1::diff_client::DiffClient;
use strata_core::descriptor::Descriptor;
use strata_core::diff::{ApplyOptions, Diff, DiffOptions};
use strata_core::mount::Mount;
use strata_core::{Error, Result};
use tonic::transport::Channel;

/// Largest message exchanged with the server by default.
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Debug, Clone)]
/// A [`Diff`] answered by a server of the Diff API.
pub struct RemoteDiff {
    client: DiffClient<Channel>,
}

impl RemoteDiff {
    /// A client on `channel` (messages up to 64 MiB).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: DiffClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }
}

impl Diff for RemoteDiff {
    async fn apply(
        &self,
        ns: &str,
        layer: &Descriptor,
        mounts: &[Mount],
        opts: ApplyOptions,
    ) -> Result<Descriptor> {
        let req = with_namespace(
            ns,
            pb::ApplyRequest {
                diff: Some(descriptors::to_pb(layer.clone())),
                mounts: mounts::all_to_pb(mounts.to_vec()),
                payloads: HashMap::new(),
                sync_fs: opts.sync_fs,
            },
        )?;
        let resp = self.client.clone().apply(req).await.map_err(from_status)?;
        let applied = resp
            .into_inner()
            .applied
            .ok_or_else(|| Error::internal("apply returned no descriptor"))?;
        descriptors::from_pb(applied)
    }

    async fn diff(
        &self,
        ns: &str,
        lower: &[Mount],
        upper: &[Mount],
        opts: DiffOptions,
    ) -> Result<Descriptor> {
        let req = with_namespace(
            ns,
            pb::DiffRequest {
                left: mounts::all_to_pb(lower.to_vec()),
                right: mounts::all_to_pb(upper.to_vec()),
                media_type: opts.media_type,
                r#ref: opts.reference,
                labels: opts.labels,
                source_date_epoch: None,
            },
        )?;
        let resp = self.client.clone().diff(req).await.map_err(from_status)?;
        let desc = resp
            .into_inner()
            .diff
            .ok_or_else(|| Error::internal("the differ answered no descriptor"))?;
        descriptors::from_pb(desc)
    }
}
