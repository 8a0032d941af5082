//! Server-side pull: resolve → manifest (platform from an index) → config → layers fetched in
//! parallel (bounded), each unpacked as soon as it and its parent are ready → image record.
//!
//! - A blob already in the content store is not fetched again; two pulls sharing a layer fetch
//!   it once ([`Flights`]); a partial blob left by an interrupted pull is resumed from its
//!   ingest's offset with an HTTP range request.
//! - Every byte is verified: the content store commits a blob only when its digest matches.
//! - Unpacked layers are committed as snapshots named by chain ID, so a layer another image
//!   already unpacked is not unpacked again.
//! - A lease holds everything the pull writes until the image record exists, so garbage
//!   collection never races the pull; resources are added to the lease before they are written.

use crate::Backends;
use crate::resolve::{Blob, Resolved, Source, resolve};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use strata_core::content::{CommitOptions, ContentStore, ContentWriter, WriterOptions};
use strata_core::descriptor::{Descriptor, UNCOMPRESSED_LABEL};
use strata_core::diff::{ApplyOptions, Diff};
use strata_core::images::{Image, ImageStore};
use strata_core::leases::{LeaseStore, Resource};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Digest, Error, Kind, Result};
use strata_grpc::remote::content::open_writer;
use strata_registry::Platform;
use strata_registry::{Client, ClientConfig, Reference};
use strata_registry::{ImageIndex, ImageManifest};
use tokio::sync::{Semaphore, mpsc, watch};

/// Layers downloaded at the same time by one pull.
const PARALLEL_DOWNLOADS: usize = 3;
/// How long a pull's lease lives if the gateway dies mid-pull.
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// At most one progress event per layer this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The image reference (`busybox`, `registry:5000/app:v1`, `…@sha256:…`).
    pub reference: String,
    /// The platform to pull from an index (`linux/arm64`); empty for this host's.
    pub platform: String,
    /// Speak plain HTTP to the registry.
    pub plain_http: bool,
    /// The snapshotter to unpack into; empty for the gateway's default.
    pub snapshotter: String,
}

/// What a layer of a pull or import is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// Waiting for a download slot.
    Waiting,
    /// Already in the content store: not fetched again.
    Exists,
    /// Being fetched (`current` of `total` bytes).
    Downloading,
    /// Fetched by another pull running at the same time.
    Shared,
    /// Being unpacked.
    Extracting,
    /// Unpacked.
    Done,
}

/// How a pull or import ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The image record's name.
    pub name: String,
    /// The digest of its target.
    pub digest: Digest,
    /// Bytes fetched from the registry.
    pub fetched_bytes: u64,
    /// Bytes of layers already there.
    pub reused_bytes: u64,
    /// Layers fetched.
    pub layers_fetched: u64,
    /// Layers already there.
    pub layers_reused: u64,
    /// Layers unpacked.
    pub layers_unpacked: u64,
}

/// What a pull or import reports as it goes; the adapter turns each into a `PullProgress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The image is resolved: its target and its layers, bottom first.
    Resolved {
        /// The image record's name.
        name: String,
        /// The target's digest.
        digest: Digest,
        /// The layers.
        layers: Vec<Descriptor>,
    },
    /// A layer's progress.
    Layer {
        /// The layer's digest.
        digest: Digest,
        /// What it is doing.
        state: LayerState,
        /// Bytes done.
        current: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The image is recorded.
    Done(Done),
}

/// Where a pull or import reports its [`Event`]s.
pub type Events = mpsc::Sender<Event>;

/// Work in flight in this gateway, shared by concurrent pulls: a blob (or an unpack) is done
/// by the first pull that needs it; the others wait for its outcome.
/// How a piece of shared work ended: `None` while it runs, then success or the error's text.
type Outcome = Option<std::result::Result<(), String>>;

#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
}

enum Flight {
    /// This caller does the work and must report through the sender.
    Lead(FlightGuard),
    /// Another caller is doing it: wait for its outcome.
    Follow(watch::Receiver<Outcome>),
}

struct FlightGuard {
    flights: Arc<Flights>,
    key: String,
    tx: watch::Sender<Outcome>,
}

