//! Remote implementations of the `strata-core` resource traits, backed by tonic clients.

pub mod containers;
pub mod content;
pub mod diff;
pub mod event_queue;
pub mod events;
pub mod images;
pub mod leases;
pub mod namespaces;
pub mod snapshots;

pub use containers::RemoteContainers;
pub use content::RemoteContentStore;
pub use diff::RemoteDiff;
pub use event_queue::QueuedEvents;
pub use events::RemoteEvents;
pub use images::RemoteImages;
pub use leases::RemoteLeases;
pub use namespaces::RemoteNamespaces;
pub use snapshots::RemoteSnapshots;
