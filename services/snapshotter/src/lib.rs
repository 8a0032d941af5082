//! strata-snapshotter: snapshots ([`store::LocalSnapshots`], overlayfs and native) and layers
//! (the Diff service: apply a layer blob onto a snapshot, or turn changes into a layer), with
//! their gRPC adapters.

pub mod diff;
pub mod fsutil;
pub mod grpc;
pub mod store;

pub use store::{Backend, LocalSnapshots};