impl FlightGuard {
    fn finish(self, r: &Result<()>) {
        let _ = self
            .tx
            .send(Some(r.as_ref().map(|_| ()).map_err(ToString::to_string)));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.key);
        // Followers of a leader that vanished without a word retry on their own.
        self.tx.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(Err("the pull fetching it stopped".into()));
                true
            } else {
                false
            }
        });
    }
}

impl Flights {
    fn join(self: &Arc<Self>, key: String) -> Flight {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(&key) {
            return Flight::Follow(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Flight::Lead(FlightGuard {
            flights: self.clone(),
            key,
            tx,
        })
    }
}

async fn wait_flight(mut rx: watch::Receiver<Outcome>) -> Result<()> {
    loop {
        if let Some(r) = rx.borrow().clone() {
            return r.map_err(Error::internal);
        }
        if rx.changed().await.is_err() {
            return Err(Error::internal("the pull fetching it stopped"));
        }
    }
}

/// One pull (or import) in progress: where it writes, its lease, its progress and counters.
pub(crate) struct Pull<'a> {
    pub(crate) b: &'a Backends,
    pub(crate) ns: String,
    /// The registry to fetch from; `None` for an import, whose blobs are already stored.
    source: Option<(Client, Reference)>,
    lease: String,
    pub(crate) snapshotter: String,
    events: Events,
    fetched: AtomicU64,
    reused: AtomicU64,
    layers_fetched: AtomicU64,
    layers_reused: AtomicU64,
    layers_unpacked: AtomicU64,
}

/// The label naming the gateway process that took a lease: a lease of another (an earlier
/// process, killed in the middle of a pull or an import) is dropped at start-up, see
/// [`drop_stale_leases`].
const LABEL_INSTANCE: &str = "io.strata.gateway.instance";

/// This gateway process: its pid and start time.
fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    })
}

/// At start-up: drops, in `namespaces`, the leases an earlier gateway process took for its
/// pulls and imports and could not drop (it was killed): they would hold what they name until
/// they expire, an hour later, so an image removed meanwhile would not free its space.
pub async fn drop_stale_leases(b: &Backends, namespaces: &[String]) {
    let me = instance();
    for ns in namespaces {
        let leases = match b.leases.list(ns, &[]).await {
            Ok(leases) => leases,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e.message(), "listing leases");
                continue;
            }
        };
        for l in leases {
            if l.labels.get(LABEL_INSTANCE).is_none_or(|i| i == me) {
                continue;
            }
            tracing::info!(namespace = %ns, lease = %l.id, "dropping a lease an earlier gateway left");
            if let Err(e) = b.leases.delete(ns, &l.id, false).await
                && e.kind() != Kind::NotFound
            {
                tracing::warn!(namespace = %ns, lease = %l.id, error = %e.message(), "dropping a stale lease");
            }
        }
    }
}

/// Creates lease `id`, expiring after `ttl` (should its holder die before dropping it).
pub(crate) async fn take_lease(
    b: &Backends,
    ns: &str,
    id: &str,
    ttl: std::time::Duration,
) -> Result<()> {
    let expire = rfc3339(SystemTime::now() + ttl);
    let labels = HashMap::from([
        ("containerd.io/gc.expire".to_owned(), expire),
        (LABEL_INSTANCE.to_owned(), instance().to_owned()),
    ]);
    b.leases.create(ns, id, labels).await?;
    Ok(())
}

fn rfc3339(t: SystemTime) -> String {
    let ts = strata_grpc::convert::timestamp(t);
    ts.to_string()
}

