//! The one image resolver: from an image's root descriptor (an index or a manifest) to the
//! manifest for a platform, its config and the diff and chain IDs of its layers, with every
//! check on the way: media types, sizes, the platform's presence in an index, and as many diff
//! IDs as layers. Pull reads through a registry, import and the stored images' inspect,
//! history, listing and run read through the content store ([`Source`]).

use crate::image::chain_ids;
use std::future::Future;
use std::sync::Arc;
use strata_core::descriptor::Descriptor;
use strata_core::{Digest, Error, Result};
use strata_registry::{ImageConfig, ImageIndex, ImageManifest, Platform, media_types};

/// What a blob asked of a [`Source`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// The root of the image: an index or a manifest.
    Root,
    /// The manifest an index names for the platform.
    Manifest,
    /// The image config.
    Config,
}

/// Where an image's metadata blobs are read from.
pub trait Source: Sync {
    /// The bytes of `desc` (verified against its digest by the source).
    fn read(
        &self,
        what: Blob,
        desc: &Descriptor,
    ) -> impl Future<Output = Result<Arc<Vec<u8>>>> + Send;
}

/// An image resolved for one platform.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The descriptor resolution began at.
    pub root: Descriptor,
    /// The root's bytes and the index they hold, when the root is an index.
    pub index: Option<(Arc<Vec<u8>>, ImageIndex)>,
    /// The manifest for the platform (the root itself when it is a manifest).
    pub manifest_desc: Descriptor,
    /// The manifest's bytes.
    pub manifest_bytes: Arc<Vec<u8>>,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config's descriptor, as the manifest names it.
    pub config_desc: Descriptor,
    /// The config's bytes.
    pub config_bytes: Arc<Vec<u8>>,
    /// The config.
    pub config: ImageConfig,
    /// The layers, bottom first, as the manifest names them.
    pub layers: Vec<Descriptor>,
    /// The chain ID of each layer (the key of its committed snapshot).
    pub chain_ids: Vec<Digest>,
}

impl Resolved {
    /// The diff ID of each layer, bottom first (as many as layers).
    pub fn diff_ids(&self) -> &[Digest] {
        &self.config.rootfs.diff_ids
    }
}

/// Resolves image `name` (named in errors) from `root` for `platform`, reading through
/// `source`.
pub async fn resolve<S: Source>(
    source: &S,
    name: &str,
    root: Descriptor,
    platform: &Platform,
) -> Result<Resolved> {
    let root_bytes = source.read(Blob::Root, &root).await?;
    check_size(name, "root", &root, &root_bytes)?;
    let (index, manifest_desc, manifest_bytes) = if media_types::is_index(&root.media_type) {
        let idx = ImageIndex::from_slice(&root_bytes)?;
        let chosen = strata_registry::select(&idx, platform)
            .ok_or_else(|| {
                Error::not_found(format!("{name} has no image for platform {platform}"))
            })?
            .to_core();
        check_manifest_type(name, &chosen)?;
        let bytes = source.read(Blob::Manifest, &chosen).await?;
        check_size(name, "manifest", &chosen, &bytes)?;
        (Some((root_bytes, idx)), chosen, bytes)
    } else {
        check_manifest_type(name, &root)?;
        (None, root.clone(), root_bytes)
    };
    let manifest = ImageManifest::from_slice(&manifest_bytes)?;
    let config_desc = manifest.config.to_core();
    if !config_desc.media_type.is_empty() && !media_types::is_config(&config_desc.media_type) {
        return Err(Error::failed_precondition(format!(
            "{name}: config {} has media type {:?}, not an image config",
            config_desc.digest, config_desc.media_type
        )));
    }
    let config_bytes = source.read(Blob::Config, &config_desc).await?;
    check_size(name, "config", &config_desc, &config_bytes)?;
    let config = ImageConfig::from_slice(&config_bytes)?;
    let layers: Vec<Descriptor> = manifest.layers.iter().map(|l| l.to_core()).collect();
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(Error::failed_precondition(format!(
            "{name}: the manifest lists {} layers, the config {} diff IDs",
            layers.len(),
            diff_ids.len()
        )));
    }
    let chain_ids = chain_ids(diff_ids);
    Ok(Resolved {
        root,
        index,
        manifest_desc,
        manifest_bytes,
        manifest,
        config_desc,
        config_bytes,
        config,
        layers,
        chain_ids,
    })
}

/// A manifest's media type must be one of an image manifest (or unset, as in an old index).
fn check_manifest_type(name: &str, desc: &Descriptor) -> Result<()> {
    let t = &desc.media_type;
    if t.is_empty() || media_types::is_manifest(t) {
        return Ok(());
    }
    Err(Error::failed_precondition(format!(
        "{name}: manifest {} has media type {t:?}, not an image manifest",
        desc.digest
    )))
}

