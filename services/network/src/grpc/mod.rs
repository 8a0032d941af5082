//! The gRPC adapters, one file per service: `strata.network.v1.Networks` over the
//! [`Manager`](crate::manager::Manager) ([`networks`]). Only protobuf ⇄ domain conversion and
//! error mapping here.

pub mod networks;

pub use networks::NetworkService;

/// Full names of the services this crate serves, for health and reflection.
pub mod names {
    /// `strata.network.v1.Networks`.
    pub const NETWORKS: &str = "strata.network.v1.Networks";
}
