//! The stored images as users see them, computed from their records, manifests, configs and
//! snapshots: finding one by name or ID, the listing with sizes, inspect, history, removal and
//! disk usage (`strata images`, `inspect`, `history`, `rmi`, `system df`). Domain values only;
//! `grpc/gateway.rs` converts them to `strata.gateway.v1` messages.

use crate::Backends;
use crate::image::{ImageDetails, details};
use prost_types::Timestamp;
use std::collections::HashMap;
use strata_core::content::ContentStore;
use strata_core::images::{DeleteOptions, Image, ImageStore};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Kind, Result};

/// One image of the listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The record's name.
    pub name: String,
    /// Digest of the image's target (index or manifest).
    pub digest: String,
    /// Digest of the config: the image ID.
    pub config_digest: String,
    /// When the config says it was made, else when the record was.
    pub created: Option<Timestamp>,
    /// Unpacked size of all its layers.
    pub size: u64,
    /// Part of `size` in layers other images share.
    pub shared_size: u64,
    /// The record's labels.
    pub labels: HashMap<String, String>,
}

/// One step of an image's history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// When the step ran.
    pub created: Option<Timestamp>,
    /// What ran.
    pub created_by: String,
    /// The unpacked size of the layer it made (0 for none).
    pub size: u64,
    /// Whether it made no layer.
    pub empty_layer: bool,
    /// The history's comment, or the layer's diff ID for a layer the history does not describe.
    pub comment: String,
}

/// A layer's use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUsage {
    /// Its chain ID.
    pub chain_id: String,
    /// Its unpacked size.
    pub size: u64,
    /// How many images use it.
    pub images: u64,
}

/// What the images of a namespace take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Images whose content is complete.
    pub images: u64,
    /// Distinct layers.
    pub layers: u64,
    /// Layers used by more than one image.
    pub shared_layers: u64,
    /// Bytes of layers used by exactly one image.
    pub unique_bytes: u64,
    /// Bytes of layers used by more than one image (counted once).
    pub shared_bytes: u64,
    /// All layers' bytes.
    pub total_bytes: u64,
    /// Bytes of blobs in the content store.
    pub content_bytes: u64,
    /// Each layer, by chain ID.
    pub layer_usage: Vec<LayerUsage>,
}

/// The image records of namespace `ns` matching `filters` (containerd's filter syntax; none for
/// all).
pub(crate) async fn list_images(
    b: &Backends,
    ns: &str,
    filters: Vec<String>,
) -> Result<Vec<Image>> {
    b.images.list(ns, &filters).await
}

