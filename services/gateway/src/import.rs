//! Import of an image archive streamed by the client, the way in for offline hosts: an OCI image
//! layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/…`, as `docker save` also writes
//! since Docker 25), or a classic `docker save` archive (`manifest.json`, `<id>/layer.tar`).
//!
//! One pass over the stream: every file goes into the content store as it arrives (a file under
//! `blobs/sha256/` must match its name); the small index files are kept in memory; at the end the
//! images they name are unpacked and recorded, exactly as a pull would.

use crate::Backends;
use crate::image::Stored;
use crate::pull::{Events, LayerState, Pull};
use crate::resolve::resolve;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::Read;
use strata_core::content::{CommitOptions, ContentStore, ContentWriter, WriterOptions};
use strata_core::descriptor::{Descriptor, UNCOMPRESSED_LABEL};
use strata_core::{Digest, Error, Kind, Result};
use strata_registry::{ImageIndex, Platform, media_types};
use tokio::sync::mpsc;

/// Files kept in memory (index files), up to this size.
const SMALL_FILE: u64 = 4 << 20;

enum Item {
    Begin { path: String, size: u64 },
    Data(Bytes),
    End,
}

/// A `Read` over the request stream's data chunks.
struct StreamReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(b) => self.current = b,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Parses the tar on a blocking thread, handing files over in chunks.
fn parse_tar(input: StreamReader, out: mpsc::Sender<Item>) -> Result<()> {
    let bad = |e: std::io::Error| Error::invalid_argument(format!("image archive: {e}"));
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let size = entry.size();
        if out.blocking_send(Item::Begin { path, size }).is_err() {
            return Ok(());
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(bad)?;
            if n == 0 {
                break;
            }
            if out
                .blocking_send(Item::Data(Bytes::copy_from_slice(&buf[..n])))
                .is_err()
            {
                return Ok(());
            }
        }
        if out.blocking_send(Item::End).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The name of the image of a one-image archive (or of one that names none).
    pub name: String,
    /// The snapshotter to unpack into; empty for the gateway's default.
    pub snapshotter: String,
}

/// Imports the archive whose bytes arrive on `data` into namespace `ns`, reporting progress
/// on `events`.
pub async fn import(
    b: &Backends,
    ns: &str,
    req: Request,
    data: mpsc::Receiver<Bytes>,
    events: Events,
) -> Result<()> {
    let snapshotter = if req.snapshotter.is_empty() {
        b.snapshotter.clone()
    } else {
        req.snapshotter.clone()
    };
    let p = Pull::start(b, ns, None, snapshotter, events).await?;
    let result = run(&p, data, &req.name).await;
    p.end().await;
    result
}

async fn run(p: &Pull<'_>, data_rx: mpsc::Receiver<Bytes>, given_name: &str) -> Result<()> {
    let (item_tx, mut item_rx) = mpsc::channel::<Item>(8);
    let parser = tokio::task::spawn_blocking(move || {
        parse_tar(
            StreamReader {
                rx: data_rx,
                current: Bytes::new(),
            },
            item_tx,
        )
    });

    // Path in the archive → (digest, size); small files also by content.
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    // Each import writes under refs of its own: concurrent imports (of the same archive too)
    // never meet on an ingest; equal blobs meet at commit, where the second finds the first's.
    static IMPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let import = IMPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut n = 0u64;
    while let Some(item) = item_rx.recv().await {
        let Item::Begin { path, size } = item else {
            return Err(Error::internal(
                "image archive: entry data without a header",
            ));
        };
        n += 1;
        let expected = path
            .strip_prefix("blobs/sha256/")
            .map(|hex| Digest::parse(&format!("sha256:{hex}")))
            .transpose()
            .map_err(|e| e.context(format!("archive entry {path:?}")))?;
        let keep = size <= SMALL_FILE;
        let reference = format!("import-{}-{import}-{n}", std::process::id());
        let (digest, kept) =
            store_entry(p, &mut item_rx, &reference, &path, size, expected.as_ref()).await?;
        files.insert(path.clone(), (digest, size));
        if keep {
            small.insert(path, kept);
        }
    }
    parser
        .await
        .map_err(|e| Error::internal(format!("reading the archive: {e}")))??;

    let roots = archive_roots(p, &files, &small, given_name).await?;
    if roots.is_empty() {
        return Err(Error::invalid_argument("the archive holds no image"));
    }
    for (name, root) in roots {
        unpack_image(p, &name, root).await?;
    }
    Ok(())
}

/// Writes the data of archive entry `path` (of `size` bytes), received from `item_rx` up to
/// its end, to the content store under `reference`, checks it against the `expected` digest
/// and commits it. Answers its digest and, for a small file, its content.
async fn store_entry(
    p: &Pull<'_>,
    item_rx: &mut mpsc::Receiver<Item>,
    reference: &str,
    path: &str,
    size: u64,
    expected: Option<&Digest>,
) -> Result<(Digest, Vec<u8>)> {
    let keep = size <= SMALL_FILE;
    p.lease_add_ingest(reference).await?;
    let mut w = match p
        .b
        .content
        .writer(
            &p.ns,
            reference,
            WriterOptions {
                total: size,
                expected: None,
            },
        )
        .await
    {
        Ok(w) => w,
        Err(e) => return Err(e),
    };
    let mut offset = w.status().await?.offset;
    if offset > 0 {
        offset = w.write(0, Bytes::new()).await?;
    }
    let mut kept = Vec::new();
    loop {
        match item_rx.recv().await {
            Some(Item::Data(d)) => {
                if keep {
                    kept.extend_from_slice(&d);
                }
                offset = w.write(offset, d).await?;
            }
            Some(Item::End) => break,
            _ => {
                return Err(Error::invalid_argument(format!(
                    "image archive ends inside {path:?}"
                )));
            }
        }
    }
    let digest = w.digest();
    if let Some(want) = expected
        && *want != digest
    {
        return Err(Error::invalid_argument(format!(
            "archive entry {path:?} has digest {digest}, its name says {want}"
        )));
    }
    p.lease_add_content(&digest).await?;
    match w
        .commit(CommitOptions {
            size,
            expected: Some(digest.clone()),
            labels: HashMap::new(),
        })
        .await
    {
        Ok(_) => {}
        Err(e) if e.is(Kind::AlreadyExists) => {}
        Err(e) => return Err(e.context(format!("archive entry {path:?}"))),
    }
    Ok((digest, kept))
}

