//! strata's wire contract: containerd's v1 gRPC API (same packages, services, methods and field
//! numbers, written from the published contract) and strata's own `strata.gateway.v1`.
//!
//! Modules mirror the protobuf packages: `containerd::services::content::v1`, and so on.

#![forbid(unsafe_code)]
#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/strata_api.rs"));

/// Encoded `FileDescriptorSet` of every file in `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Full names of the containerd services, as routed by the gateway and listed by introspection.
pub mod service_names {
    pub const CONTENT: &str = "containerd.services.content.v1.Content";
}
