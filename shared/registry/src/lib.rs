//! An OCI distribution (registry v2) client for pulling and pushing images: Docker-compatible
//! reference parsing, anonymous/bearer/basic authentication with credentials from a Docker
//! config file, bounded retries, manifest resolution with digest checks, resumable blob
//! streams, manifest and image config types, containerd-style platform selection, and pushes
//! (blobs skipped when present, mounted across repositories, uploaded whole or in chunks).
//!
//! ```no_run
//! # async fn pull() -> Result<(), strata_registry::RegistryError> {
//! use strata_registry::{Client, ClientConfig, Manifest, Platform, Reference, select};
//! let client = Client::new(ClientConfig::default())?;
//! let reference = Reference::parse("busybox")?;
//! let resolved = client.resolve(&reference).await?;
//! if let Manifest::Index(index) = Manifest::from_slice(&resolved.media_type, &resolved.bytes)? {
//!     let entry = select(&index, &Platform::host());
//!     # let _ = entry;
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod blob;
mod client;
mod error;
pub mod manifest;
mod platform;
mod push;
mod reference;

pub use auth::{
    Challenge, Credentials, DockerConfig, default_docker_config_dir, docker_config_dir_from,
    parse_challenges,
};
pub use blob::{BlobStream, Verify, verify};
pub use client::{
    Client, ClientConfig, DEFAULT_CHUNKED_UPLOAD_THRESHOLD, DEFAULT_UPLOAD_CHUNK_SIZE, Resolved,
};
pub use error::{RegistryError, Result};
pub use manifest::{
    ContainerConfig, Descriptor, History, ImageConfig, ImageIndex, ImageManifest, MAX_CONFIG_SIZE,
    MAX_INDEX_SIZE, MAX_MANIFEST_SIZE, Manifest, RootFs, media_types,
};
pub use platform::{Platform, select};
pub use push::{BlobPushed, BlobSource, ByteStream};
pub use reference::{DEFAULT_API_HOST, DEFAULT_DOMAIN, Reference, is_loopback_host};
