//! The gRPC adapters, one file per service: containerd's Snapshots API over any
//! [`SnapshotStore`](strata_core::snapshots::SnapshotStore) ([`snapshots`]) and the Diff API
//! over the [`Differ`](crate::diff::Differ) ([`diff`]). Only protobuf ⇄ domain conversion and
//! error mapping here.

pub mod diff;
pub mod snapshots;

pub use diff::DiffService;
pub use snapshots::SnapshotsService;

/// Full names of the services this crate serves, for health and reflection (from the one list
/// in [`strata_api::service_names`]).
pub mod names {
    pub use strata_api::service_names::{DIFF, SNAPSHOTS};
    /// Every service strata-snapshotter serves.
    pub const ALL: &[&str] = &[SNAPSHOTS, DIFF];
}
