//! strata-gateway: the one socket users and the CLI talk to. It routes containerd's services to
//! the strata service that owns each ([`router`]) and serves `strata.gateway.v1` ([`grpc`]):
//! server-side pull ([`pull`]) and import, image listing with sizes, inspect, history, disk use,
//! tag and push ([`push`]).

#![forbid(unsafe_code)]

pub mod build;
pub mod catalog;
pub mod changes;
pub mod commit;
pub mod confine;
pub mod grpc;
pub mod hooks;
pub mod image;
pub mod import;
pub mod net;
pub mod pull;
pub mod push;
pub mod resolve;
pub mod router;
pub mod run;
pub mod save;
pub mod seccomp;
pub mod spec;
pub mod tasks;

use std::path::PathBuf;
use strata_api::strata::network::v1::networks_client::NetworksClient;
use strata_grpc::remote::{
    RemoteContainers, RemoteContentStore, RemoteDiff, RemoteImages, RemoteLeases, RemoteSnapshots,
};
use tonic::transport::Channel;

/// Largest message exchanged with the backends (manifests and configs are small; content
/// reads come in 1 MiB chunks).
const MAX_MESSAGE: usize = 64 << 20;

/// The services the gateway composes.
pub struct Backends {
    pub content: RemoteContentStore,
    pub snapshots: RemoteSnapshots,
    pub diff: RemoteDiff,
    pub images: RemoteImages,
    pub leases: RemoteLeases,
    pub containers: RemoteContainers,
    /// Tasks and their output.
    pub tasks: tasks::TaskClient,
    /// Clients attached to containers' processes, and stdin pipes.
    pub attachments: std::sync::Arc<run::Attachments>,
    /// Registries reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// The registry client, made at the first pull (making one loads the system's
    /// certificate store) and shared by every pull after it: connections, tokens.
    pub registry: tokio::sync::OnceCell<strata_registry::Client>,
    /// The gateway's own state directory.
    pub root: PathBuf,
    /// Snapshotter used when a request names none.
    pub snapshotter: String,
    /// Blobs and unpacks in flight, shared by concurrent pulls.
    pub flights: std::sync::Arc<pull::Flights>,
    /// Image indexes, manifests and configs already read.
    pub metadata: image::MetadataCache,
    /// The network service, when there is one.
    pub network: Option<NetworksClient<Channel>>,
    /// Pushes send larger blobs in chunks of this size, smaller ones whole.
    pub chunked_upload_threshold: u64,
}

impl Backends {
    pub fn new(
        content: Channel,
        snapshotter: Channel,
        images: Channel,
        tasks: Channel,
        insecure_registries: Vec<String>,
        root: PathBuf,
    ) -> Result<Self, strata_core::Error> {
        Ok(Self {
            content: RemoteContentStore::new(content),
            snapshots: RemoteSnapshots::new(snapshotter.clone()),
            diff: RemoteDiff::new(snapshotter),
            images: RemoteImages::new(images.clone()).with_max_message_size(MAX_MESSAGE),
            leases: RemoteLeases::new(images),
            containers: RemoteContainers::new(tasks.clone()),
            tasks: tasks::TaskClient::new(tasks),
            attachments: std::sync::Arc::default(),
            insecure_registries,
            registry: tokio::sync::OnceCell::new(),
            root,
            snapshotter: "overlayfs".to_owned(),
            flights: std::sync::Arc::default(),
            metadata: image::MetadataCache::default(),
            network: None,
            chunked_upload_threshold: strata_registry::DEFAULT_CHUNKED_UPLOAD_THRESHOLD,
        })
    }

    /// The same backends with a network service: containers get the default network.
    #[must_use]
    pub fn with_network(mut self, network: Channel) -> Self {
        self.network = Some(NetworksClient::new(network));
        self
    }
}
