//! The garbage collector: removes content and snapshots nothing references, through the content
//! and snapshotter services (any [`ContentStore`] and [`SnapshotStore`]).
//!
//! Per namespace, a collection
//! 1. gathers the roots: every image (its target), the resources of every unexpired lease
//!    (flat leases hold only the objects they name), blobs and snapshots labelled
//!    `containerd.io/gc.root`, objects younger than the grace period unless claimed (attached to
//!    a lease or an image and let go, or reached from such an object: see
//!    [`Metadata::claims`]), and whatever the registered [`RootProvider`]s return (containers);
//! 2. marks everything reachable from them: an image reaches its target; a blob reaches what its
//!    `containerd.io/gc.ref.content*` and `containerd.io/gc.ref.snapshot.<snapshotter>` labels
//!    name; a snapshot reaches its parent and what its labels name; back references
//!    (`containerd.io/gc.bref.*`) make an object live as long as the one they name;
//! 3. sweeps: deletes every unmarked blob, then removes every unmarked snapshot, children before
//!    parents (a snapshot that gained a child meanwhile answers FailedPrecondition and stays).
//!
//! Ingests are never touched. Expired leases are deleted before marking. One collection runs at
//! a time, holding the metadata gate for writing, so no image or lease resource is added between
//! mark and sweep. A collection that kept objects only for their grace period has the expiry
//! timer collect again when the first of them comes of age.

use crate::store::{BoxFuture, Effects, ImageRef, LeaseHold, Metadata, describe};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};
use strata_core::content::{self, ContentStore};
use strata_core::leases::Leased;
use strata_core::leases::gc::{self as labels, LabelRef};
use strata_core::snapshots::{self, SnapshotStore};
use strata_core::{Digest, Error, Kind};
use tokio::sync::{Mutex, Notify};

/// The longest the expiry timer sleeps before looking again (clocks may jump).
const MAX_TIMER: Duration = Duration::from_secs(60);
/// First pause after a failed background collection; it doubles up to [`MAX_RETRY`]. A
/// collection fails while a service it needs is down (content, snapshotter, or the tasks service
/// whose containers are roots), typically for a restart: it runs again soon after that service
/// is back.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How the collector behaves.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Objects younger than this (since creation or last update) and never claimed are kept, so
    /// a writer that has written but not yet attached a lease or label is safe.
    pub grace: Duration,
    /// Delay between a deletion and the collection it triggers, so bursts collect once.
    pub delay: Duration,
    /// Snapshotters to collect; one the snapshotter service does not serve is skipped.
    pub snapshotters: Vec<String>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            delay: Duration::from_millis(100),
            snapshotters: vec!["overlayfs".into(), "native".into()],
        }
    }
}

/// An object the collector can keep or remove.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Object {
    Content(Digest),
    Snapshot { snapshotter: String, key: String },
    Image(String),
}

/// An object to keep; a flat root keeps the object only, not what its labels reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub object: Object,
    pub flat: bool,
}

impl Root {
    pub fn new(object: Object) -> Self {
        Self {
            object,
            flat: false,
        }
    }
}

/// A source of roots outside this service: the extension point for containers (each holds its
/// snapshot, image and any `gc.ref` labels) and anything else that must keep objects alive.
pub trait RootProvider: Send + Sync + 'static {
    /// Names the provider in logs and errors.
    fn name(&self) -> &str;
    /// The roots of `ns`. An error fails the namespace's collection: nothing is removed from a
    /// namespace whose roots are not all known. A provider whose source cannot be asked answers
    /// an error (Unavailable, naming the source), never an empty list. The error is reported as
    /// it is, so it names the source.
    fn roots<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<Vec<Root>, Error>>;
    /// What `ns` still holds in this provider's service, described for a refusal to delete the
    /// namespace (e.g. `containers a, b`); empty when nothing.
    fn residents<'a>(&'a self, _ns: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// What one collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectStats {
    pub content_removed: u64,
    pub snapshots_removed: u64,
    pub bytes_freed: u64,
    pub leases_expired: u64,
    pub namespaces: u64,
}

