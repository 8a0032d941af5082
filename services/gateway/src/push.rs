//! `strata tag` and server-side push.
//!
//! A push reads the image's records from the content service and sends them to the registry
//! its name points at: every blob (configs and layers, a few at a time) first, each looked for
//! (`HEAD`) and skipped when the repository has it, mounted from another repository of the
//! same registry when the blob came from there (the `containerd.io/distribution.source.<host>`
//! label a pull sets), uploaded otherwise; then each child manifest of an index by digest; the
//! root manifest (or index) last, by tag. A push that fails part way leaves no tag naming
//! missing content. Blobs are streamed from the content service in ranges, never whole in
//! memory.

use crate::Backends;
use crate::catalog::find_image;
use crate::pull::{put_image, registry_client};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use strata_core::content::futures_like::ChunkStream as _;
use strata_core::content::{ContentStore, read_all};
use strata_core::descriptor::Descriptor;
use strata_core::{Digest, Error, Kind, Result};
use strata_grpc::remote::RemoteContentStore;
use strata_registry::{
    BlobPushed, BlobSource, ByteStream, Client, ImageIndex, ImageManifest, MAX_INDEX_SIZE,
    MAX_MANIFEST_SIZE, Platform, Reference, media_types, select as select_platform,
};
use tokio::sync::{Semaphore, mpsc};

/// Blobs sent at the same time by one push.
const PARALLEL_UPLOADS: usize = 3;
/// At most one progress event per blob this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// The content label a pull sets on the blobs it fetched: the repositories of that registry
/// that have them, comma-separated (containerd's key).
pub const DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source.";
/// How deep indexes may nest.
const MAX_DEPTH: usize = 3;

/// What `push` is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// A local image's name (or ID prefix); its name says where it goes.
    pub reference: String,
    /// Use plain HTTP for this registry (loopback registries always are).
    pub plain_http: bool,
}

/// What a blob of a push is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for an upload slot.
    Waiting,
    /// The repository has it already: not sent.
    Exists,
    /// Mounted from another repository of the same registry: not sent.
    Mounted,
    /// Being sent.
    Uploading,
    /// Sent.
    Done,
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Where the image went (registry/repository:tag).
    pub name: String,
    /// The digest of what the tag now names (index or manifest).
    pub digest: Digest,
    /// Bytes sent.
    pub uploaded_bytes: u64,
    /// Blobs sent.
    pub blobs_uploaded: u64,
    /// Blobs the repository had.
    pub blobs_existing: u64,
    /// Blobs mounted from another repository.
    pub blobs_mounted: u64,
    /// Manifests and indexes put.
    pub manifests: u64,
    /// Anything the user should know, such as an index pushed as its one platform present.
    pub note: String,
}

/// What a push reports as it goes; the adapter turns each into a `PushProgress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The image is resolved: where it goes, its digest and the blobs to send.
    Resolved {
        /// The normalized image name.
        name: String,
        /// The digest of the index or manifest pushed.
        digest: Digest,
        /// The blobs (layers and configs).
        blobs: Vec<Descriptor>,
    },
    /// A blob's progress.
    Blob {
        /// The blob's digest.
        digest: Digest,
        /// What it is doing.
        state: State,
        /// Bytes done.
        current: u64,
        /// Bytes in all.
        total: u64,
        /// For [`State::Mounted`]: the repository it came from.
        from: String,
    },
    /// The image is pushed.
    Done(Pushed),
}

/// Where a push reports its [`Event`]s.
pub type PushEvents = mpsc::Sender<Event>;

/// An image's new name, and the digest both names now point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// The new name, normalized.
    pub name: String,
    /// The digest of the target (index or manifest).
    pub digest: Digest,
}

/// Names the image `source` (a name or ID prefix) also `target`: a record of that name with
/// the source's target descriptor and labels, replacing the target of one already there.
pub async fn tag(b: &Backends, ns: &str, source: &str, target: &str) -> Result<Tagged> {
    let img = find_image(b, ns, source).await?;
    let reference = Reference::parse(target)?;
    if reference.digest().is_some() {
        return Err(Error::invalid_argument(format!(
            "tag {target:?}: a tag cannot name a digest"
        )));
    }
    let name = reference.to_string();
    let digest = img.target.digest.clone();
    put_image(b, ns, &name, img.target, img.labels).await?;
    Ok(Tagged { name, digest })
}

