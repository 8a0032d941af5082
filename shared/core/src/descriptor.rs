//! OCI content descriptors: what a blob is (media type), its digest and size.

use crate::digest::Digest;
use std::collections::HashMap;

/// Annotation (and content label) naming a compressed layer's uncompressed digest (diff ID).
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// Media types of image layers.
pub mod media_types {
    /// An OCI layer, an uncompressed tar.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// An OCI layer, a gzip-compressed tar.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// An OCI layer, a zstd-compressed tar.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// A Docker (schema 2) layer, a gzip-compressed tar.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// A reference to a blob: what it is, its digest and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// What the blob is (a manifest, a config, a layer, …).
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Annotations (for example [`UNCOMPRESSED_LABEL`] on a layer).
    pub annotations: HashMap<String, String>,
}