/// Something that collects on demand (the gRPC adapter serves any).
pub trait Collect: Send + Sync + 'static {
    fn collect(&self) -> impl Future<Output = Result<CollectStats, Error>> + Send;
}

/// The collector over a content store and a snapshot store.
pub struct Collector<C, S> {
    meta: Arc<Metadata>,
    content: C,
    snapshots: S,
    config: GcConfig,
    providers: Vec<Arc<dyn RootProvider>>,
    /// One collection at a time.
    running: Mutex<()>,
    /// A deletion happened since the last collection started.
    dirty: AtomicBool,
    /// Wakes the deferred-collection task.
    wake: Notify,
    /// Wakes the expiry timer.
    expiry_wake: Notify,
    /// When the first object the last collection kept only for the grace period comes of age:
    /// the expiry timer collects then.
    grace_due: std::sync::Mutex<Option<SystemTime>>,
}

/// The objects of one namespace, as listed at the start of its collection.
struct Inventory {
    content: HashMap<Digest, content::Info>,
    snapshots: HashMap<(String, String), snapshots::Info>,
    images: HashMap<String, ImageRef>,
    /// Back references: object → the objects that live as long as it does.
    brefs: HashMap<Object, Vec<Object>>,
}

fn newest(created: SystemTime, updated: SystemTime) -> SystemTime {
    created.max(updated)
}

/// A namespace's inventory with what the listings alone make roots and young objects.
struct Taken {
    inv: Inventory,
    /// Objects kept by a root label, an image or a lease.
    roots: Vec<Root>,
    /// Objects in the grace period, with its end.
    young: Vec<(Object, SystemTime)>,
}

impl Inventory {
    /// Builds the inventory of a namespace from its listings; `now` and `grace` say which
    /// objects are still in the grace period.
    fn take(
        content: Vec<content::Info>,
        snapshot_lists: &[(String, Vec<snapshots::Info>)],
        images: Vec<ImageRef>,
        holds: Vec<LeaseHold>,
        now: SystemTime,
        grace: Duration,
    ) -> Taken {
        // When an object written at `t` leaves the grace period, if it is still in it.
        let grace_ends = |t: SystemTime| match now.duration_since(t) {
            Ok(age) if age >= grace => None,
            Ok(_) => Some(t + grace),
            // From the future (a clock step): keep it, and look again within the grace period.
            Err(_) => Some(now + grace),
        };
        let mut roots = Vec::new();
        let mut young: Vec<(Object, SystemTime)> = Vec::new();
        let mut inv = Inventory {
            content: HashMap::new(),
            snapshots: HashMap::new(),
            images: HashMap::new(),
            brefs: HashMap::new(),
        };
        for info in content {
            let obj = Object::Content(info.digest.clone());
            if info.labels.contains_key(labels::ROOT) {
                roots.push(Root::new(obj.clone()));
            } else if let Some(end) = grace_ends(newest(info.created_at, info.updated_at)) {
                young.push((obj.clone(), end));
            }
            inv.add_brefs(obj, &info.labels);
            inv.content.insert(info.digest.clone(), info);
        }
        for (sn, list) in snapshot_lists {
            for info in list {
                let obj = Object::Snapshot {
                    snapshotter: sn.clone(),
                    key: info.name.clone(),
                };
                if info.labels.contains_key(labels::ROOT) {
                    roots.push(Root::new(obj.clone()));
                } else if let Some(end) = grace_ends(newest(info.created_at, info.updated_at)) {
                    young.push((obj.clone(), end));
                }
                inv.add_brefs(obj, &info.labels);
                inv.snapshots
                    .insert((sn.clone(), info.name.clone()), info.clone());
            }
        }
        for image in images {
            roots.push(Root::new(Object::Image(image.name.clone())));
            inv.images.insert(image.name.clone(), image);
        }
        for hold in holds {
            for r in hold.resources {
                let Some(object) = object_of(r) else { continue };
                roots.push(Root {
                    object,
                    flat: hold.flat,
                });
            }
        }
        Taken { inv, roots, young }
    }

