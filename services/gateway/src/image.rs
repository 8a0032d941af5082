//! An image as stored: its record (name → target descriptor) and, read from the content store,
//! the platform manifest, the config and the chain IDs of its layers.

use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::Arc;
use strata_core::content::{ContentStore, read_all};
use strata_core::descriptor::Descriptor;
use strata_core::images::Image;
use strata_core::{Digest, Result};
use strata_registry::{ImageConfig, ImageManifest, Platform};

use crate::Backends;
use crate::resolve::{Blob, Source, resolve};

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

    /// Blob `digest` of namespace `ns`, from the cache or `content` (verified before it is
    /// kept).
    pub(crate) async fn read<C: ContentStore>(
        &self,
        content: &C,
        ns: &str,
        digest: &Digest,
    ) -> Result<Arc<Vec<u8>>> {
        let key = (ns.to_owned(), digest.clone());
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        let bytes = Arc::new(read_all(content, ns, digest).await?);
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

/// An image's blobs as stored: read from the content store through the metadata cache.
pub struct Stored<'a, C> {
    /// The content store.
    pub content: &'a C,
    /// Blobs already read.
    pub cache: &'a MetadataCache,
    /// The namespace the image is in.
    pub ns: &'a str,
}

impl<C: ContentStore> Source for Stored<'_, C> {
    async fn read(&self, _what: Blob, desc: &Descriptor) -> Result<Arc<Vec<u8>>> {
        self.cache.read(self.content, self.ns, &desc.digest).await
    }
}

/// Reads the manifest for this host (through an index if need be) and the config of `image`.
pub async fn details(b: &Backends, ns: &str, image: Image) -> Result<ImageDetails> {
    let stored = Stored {
        content: &b.content,
        cache: &b.metadata,
        ns,
    };
    let r = resolve(&stored, &image.name, image.target, &Platform::host()).await?;
    Ok(ImageDetails {
        chain_ids: r.chain_ids,
        name: image.name,
        labels: image.labels,
        created_at: image.created_at,
        target: r.root,
        manifest_digest: r.manifest_desc.digest,
        manifest: r.manifest,
        config_digest: r.config_desc.digest,
        config: r.config,
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
