//! `strata save`: images as one tar the client writes to a file, what `docker save` writes since
//! Docker 25: an OCI image layout (`oci-layout`, `index.json` naming each image with the
//! `io.containerd.image.name` and `org.opencontainers.image.ref.name` annotations,
//! `blobs/sha256/…`) with Docker's `manifest.json` beside it (`Config`, `RepoTags`, `Layers` as
//! paths into `blobs/sha256/`), so OCI tools, containerd's `ctr images import`, `docker load`
//! and strata's own import all read it.
//!
//! Each image is saved as its manifest for this host (the one its layers were fetched for), not
//! the multi-platform index a pull resolved: the archive holds every blob it names. Blobs
//! shared by several images are written once. The tar is made as it is sent: headers written
//! here, blobs read from the content service in chunks, so nothing is held whole in memory.

use crate::Backends;
use crate::catalog::find_image;
use crate::image::{ImageDetails, details};
use std::collections::HashSet;
use strata_core::content::ContentStore;
use strata_core::content::futures_like::ChunkStream;
use strata_core::{Digest, Error, Kind, Result};
use strata_registry::{Reference, media_types};
use tokio::sync::mpsc;

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 1 << 20;

/// Where a save sends the archive, in chunks of about [`CHUNK`] bytes.
pub type Chunks = mpsc::Sender<bytes::Bytes>;

/// The tar being sent: bytes are gathered into chunks of [`CHUNK`].
struct Out {
    tx: Chunks,
    buf: Vec<u8>,
}

impl Out {
    async fn put(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(data.into())
            .await
            .map_err(|_| Error::new(Kind::Canceled, "save: the client went away"))
    }

    async fn header(&mut self, path: &str, size: u64, dir: bool) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)
            .map_err(|e| Error::internal(format!("archive entry {path:?}: {e}")))?;
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mtime(0);
        h.set_cksum();
        self.put(h.as_bytes()).await
    }

    /// Zeros up to the next 512-byte block after `size` bytes of data.
    async fn pad(&mut self, size: u64) -> Result<()> {
        let rest = (512 - size % 512) % 512;
        self.put(&[0u8; 512][..usize::try_from(rest).unwrap_or(0)])
            .await
    }

    async fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.header(path, data.len() as u64, false).await?;
        self.put(data).await?;
        self.pad(data.len() as u64).await
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The name as Docker shows it: `busybox:latest` for `docker.io/library/busybox:latest`.
fn familiar(name: &str) -> String {
    let short = name.strip_prefix("docker.io/").unwrap_or(name);
    short.strip_prefix("library/").unwrap_or(short).to_owned()
}

/// An image's name and its tag, when it is a reference with a tag.
fn tagged(name: &str) -> Option<(String, String)> {
    // An image known only by its ID (a commit given no name) has no tag.
    if name.starts_with("sha256:") {
        return None;
    }
    let r = Reference::parse(name).ok()?;
    if r.digest().is_some() {
        return None;
    }
    Some((r.to_string(), r.tag()?.to_owned()))
}

/// Every blob of `images` once, with its size.
async fn blobs_of(b: &Backends, ns: &str, images: &[ImageDetails]) -> Result<Vec<(Digest, u64)>> {
    let mut seen = HashSet::new();
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for d in images {
        let wanted = [d.manifest_digest.clone(), d.config_digest.clone()]
            .into_iter()
            .chain(d.manifest.layers.iter().map(|l| l.digest.clone()));
        for digest in wanted {
            if seen.insert(digest.clone()) {
                let info = b
                    .content
                    .info(ns, &digest)
                    .await
                    .map_err(|e| e.context(format!("image {:?}", d.name)))?;
                blobs.push((digest, info.size));
            }
        }
    }
    Ok(blobs)
}