    /// Whether `obj` was listed.
    fn contains(&self, obj: &Object) -> bool {
        match obj {
            Object::Content(d) => self.content.contains_key(d),
            Object::Snapshot { snapshotter, key } => self
                .snapshots
                .contains_key(&(snapshotter.clone(), key.clone())),
            Object::Image(name) => self.images.contains_key(name),
        }
    }

    /// Forward references of `obj`.
    fn references(&self, obj: &Object, out: &mut Vec<Object>) {
        let label_refs = |labels: &HashMap<String, String>, out: &mut Vec<Object>| {
            for (k, v) in labels {
                match labels::parse(k, v) {
                    Some(LabelRef::Content(d)) => match Digest::parse(d) {
                        Ok(d) => out.push(Object::Content(d)),
                        Err(e) => tracing::debug!(label = %k, error = %e, "ignoring a reference"),
                    },
                    Some(LabelRef::Snapshot { snapshotter, key }) => out.push(Object::Snapshot {
                        snapshotter: snapshotter.to_owned(),
                        key: key.to_owned(),
                    }),
                    _ => {}
                }
            }
        };
        match obj {
            Object::Content(d) => {
                if let Some(info) = self.content.get(d) {
                    label_refs(&info.labels, out);
                }
            }
            Object::Snapshot { snapshotter, key } => {
                if let Some(info) = self.snapshots.get(&(snapshotter.clone(), key.clone())) {
                    if !info.parent.is_empty() {
                        out.push(Object::Snapshot {
                            snapshotter: snapshotter.clone(),
                            key: info.parent.clone(),
                        });
                    }
                    label_refs(&info.labels, out);
                }
            }
            Object::Image(name) => {
                if let Some(image) = self.images.get(name) {
                    out.push(Object::Content(image.target.clone()));
                    label_refs(&image.labels, out);
                }
            }
        }
        if let Some(back) = self.brefs.get(obj) {
            out.extend(back.iter().cloned());
        }
    }

    fn add_brefs(&mut self, of: Object, labels: &HashMap<String, String>) {
        for (k, v) in labels {
            let target = match labels::parse(k, v) {
                Some(LabelRef::BackContent(d)) => match Digest::parse(d) {
                    Ok(d) => Object::Content(d),
                    Err(_) => continue,
                },
                Some(LabelRef::BackSnapshot { snapshotter, key }) => Object::Snapshot {
                    snapshotter: snapshotter.to_owned(),
                    key: key.to_owned(),
                },
                Some(LabelRef::BackImage(name)) => Object::Image(name.to_owned()),
                _ => continue,
            };
            self.brefs.entry(target).or_default().push(of.clone());
        }
    }
}

/// The collectable object a lease resource (or a claim) names; none for ingests.
fn object_of(l: Leased) -> Option<Object> {
    match l {
        Leased::Content(d) => Some(Object::Content(d)),
        Leased::Snapshot { snapshotter, key } => Some(Object::Snapshot { snapshotter, key }),
        Leased::Image(name) => Some(Object::Image(name)),
        // Ingests are never collected.
        Leased::Ingest(_) => None,
    }
}

/// The claim naming a blob or snapshot.
fn leased_of(o: Object) -> Option<Leased> {
    match o {
        Object::Content(d) => Some(Leased::Content(d)),
        Object::Snapshot { snapshotter, key } => Some(Leased::Snapshot { snapshotter, key }),
        Object::Image(_) => None,
    }
}

