//! Remote implementations of the `strata-core` resource traits, backed by tonic clients.

pub mod content;
pub mod snapshots;

pub use content::RemoteContentStore;
pub use snapshots::RemoteSnapshots;
