//! The gRPC side shared by every strata service: server runtime, error mapping, namespace
//! headers, protobuf conversions, and remote implementations of the `strata-core` traits.

#![warn(missing_docs)]

pub mod authority;
pub mod client;
pub mod config;
pub mod convert;
pub mod convert_containers;
pub mod convert_images;
pub mod metadata;
pub mod remote;
pub mod server;
pub mod status;
pub mod tunables;

pub use status::{from_status, to_status};