/// Marks everything reachable from `roots`.
fn mark(inv: &Inventory, roots: Vec<Root>) -> HashSet<Object> {
    let mut marked = HashSet::new();
    let mut traversed = HashSet::new();
    let mut queue: VecDeque<Root> = roots.into();
    let mut refs = Vec::new();
    while let Some(root) = queue.pop_front() {
        marked.insert(root.object.clone());
        if root.flat || !traversed.insert(root.object.clone()) {
            continue;
        }
        refs.clear();
        inv.references(&root.object, &mut refs);
        queue.extend(refs.drain(..).map(Root::new));
    }
    marked
}

/// Snapshots of one snapshotter in removal order: deepest (children) first. `parent_of` maps
/// every listed snapshot to its parent.
fn leaves_first(keys: Vec<String>, parent_of: &HashMap<String, String>) -> Vec<String> {
    let mut memo: HashMap<String, usize> = HashMap::new();
    let mut depth = |key: &str| -> usize {
        // Walk up (iteratively: chains may be hundreds of layers deep) to a known depth, a
        // snapshot without a listed parent, or a cycle.
        let mut chain: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = key.to_owned();
        let mut base = 0;
        loop {
            if let Some(d) = memo.get(&cur) {
                base = d + 1;
                break;
            }
            if !seen.insert(cur.clone()) {
                break;
            }
            chain.push(cur.clone());
            match parent_of.get(&cur) {
                Some(p) if parent_of.contains_key(p) => cur = p.clone(),
                _ => break,
            }
        }
        for (d, k) in (base..).zip(chain.into_iter().rev()) {
            memo.insert(k, d);
        }
        memo.get(key).copied().unwrap_or(0)
    };
    let mut with_depth: Vec<(usize, String)> = keys.into_iter().map(|k| (depth(&k), k)).collect();
    with_depth.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    with_depth.into_iter().map(|(_, k)| k).collect()
}

impl<C: ContentStore, S: SnapshotStore> Collector<C, S> {
    pub fn new(meta: Arc<Metadata>, content: C, snapshots: S, config: GcConfig) -> Self {
        Self {
            meta,
            content,
            snapshots,
            config,
            providers: Vec::new(),
            running: Mutex::new(()),
            dirty: AtomicBool::new(false),
            wake: Notify::new(),
            expiry_wake: Notify::new(),
            grace_due: std::sync::Mutex::new(None),
        }
    }

