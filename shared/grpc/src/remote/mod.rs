//! Remote implementations of the `strata-core` resource traits, backed by tonic clients.

pub mod content;

pub use content::RemoteContentStore;