/// A blob to send, and the repository of the same registry to mount it from, if any.
struct Blob {
    desc: Descriptor,
    mount_from: Option<String>,
}

/// What a push sends: blobs, then manifests in order (children first, the root last).
struct Plan {
    blobs: Vec<Blob>,
    manifests: Vec<(Descriptor, Vec<u8>)>,
    note: String,
}

/// Reads a manifest or index from the content store, refusing one larger than `limit` and
/// checking its digest.
async fn read_small(b: &Backends, ns: &str, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
    let info = b.content.info(ns, &desc.digest).await?;
    if info.size > limit {
        return Err(Error::failed_precondition(format!(
            "{} {}: {} bytes, more than the limit of {limit}",
            desc.media_type, desc.digest, info.size
        )));
    }
    let bytes = read_all(&b.content, ns, &desc.digest).await?;
    if Digest::of(&bytes) != desc.digest {
        return Err(Error::failed_precondition(format!(
            "content {}: stored bytes do not match the digest",
            desc.digest
        )));
    }
    Ok(bytes)
}

/// The repository of `registry` a blob labelled `labels` came from, other than `repository`.
fn mount_source(
    labels: &HashMap<String, String>,
    registry: &str,
    repository: &str,
) -> Option<String> {
    labels
        .get(&format!("{DISTRIBUTION_SOURCE}{registry}"))?
        .split(',')
        .map(str::trim)
        .find(|r| !r.is_empty() && *r != repository)
        .map(str::to_owned)
}

struct Planner<'a> {
    b: &'a Backends,
    ns: &'a str,
    target: &'a Reference,
    image: &'a str,
    plan: Plan,
    seen: HashSet<Digest>,
}