    /// Adds a source of roots (see [`RootProvider`]).
    #[must_use]
    pub fn with_root_provider(mut self, provider: Arc<dyn RootProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Starts the background tasks: deferred collection after deletions (and at once when one
    /// is owed from before a restart), and the lease expiry timer (which also deletes and
    /// collects leases that expired while the service was down).
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        match self.meta.gc_owed() {
            Ok(true) => {
                tracing::info!("a collection is owed from before the restart; scheduling it");
                self.dirty.store(true, Ordering::SeqCst);
                self.wake.notify_one();
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "reading the collector's state"),
        }
        let deferred = {
            let me = self.clone();
            tokio::spawn(async move { me.deferred_loop().await })
        };
        let expiry = {
            let me = self.clone();
            tokio::spawn(async move { me.expiry_loop().await })
        };
        vec![deferred, expiry]
    }

    async fn deferred_loop(self: Arc<Self>) {
        let mut backoff = RETRY_AFTER;
        loop {
            self.wake.notified().await;
            tokio::time::sleep(self.config.delay).await;
            if !self.dirty.load(Ordering::SeqCst) {
                continue;
            }
            match self.run().await {
                Ok(_) => backoff = RETRY_AFTER,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        retry_in = ?backoff,
                        "deferred garbage collection failed"
                    );
                    // run() left it owed and woke this loop again: pause first.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// Collects when a lease expires or when an object the grace period kept comes of age.
    async fn expiry_loop(self: Arc<Self>) {
        let mut backoff = RETRY_AFTER;
        loop {
            let next = match self.meta.blocking(|m| Ok(m.next_expiry()?)).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "reading lease expiries");
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            };
            let grace_due = *self
                .grace_due
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let next = next.into_iter().chain(grace_due).min();
            let now = SystemTime::now();
            match next {
                Some(at) if at <= now => match self.run().await {
                    Ok(_) => backoff = RETRY_AFTER,
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            retry_in = ?backoff,
                            "collection after lease expiry or grace period failed"
                        );
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = self.expiry_wake.notified() => {}
                        }
                        backoff = (backoff * 2).min(MAX_RETRY);
                    }
                },
                Some(at) => {
                    let wait = at.duration_since(now).unwrap_or_default().min(MAX_TIMER);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.expiry_wake.notified() => {}
                    }
                }
                None => self.expiry_wake.notified().await,
            }
        }
    }

    /// Runs one collection now, after any running one ends. One that fails, however it was
    /// started, is owed: the deferred loop retries it until one succeeds.
    pub async fn run(&self) -> Result<CollectStats, Error> {
        let result = self.run_once().await;
        if result.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
        result
    }

    async fn run_once(&self) -> Result<CollectStats, Error> {
        let _running = self.running.lock().await;
        let _gate = self.meta.gate().write().await;
        // Deletions before this point are covered by this collection; later ones set it again.
        self.dirty.store(false, Ordering::SeqCst);
        let now = SystemTime::now();
        let mut stats = CollectStats::default();
        let expired = self
            .meta
            .blocking(move |m| Ok(m.delete_expired_leases(now)?))
            .await?;
        for (ns, id) in &expired {
            tracing::info!(namespace = %ns, lease = %id, "lease expired; deleted");
        }
        stats.leases_expired = expired.len() as u64;
        // Every drop counted so far was committed before the reads below: this collection
        // covers it.
        let dropped = self.meta.blocking(|m| Ok(m.dropped()?)).await?;
        let namespaces = self.meta.blocking(|m| Ok(m.namespace_names()?)).await?;
        let mut first_error = None;
        let mut due: Option<SystemTime> = None;
        for ns in &namespaces {
            stats.namespaces += 1;
            match self.collect_namespace(ns, now, &mut stats).await {
                Ok(d) => due = due.into_iter().chain(d).min(),
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "garbage collection failed");
                    first_error.get_or_insert(e.context(format!("collecting namespace {ns:?}")));
                }
            }
        }
        // A namespace that failed is retried anyway (the collection is owed).
        *self
            .grace_due
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = due;
        if due.is_some() {
            self.expiry_wake.notify_one();
        }
        if stats.content_removed + stats.snapshots_removed + stats.leases_expired > 0 {
            tracing::info!(
                content = stats.content_removed,
                snapshots = stats.snapshots_removed,
                bytes = stats.bytes_freed,
                leases = stats.leases_expired,
                "garbage collected"
            );
        } else {
            tracing::debug!(
                namespaces = stats.namespaces,
                "garbage collection: nothing to remove"
            );
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                self.meta
                    .blocking(move |m| Ok(m.collected(dropped)?))
                    .await?;
                Ok(stats)
            }
        }
    }

    /// Snapshots of `ns` on every configured snapshotter the service serves.
    async fn list_snapshots(&self, ns: &str) -> Result<Vec<(String, Vec<snapshots::Info>)>, Error> {
        let mut out = Vec::new();
        for sn in &self.config.snapshotters {
            match self.snapshots.list(sn, ns, &[]).await {
                Ok(list) => out.push((sn.clone(), list)),
                Err(e) if e.is(Kind::InvalidArgument) => {
                    tracing::debug!(snapshotter = %sn, error = %e, "not served; skipped");
                }
                Err(e) => return Err(e.context(format!("listing {sn:?} snapshots"))),
            }
        }
        Ok(out)
    }

    /// Collects `ns`; returns when the youngest object the grace period alone kept comes of
    /// age (a collection is due then).
    async fn collect_namespace(
        &self,
        ns: &str,
        now: SystemTime,
        stats: &mut CollectStats,
    ) -> Result<Option<SystemTime>, Error> {
        let owned = ns.to_owned();
        let (images, holds, claims): (Vec<ImageRef>, Vec<LeaseHold>, Vec<Leased>) = self
            .meta
            .blocking(move |m| {
                Ok((
                    m.image_refs(&owned)?,
                    m.lease_holds(&owned, now)?,
                    m.claims(&owned)?,
                ))
            })
            .await?;
        let content = self
            .content
            .list(ns, &[])
            .await
            .map_err(|e| e.context("listing content"))?;
        let snapshot_lists = self.list_snapshots(ns).await?;

        let Taken {
            inv,
            mut roots,
            young,
        } = Inventory::take(
            content,
            &snapshot_lists,
            images,
            holds,
            now,
            self.config.grace,
        );
        // Asked after the listings above: an object listed there that a provider's record holds
        // was recorded there first (a container's record is created before its snapshot), so the
        // provider's answer covers it.
        for p in &self.providers {
            roots.extend(p.roots(ns).await?);
        }

        // The grace period covers the window between writing an object and attaching it (to a
        // lease, an image, a label). An object that was attached and let go (claimed), or that
        // such an object reaches, is past that window: the grace period does not shield it.
        let claims: Vec<Object> = claims.into_iter().filter_map(object_of).collect();
        let attached = mark(&inv, claims.iter().cloned().map(Root::new).collect());
        let mut marked = mark(&inv, roots);
        let shielded: Vec<(Object, SystemTime)> = young
            .into_iter()
            .filter(|(o, _)| !attached.contains(o))
            .collect();
        // Collect again when the first object kept by the grace period alone comes of age.
        let due = shielded
            .iter()
            .filter(|(o, _)| !marked.contains(o))
            .map(|(_, end)| *end)
            .min();
        marked.extend(mark(
            &inv,
            shielded.into_iter().map(|(o, _)| Root::new(o)).collect(),
        ));

        let mut first_error: Option<Error> = None;
        // What this collection removed (or found removed).
        let mut gone: HashSet<Object> = HashSet::new();
        self.sweep_content(ns, &inv, &marked, stats, &mut gone, &mut first_error)
            .await;
        self.sweep_snapshots(
            ns,
            &snapshot_lists,
            &marked,
            stats,
            &mut gone,
            &mut first_error,
        )
        .await;
        // Claims are kept only for objects that exist: forget those of objects removed now or
        // absent from the listings (claims recorded since the collection began are not among
        // the ones read, so they stay).
        let stale: Vec<Leased> = claims
            .into_iter()
            .filter(|o| gone.contains(o) || !inv.contains(o))
            .filter_map(leased_of)
            .collect();
        if !stale.is_empty() {
            let owned = ns.to_owned();
            self.meta
                .blocking(move |m| Ok(m.drop_claims(&owned, &stale)?))
                .await
                .map_err(|e| e.context("forgetting claims"))?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(due),
        }
    }

    /// Deletes the content of `ns` that `marked` does not hold, in digest order; what it
    /// removed (or found removed) goes into `gone`, the first failure into `first_error`.
    async fn sweep_content(
        &self,
        ns: &str,
        inv: &Inventory,
        marked: &HashSet<Object>,
        stats: &mut CollectStats,
        gone: &mut HashSet<Object>,
        first_error: &mut Option<Error>,
    ) {
        let mut doomed: Vec<&content::Info> = inv
            .content
            .values()
            .filter(|i| !marked.contains(&Object::Content(i.digest.clone())))
            .collect();
        doomed.sort_by(|a, b| a.digest.cmp(&b.digest));
        for info in doomed {
            match self.content.delete(ns, &info.digest).await {
                Ok(()) => {
                    gone.insert(Object::Content(info.digest.clone()));
                    tracing::debug!(namespace = %ns, digest = %info.digest, "content collected");
                    stats.content_removed += 1;
                    strata_core::crashpoint::hit("images.gc.swept-content");
                    stats.bytes_freed += info.size;
                }
                Err(e) if e.is(Kind::NotFound) => {
                    gone.insert(Object::Content(info.digest.clone()));
                }
                Err(e) => {
                    first_error
                        .get_or_insert(e.context(format!("deleting content {}", info.digest)));
                }
            }
        }
    }

    /// Removes the snapshots of `ns` that `marked` does not hold, children before parents;
    /// what it removed (or found removed) goes into `gone`, the first failure into
    /// `first_error`.
    async fn sweep_snapshots(
        &self,
        ns: &str,
        snapshot_lists: &[(String, Vec<snapshots::Info>)],
        marked: &HashSet<Object>,
        stats: &mut CollectStats,
        gone: &mut HashSet<Object>,
        first_error: &mut Option<Error>,
    ) {
        for (sn, list) in snapshot_lists {
            let parent_of: HashMap<String, String> = list
                .iter()
                .map(|i| (i.name.clone(), i.parent.clone()))
                .collect();
            let unmarked: Vec<String> = list
                .iter()
                .filter(|i| {
                    !marked.contains(&Object::Snapshot {
                        snapshotter: sn.clone(),
                        key: i.name.clone(),
                    })
                })
                .map(|i| i.name.clone())
                .collect();
            for key in leaves_first(unmarked, &parent_of) {
                let usage = self
                    .snapshots
                    .usage(sn, ns, &key)
                    .await
                    .map(|u| u.size)
                    .unwrap_or(0);
                let obj = Object::Snapshot {
                    snapshotter: sn.clone(),
                    key: key.clone(),
                };
                match self.snapshots.remove(sn, ns, &key).await {
                    Ok(()) => {
                        gone.insert(obj);
                        tracing::debug!(
                            namespace = %ns,
                            snapshotter = %sn,
                            key = %key,
                            "snapshot collected"
                        );
                        stats.snapshots_removed += 1;
                        strata_core::crashpoint::hit("images.gc.swept-snapshot");
                        stats.bytes_freed += usage;
                    }
                    // Someone else removed it.
                    Err(e) if e.is(Kind::NotFound) => {
                        gone.insert(obj);
                    }
                    // A child appeared since listing: leave it.
                    Err(e) if e.is(Kind::FailedPrecondition) => {
                        tracing::debug!(snapshotter = %sn, key = %key, error = %e, "snapshot left");
                    }
                    Err(e) => {
                        first_error
                            .get_or_insert(e.context(format!("removing {sn:?} snapshot {key:?}")));
                    }
                }
            }
        }
    }

    /// What `ns` holds in the content and snapshotter services, described for a refusal.
    pub async fn residents(&self, ns: &str) -> Result<Vec<String>, Error> {
        let mut left = Vec::new();
        let blobs: Vec<String> = self
            .content
            .list(ns, &[])
            .await
            .map_err(|e| e.context("listing content"))?
            .into_iter()
            .map(|i| i.digest.to_string())
            .collect();
        if !blobs.is_empty() {
            left.push(describe("blobs", &blobs));
        }
        for (sn, list) in self.list_snapshots(ns).await? {
            if !list.is_empty() {
                let keys: Vec<String> = list.into_iter().map(|i| i.name).collect();
                left.push(describe(&format!("snapshots on {sn:?} snapshotter"), &keys));
            }
        }
        for p in &self.providers {
            left.extend(
                p.residents(ns)
                    .await
                    .map_err(|e| e.context(format!("asking {}", p.name())))?,
            );
        }
        Ok(left)
    }
}