impl Pull<'_> {
    fn source(&self) -> Result<(&Client, &Reference)> {
        self.source
            .as_ref()
            .map(|(c, r)| (c, r))
            .ok_or_else(|| Error::internal("no registry to fetch from"))
    }

    pub(crate) async fn layer_event(
        &self,
        digest: &Digest,
        state: LayerState,
        current: u64,
        total: u64,
    ) {
        let _ = self
            .events
            .send(Event::Layer {
                digest: digest.clone(),
                state,
                current,
                total,
            })
            .await;
    }

    pub(crate) async fn lease_add_content(&self, digest: &Digest) -> Result<()> {
        self.lease_add("content", &digest.to_string()).await
    }

    pub(crate) async fn lease_add_ingest(&self, reference: &str) -> Result<()> {
        self.lease_add("ingests", reference).await
    }

    /// Puts snapshot `key` of this pull's snapshotter under its lease.
    pub(crate) async fn lease_add_snapshot(&self, key: &str) -> Result<()> {
        self.lease_add(&format!("snapshots/{}", self.snapshotter), key)
            .await
    }

    /// The lease everything this pull writes is held by.
    pub(crate) fn lease(&self) -> &str {
        &self.lease
    }

    /// Commits the active snapshot `key` as the committed snapshot `chain` (held by the
    /// lease); when `chain` exists already, the active snapshot is only removed.
    pub(crate) async fn commit_active(&self, key: &str, chain: &Digest) -> Result<()> {
        let (sn, ns) = (&self.snapshotter, &self.ns);
        let chain_s = chain.to_string();
        self.lease_add_snapshot(&chain_s).await?;
        if self.b.snapshots.stat(sn, ns, &chain_s).await.is_err() {
            match self
                .b
                .snapshots
                .commit(sn, ns, &chain_s, key, HashMap::new())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == Kind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        self.b.snapshots.remove(sn, ns, key).await
    }

    async fn lease_add(&self, kind: &str, id: &str) -> Result<()> {
        self.b
            .leases
            .add_resource(&self.ns, &self.lease, Resource::new(kind, id))
            .await
    }

    /// Makes sure the blob `desc` is in the content store with at least `labels`; fetches it
    /// from the registry (resuming a partial ingest) when it is not. Returns whether it was
    /// fetched by this call.
    async fn ensure_blob(
        &self,
        desc: &Descriptor,
        labels: HashMap<String, String>,
        report: bool,
    ) -> Result<bool> {
        self.lease_add("content", &desc.digest.to_string()).await?;
        if self.b.content.info(&self.ns, &desc.digest).await.is_ok() {
            self.add_labels(&desc.digest, labels).await?;
            return Ok(false);
        }
        let key = format!("blob/{}/{}", self.ns, desc.digest);
        match self.b.flights.join(key) {
            Flight::Follow(rx) => {
                if report {
                    self.layer_event(&desc.digest, LayerState::Shared, 0, desc.size)
                        .await;
                }
                // If the other pull failed, try on our own.
                if wait_flight(rx).await.is_ok() {
                    self.add_labels(&desc.digest, labels).await?;
                    return Ok(false);
                }
                Box::pin(self.ensure_blob(desc, labels, report)).await
            }
            Flight::Lead(guard) => {
                let r = self.fetch_blob(desc, labels, report).await;
                guard.finish(&r);
                r.map(|()| true)
            }
        }
    }

    /// Records on blob `digest` that the repository pulled from has it (containerd's
    /// `containerd.io/distribution.source.<registry>` label, repositories comma-separated), so
    /// a push to another repository of that registry mounts it instead of sending it. Nothing
    /// for an import. Best effort: a push without the label uploads the blob.
    async fn mark_source(&self, digest: &Digest) -> Result<()> {
        let Some((_, source)) = &self.source else {
            return Ok(());
        };
        let key = format!("{}{}", crate::push::DISTRIBUTION_SOURCE, source.registry());
        let repo = source.repository();
        let info = self.b.content.info(&self.ns, digest).await?;
        let value = match info.labels.get(&key) {
            Some(v) if v.split(',').any(|r| r == repo) => return Ok(()),
            Some(v) if !v.is_empty() => format!("{v},{repo}"),
            _ => repo.to_owned(),
        };
        // containerd's limit for a label; the repositories first recorded are kept.
        if key.len() + value.len() > 4096 {
            return Ok(());
        }
        self.add_labels(digest, HashMap::from([(key, value)])).await
    }

    pub(crate) async fn add_labels(
        &self,
        digest: &Digest,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut info = self.b.content.info(&self.ns, digest).await?;
        if labels.iter().all(|(k, v)| info.labels.get(k) == Some(v)) {
            return Ok(());
        }
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        info.labels = labels;
        self.b.content.update(&self.ns, info, &paths).await?;
        Ok(())
    }

    async fn fetch_blob(
        &self,
        desc: &Descriptor,
        labels: HashMap<String, String>,
        report: bool,
    ) -> Result<()> {
        let reference = format!("pull-{}", desc.digest);
        let opts = WriterOptions {
            total: desc.size,
            expected: Some(desc.digest.clone()),
        };
        let mut w = match open_writer(&self.b.content, &self.ns, &reference, opts).await {
            Ok(w) => w,
            Err(e) if e.is(Kind::AlreadyExists) => {
                return self.add_labels(&desc.digest, labels).await;
            }
            Err(e) => return Err(e),
        };
        let mut offset = w.status().await?.offset;
        if offset > desc.size {
            offset = w.write(0, Bytes::new()).await?;
        }
        let start = offset;
        let (client, source) = self.source()?;
        if offset < desc.size || desc.size == 0 {
            // Held to the size the manifest declares: a registry sending more is cut off.
            let mut stream = client
                .fetch_blob_sized(source, &desc.digest, desc.size, offset)
                .await?;
            if offset > 0 && !stream.resumed() {
                // The registry ignored the range: start over.
                offset = w.write(0, Bytes::new()).await?;
            }
            let mut last = Instant::now();
            while let Some(chunk) = stream.next_chunk().await {
                let chunk = chunk?;
                offset = w.write(offset, chunk).await?;
                if report && last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    self.layer_event(&desc.digest, LayerState::Downloading, offset, desc.size)
                        .await;
                }
            }
        }
        let result = w
            .commit(CommitOptions {
                size: desc.size,
                expected: Some(desc.digest.clone()),
                labels: labels.clone(),
            })
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.is(Kind::AlreadyExists) => {
                self.add_labels(&desc.digest, labels).await?;
            }
            Err(e) => {
                // Wrong bytes: drop the ingest so nothing of them stays.
                drop(w);
                if e.is(Kind::FailedPrecondition) {
                    let _ = self.b.content.abort(&self.ns, &reference).await;
                }
                return Err(e.context(format!("fetching {} from {}", desc.digest, source.name())));
            }
        }
        self.fetched
            .fetch_add(desc.size - start.min(desc.size), Ordering::Relaxed);
        Ok(())
    }

    /// Unpacks layer `desc` (diff ID `diff_id`) as the committed snapshot `chain` over
    /// `parent`, unless it already exists.
    pub(crate) async fn unpack(
        &self,
        desc: &Descriptor,
        diff_id: &Digest,
        chain: &Digest,
        parent: &str,
    ) -> Result<()> {
        let sn = &self.snapshotter;
        let chain_s = chain.to_string();
        self.lease_add(&format!("snapshots/{sn}"), &chain_s).await?;
        if self.b.snapshots.stat(sn, &self.ns, &chain_s).await.is_ok() {
            return Ok(());
        }
        let key = format!("unpack/{}/{sn}/{chain_s}", self.ns);
        let guard = match self.b.flights.join(key) {
            Flight::Follow(rx) => {
                if wait_flight(rx).await.is_ok() {
                    return Ok(());
                }
                return Box::pin(self.unpack(desc, diff_id, chain, parent)).await;
            }
            Flight::Lead(g) => g,
        };
        let r = self.unpack_lead(desc, diff_id, &chain_s, parent).await;
        guard.finish(&r);
        r
    }

    async fn unpack_lead(
        &self,
        desc: &Descriptor,
        diff_id: &Digest,
        chain: &str,
        parent: &str,
    ) -> Result<()> {
        let sn = &self.snapshotter;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let key = format!("extract-{nanos} {chain}");
        self.lease_add(&format!("snapshots/{sn}"), &key).await?;
        let labels = HashMap::from([("containerd.io/snapshot.ref".to_owned(), chain.to_owned())]);
        let m = match self
            .b
            .snapshots
            .prepare(sn, &self.ns, &key, parent, labels)
            .await
        {
            Ok(m) => m,
            // Unpacked meanwhile by someone else (another client of the snapshotter).
            Err(e) if e.is(Kind::AlreadyExists) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.layer_event(&desc.digest, LayerState::Extracting, 0, desc.size)
            .await;
        let mut apply_desc = desc.clone();
        apply_desc
            .annotations
            .insert(UNCOMPRESSED_LABEL.to_owned(), diff_id.to_string());
        let applied = self
            .b
            .diff
            .apply(&self.ns, &apply_desc, &m, ApplyOptions::default())
            .await;
        let outcome = match applied {
            Ok(a) => match a {
                a if a.digest == *diff_id => {
                    match self
                        .b
                        .snapshots
                        .commit(sn, &self.ns, chain, &key, HashMap::new())
                        .await
                    {
                        Ok(()) => Ok(()),
                        Err(e) if e.is(Kind::AlreadyExists) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                a => Err(Error::failed_precondition(format!(
                    "layer {} unpacked to {}, the image config says {diff_id}",
                    desc.digest, a.digest
                ))),
            },
            Err(e) => Err(e),
        };
        if outcome.is_err() || self.b.snapshots.stat(sn, &self.ns, &key).await.is_ok() {
            let _ = self.b.snapshots.remove(sn, &self.ns, &key).await;
        }
        outcome?;
        self.layers_unpacked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Fetches the image config `digest` of `size` bytes fully into memory: capped (the
    /// registry client's config limit), held to its declared size, verified.
    async fn small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        let (client, source) = self.source()?;
        Ok(client.fetch_config(source, digest, size).await?)
    }

    pub(crate) async fn store_small(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.lease_add("content", &desc.digest.to_string()).await?;
        // Another pull (of this gateway or any other client) writing the same blob holds the
        // ref: wait for it and take its result.
        let opened = open_writer(
            &self.b.content,
            &self.ns,
            &format!("pull-{}", desc.digest),
            WriterOptions {
                total: bytes.len() as u64,
                expected: Some(desc.digest.clone()),
            },
        )
        .await;
        strata_core::content::write_opened(
            opened,
            bytes,
            Some(desc.digest.clone()),
            labels.clone(),
        )
        .await
        .map_err(|e| e.context(format!("storing {}", desc.digest)))?;
        self.add_labels(&desc.digest, labels).await
    }
}

/// The gateway's registry client (made at first use, then shared), speaking plain HTTP to
/// `reference`'s registry when `plain_http` asks for it.
pub(crate) async fn registry_client(
    b: &Backends,
    reference: &Reference,
    plain_http: bool,
) -> Result<Client> {
    let shared = b
        .registry
        .get_or_try_init(|| async {
            Client::new(ClientConfig {
                insecure_registries: b.insecure_registries.clone(),
                chunked_upload_threshold: b.chunked_upload_threshold,
                upload_chunk_size: b.chunked_upload_threshold,
                ..ClientConfig::default()
            })
        })
        .await?;
    Ok(if plain_http {
        shared.with_insecure_registry(reference.registry())
    } else {
        shared.clone()
    })
}

/// Pulls `req.reference` into namespace `ns`, reporting progress on `events`.
pub async fn pull(b: &Backends, ns: &str, req: &Request, events: Events) -> Result<()> {
    let reference = Reference::parse(&req.reference)?;
    let client = registry_client(b, &reference, req.plain_http).await?;
    let platform = if req.platform.is_empty() {
        Platform::host()
    } else {
        Platform::parse(&req.platform)?
    };
    let snapshotter = if req.snapshotter.is_empty() {
        b.snapshotter.clone()
    } else {
        req.snapshotter.clone()
    };

    let resolved = client.resolve(&reference).await?;
    let name = reference.to_string();

    let p = Pull::start(b, ns, Some((client, reference)), snapshotter, events).await?;
    let result = run(&p, &name, &platform, resolved).await;
    p.end().await;
    result
}

impl<'a> Pull<'a> {
    /// Takes a lease for everything the pull will write.
    pub(crate) async fn start(
        b: &'a Backends,
        ns: &str,
        source: Option<(Client, Reference)>,
        snapshotter: String,
        events: Events,
    ) -> Result<Pull<'a>> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let lease = format!("strata-pull-{nanos}");
        take_lease(b, ns, &lease, LEASE_TTL).await?;
        Ok(Pull {
            b,
            ns: ns.to_owned(),
            source,
            lease,
            snapshotter,
            events,
            fetched: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            layers_fetched: AtomicU64::new(0),
            layers_reused: AtomicU64::new(0),
            layers_unpacked: AtomicU64::new(0),
        })
    }

    /// Drops the lease: the image record (or nothing, after a failure) now holds what it held.
    pub(crate) async fn end(&self) {
        let (ns, leases) = (self.ns.clone(), self.b.leases.clone());
        let Err(e) = leases.delete(&ns, &self.lease, false).await else {
            return;
        };
        if e.kind() == Kind::NotFound {
            return;
        }
        // The images service is down (say, restarting): try again in the background, or the
        // lease would hold what the pull wrote until it expires.
        tracing::warn!(lease = %self.lease, error = %e.message(), "could not drop the pull's lease; retrying");
        let lease = self.lease.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut pause = Duration::from_secs(1);
            while start.elapsed() < LEASE_TTL {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
                match leases.delete(&ns, &lease, false).await {
                    Ok(()) => return,
                    Err(e) if e.kind() == Kind::NotFound => return,
                    Err(e) => {
                        tracing::debug!(%lease, error = %e.message(), "dropping the pull's lease");
                    }
                }
            }
        });
    }

    /// Labels config, manifest and index with what they reference, creates (or updates) the
    /// image record, and reports the end.
    pub(crate) async fn finish(
        &self,
        name: &str,
        root: &Descriptor,
        index: Option<(&[u8], &ImageIndex)>,
        manifest: (&Descriptor, &[u8], &ImageManifest),
        config: (&Descriptor, &[u8]),
        chains: &[Digest],
    ) -> Result<()> {
        let (manifest_desc, manifest_bytes, manifest) = manifest;
        let (config_desc, config_bytes) = config;
        let mut config_labels = HashMap::new();
        if let Some(top) = chains.last() {
            config_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                top.to_string(),
            );
        }
        self.store_small(config_desc, config_bytes, config_labels)
            .await?;
        if let Err(e) = self.mark_source(&config_desc.digest).await {
            tracing::warn!(digest = %config_desc.digest, error = %e, "recording where a config came from");
        }
        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            config_desc.digest.to_string(),
        )]);
        for (i, l) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.to_string(),
            );
        }
        self.store_small(manifest_desc, manifest_bytes, manifest_labels)
            .await?;
        if let Some((bytes, idx)) = index {
            let labels = idx
                .manifests
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        m.digest.to_string(),
                    )
                })
                .collect();
            self.store_small(root, bytes, labels).await?;
        }
        create_image(self, name, root).await?;
        let _ = self
            .events
            .send(Event::Done(Done {
                name: name.to_owned(),
                digest: root.digest.clone(),
                fetched_bytes: self.fetched.load(Ordering::Relaxed),
                reused_bytes: self.reused.load(Ordering::Relaxed),
                layers_fetched: self.layers_fetched.load(Ordering::Relaxed),
                layers_reused: self.layers_reused.load(Ordering::Relaxed),
                layers_unpacked: self.layers_unpacked.load(Ordering::Relaxed),
            }))
            .await;
        Ok(())
    }

    /// [`Pull::finish`] for an image pulled or imported whole: the blobs `r` names.
    pub(crate) async fn finish_resolved(&self, name: &str, r: &Resolved) -> Result<()> {
        self.finish(
            name,
            &r.root,
            r.index.as_ref().map(|(b, i)| (b.as_slice(), i)),
            (&r.manifest_desc, &r.manifest_bytes, &r.manifest),
            (&r.config_desc, &r.config_bytes),
            &r.chain_ids,
        )
        .await
    }

    pub(crate) async fn resolved_event(
        &self,
        name: &str,
        root: &Descriptor,
        layers: &[Descriptor],
    ) {
        let _ = self
            .events
            .send(Event::Resolved {
                name: name.to_owned(),
                digest: root.digest.clone(),
                layers: layers.to_vec(),
            })
            .await;
    }
}