/// Finds an image by name (as given, or normalized like `busybox` → docker.io/library/busybox:latest)
/// or by a prefix of its ID (the config digest).
pub async fn find_image(b: &Backends, ns: &str, name: &str) -> Result<Image> {
    let mut candidates = vec![name.to_owned()];
    if let Ok(r) = strata_registry::Reference::parse(name) {
        candidates.push(r.to_string());
    }
    for c in &candidates {
        match b.images.get(ns, c).await {
            Ok(img) => return Ok(img),
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let prefix = name.strip_prefix("sha256:").unwrap_or(name);
    if prefix.len() >= 4 && prefix.bytes().all(|c| c.is_ascii_hexdigit()) {
        for img in list_images(b, ns, Vec::new()).await? {
            let Ok(d) = details(b, ns, img.clone()).await else {
                continue;
            };
            if d.config_digest.hex().starts_with(prefix) {
                return Ok(img);
            }
        }
    }
    Err(Error::not_found(format!("image {name:?}: not found")))
}

/// The images of namespace `ns` matching `filters`, with their sizes (sharing counted over
/// every image of the namespace), newest first; the build cache's records are left out.
pub async fn list(b: &Backends, ns: &str, filters: Vec<String>) -> Result<Vec<Summary>> {
    let cache = |i: &Image| i.name.starts_with(crate::build::CACHE_PREFIX);
    let mut records = list_images(b, ns, filters).await?;
    records.retain(|i| !cache(i));
    // Sharing counts over every image of the namespace, not only the listed ones; the
    // build cache's records are not images a user made.
    let mut every = list_images(b, ns, Vec::new()).await?;
    every.retain(|i| !cache(i));
    let all = all_details(b, ns, every).await;
    let sizes = layer_sizes(b, ns, &all).await?;
    Ok(summaries(&records, &all, &sizes))
}

/// The listing of `records`, newest first, from the details of every image of the namespace
/// (`all`, which sharing is counted over) and each chain ID's unpacked size; a record whose
/// details could not be read is left out.
fn summaries(
    records: &[Image],
    all: &[ImageDetails],
    sizes: &HashMap<String, u64>,
) -> Vec<Summary> {
    let counts = usage_counts(all);
    let by_name: HashMap<&str, &ImageDetails> = all.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut out = Vec::new();
    for r in records {
        let Some(d) = by_name.get(r.name.as_str()) else {
            continue;
        };
        let (mut size, mut shared) = (0, 0);
        for c in &d.chain_ids {
            let s = sizes.get(&c.to_string()).copied().unwrap_or(0);
            size += s;
            if counts.get(&c.to_string()).copied().unwrap_or(0) > 1 {
                shared += s;
            }
        }
        out.push(Summary {
            name: d.name.clone(),
            digest: d.target.digest.to_string(),
            config_digest: d.config_digest.to_string(),
            created: created(d),
            size,
            shared_size: shared,
            labels: d.labels.clone(),
        });
    }
    out.sort_by(|a, b| {
        b.created
            .as_ref()
            .map(|t| t.seconds)
            .cmp(&a.created.as_ref().map(|t| t.seconds))
            .then(a.name.cmp(&b.name))
    });
    out
}

/// `strata inspect`: the image `name` (a name or ID prefix) as a JSON document.
pub async fn inspect(b: &Backends, ns: &str, name: &str) -> Result<String> {
    let img = find_image(b, ns, name).await?;
    let d = details(b, ns, img).await?;
    let sizes = layer_sizes(b, ns, std::slice::from_ref(&d)).await?;
    inspect_json(&d, sizes.values().sum())
}

/// `strata history`: the steps that made image `name`, newest first, each with the size of the
/// layer it made; layers the config's history does not describe are listed too.
pub async fn history(b: &Backends, ns: &str, name: &str) -> Result<Vec<HistoryEntry>> {
    let img = find_image(b, ns, name).await?;
    let d = details(b, ns, img).await?;
    let sizes = layer_sizes(b, ns, std::slice::from_ref(&d)).await?;
    Ok(history_of(&d, &sizes))
}

/// The history of image `d`, newest first, given each chain ID's unpacked size: one entry per
/// step of its config's history, then one per layer the history does not describe.
fn history_of(d: &ImageDetails, sizes: &HashMap<String, u64>) -> Vec<HistoryEntry> {
    let mut layer = 0usize;
    let mut entries = Vec::new();
    for h in &d.config.history {
        let empty = h.empty_layer;
        let size = if empty {
            0
        } else {
            let s = d
                .chain_ids
                .get(layer)
                .and_then(|c| sizes.get(&c.to_string()))
                .copied()
                .unwrap_or(0);
            layer += 1;
            s
        };
        entries.push(HistoryEntry {
            created: h.created.as_deref().and_then(parse_time),
            created_by: h.created_by.clone().unwrap_or_default(),
            size,
            empty_layer: empty,
            comment: h.comment.clone().unwrap_or_default(),
        });
    }
    // Layers the history does not describe still count.
    while layer < d.chain_ids.len() {
        let s = sizes
            .get(&d.chain_ids[layer].to_string())
            .copied()
            .unwrap_or(0);
        entries.push(HistoryEntry {
            created: None,
            created_by: String::new(),
            size: s,
            empty_layer: false,
            comment: format!("layer {}", d.diff_ids()[layer]),
        });
        layer += 1;
    }
    entries.reverse();
    entries
}

/// `strata rmi`: removes the record of image `name` (a name or ID prefix); answers the digest
/// it pointed at.
pub async fn remove(b: &Backends, ns: &str, name: &str, sync: bool) -> Result<String> {
    let img = find_image(b, ns, name).await?;
    let digest = img.target.digest.to_string();
    let opts = DeleteOptions { sync, target: None };
    b.images.delete(ns, &img.name, opts).await?;
    Ok(digest)
}

/// `strata system df`: what the images of namespace `ns` take, layer by layer, and what the
/// content store holds.
pub async fn disk_usage(b: &Backends, ns: &str) -> Result<DiskUsage> {
    let all = all_details(b, ns, list_images(b, ns, Vec::new()).await?).await;
    let sizes = layer_sizes(b, ns, &all).await?;
    let mut usage = usage_of(&all, &sizes);
    let content = b.content.list(ns, &[]).await?;
    usage.content_bytes = content.iter().map(|i| i.size).sum();
    Ok(usage)
}

/// What the images `all` take, layer by layer (by chain ID), given each chain ID's unpacked
/// size; the content store's bytes are left at 0.
fn usage_of(all: &[ImageDetails], sizes: &HashMap<String, u64>) -> DiskUsage {
    let counts = usage_counts(all);
    let mut usage = DiskUsage {
        images: all.len() as u64,
        layers: counts.len() as u64,
        ..Default::default()
    };
    let mut layers: Vec<_> = counts.iter().collect();
    layers.sort();
    for (chain, n) in layers {
        let size = sizes.get(chain).copied().unwrap_or(0);
        if *n > 1 {
            usage.shared_layers += 1;
            usage.shared_bytes += size;
        } else {
            usage.unique_bytes += size;
        }
        usage.total_bytes += size;
        usage.layer_usage.push(LayerUsage {
            chain_id: chain.clone(),
            size,
            images: *n,
        });
    }
    usage
}

/// Unpacked size of each chain ID (a committed snapshot's own layer).
async fn layer_sizes(
    b: &Backends,
    ns: &str,
    images: &[ImageDetails],
) -> Result<HashMap<String, u64>> {
    let mut sizes = HashMap::new();
    for img in images {
        for c in &img.chain_ids {
            let key = c.to_string();
            if sizes.contains_key(&key) {
                continue;
            }
            let size = match b.snapshots.usage(&b.snapshotter, ns, &key).await {
                Ok(u) => u.size,
                Err(e) if e.is(Kind::NotFound) => 0,
                Err(e) => return Err(e),
            };
            sizes.insert(key, size);
        }
    }
    Ok(sizes)
}

async fn all_details(b: &Backends, ns: &str, images: Vec<Image>) -> Vec<ImageDetails> {
    let mut out = Vec::new();
    for img in images {
        let name = img.name.clone();
        match details(b, ns, img).await {
            Ok(d) => out.push(d),
            Err(e) => {
                tracing::warn!(image = %name, error = %e, "skipping an image whose content is incomplete")
            }
        }
    }
    out
}

fn created(d: &ImageDetails) -> Option<Timestamp> {
    d.config
        .created
        .as_deref()
        .and_then(parse_time)
        .or(Some(Timestamp::from(d.created_at)))
}

/// Parses an RFC 3339 timestamp (`2024-01-02T03:04:05.123Z` or with an offset) to seconds.
fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok()
}

fn usage_counts(images: &[ImageDetails]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for img in images {
        for c in &img.chain_ids {
            *counts.entry(c.to_string()).or_insert(0u64) += 1;
        }
    }
    counts
}

fn inspect_json(d: &ImageDetails, size: u64) -> Result<String> {
    let repo = d.name.split('@').next().unwrap_or(&d.name);
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    let doc = serde_json::json!({
        "Id": d.config_digest.to_string(),
        "RepoTags": [d.name],
        "RepoDigests": [format!("{repo}@{}", d.target.digest)],
        "Created": d.config.created,
        "Author": d.config.author,
        "Architecture": d.config.architecture,
        "Variant": d.config.variant,
        "Os": d.config.os,
        "Config": d.config.config,
        "RootFS": {
            "Type": "layers",
            "Layers": d.diff_ids().iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "Size": size,
        "Manifest": {
            "Digest": d.manifest_digest.to_string(),
            "MediaType": d.target.media_type,
            "Layers": d.manifest.layers.iter().map(|l| serde_json::json!({
                "Digest": l.digest.to_string(),
                "MediaType": l.media_type,
                "Size": l.size,
            })).collect::<Vec<_>>(),
        },
        "ChainIDs": d.chain_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "Labels": d.labels,
    });
    serde_json::to_string_pretty(&[doc]).map_err(|e| Error::internal(format!("inspect: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::chain_ids;
    use serde_json::json;
    use std::time::{Duration, SystemTime};
    use strata_core::Digest;
    use strata_core::descriptor::Descriptor;
    use strata_registry::{ImageConfig, ImageManifest};

    /// The details of image `name` whose layers have these diff IDs (named by text), with the
    /// config's `created` and `history`.
    fn details(
        name: &str,
        layers: &[&str],
        created: Option<&str>,
        history: &[serde_json::Value],
    ) -> ImageDetails {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l.as_bytes())).collect();
        let config = json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
            "history": history,
        });
        let config = ImageConfig::from_slice(&serde_json::to_vec(&config).unwrap()).unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(name.as_bytes()).to_string(), "size": 1},
            "layers": [],
        });
        let manifest = ImageManifest::from_slice(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        ImageDetails {
            name: name.to_owned(),
            labels: HashMap::new(),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            target: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
                digest: Digest::of(format!("manifest of {name}").as_bytes()),
                size: 1,
                annotations: HashMap::new(),
            },
            manifest_digest: Digest::of(format!("manifest of {name}").as_bytes()),
            manifest,
            config_digest: Digest::of(name.as_bytes()),
            chain_ids: chain_ids(&diff_ids),
            config,
        }
    }

    fn record(name: &str) -> Image {
        Image {
            name: name.to_owned(),
            labels: HashMap::new(),
            target: Descriptor {
                media_type: String::new(),
                digest: Digest::of(b""),
                size: 0,
                annotations: HashMap::new(),
            },
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Each chain ID of `images` sized by its position: 10, 20, 30 bytes…
    fn sizes(images: &[ImageDetails]) -> HashMap<String, u64> {
        let mut sizes = HashMap::new();
        for d in images {
            for (i, c) in d.chain_ids.iter().enumerate() {
                sizes.insert(c.to_string(), 10 * (i as u64 + 1));
            }
        }
        sizes
    }

    #[test]
    fn history_sizes_layers_and_lists_the_undescribed_ones() {
        let d = details(
            "app",
            &["base", "app", "extra"],
            None,
            &[
                json!({"created": "2024-01-02T03:04:05Z", "created_by": "ADD rootfs", "comment": "base"}),
                json!({"created_by": "ENV A=1", "empty_layer": true}),
                json!({"created_by": "COPY app"}),
            ],
        );
        let h = history_of(&d, &sizes(std::slice::from_ref(&d)));
        let by: Vec<(&str, u64, bool)> = h
            .iter()
            .map(|e| (e.created_by.as_str(), e.size, e.empty_layer))
            .collect();
        // Newest first; the third layer has no step of its own.
        assert_eq!(
            by,
            [
                ("", 30, false),
                ("COPY app", 20, false),
                ("ENV A=1", 0, true),
                ("ADD rootfs", 10, false)
            ]
        );
        assert_eq!(h[0].comment, format!("layer {}", Digest::of(b"extra")));
        assert_eq!(h[3].comment, "base");
        assert_eq!(
            h[3].created.as_ref().map(|t| t.seconds),
            Some(1_704_164_645)
        );
    }

    #[test]
    fn listing_counts_shared_layers_and_sorts_newest_first() {
        let all = [
            details("base", &["os"], Some("2024-01-01T00:00:00Z"), &[]),
            details("app", &["os", "app"], Some("2024-06-01T00:00:00Z"), &[]),
            details("undated", &["other"], None, &[]),
        ];
        let sizes = sizes(&all);
        let records = [
            record("base"),
            record("app"),
            record("undated"),
            record("broken"),
        ];
        let list = summaries(&records, &all, &sizes);
        let by: Vec<(&str, u64, u64)> = list
            .iter()
            .map(|s| (s.name.as_str(), s.size, s.shared_size))
            .collect();
        // A record without details is left out; one without a date in its config has its
        // record's (1970).
        assert_eq!(by, [("app", 30, 10), ("base", 10, 10), ("undated", 10, 0)]);
        assert_eq!(list[2].created.as_ref().map(|t| t.seconds), Some(100));
    }

    #[test]
    fn disk_usage_counts_each_layer_once() {
        let all = [
            details("base", &["os"], None, &[]),
            details("app", &["os", "app"], None, &[]),
        ];
        let u = usage_of(&all, &sizes(&all));
        assert_eq!((u.images, u.layers, u.shared_layers), (2, 2, 1));
        assert_eq!(
            (u.shared_bytes, u.unique_bytes, u.total_bytes),
            (10, 20, 30)
        );
        assert_eq!(u.layer_usage.iter().map(|l| l.images).sum::<u64>(), 3);
        assert_eq!(u.content_bytes, 0);
    }
}
