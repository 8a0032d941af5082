//! The gRPC adapters, one file per service: containerd's Content API over any
//! [`ContentStore`](strata_core::content::ContentStore) ([`content`]). Only protobuf ⇄ domain
//! conversion and error mapping here.

pub mod content;

pub use content::{ContentService, MAX_MESSAGE};

/// Full names of the services this crate serves, for health and reflection (from the one list
/// in [`strata_api::service_names`]).
pub mod names {
    pub use strata_api::service_names::CONTENT;
    /// Every service strata-content serves.
    pub const ALL: &[&str] = &[CONTENT];
}