impl<C: ContentStore, S: SnapshotStore> Collect for Collector<C, S> {
    async fn collect(&self) -> Result<CollectStats, Error> {
        self.run().await
    }
}

impl<C: ContentStore, S: SnapshotStore> Effects for Collector<C, S> {
    fn references_dropped(&self, sync: bool) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if sync {
                self.run().await.map(drop)
            } else {
                self.dirty.store(true, Ordering::SeqCst);
                self.wake.notify_one();
                Ok(())
            }
        })
    }

    fn expiries_changed(&self) {
        self.expiry_wake.notify_one();
    }

    fn residents<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(Collector::residents(self, ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_go_children_first() {
        let parent_of: HashMap<String, String> = [
            ("base", ""),
            ("mid", "base"),
            ("top", "mid"),
            ("side", "base"),
            ("alone", ""),
        ]
        .into_iter()
        .map(|(k, p)| (k.to_owned(), p.to_owned()))
        .collect();
        let order = leaves_first(
            ["base", "alone", "side", "mid", "top"]
                .map(String::from)
                .to_vec(),
            &parent_of,
        );
        let pos = |k: &str| order.iter().position(|x| x == k).expect("present");
        assert!(pos("top") < pos("mid"));
        assert!(pos("mid") < pos("base"));
        assert!(pos("side") < pos("base"));
        assert_eq!(order.len(), 5);
    }

    #[test]
    fn a_parent_cycle_does_not_hang() {
        let parent_of: HashMap<String, String> = [("a", "b"), ("b", "a")]
            .into_iter()
            .map(|(k, p)| (k.to_owned(), p.to_owned()))
            .collect();
        assert_eq!(
            leaves_first(vec!["a".into(), "b".into()], &parent_of).len(),
            2
        );
    }

    #[test]
    fn marking_follows_labels_parents_and_back_references() {
        let d = |s: &[u8]| Digest::of(s);
        let (manifest, config, layer, orphan, flat_child, hidden) =
            (d(b"m"), d(b"c"), d(b"l"), d(b"o"), d(b"f"), d(b"h"));
        let info = |digest: &Digest, labels: &[(&str, String)]| content::Info {
            digest: digest.clone(),
            size: 1,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        let snap = |name: &str, parent: &str| snapshots::Info {
            name: name.into(),
            parent: parent.into(),
            kind: snapshots::Kind::Committed,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            labels: HashMap::new(),
        };
        let mut inv = Inventory {
            content: HashMap::new(),
            snapshots: HashMap::new(),
            images: HashMap::new(),
            brefs: HashMap::new(),
        };
        for i in [
            info(
                &manifest,
                &[
                    ("containerd.io/gc.ref.content.config", config.to_string()),
                    ("containerd.io/gc.ref.content.l.0", layer.to_string()),
                ],
            ),
            info(
                &config,
                &[("containerd.io/gc.ref.snapshot.overlayfs", "top".into())],
            ),
            info(&layer, &[]),
            info(
                &orphan,
                &[("containerd.io/gc.bref.content", layer.to_string())],
            ),
            info(
                &flat_child,
                &[("containerd.io/gc.ref.content", hidden.to_string())],
            ),
            info(&hidden, &[]),
        ] {
            inv.add_brefs(Object::Content(i.digest.clone()), &i.labels.clone());
            inv.content.insert(i.digest.clone(), i);
        }
        for s in [snap("base", ""), snap("top", "base"), snap("other", "")] {
            inv.snapshots
                .insert(("overlayfs".into(), s.name.clone()), s);
        }
        inv.images.insert(
            "img".into(),
            ImageRef {
                name: "img".into(),
                target: manifest.clone(),
                labels: HashMap::new(),
            },
        );
        let sn = |k: &str| Object::Snapshot {
            snapshotter: "overlayfs".into(),
            key: k.into(),
        };
        let marked = mark(
            &inv,
            vec![
                Root::new(Object::Image("img".into())),
                Root {
                    object: Object::Content(flat_child.clone()),
                    flat: true,
                },
            ],
        );
        for kept in [
            Object::Content(manifest),
            Object::Content(config),
            Object::Content(layer),
            Object::Content(orphan),
            Object::Content(flat_child),
            sn("top"),
            sn("base"),
        ] {
            assert!(marked.contains(&kept), "{kept:?} not marked");
        }
        assert!(!marked.contains(&sn("other")));
        // A flat root keeps the object, not what its labels reference.
        assert!(!marked.contains(&Object::Content(hidden)));
    }
}
