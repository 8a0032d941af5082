//! strata-tasks: containers over an embedded database ([`containers`]), the in-process event
//! exchange ([`events`]) and the gRPC adapters ([`grpc`]) serving containerd's Containers and
//! Events APIs; tasks driving per-container supervisors ([`tasks`], served by [`grpc::tasks`]);
//! and the processes' output logs read back ([`logs`], served as `strata.tasks.v1.Io` by
//! [`grpc::io`]).

pub mod attach;
pub mod containers;
pub mod events;
pub mod grpc;
mod locks;
pub mod logs;
pub mod metrics;
pub mod private;
pub mod shim_exe;
pub mod tasks;

pub use containers::{LocalContainers, StoreError};
pub use events::{Exchange, Subscription};

use std::path::PathBuf;

/// Where the runtime state lives: `/run/strata/tasks` by default.
pub const DEFAULT_STATE: &str = "/run/strata/tasks";
/// The snapshotter service the Tasks API will mount container root filesystems from.
pub const DEFAULT_SNAPSHOTTER: &str = "/run/strata/snapshotter.sock";
/// Envelopes the exchange keeps for subscribers that have not read them yet.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// The service's settings beyond the common ones (address, root, log format).
#[derive(Debug, Clone)]
pub struct Config {
    /// Persistent state: `metadata.redb`.
    pub root: PathBuf,
    /// Runtime state (lost at reboot): per-task bundles and sockets, for the Tasks API. Created
    /// at start-up.
    pub state: PathBuf,
    /// The snapshotter service's address, for the Tasks API.
    pub snapshotter: String,
    /// The exchange's buffer per subscriber; one that falls further behind is dropped.
    pub event_buffer: usize,
}
