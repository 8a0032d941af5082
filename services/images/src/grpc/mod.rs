//! The gRPC adapters, one file per service: containerd's Images, Leases and Namespaces APIs over
//! any [`ImageStore`](strata_core::images::ImageStore) ([`images`]),
//! [`LeaseStore`](strata_core::leases::LeaseStore) ([`leases`]) and
//! [`NamespaceStore`](strata_core::namespaces::NamespaceStore) ([`namespaces`]), and
//! `strata.images.v1.GarbageCollector` over any [`Collect`](crate::gc::Collect)
//! ([`garbage_collector`]). Only protobuf ⇄ domain conversion and error mapping here.

pub mod garbage_collector;
pub mod images;
pub mod leases;
pub mod namespaces;

pub use garbage_collector::GcService;
pub use images::ImagesService;
pub use leases::LeasesService;
pub use namespaces::NamespacesService;

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