/// Writes each of `blobs` into the archive under blobs/sha256/.
async fn write_blobs(out: &mut Out, b: &Backends, ns: &str, blobs: &[(Digest, u64)]) -> Result<()> {
    for (digest, size) in blobs {
        out.header(&blob_path(digest), *size, false).await?;
        let mut reader = b.content.read(ns, digest, 0, 0).await?;
        let mut written = 0u64;
        while let Some(chunk) = reader.next_chunk().await {
            let (_, data) = chunk?;
            written += data.len() as u64;
            if written > *size {
                break;
            }
            out.put(&data).await?;
        }
        if written != *size {
            return Err(Error::internal(format!(
                "blob {digest}: read {written} bytes, its size is {size}"
            )));
        }
        out.pad(*size).await?;
    }
    Ok(())
}

/// Streams `names` as one archive into `tx`. Every image is looked up before the first byte.
pub async fn save(b: &Backends, ns: &str, names: &[String], tx: Chunks) -> Result<()> {
    if names.is_empty() {
        return Err(Error::invalid_argument("save: name at least one image"));
    }
    let mut images: Vec<ImageDetails> = Vec::new();
    for n in names {
        let img = find_image(b, ns, n).await?;
        let d = details(b, ns, img).await?;
        if !images.iter().any(|i| i.name == d.name) {
            images.push(d);
        }
    }
    let blobs = blobs_of(b, ns, &images).await?;

    let mut out = Out {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    out.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .await?;
    out.header("blobs/", 0, true).await?;
    out.header("blobs/sha256/", 0, true).await?;
    write_blobs(&mut out, b, ns, &blobs).await?;

    let mut index = Vec::new();
    // Docker's manifest.json: one entry per manifest, with every name it has.
    let mut docker: Vec<(Digest, serde_json::Value, Vec<String>)> = Vec::new();
    for d in &images {
        let media_type = d
            .manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media_types::OCI_MANIFEST.to_owned());
        let size = blobs
            .iter()
            .find(|(digest, _)| *digest == d.manifest_digest)
            .map_or(0, |(_, s)| *s);
        let mut entry = serde_json::json!({
            "mediaType": media_type,
            "digest": d.manifest_digest.to_string(),
            "size": size,
        });
        let tag = tagged(&d.name);
        if let Some((full, tag)) = &tag {
            entry["annotations"] = serde_json::json!({
                "io.containerd.image.name": full,
                "org.opencontainers.image.ref.name": tag,
            });
        }
        index.push(entry);
        let repo_tags: Vec<String> = tag.iter().map(|(full, _)| familiar(full)).collect();
        match docker.iter_mut().find(|(m, _, _)| *m == d.manifest_digest) {
            Some((_, _, tags)) => tags.extend(repo_tags),
            None => docker.push((
                d.manifest_digest.clone(),
                serde_json::json!({
                    "Config": blob_path(&d.config_digest),
                    "Layers": d.manifest.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
                }),
                repo_tags,
            )),
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": index,
    });
    let manifest: Vec<serde_json::Value> = docker
        .into_iter()
        .map(|(_, mut entry, tags)| {
            entry["RepoTags"] = if tags.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::json!(tags)
            };
            entry
        })
        .collect();
    let to_json = |v: &serde_json::Value| {
        serde_json::to_vec(v).map_err(|e| Error::internal(format!("save: {e}")))
    };
    out.file("index.json", &to_json(&index)?).await?;
    out.file("manifest.json", &to_json(&serde_json::json!(manifest))?)
        .await?;
    out.put(&[0u8; 1024]).await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_docker_shows_them() {
        assert_eq!(familiar("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(familiar("docker.io/me/app:v2"), "me/app:v2");
        assert_eq!(familiar("127.0.0.1:5000/x:y"), "127.0.0.1:5000/x:y");
        assert_eq!(
            tagged("busybox"),
            Some(("docker.io/library/busybox:latest".into(), "latest".into()))
        );
        assert_eq!(tagged(&format!("sha256:{}", "0".repeat(64))), None);
    }
}