impl Planner<'_> {
    async fn blob(&mut self, desc: Descriptor) -> Result<()> {
        if !self.seen.insert(desc.digest.clone()) {
            return Ok(());
        }
        let info = match self.b.content.info(self.ns, &desc.digest).await {
            Ok(i) => i,
            Err(e) if e.is(Kind::NotFound) => {
                return Err(Error::not_found(format!(
                    "image {:?}: blob {} ({}) is not in the content store",
                    self.image, desc.digest, desc.media_type
                )));
            }
            Err(e) => return Err(e),
        };
        let mount_from = mount_source(
            &info.labels,
            self.target.registry(),
            self.target.repository(),
        );
        self.plan.blobs.push(Blob { desc, mount_from });
        Ok(())
    }

    async fn manifest(&mut self, desc: Descriptor) -> Result<()> {
        let bytes = read_small(self.b, self.ns, &desc, MAX_MANIFEST_SIZE).await?;
        let manifest = ImageManifest::from_slice(&bytes)?;
        self.blob(manifest.config.to_core()).await?;
        for l in &manifest.layers {
            // Foreign layers stay where their URLs say; registries do not hold them.
            if media_types::is_non_distributable(&l.media_type) {
                continue;
            }
            self.blob(l.to_core()).await?;
        }
        self.plan.manifests.push((desc, bytes));
        Ok(())
    }

    /// Plans an index: every child when all are here; its one child here (or this host's
    /// among several) when some are missing, as the image pushed.
    async fn index(&mut self, desc: Descriptor, depth: usize, root: bool) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(Error::failed_precondition(format!(
                "image {:?}: indexes nested more than {MAX_DEPTH} deep",
                self.image
            )));
        }
        let bytes = read_small(self.b, self.ns, &desc, MAX_INDEX_SIZE).await?;
        let index = ImageIndex::from_slice(&bytes)?;
        let mut present = Vec::new();
        for m in &index.manifests {
            if Box::pin(self.complete(&m.to_core(), depth + 1)).await? {
                present.push(m.clone());
            }
        }
        if present.len() == index.manifests.len() {
            for m in &index.manifests {
                Box::pin(self.node(m.to_core(), depth + 1, false)).await?;
            }
            self.plan.manifests.push((desc, bytes));
            return Ok(());
        }
        let missing = index.manifests.len() - present.len();
        let only_here = ImageIndex {
            manifests: present.clone(),
            ..index.clone()
        };
        let chosen = if present.len() == 1 {
            present.first().cloned()
        } else {
            select_platform(&only_here, &Platform::host()).cloned()
        };
        let Some(chosen) = chosen.filter(|_| root) else {
            return Err(Error::failed_precondition(format!(
                "image {:?}: index {} names {} manifest(s) that are not here; pull every platform of it first",
                self.image, desc.digest, missing
            )));
        };
        let platform = chosen
            .platform
            .as_ref()
            .map_or_else(|| "its".to_owned(), ToString::to_string);
        self.plan.note = format!(
            "index {} has {missing} of its {} platform manifests missing here: pushed the {platform} manifest {} alone",
            desc.digest,
            index.manifests.len(),
            chosen.digest
        );
        Box::pin(self.node(chosen.to_core(), depth + 1, false)).await
    }

    /// True when `desc` and everything it names are in the content store (a pull keeps only
    /// its platform's manifest of an index; a collection may have taken an import's others).
    async fn complete(&self, desc: &Descriptor, depth: usize) -> Result<bool> {
        if depth >= MAX_DEPTH {
            return Ok(false);
        }
        match self.b.content.info(self.ns, &desc.digest).await {
            Ok(_) => {}
            Err(e) if e.is(Kind::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        }
        let children: Vec<Descriptor> = if media_types::is_index(&desc.media_type) {
            let bytes = read_small(self.b, self.ns, desc, MAX_INDEX_SIZE).await?;
            let index = ImageIndex::from_slice(&bytes)?;
            for m in &index.manifests {
                if !Box::pin(self.complete(&m.to_core(), depth + 1)).await? {
                    return Ok(false);
                }
            }
            return Ok(true);
        } else if media_types::is_manifest(&desc.media_type) {
            let bytes = read_small(self.b, self.ns, desc, MAX_MANIFEST_SIZE).await?;
            let m = ImageManifest::from_slice(&bytes)?;
            std::iter::once(&m.config)
                .chain(
                    m.layers
                        .iter()
                        .filter(|l| !media_types::is_non_distributable(&l.media_type)),
                )
                .map(|d| d.to_core())
                .collect()
        } else {
            return Ok(false);
        };
        for c in &children {
            match self.b.content.info(self.ns, &c.digest).await {
                Ok(_) => {}
                Err(e) if e.is(Kind::NotFound) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    async fn node(&mut self, desc: Descriptor, depth: usize, root: bool) -> Result<()> {
        if media_types::is_index(&desc.media_type) {
            self.index(desc, depth, root).await
        } else if media_types::is_manifest(&desc.media_type) {
            self.manifest(desc).await
        } else {
            Err(Error::failed_precondition(format!(
                "image {:?}: {} has media type {:?}, neither a manifest nor an index",
                self.image, desc.digest, desc.media_type
            )))
        }
    }
}

/// A blob's bytes from the content service, in ranges.
struct ContentSource {
    store: RemoteContentStore,
    ns: String,
    digest: Digest,
}

impl BlobSource for ContentSource {
    async fn open(&self, offset: u64, len: u64) -> Result<ByteStream> {
        let reader = self.store.read(&self.ns, &self.digest, offset, len).await?;
        let stream = futures_util::stream::unfold(reader, |mut r| async move {
            let next = r.next_chunk().await?;
            Some((next.map(|(_, bytes)| bytes), r))
        });
        Ok(Box::pin(stream))
    }
}

#[derive(Default)]
struct Counters {
    uploaded_bytes: AtomicU64,
    uploaded: AtomicU64,
    existing: AtomicU64,
    mounted: AtomicU64,
}

async fn blob_event(
    events: &PushEvents,
    desc: &Descriptor,
    state: State,
    current: u64,
    from: &str,
) {
    let _ = events
        .send(Event::Blob {
            digest: desc.digest.clone(),
            state,
            current,
            total: desc.size,
            from: from.to_owned(),
        })
        .await;
}

/// Sends one blob, reporting its progress.
async fn push_blob(
    b: &Backends,
    ns: &str,
    client: &Client,
    target: &Reference,
    blob: &Blob,
    events: &PushEvents,
    counters: &Counters,
) -> Result<()> {
    let desc = &blob.desc;
    let source = ContentSource {
        store: b.content.clone(),
        ns: ns.to_owned(),
        digest: desc.digest.clone(),
    };
    let sent = Arc::new(AtomicU64::new(0));
    let work = client.push_blob(
        target,
        &desc.digest,
        desc.size,
        blob.mount_from.as_deref(),
        &source,
        &sent,
    );
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut reported = 0;
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                let now = sent.load(Ordering::Relaxed);
                if now != reported {
                    reported = now;
                    blob_event(events, desc, State::Uploading, now, "").await;
                }
            }
        }
    };
    let outcome = outcome.map_err(|e| Error::from(e).context(format!("pushing {}", target)))?;
    match outcome {
        BlobPushed::Exists => {
            counters.existing.fetch_add(1, Ordering::Relaxed);
            blob_event(events, desc, State::Exists, desc.size, "").await;
        }
        BlobPushed::Mounted => {
            counters.mounted.fetch_add(1, Ordering::Relaxed);
            let from = blob.mount_from.as_deref().unwrap_or_default();
            blob_event(events, desc, State::Mounted, desc.size, from).await;
        }
        BlobPushed::Uploaded => {
            counters.uploaded.fetch_add(1, Ordering::Relaxed);
            counters
                .uploaded_bytes
                .fetch_add(desc.size, Ordering::Relaxed);
            blob_event(events, desc, State::Done, desc.size, "").await;
        }
    }
    Ok(())
}