/// The images an archive holds, by name: from its index.json (an OCI layout) or its
/// manifest.json (`docker save`); `given_name` names one the archive leaves unnamed.
async fn archive_roots(
    p: &Pull<'_>,
    files: &HashMap<String, (Digest, u64)>,
    small: &HashMap<String, Vec<u8>>,
    given_name: &str,
) -> Result<Vec<(String, Descriptor)>> {
    let mut roots: Vec<(String, Descriptor)> = Vec::new();
    if let Some(index) = small.get("index.json") {
        let index = ImageIndex::from_slice(index)?;
        let single = index.manifests.len() == 1;
        for m in &index.manifests {
            // A name given for a one-image archive wins over the archive's own.
            let given = (single && !given_name.is_empty()).then(|| given_name.to_owned());
            let name = given
                .or_else(|| m.annotations.get("io.containerd.image.name").cloned())
                .or_else(|| {
                    m.annotations
                        .get("org.opencontainers.image.ref.name")
                        .map(|r| full_name(r, given_name))
                })
                .or_else(|| (!given_name.is_empty()).then(|| given_name.to_owned()))
                .ok_or_else(|| {
                    Error::invalid_argument(
                        "the archive names no image: give one (strata import --name)",
                    )
                })?;
            roots.push((normalize(&name)?, m.to_core()));
        }
    } else if let Some(manifest) = small.get("manifest.json") {
        let entries: Vec<DockerSaveEntry> = serde_json::from_slice(manifest)
            .map_err(|e| Error::invalid_argument(format!("manifest.json: {e}")))?;
        for e in entries {
            let root = docker_save_manifest(p, files, &e).await?;
            let tags = e.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                if given_name.is_empty() {
                    return Err(Error::invalid_argument(
                        "the archive names no image: give one (strata import --name)",
                    ));
                }
                roots.push((normalize(given_name)?, root.clone()));
            }
            for t in tags {
                roots.push((normalize(&t)?, root.clone()));
            }
        }
    } else {
        return Err(Error::invalid_argument(
            "not an image archive: it has neither index.json (OCI layout) nor manifest.json (docker save)",
        ));
    }
    Ok(roots)
}

fn full_name(ref_name: &str, given: &str) -> String {
    if ref_name.contains('/') || ref_name.contains(':') {
        ref_name.to_owned()
    } else if !given.is_empty() {
        let base = given
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or(given, |(b, _)| b);
        format!("{base}:{ref_name}")
    } else {
        ref_name.to_owned()
    }
}

fn normalize(name: &str) -> Result<String> {
    Ok(strata_registry::Reference::parse(name)?.to_string())
}

/// Builds (and stores) a Docker schema 2 manifest for a classic `docker save` entry.
async fn docker_save_manifest(
    p: &Pull<'_>,
    files: &HashMap<String, (Digest, u64)>,
    e: &DockerSaveEntry,
) -> Result<Descriptor> {
    let find = |path: &str| {
        files.get(path).cloned().ok_or_else(|| {
            Error::invalid_argument(format!(
                "manifest.json names {path:?}, which the archive lacks"
            ))
        })
    };
    let (config_digest, config_size) = find(&e.config)?;
    let mut layers = Vec::new();
    for l in &e.layers {
        let (digest, size) = find(l)?;
        layers.push(serde_json::json!({
            "mediaType": media_types::DOCKER_LAYER,
            "digest": digest.to_string(),
            "size": size,
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::DOCKER_MANIFEST,
        "config": {
            "mediaType": media_types::DOCKER_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_size,
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::internal(e.to_string()))?;
    let desc = Descriptor {
        media_type: media_types::DOCKER_MANIFEST.to_owned(),
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
        annotations: HashMap::new(),
    };
    p.store_small(&desc, &bytes, HashMap::new()).await?;
    Ok(desc)
}

/// Unpacks an imported image whose blobs are all in the content store, then records it.
async fn unpack_image(p: &Pull<'_>, name: &str, root: Descriptor) -> Result<()> {
    let stored = Stored {
        content: &p.b.content,
        cache: &p.b.metadata,
        ns: &p.ns,
    };
    let r = resolve(&stored, name, root, &Platform::host()).await?;
    let (layers, diff_ids, chains) = (&r.layers, r.diff_ids(), &r.chain_ids);
    p.resolved_event(name, &r.root, layers).await;
    for (i, l) in layers.iter().enumerate() {
        p.add_labels(
            &l.digest,
            HashMap::from([(UNCOMPRESSED_LABEL.to_owned(), diff_ids[i].to_string())]),
        )
        .await?;
        let parent = if i == 0 {
            String::new()
        } else {
            chains[i - 1].to_string()
        };
        p.unpack(l, &diff_ids[i], &chains[i], &parent).await?;
        p.layer_event(&l.digest, LayerState::Done, l.size, l.size)
            .await;
    }
    p.finish_resolved(name, &r).await
}
