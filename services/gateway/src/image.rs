//! An image as stored: its record (name → target descriptor) and, read from the content store,
//! the platform manifest, the config and the chain IDs of its layers.

use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::Arc;
use strata_core::content::read_all;
use strata_core::descriptor::Descriptor;
use strata_core::images::Image;
use strata_core::{Digest, Error, Result};
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
    pub created_at: std::time::SystemTime,
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

/// Image metadata blobs (indexes, manifests, configs) already read, by namespace and digest.
/// Being content-addressed they never change, so every container created from an image does
/// not read them again from the content service; the namespace is part of the key, as blobs
/// are visible per namespace. Bounded: emptied when full.
#[derive(Default)]
pub struct MetadataCache {
    blobs: std::sync::Mutex<Blobs>,
}

/// (namespace, digest) → the blob's bytes.
type Blobs = HashMap<(String, Digest), Arc<Vec<u8>>>;

/// Entries the cache holds before it is emptied, and the largest blob it keeps.
const CACHE_ENTRIES: usize = 256;
const CACHE_MAX_BLOB: usize = 1 << 20;

impl MetadataCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Blobs> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blob `digest` of namespace `ns`, from the cache or the content service (verified
    /// before it is kept).
    pub(crate) async fn read(
        &self,
        b: &Backends,
        ns: &str,
        digest: &Digest,
    ) -> Result<Arc<Vec<u8>>> {
        let key = (ns.to_owned(), digest.clone());
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        let bytes = Arc::new(read_all(&b.content, ns, digest).await?);
        if bytes.len() <= CACHE_MAX_BLOB && Digest::of(&bytes) == *digest {
            let mut blobs = self.lock();
            if blobs.len() >= CACHE_ENTRIES {
                blobs.clear();
            }
            blobs.insert(key, bytes.clone());
        }
        Ok(bytes)
    }
}

/// Reads the manifest for this host (through an index if need be) and the config of `image`.
pub async fn details(b: &Backends, ns: &str, image: Image) -> Result<ImageDetails> {
    let target = image.target;
    let mut manifest_digest = target.digest.clone();
    if media_types::is_index(&target.media_type) {
        let bytes = b.metadata.read(b, ns, &target.digest).await?;
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
    let bytes = b.metadata.read(b, ns, &manifest_digest).await?;
    let manifest = ImageManifest::from_slice(&bytes)?;
    let config_digest = manifest.config.digest.clone();
    let bytes = b.metadata.read(b, ns, &config_digest).await?;
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
