//! OCI content descriptors: what a blob is (media type), its digest and size.

use crate::digest::Digest;
use std::collections::HashMap;

/// Annotation (and content label) naming a compressed layer's uncompressed digest (diff ID).
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

pub mod media_types {
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub annotations: HashMap<String, String>,
}
