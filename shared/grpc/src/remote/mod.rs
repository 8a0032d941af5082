//! Remote implementations of the `strata-core` resource traits, backed by tonic clients.

pub mod content;
pub mod images;
pub mod leases;
pub mod namespaces;
pub mod snapshots;

pub use content::RemoteContentStore;
pub use images::RemoteImages;
pub use leases::RemoteLeases;
pub use namespaces::RemoteNamespaces;
pub use snapshots::RemoteSnapshots;
