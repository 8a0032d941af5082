//! The gRPC adapters, one file per service: containerd's Content API over any
//! [`ContentStore`](strata_core::content::ContentStore) ([`content`]). Only protobuf ⇄ domain
//! conversion and error mapping here.

pub mod content;

pub use content::{ContentService, MAX_MESSAGE};