/// The image record appears only once all its content and snapshots exist.
async fn create_image(p: &Pull<'_>, name: &str, root: &Descriptor) -> Result<()> {
    put_image(p.b, &p.ns, name, root.clone(), HashMap::new()).await
}

/// Creates image record `name` (pointing at `target`, with `labels`), or points the one of
/// that name at `target`.
pub(crate) async fn put_image(
    b: &Backends,
    ns: &str,
    name: &str,
    target: Descriptor,
    labels: HashMap<String, String>,
) -> Result<()> {
    let image = Image {
        name: name.to_owned(),
        labels,
        target,
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    };
    match b.images.create(ns, image.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == Kind::AlreadyExists => {
            b.images.update(ns, image, &["target".to_owned()]).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn run(
    p: &Pull<'_>,
    name: &str,
    platform: &Platform,
    resolved: strata_registry::Resolved,
) -> Result<()> {
    let root = Descriptor {
        media_type: resolved.media_type.clone(),
        digest: resolved.digest.clone(),
        size: resolved.size,
        annotations: HashMap::new(),
    };
    let source = Registry {
        pull: p,
        root: Arc::new(resolved.bytes),
    };
    let r = resolve(&source, name, root, platform).await?;
    let (root, layers, diff_ids, chains) = (&r.root, &r.layers, r.diff_ids(), &r.chain_ids);

    p.resolved_event(name, root, layers).await;

    // Fetch layers in parallel (bounded); unpack each in order as soon as it is in.
    let sem = Arc::new(Semaphore::new(PARALLEL_DOWNLOADS));
    let (ready_tx, mut ready_rx) = mpsc::channel::<(usize, Result<()>)>(layers.len().max(1));
    let fetches = async {
        let mut futs = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let sem = sem.clone();
            let ready_tx = ready_tx.clone();
            let labels = HashMap::from([(UNCOMPRESSED_LABEL.to_owned(), diff_ids[i].to_string())]);
            futs.push(async move {
                let r = async {
                    let _permit = sem
                        .acquire()
                        .await
                        .map_err(|_| Error::internal("download limiter closed"))?;
                    p.layer_event(&l.digest, LayerState::Waiting, 0, l.size).await;
                    let fetched = p.ensure_blob(l, labels, true).await?;
                    if let Err(e) = p.mark_source(&l.digest).await {
                        tracing::warn!(digest = %l.digest, error = %e, "recording where a layer came from");
                    }
                    if fetched {
                        p.layers_fetched.fetch_add(1, Ordering::Relaxed);
                    } else {
                        p.layers_reused.fetch_add(1, Ordering::Relaxed);
                        p.reused.fetch_add(l.size, Ordering::Relaxed);
                        p.layer_event(&l.digest, LayerState::Exists, l.size, l.size)
                            .await;
                    }
                    Ok(())
                }
                .await;
                let _ = ready_tx.send((i, r)).await;
            });
        }
        drop(ready_tx);
        futures_util::future::join_all(futs).await;
    };
    let unpacks = async {
        let mut ready = vec![false; layers.len()];
        let mut next = 0;
        while next < layers.len() {
            let Some((i, r)) = ready_rx.recv().await else {
                return Err(Error::internal("layer downloads stopped"));
            };
            r?;
            ready[i] = true;
            while next < layers.len() && ready[next] {
                let parent = if next == 0 {
                    String::new()
                } else {
                    chains[next - 1].to_string()
                };
                p.unpack(&layers[next], &diff_ids[next], &chains[next], &parent)
                    .await?;
                strata_core::crashpoint::hit("gateway.pull.layer-unpacked");
                p.layer_event(
                    &layers[next].digest,
                    LayerState::Done,
                    layers[next].size,
                    layers[next].size,
                )
                .await;
                next += 1;
            }
        }
        Ok::<(), Error>(())
    };
    let ((), unpacked) = tokio::join!(fetches, unpacks);
    unpacked?;

    p.finish_resolved(name, &r).await
}

/// A pull's blobs: the root as the registry resolved it, the rest fetched from the registry.
struct Registry<'a, 'b> {
    pull: &'a Pull<'b>,
    root: Arc<Vec<u8>>,
}

impl Source for Registry<'_, '_> {
    async fn read(&self, what: Blob, desc: &Descriptor) -> Result<Arc<Vec<u8>>> {
        match what {
            Blob::Root => Ok(self.root.clone()),
            Blob::Manifest => {
                let (client, source) = self.pull.source()?;
                Ok(Arc::new(client.fetch_manifest(source, &desc.digest).await?))
            }
            Blob::Config => Ok(Arc::new(
                self.pull.small_blob(&desc.digest, desc.size).await?,
            )),
        }
    }
}
