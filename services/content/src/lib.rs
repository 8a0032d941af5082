//! strata-content: the local content store ([`store::LocalContentStore`]) and its gRPC adapter
//! ([`grpc::ContentService`]), which serves any [`strata_core::content::ContentStore`].

#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

pub mod grpc;
pub mod store;

pub use store::LocalContentStore;