/// Pushes the local image `req.reference` to the registry its name points at.
pub async fn push(b: &Backends, ns: &str, req: &Options, events: PushEvents) -> Result<()> {
    let img = find_image(b, ns, &req.reference).await?;
    let target = Reference::parse(&img.name)?;
    let root = img.target.clone();
    let mut planner = Planner {
        b,
        ns,
        target: &target,
        image: &img.name,
        plan: Plan {
            blobs: Vec::new(),
            manifests: Vec::new(),
            note: String::new(),
        },
        seen: HashSet::new(),
    };
    planner.node(root.clone(), 0, true).await?;
    let plan = planner.plan;
    let client = registry_client(b, &target, req.plain_http).await?;
    let Some((top, _)) = plan.manifests.last() else {
        return Err(Error::internal(format!(
            "image {:?}: nothing to push",
            img.name
        )));
    };
    let top = top.clone();

    let _ = events
        .send(Event::Resolved {
            name: target.to_string(),
            digest: top.digest.clone(),
            blobs: plan.blobs.iter().map(|bl| bl.desc.clone()).collect(),
        })
        .await;

    let counters = Counters::default();
    let sem = Semaphore::new(PARALLEL_UPLOADS);
    let uploads = plan.blobs.iter().map(|blob| {
        let (sem, events, counters, client, target) = (&sem, &events, &counters, &client, &target);
        async move {
            let _permit = sem
                .acquire()
                .await
                .map_err(|_| Error::internal("upload limiter closed"))?;
            push_blob(b, ns, client, target, blob, events, counters).await
        }
    });
    // The first failure stops the push: the others are dropped with it.
    futures_util::future::try_join_all(uploads).await?;

    // Children by digest (no tag on the way), the root last under the image's tag.
    let last = plan.manifests.len() - 1;
    for (i, (desc, bytes)) in plan.manifests.iter().enumerate() {
        let reference = if i == last {
            target.clone()
        } else {
            target.with_digest(desc.digest.clone())
        };
        client
            .push_manifest(&reference, &desc.media_type, bytes)
            .await
            .map_err(|e| Error::from(e).context(format!("pushing {target}")))?;
    }
    let pushed = plan.manifests.len() as u64;
    let _ = events
        .send(Event::Done(Pushed {
            name: target.to_string(),
            digest: top.digest.clone(),
            uploaded_bytes: counters.uploaded_bytes.load(Ordering::Relaxed),
            blobs_uploaded: counters.uploaded.load(Ordering::Relaxed),
            blobs_existing: counters.existing.load(Ordering::Relaxed),
            blobs_mounted: counters.mounted.load(Ordering::Relaxed),
            manifests: pushed,
            note: plan.note,
        }))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_source_skips_the_target_repository() {
        let labels = HashMap::from([(
            format!("{DISTRIBUTION_SOURCE}reg:5000"),
            "dst/app,src/app".to_owned(),
        )]);
        assert_eq!(
            mount_source(&labels, "reg:5000", "dst/app").as_deref(),
            Some("src/app")
        );
        assert_eq!(mount_source(&labels, "other:5000", "dst/app"), None);
        let only_self = HashMap::from([(
            format!("{DISTRIBUTION_SOURCE}reg:5000"),
            "dst/app".to_owned(),
        )]);
        assert_eq!(mount_source(&only_self, "reg:5000", "dst/app"), None);
    }
}
