//! Domain types every strata service shares. Nothing here knows about gRPC: the transport maps
//! [`errdefs::Kind`] to status codes once, in `strata-grpc`.

#![warn(missing_docs)]

pub mod containers;
pub mod content;
pub mod crashpoint;
pub mod descriptor;
pub mod diff;
pub mod digest;
pub mod errdefs;
pub mod events;
pub mod filters;
pub mod identifiers;
pub mod images;
pub mod labels;
pub mod leases;
pub mod logfile;
pub mod mount;
pub mod namespaces;
pub mod snapshots;
pub mod tty;

pub use digest::Digest;
pub use errdefs::{Error, Kind, Result};
