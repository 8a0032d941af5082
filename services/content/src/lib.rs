//! strata-content: the local content store ([`store::LocalContentStore`]) and its gRPC adapter
//! ([`grpc::ContentService`]), which serves any [`strata_core::content::ContentStore`].

#![forbid(unsafe_code)]

pub mod grpc;
pub mod store;

pub use store::LocalContentStore;
