//! strata-images: images, leases and namespaces over an embedded database ([`store`]), the
//! garbage collector that removes what nothing references ([`gc`]), and the gRPC adapters
//! ([`grpc`]) serving containerd's Images, Leases and Namespaces APIs and strata's
//! `GarbageCollector`.

#![forbid(unsafe_code)]

pub mod containers;
pub mod gc;
pub mod grpc;
pub mod store;

pub use gc::{CollectStats, Collector, GcConfig, Object, Root, RootProvider};
pub use store::{Effects, LocalImages, LocalLeases, LocalNamespaces, Metadata, NoEffects};

use std::path::Path;
use std::sync::Arc;
use strata_core::Error;
use strata_core::content::ContentStore;
use strata_core::snapshots::SnapshotStore;

/// The whole local service: the metadata store, its collector over `C` and `S`, and the three
/// stores wired to that collector.
pub struct Local<C, S> {
    pub meta: Arc<Metadata>,
    pub collector: Arc<Collector<C, S>>,
    pub images: LocalImages,
    pub leases: LocalLeases,
    pub namespaces: LocalNamespaces,
}

impl<C: ContentStore, S: SnapshotStore> Local<C, S> {
    /// Opens the metadata under `root` and wires the collector (whose background tasks the
    /// caller starts with [`Collector::start`], inside a tokio runtime).
    pub fn open(root: &Path, content: C, snapshots: S, config: GcConfig) -> Result<Self, Error> {
        Self::with_collector(root, |meta| {
            Collector::new(meta, content, snapshots, config)
        })
    }

    /// As [`Local::open`], building the collector (to add root providers) from the metadata.
    pub fn with_collector(
        root: &Path,
        build: impl FnOnce(Arc<Metadata>) -> Collector<C, S>,
    ) -> Result<Self, Error> {
        let meta = Metadata::open(root)?;
        let collector = Arc::new(build(meta.clone()));
        let effects: Arc<dyn Effects> = collector.clone();
        Ok(Self {
            images: LocalImages::new(meta.clone(), effects.clone()),
            leases: LocalLeases::new(meta.clone(), effects.clone()),
            namespaces: LocalNamespaces::new(meta.clone(), effects),
            collector,
            meta,
        })
    }
}
