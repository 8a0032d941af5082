//! strata's wire contract: containerd's v1 gRPC API (same packages, services, methods and field
//! numbers, written from the published contract) and strata's own `strata.gateway.v1`.
//!
//! Modules mirror the protobuf packages: `containerd::services::content::v1`, and so on.

#![forbid(unsafe_code)]
// Exempt from `missing_docs`: almost all of this crate is prost and tonic code generated from
// `proto/`, documented only where the .proto files comment (nearly a thousand items are not).
// The items written here are documented all the same.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/strata_api.rs"));

/// Encoded `FileDescriptorSet` of every file in `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Full names of the containerd services, as routed by the gateway and listed by introspection.
pub mod service_names {
    /// containerd's Content service.
    pub const CONTENT: &str = "containerd.services.content.v1.Content";
}
