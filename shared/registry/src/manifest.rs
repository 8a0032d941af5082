//! OCI and Docker schema 2 manifest, index and image config types, and their media types.
//!
//! The types are for reading what registries serve; unknown fields are ignored, so
//! re-serializing a value does not reproduce the original bytes (digests are always taken of
//! the bytes as fetched).

use crate::error::{RegistryError, Result};
use crate::platform::Platform;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use strata_core::Digest;

/// Largest image manifest accepted, in bytes (containerd's limit too). [`crate::Client::resolve`]
/// reads no further, and [`ImageManifest::from_slice`] refuses larger input.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image index (or Docker manifest list) accepted, in bytes. [`crate::Client::resolve`]
/// reads no further, and [`ImageIndex::from_slice`] refuses larger input.
pub const MAX_INDEX_SIZE: u64 = 4 << 20;
/// Largest image config accepted, in bytes: configs carry the build history and environment,
/// a few KiB in practice. [`crate::Client::fetch_config`] reads no further, and
/// [`ImageConfig::from_slice`] refuses larger input.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Media types of manifests, configs and layers.
pub mod media_types {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// The OCI empty descriptor (content `{}`), the config of artifacts that have none.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// OCI layer, uncompressed tar.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI layer, gzip-compressed tar.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer, zstd-compressed tar.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable layer, uncompressed tar.
    pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// OCI non-distributable layer, gzip-compressed tar.
    pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// OCI non-distributable layer, zstd-compressed tar.
    pub const OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

    /// Docker schema 2 manifest list (Docker's multi-platform index).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker schema 2 image manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer, uncompressed tar.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker layer, gzip-compressed tar.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker layer, zstd-compressed tar.
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    /// Docker foreign layer (gzip tar, such as a Windows base layer), fetched from its
    /// descriptor's `urls` rather than the registry.
    pub const DOCKER_LAYER_FOREIGN: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// What `resolve` sends as `Accept`, most preferred first.
    pub const MANIFEST_ACCEPT: &[&str] = &[
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
    ];

    /// An image index or Docker manifest list.
    pub fn is_index(media_type: &str) -> bool {
        matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
    }

    /// A single-platform image manifest (OCI or Docker schema 2).
    pub fn is_manifest(media_type: &str) -> bool {
        matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
    }

    /// An image config blob.
    pub fn is_config(media_type: &str) -> bool {
        matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
    }

    /// A filesystem layer of any of the known kinds.
    pub fn is_layer(media_type: &str) -> bool {
        matches!(
            media_type,
            OCI_LAYER
                | OCI_LAYER_GZIP
                | OCI_LAYER_ZSTD
                | OCI_LAYER_NONDISTRIBUTABLE
                | OCI_LAYER_NONDISTRIBUTABLE_GZIP
                | OCI_LAYER_NONDISTRIBUTABLE_ZSTD
                | DOCKER_LAYER
                | DOCKER_LAYER_GZIP
                | DOCKER_LAYER_ZSTD
                | DOCKER_LAYER_FOREIGN
        )
    }

