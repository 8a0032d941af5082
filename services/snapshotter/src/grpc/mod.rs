//! The gRPC adapters, one file per service: containerd's Snapshots API over any
//! [`SnapshotStore`](strata_core::snapshots::SnapshotStore) ([`snapshots`]) and the Diff API
//! over the [`Differ`](crate::diff::Differ) ([`diff`]). Only protobuf ⇄ domain conversion and
//! error mapping here.

pub mod diff;
pub mod snapshots;

pub use diff::DiffService;
pub use snapshots::SnapshotsService;
