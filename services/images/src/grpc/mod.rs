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

/// Full names of the services this crate serves, for health and reflection (from the one list
/// in [`strata_api::service_names`]).
pub mod names {
    pub use strata_api::service_names::{GARBAGE_COLLECTOR, IMAGES, LEASES, NAMESPACES};
    /// Every service strata-images serves.
    pub const ALL: &[&str] = &[IMAGES, LEASES, NAMESPACES, GARBAGE_COLLECTOR];
}

fn paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}