    /// A layer that registries need not serve (fetched from its descriptor's `urls`, if at
    /// all).
    pub fn is_non_distributable(media_type: &str) -> bool {
        matches!(
            media_type,
            OCI_LAYER_NONDISTRIBUTABLE
                | OCI_LAYER_NONDISTRIBUTABLE_GZIP
                | OCI_LAYER_NONDISTRIBUTABLE_ZSTD
                | DOCKER_LAYER_FOREIGN
        )
    }
}

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// The digest of the content (`sha256:<hex>`).
    #[serde(with = "digest_serde")]
    pub digest: Digest,
    /// The size of the content in bytes.
    pub size: u64,
    /// `urls`: other places the content may be downloaded from (non-distributable layers);
    /// empty when absent.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    /// `annotations`: arbitrary key-value metadata; empty when absent.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// For an index entry, the platform the referenced manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// `artifactType`: the type of the artifact, when the descriptor points to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// The `strata_core` form of this descriptor (platform, urls and artifact type dropped).
    pub fn to_core(&self) -> strata_core::descriptor::Descriptor {
        strata_core::descriptor::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// `schemaVersion`: 2 for OCI indexes and Docker manifest lists (not checked on parse).
    pub schema_version: u32,
    /// `mediaType`: the media type the index declares, if it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `artifactType`: the type of the artifact, when the index describes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests the index lists, typically one per platform.
    #[serde(default, deserialize_with = "nullable")]
    pub manifests: Vec<Descriptor>,
    /// `subject`: the manifest this index refers to (such as the image a signature is for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// `annotations`: arbitrary key-value metadata; empty when absent.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest or Docker schema 2 manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// `schemaVersion`: 2 for OCI and Docker schema 2 manifests (not checked on parse).
    pub schema_version: u32,
    /// `mediaType`: the media type the manifest declares, if it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// `artifactType`: the type of the artifact, when the manifest describes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The descriptor of the image config blob.
    pub config: Descriptor,
    /// The layer blobs, base layer first.
    #[serde(default, deserialize_with = "nullable")]
    pub layers: Vec<Descriptor>,
    /// `subject`: the manifest this one refers to (such as the image a signature is for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// `annotations`: arbitrary key-value metadata; empty when absent.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An image configuration (OCI `config.v1` / Docker `container.image.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was created, as an RFC 3339 date-time string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The person or entity that created the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The CPU architecture the image's binaries are for (`amd64`, `arm64`, …).
    pub architecture: String,
    /// The operating system the image runs on (`linux`, `windows`, …).
    pub os: String,
    /// `os.version`: the operating system version the image needs (Windows images).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features`: operating system features the image needs (`win32k` on Windows); empty
    /// when absent.
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    /// The CPU variant (`v7` for arm, `v8` for arm64, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The defaults for running a container from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// `rootfs`: the diff IDs of the image's layers.
    pub rootfs: RootFs,
    /// How each layer was built, oldest first; empty when absent.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

/// The execution defaults in an image config. `None` means the field was absent or null.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `User`: the user (name or UID, optionally with `:group`) the process runs as.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `ExposedPorts`: ports to expose, keyed `port/protocol` (`80/tcp`); the values are empty
    /// objects.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `Env`: environment variables, as `NAME=value` entries.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `Entrypoint`: the command the container runs, with `cmd` appended as arguments.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`: default arguments to the entrypoint, or the command when there is none.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `Volumes`: directories kept as volumes, as keys; the values are empty objects.
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// `WorkingDir`: the working directory of the process.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// `Labels`: arbitrary key-value metadata.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `StopSignal`: the signal sent to stop the container (`SIGTERM`, …).
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    /// Docker's health check (`Test`, `Interval`, … as the config holds them).
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<serde_json::Value>,
    /// Instructions run by builds of images from this one (`ONBUILD`).
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// The shell of shell-form instructions (`SHELL`).
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// The layer diff IDs of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// `type`: the kind of root filesystem; `layers` in every valid config.
    #[serde(rename = "type")]
    pub kind: String,
    /// `diff_ids`: the digests of the uncompressed layer tars, base layer first.
    #[serde(
        default,
        deserialize_with = "nullable_digests",
        serialize_with = "digests_ser"
    )]
    pub diff_ids: Vec<Digest>,
}

/// One entry of an image's build history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// When the step ran, as an RFC 3339 date-time string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `created_by`: the command that ran (a Dockerfile instruction, for example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who made the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A note on the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `empty_layer`: the step changed no files, so it has no layer (nor diff ID).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// A parsed manifest of either kind.
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per pull and matched on at once; boxing would only add noise"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An image index or Docker manifest list.
    Index(ImageIndex),
    /// A single-platform image manifest.
    Image(ImageManifest),
}

impl Manifest {
    /// Parses `bytes` as the kind `media_type` names.
    pub fn from_slice(media_type: &str, bytes: &[u8]) -> Result<Self> {
        if media_types::is_index(media_type) {
            ImageIndex::from_slice(bytes).map(Self::Index)
        } else if media_types::is_manifest(media_type) {
            ImageManifest::from_slice(bytes).map(Self::Image)
        } else {
            Err(RegistryError::InvalidManifest {
                what: format!("manifest {}", Digest::of(bytes)),
                kind: "manifest",
                reason: format!("unsupported media type {media_type:?}"),
            })
        }
    }
}

impl ImageIndex {
    /// Parses an index; input larger than [`MAX_INDEX_SIZE`] is refused unread.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        parse_json(bytes, "index", MAX_INDEX_SIZE)
    }
}

impl ImageManifest {
    /// Parses a manifest; input larger than [`MAX_MANIFEST_SIZE`] is refused unread.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        parse_json(bytes, "manifest", MAX_MANIFEST_SIZE)
    }
}

