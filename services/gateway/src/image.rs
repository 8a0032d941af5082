//! An image as stored: its record (name → target descriptor) and, read from the content store,
//! the platform manifest, the config and the chain IDs of its layers.

use sha2::Digest as _;
use strata_api::containerd::services::images::v1 as ipb;
use strata_core::content::read_all;
use strata_core::descriptor::Descriptor;
use strata_core::{Digest, Error, Result};
use strata_grpc::convert::descriptors;
use strata_registry::{ImageConfig, ImageIndex, ImageManifest, media_types};
use strata_registry::{Platform, select as select_platform};

use crate::Backends;

/// The chain IDs of a stack of layers (diff IDs bottom first), as the OCI spec defines them:
/// the snapshot of layer n is keyed by a digest of everything beneath it.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => {
                Digest::from_hasher(sha2::Sha256::new_with_prefix(format!("{parent} {d}")))
            }
        };
        out.push(next);
    }
    out
}

/// What the gateway knows of a stored image.
pub struct ImageDetails {
    pub name: String,
    pub labels: std::collections::HashMap<String, String>,
    pub created_at: Option<prost_types::Timestamp>,
    pub target: Descriptor,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub chain_ids: Vec<Digest>,
}

impl ImageDetails {
    pub fn diff_ids(&self) -> &[Digest] {
        &self.config.rootfs.diff_ids
    }
}

/// Reads the manifest for this host (through an index if need be) and the config of `image`.
pub async fn details(b: &Backends, ns: &str, image: ipb::Image) -> Result<ImageDetails> {
    let target = descriptors::from_pb(image.target.ok_or_else(|| {
        Error::failed_precondition(format!("image {:?} has no target", image.name))
    })?)?;
    let mut manifest_digest = target.digest.clone();
    if media_types::is_index(&target.media_type) {
        let bytes = read_all(&b.content, ns, &target.digest).await?;
        let index = ImageIndex::from_slice(&bytes)?;
        let host = Platform::host();
        let m = select_platform(&index, &host).ok_or_else(|| {
            Error::not_found(format!(
                "image {:?} has no manifest for this platform ({host})",
                image.name
            ))
        })?;
        manifest_digest = m.digest.clone();
    }
    let bytes = read_all(&b.content, ns, &manifest_digest).await?;
    let manifest = ImageManifest::from_slice(&bytes)?;
    let config_digest = manifest.config.digest.clone();
    let bytes = read_all(&b.content, ns, &config_digest).await?;
    let config = ImageConfig::from_slice(&bytes)?;
    Ok(ImageDetails {
        chain_ids: chain_ids(&config.rootfs.diff_ids),
        name: image.name,
        labels: image.labels,
        created_at: image.created_at,
        target,
        manifest_digest,
        manifest,
        config_digest,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
