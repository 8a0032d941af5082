//! The gRPC adapters, one file per service: `strata.network.v1.Networks` over the
//! [`Manager`](crate::manager::Manager) ([`networks`]). Only protobuf ⇄ domain conversion and
//! error mapping here.

pub mod networks;

pub use networks::NetworkService;

/// Full names of the services this crate serves, for health and reflection (from the one list
/// in [`strata_api::service_names`]).
pub mod names {
    pub use strata_api::service_names::NETWORKS;
    /// Every service strata-network serves.
    pub const ALL: &[&str] = &[NETWORKS];
}