impl ImageConfig {
    /// Parses an image config; input larger than [`MAX_CONFIG_SIZE`] is refused unread.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        parse_json(bytes, "image config", MAX_CONFIG_SIZE)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    kind: &'static str,
    limit: u64,
) -> Result<T> {
    if bytes.len() as u64 > limit {
        return Err(RegistryError::TooLarge {
            what: format!("{kind} {}", Digest::of(bytes)),
            limit,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| RegistryError::InvalidManifest {
        what: format!("{kind} {}", Digest::of(bytes)),
        kind,
        reason: e.to_string(),
    })
}

/// The media type a manifest declares in its `mediaType` field, or, failing that, the one its
/// shape implies (`manifests` → OCI index, `config` → OCI manifest).
pub fn detect_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = probe.media_type.filter(|m| !m.is_empty()) {
        return Some(mt);
    }
    if probe.manifests.is_some() {
        return Some(media_types::OCI_INDEX.to_owned());
    }
    if probe.config.is_some() {
        return Some(media_types::OCI_MANIFEST.to_owned());
    }
    None
}

/// Deserializes `null` as the default value (Go encoders write `null` for empty slices).
pub(crate) fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn nullable_digests<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<Digest>, D::Error> {
    let raw: Vec<String> = nullable(d)?;
    raw.iter()
        .map(|s| Digest::parse(s).map_err(serde::de::Error::custom))
        .collect()
}

fn digests_ser<S: Serializer>(v: &[Digest], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

/// Serde for [`Digest`] as its `sha256:<hex>` string.
pub mod digest_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use strata_core::Digest;

    /// Writes `d` as its `sha256:<hex>` string.
    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    /// Reads a digest string, failing on one that does not parse.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_LIST: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
      "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
         "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
         "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222",
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 1,
         "digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
         "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1",
                      "os.features": ["win32k"]}}
      ]
    }"#;

    const DOCKER_MANIFEST: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1457,
        "digest": "sha256:4444444444444444444444444444444444444444444444444444444444444444"},
      "layers": [
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2,
         "digest": "sha256:5555555555555555555555555555555555555555555555555555555555555555"},
        {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 3,
         "digest": "sha256:6666666666666666666666666666666666666666666666666666666666666666",
         "urls": ["https://example.invalid/layer"], "annotations": {"a": "b"}}
      ]
    }"#;

    const CONFIG: &str = r#"{
      "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
      "config": {"Env": ["PATH=/bin"], "Entrypoint": null, "Cmd": ["sh"], "WorkingDir": "/w",
                 "User": "1:1", "Labels": {"k": "v"}, "ExposedPorts": {"80/tcp": {}},
                 "Volumes": {"/data": {}}, "StopSignal": "SIGTERM", "Unknown": 1},
      "rootfs": {"type": "layers", "diff_ids": [
        "sha256:7777777777777777777777777777777777777777777777777777777777777777"]},
      "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD x /",
                   "comment": "c"}, {"created_by": "CMD", "empty_layer": true}]
    }"#;

    #[test]
    fn docker_list_and_manifest() {
        let idx = ImageIndex::from_slice(DOCKER_LIST.as_bytes()).expect("index");
        assert_eq!(idx.manifests.len(), 3);
        let p = idx.manifests[1].platform.as_ref().expect("platform");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        let w = idx.manifests[2].platform.as_ref().expect("platform");
        assert_eq!(w.os_version, "10.0.17763.1");
        assert_eq!(w.os_features, ["win32k"]);
        let m = match Manifest::from_slice(media_types::DOCKER_MANIFEST, DOCKER_MANIFEST.as_bytes())
            .expect("manifest")
        {
            Manifest::Image(m) => m,
            Manifest::Index(_) => panic!("wrong kind"),
        };
        assert!(media_types::is_config(&m.config.media_type));
        assert_eq!(m.layers.len(), 2);
        assert!(media_types::is_non_distributable(&m.layers[1].media_type));
        assert_eq!(m.layers[1].urls, ["https://example.invalid/layer"]);
        assert_eq!(
            m.layers[1]
                .to_core()
                .annotations
                .get("a")
                .map(String::as_str),
            Some("b")
        );
        // Round trip through our own serialization.
        let again: ImageManifest =
            serde_json::from_slice(&serde_json::to_vec(&m).expect("ser")).expect("de");
        assert_eq!(again, m);
        assert_eq!(
            detect_media_type(DOCKER_LIST.as_bytes()).as_deref(),
            Some(media_types::DOCKER_MANIFEST_LIST)
        );
        assert_eq!(
            detect_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(media_types::OCI_INDEX)
        );
    }

    #[test]
    fn image_config() {
        let c = ImageConfig::from_slice(CONFIG.as_bytes()).expect("config");
        let cc = c.config.as_ref().expect("config");
        assert_eq!(cc.env.as_deref(), Some(&["PATH=/bin".to_owned()][..]));
        assert_eq!(cc.entrypoint, None);
        assert_eq!(cc.cmd.as_deref(), Some(&["sh".to_owned()][..]));
        assert_eq!(cc.working_dir.as_deref(), Some("/w"));
        assert_eq!(cc.user.as_deref(), Some("1:1"));
        assert_eq!(cc.stop_signal.as_deref(), Some("SIGTERM"));
        assert!(
            cc.exposed_ports
                .as_ref()
                .expect("ports")
                .contains_key("80/tcp")
        );
        assert!(cc.volumes.as_ref().expect("volumes").contains_key("/data"));
        assert_eq!(c.rootfs.kind, "layers");
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        assert_eq!(c.history.len(), 2);
        assert!(c.history[1].empty_layer);
        assert_eq!(c.history[0].comment.as_deref(), Some("c"));
        let again = ImageConfig::from_slice(&serde_json::to_vec(&c).expect("ser")).expect("again");
        assert_eq!(again, c);
    }

    #[test]
    fn bad_input_names_it() {
        let err = ImageManifest::from_slice(b"{}").expect_err("empty manifest");
        let d = Digest::of(b"{}").to_string();
        assert!(err.to_string().contains(&d), "{err}");
        let bad_digest = br#"{"schemaVersion":2,"config":{"mediaType":"x","size":1,"digest":"sha256:zz"},"layers":[]}"#;
        let err = ImageManifest::from_slice(bad_digest).expect_err("bad digest");
        assert!(err.to_string().contains("sha256:zz"), "{err}");
        let err = Manifest::from_slice("text/plain", b"{}").expect_err("bad type");
        assert!(err.to_string().contains("text/plain"), "{err}");
    }
}