/// A blob must have the size its descriptor declares.
fn check_size(name: &str, what: &str, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    let n = bytes.len() as u64;
    if n == desc.size {
        return Ok(());
    }
    Err(Error::failed_precondition(format!(
        "{name}: {what} {} has {n} bytes, its descriptor says {}",
        desc.digest, desc.size
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use strata_core::Kind;
    use strata_registry::media_types::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};

    /// Blobs by digest, as a content store holds them.
    #[derive(Default)]
    struct Blobs(HashMap<Digest, Arc<Vec<u8>>>);

    impl Blobs {
        fn put(&mut self, media_type: &str, bytes: Vec<u8>) -> Descriptor {
            let desc = Descriptor {
                media_type: media_type.to_owned(),
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
                annotations: HashMap::new(),
            };
            self.0.insert(desc.digest.clone(), Arc::new(bytes));
            desc
        }

        fn json(&mut self, media_type: &str, v: &serde_json::Value) -> Descriptor {
            self.put(media_type, serde_json::to_vec(v).unwrap())
        }
    }

    impl Source for Blobs {
        async fn read(&self, _what: Blob, desc: &Descriptor) -> Result<Arc<Vec<u8>>> {
            self.0
                .get(&desc.digest)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("content {}: not found", desc.digest)))
        }
    }

    fn entry(d: &Descriptor) -> serde_json::Value {
        serde_json::json!({"mediaType": d.media_type, "digest": d.digest.to_string(), "size": d.size})
    }

    /// Stores an image of `layers` layers whose config lists `diff_ids` diff IDs; answers
    /// its manifest's descriptor.
    fn image(blobs: &mut Blobs, layers: usize, diff_ids: usize, config_type: &str) -> Descriptor {
        let host = Platform::host();
        let ids: Vec<String> = (0..diff_ids)
            .map(|i| Digest::of(format!("diff {i}").as_bytes()).to_string())
            .collect();
        let config = blobs.json(
            config_type,
            &serde_json::json!({
                "architecture": host.architecture, "os": host.os,
                "rootfs": {"type": "layers", "diff_ids": ids},
            }),
        );
        let layers: Vec<serde_json::Value> = (0..layers)
            .map(|i| entry(&blobs.put(OCI_LAYER_GZIP, format!("layer {i}").into_bytes())))
            .collect();
        blobs.json(
            OCI_MANIFEST,
            &serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": entry(&config), "layers": layers,
            }),
        )
    }

    fn index(blobs: &mut Blobs, manifests: &[(&Descriptor, &Platform)]) -> Descriptor {
        let manifests: Vec<serde_json::Value> = manifests
            .iter()
            .map(|(d, p)| {
                let mut e = entry(d);
                e["platform"] = serde_json::json!({
                    "architecture": p.architecture, "os": p.os, "variant": p.variant,
                });
                e
            })
            .collect();
        blobs.json(
            OCI_INDEX,
            &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
    }

    fn other_platform() -> Platform {
        let arch = if Platform::host().architecture == "s390x" {
            "ppc64le"
        } else {
            "s390x"
        };
        Platform::new("linux", arch, "")
    }

    #[tokio::test]
    async fn a_manifest_resolves_to_its_config_and_chain_ids() {
        let mut blobs = Blobs::default();
        let m = image(&mut blobs, 2, 2, OCI_CONFIG);
        let r = resolve(&blobs, "app", m.clone(), &Platform::host())
            .await
            .unwrap();
        assert!(r.index.is_none());
        assert_eq!(r.manifest_desc, m);
        assert_eq!(r.layers.len(), 2);
        assert_eq!(r.diff_ids().len(), 2);
        assert_eq!(r.chain_ids, chain_ids(r.diff_ids()));
        assert_eq!(r.config_desc.media_type, OCI_CONFIG);
    }

    #[tokio::test]
    async fn an_index_gives_the_platform_s_manifest_or_not_found() {
        let mut blobs = Blobs::default();
        let mine = image(&mut blobs, 1, 1, OCI_CONFIG);
        let theirs = image(&mut blobs, 3, 3, OCI_CONFIG);
        let (host, other) = (Platform::host(), other_platform());
        let both = index(&mut blobs, &[(&theirs, &other), (&mine, &host)]);
        let r = resolve(&blobs, "app", both.clone(), &host).await.unwrap();
        assert_eq!(r.manifest_desc.digest, mine.digest);
        assert_eq!(r.root, both);
        assert!(r.index.is_some_and(|(_, i)| i.manifests.len() == 2));

        let only_other = index(&mut blobs, &[(&theirs, &other)]);
        let e = resolve(&blobs, "app", only_other, &host).await.unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.message(), format!("app has no image for platform {host}"));
    }

    #[tokio::test]
    async fn as_many_diff_ids_as_layers() {
        let mut blobs = Blobs::default();
        let m = image(&mut blobs, 2, 1, OCI_CONFIG);
        let e = resolve(&blobs, "app", m, &Platform::host())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert_eq!(
            e.message(),
            "app: the manifest lists 2 layers, the config 1 diff IDs"
        );
    }

    #[tokio::test]
    async fn sizes_must_match_descriptors() {
        let mut blobs = Blobs::default();
        let mut m = image(&mut blobs, 1, 1, OCI_CONFIG);
        m.size += 1;
        let e = resolve(&blobs, "app", m, &Platform::host())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert!(e.message().contains("its descriptor says"), "{e}");
    }

    #[tokio::test]
    async fn media_types_are_checked() {
        let mut blobs = Blobs::default();
        let m = image(&mut blobs, 1, 1, "application/vnd.example.config+json");
        let e = resolve(&blobs, "app", m, &Platform::host())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert!(e.message().contains("not an image config"), "{e}");

        let m = image(&mut blobs, 1, 1, OCI_CONFIG);
        let inner = index(&mut blobs, &[(&m, &Platform::host())]);
        let outer = index(&mut blobs, &[(&inner, &Platform::host())]);
        let e = resolve(&blobs, "app", outer, &Platform::host())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        assert!(e.message().contains("not an image manifest"), "{e}");
    }
}
