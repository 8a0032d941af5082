//! The metadata store: images, leases and namespaces in one embedded database, and the local
//! implementations of [`ImageStore`], [`LeaseStore`] and [`NamespaceStore`] over it.
//!
//! On disk, under the root, only `metadata.redb` (redb: pure Rust, ACID with fsync on commit):
//! - `namespaces`: name → labels, creation time. A namespace is recorded by `Namespaces.Create`
//!   or by the first image or lease created in it.
//! - `images`: (namespace, name) → target (media type, digest, size, annotations), labels, times.
//! - `leases`: (namespace, id) → labels, creation time.
//! - `lease_resources`: (namespace, lease, type, id) → (): what each lease holds.
//! - `state`: two counters telling whether a collection is owed ([`Metadata::gc_owed`]).
//! - `claims`: (namespace, type, id) → (): blobs and snapshots that were attached (held by a
//!   lease resource or an image) and let go, in the same transaction as the letting go. The
//!   grace period no longer shields them ([`Metadata::claims`]); the collector drops a claim
//!   when it removes the object or finds it gone.
//!
//! Every change is one write transaction, so a kill -9 leaves either the old or the new state.
//! Nothing here deletes content or snapshots: what a deletion leaves unreferenced is the garbage
//! collector's ([`crate::gc`]), told through [`Effects`].

use prost::Message as _;
use redb::{Database, ReadableTable, TableDefinition};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use strata_core::descriptor::Descriptor;
use strata_core::filters::Filter;
use strata_core::images::{self, DeleteOptions, Image, ImageStore};
use strata_core::leases::{self, Lease, LeaseStore, Leased, Resource};
use strata_core::namespaces::{Namespace, NamespaceStore};
use strata_core::{Digest, Error, identifiers, labels};
use tokio::sync::RwLock;

/// name → [`NamespaceRecord`]
const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
/// (namespace, name) → [`ImageRecord`]
const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
/// (namespace, id) → [`LeaseRecord`]
const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
/// (namespace, lease, type, id) → ()
const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");
/// (namespace, type, id) → (): objects once attached (type and id as a lease resource's:
/// `content`, `snapshots/<snapshotter>`).
const CLAIMS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("claims");
/// Counters: [`DROPPED`] and [`COLLECTED`].
const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");
/// Bumped by every change that drops a reference, in the same transaction.
const DROPPED: &str = "dropped";
/// The value of [`DROPPED`] the last successful collection started from. While it is behind,
/// a collection is owed, even across a restart.
const COLLECTED: &str = "collected";

#[derive(Clone, PartialEq, prost::Message)]
struct NamespaceRecord {
    #[prost(map = "string, string", tag = "1")]
    labels: HashMap<String, String>,
    #[prost(int64, tag = "2")]
    created: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ImageRecord {
    #[prost(string, tag = "1")]
    media_type: String,
    #[prost(string, tag = "2")]
    digest: String,
    #[prost(uint64, tag = "3")]
    size: u64,
    #[prost(map = "string, string", tag = "4")]
    annotations: HashMap<String, String>,
    #[prost(map = "string, string", tag = "5")]
    labels: HashMap<String, String>,
    #[prost(int64, tag = "6")]
    created: i64,
    #[prost(int64, tag = "7")]
    updated: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRecord {
    #[prost(int64, tag = "1")]
    created: i64,
    #[prost(map = "string, string", tag = "2")]
    labels: HashMap<String, String>,
}

pub use strata_store::StoreError;
use strata_store::{Result, decode};
pub(crate) use strata_store::{from_nanos, nanos};

fn image_not_found(name: &str) -> StoreError {
    Error::not_found(format!("image {name:?}: not found")).into()
}

fn lease_not_found(id: &str) -> StoreError {
    Error::not_found(format!("lease {id:?}: not found")).into()
}

fn namespace_not_found(name: &str) -> StoreError {
    Error::not_found(format!("namespace {name:?}: not found")).into()
}

fn to_image(name: &str, rec: ImageRecord) -> Result<Image> {
    let digest = Digest::parse(&rec.digest).map_err(|e| e.context(format!("image {name:?}")))?;
    Ok(Image {
        name: name.to_owned(),
        labels: rec.labels,
        target: Descriptor {
            media_type: rec.media_type,
            digest,
            size: rec.size,
            annotations: rec.annotations,
        },
        created_at: from_nanos(rec.created),
        updated_at: from_nanos(rec.updated),
    })
}

fn to_lease(id: &str, rec: LeaseRecord) -> Lease {
    Lease {
        id: id.to_owned(),
        created_at: from_nanos(rec.created),
        labels: rec.labels,
    }
}

/// `n` names of a kind, for messages: `2 images ("a", "b")`, at most three shown.
pub(crate) fn describe(kind: &str, names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut quoted: Vec<String> = names.iter().take(SHOWN).map(|n| format!("{n:?}")).collect();
    if names.len() > SHOWN {
        quoted.push(format!("and {} more", names.len() - SHOWN));
    }
    format!("{kind} ({}: {})", names.len(), quoted.join(", "))
}

/// An image's target and labels, as the collector sees it.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub name: String,
    pub target: Digest,
    pub labels: HashMap<String, String>,
}

/// A lease as the collector sees it: what it holds and whether it is flat.
#[derive(Debug, Clone)]
pub struct LeaseHold {
    pub id: String,
    pub flat: bool,
    pub resources: Vec<Leased>,
}

/// The embedded metadata database.
pub struct Metadata {
    db: Database,
    /// Held for reading while references are added (images created or retargeted, resources
    /// added to leases), and for writing by a garbage collection from mark to sweep, so no
    /// collection acts on a view a concurrent change made stale.
    gate: RwLock<()>,
    /// Makes generated lease ids unique within the process.
    counter: AtomicU64,
}

impl Metadata {
    /// Opens (creating if needed) `root/metadata.redb`.
    pub fn open(root: impl AsRef<Path>) -> Result<Arc<Self>, Error> {
        Ok(Self::open_inner(root.as_ref())?)
    }

    fn open_inner(root: &Path) -> Result<Arc<Self>> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            path: root.to_owned(),
            source,
        })?;
        let db = strata_store::open_database(&root.join("metadata.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(NAMESPACES)?;
        tx.open_table(IMAGES)?;
        tx.open_table(LEASES)?;
        tx.open_table(LEASE_RESOURCES)?;
        tx.open_table(STATE)?;
        tx.open_table(CLAIMS)?;
        tx.commit()?;
        Ok(Arc::new(Self {
            db,
            gate: RwLock::new(()),
            counter: AtomicU64::new(0),
        }))
    }

    /// The lock a collection holds for writing (see the field's documentation).
    pub fn gate(&self) -> &RwLock<()> {
        &self.gate
    }

    /// Records, inside `tx`, that a reference was dropped: a collection is owed.
    fn bump_dropped(tx: &redb::WriteTransaction) -> Result<()> {
        let mut t = tx.open_table(STATE)?;
        let n = t.get(DROPPED)?.map_or(0, |v| v.value());
        t.insert(DROPPED, n + 1)?;
        Ok(())
    }

    /// Records, inside `tx`, that the blob or snapshot `kind`/`id` (a lease resource's type and
    /// id) was attached and is let go: past the window between writing and attaching that the
    /// grace period covers. Other types (images, ingests) are not collected objects: ignored.
    fn claim(tx: &redb::WriteTransaction, ns: &str, kind: &str, id: &str) -> Result<()> {
        if kind == "content" || kind.starts_with("snapshots/") {
            tx.open_table(CLAIMS)?.insert((ns, kind, id), ())?;
        }
        Ok(())
    }

    /// Claims, inside `tx`, what an image record let go: its target and what its own
    /// `containerd.io/gc.ref.*` labels name.
    fn claim_image(tx: &redb::WriteTransaction, ns: &str, rec: &ImageRecord) -> Result<()> {
        Self::claim(tx, ns, "content", &rec.digest)?;
        for (k, v) in &rec.labels {
            match leases::gc::parse(k, v) {
                Some(leases::gc::LabelRef::Content(d)) => Self::claim(tx, ns, "content", d)?,
                Some(leases::gc::LabelRef::Snapshot { snapshotter, key }) => {
                    Self::claim(tx, ns, &format!("snapshots/{snapshotter}"), key)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The claimed blobs and snapshots of `ns`: attached (held by a lease resource or an image)
    /// and let go since, so past the window the grace period covers.
    pub fn claims(&self, ns: &str) -> Result<Vec<Leased>, Error> {
        let run = || -> Result<Vec<Leased>> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(CLAIMS)?;
            let mut out = Vec::new();
            for entry in t.range((ns, "", "")..)? {
                let (k, _) = entry?;
                let (kns, kind, id) = k.value();
                if kns != ns {
                    break;
                }
                match Resource::new(kind, id).parse() {
                    Ok(l) => out.push(l),
                    Err(e) => tracing::debug!(error = %e, "ignoring an unreadable claim"),
                }
            }
            Ok(out)
        };
        Ok(run()?)
    }

    /// Forgets the claims on `gone` (objects removed, or found absent by a collection).
    pub fn drop_claims(&self, ns: &str, gone: &[Leased]) -> Result<(), Error> {
        let run = || -> Result<()> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(CLAIMS)?;
                for l in gone {
                    let r = l.to_resource();
                    t.remove((ns, r.kind.as_str(), r.id.as_str()))?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        Ok(run()?)
    }

    /// The current drop counter, read by a collection as it starts.
    pub fn dropped(&self) -> Result<u64, Error> {
        let run = || -> Result<u64> {
            let tx = self.db.begin_read()?;
            Ok(tx.open_table(STATE)?.get(DROPPED)?.map_or(0, |v| v.value()))
        };
        Ok(run()?)
    }

    /// Records that a collection starting at drop counter `at` succeeded.
    pub fn collected(&self, at: u64) -> Result<(), Error> {
        let run = || -> Result<()> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(STATE)?;
                let done = t.get(COLLECTED)?.map_or(0, |v| v.value());
                t.insert(COLLECTED, done.max(at))?;
            }
            tx.commit()?;
            Ok(())
        };
        Ok(run()?)
    }

    /// Whether references were dropped since the last successful collection started (a
    /// deletion just before a crash, or a collection that failed).
    pub fn gc_owed(&self) -> Result<bool, Error> {
        let run = || -> Result<bool> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(STATE)?;
            let dropped = t.get(DROPPED)?.map_or(0, |v| v.value());
            let done = t.get(COLLECTED)?.map_or(0, |v| v.value());
            Ok(dropped > done)
        };
        Ok(run()?)
    }

    /// Runs `f` on the blocking pool.
    pub(crate) async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Metadata) -> Result<T> + Send + 'static,
    {
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(StoreError::from)?;
        Ok(result?)
    }

    // ---- namespaces ----

    fn ensure_namespace(tx: &redb::WriteTransaction, ns: &str) -> Result<()> {
        let mut t = tx.open_table(NAMESPACES)?;
        if t.get(ns)?.is_none() {
            let rec = NamespaceRecord {
                labels: HashMap::new(),
                created: nanos(SystemTime::now()),
            };
            t.insert(ns, rec.encode_to_vec().as_slice())?;
            tracing::debug!(namespace = %ns, "namespace recorded");
        }
        Ok(())
    }

    fn get_namespace(&self, name: &str) -> Result<Namespace> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(NAMESPACES)?;
        let value = t.get(name)?.ok_or_else(|| namespace_not_found(name))?;
        let rec: NamespaceRecord = decode(name, value.value())?;
        Ok(Namespace {
            name: name.to_owned(),
            labels: rec.labels,
        })
    }

    fn list_namespaces(&self, filter: &Filter) -> Result<Vec<Namespace>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(NAMESPACES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let rec: NamespaceRecord = decode(k.value(), v.value())?;
            let ns = Namespace {
                name: k.value().to_owned(),
                labels: rec.labels,
            };
            if filter.matches(&ns) {
                out.push(ns);
            }
        }
        Ok(out)
    }

    /// Every namespace recorded, by name.
    pub fn namespace_names(&self) -> Result<Vec<String>, Error> {
        let run = || -> Result<Vec<String>> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(NAMESPACES)?;
            let mut out = Vec::new();
            for entry in t.iter()? {
                out.push(entry?.0.value().to_owned());
            }
            Ok(out)
        };
        Ok(run()?)
    }

    fn create_namespace(&self, mut ns: Namespace) -> Result<Namespace> {
        identifiers::validate_namespace(&ns.name)?;
        // As for updates: a label with an empty value is no label.
        ns.labels.retain(|_, v| !v.is_empty());
        labels::validate(&ns.labels).map_err(|e| e.context(format!("namespace {:?}", ns.name)))?;
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(NAMESPACES)?;
            if t.get(ns.name.as_str())?.is_some() {
                return Err(Error::already_exists(format!(
                    "namespace {:?}: already exists",
                    ns.name
                ))
                .into());
            }
            let rec = NamespaceRecord {
                labels: ns.labels.clone(),
                created: nanos(SystemTime::now()),
            };
            t.insert(ns.name.as_str(), rec.encode_to_vec().as_slice())?;
        }
        tx.commit()?;
        Ok(ns)
    }

    fn update_namespace(&self, ns: Namespace, paths: &[String]) -> Result<Namespace> {
        identifiers::validate_namespace(&ns.name)?;
        let tx = self.db.begin_write()?;
        let labels;
        {
            let mut t = tx.open_table(NAMESPACES)?;
            let mut rec: NamespaceRecord = {
                let value = t
                    .get(ns.name.as_str())?
                    .ok_or_else(|| namespace_not_found(&ns.name))?;
                decode(&ns.name, value.value())?
            };
            if paths.is_empty() || paths.iter().any(|p| p == "labels") {
                rec.labels = ns.labels.clone();
            }
            for path in paths {
                if path == "labels" {
                    continue;
                }
                let Some(key) = path.strip_prefix("labels.") else {
                    return Err(Error::invalid_argument(format!(
                        "cannot update {path:?} field on namespace {:?}",
                        ns.name
                    ))
                    .into());
                };
                match ns.labels.get(key) {
                    Some(v) => rec.labels.insert(key.to_owned(), v.clone()),
                    None => rec.labels.remove(key),
                };
            }
            // containerd's semantics: a label set to the empty string is removed.
            rec.labels.retain(|_, v| !v.is_empty());
            labels::validate(&rec.labels)
                .map_err(|e| e.context(format!("namespace {:?}", ns.name)))?;
            t.insert(ns.name.as_str(), rec.encode_to_vec().as_slice())?;
            labels = rec.labels;
        }
        tx.commit()?;
        Ok(Namespace {
            name: ns.name,
            labels,
        })
    }

    /// What of `ns` this store holds: images and leases, described for a refusal.
    fn namespace_holdings(&self, ns: &str) -> Result<Vec<String>> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        let images = Self::names_in(&tx.open_table(IMAGES)?, ns)?;
        if !images.is_empty() {
            out.push(describe("images", &images));
        }
        let leases = Self::names_in(&tx.open_table(LEASES)?, ns)?;
        if !leases.is_empty() {
            out.push(describe("leases", &leases));
        }
        Ok(out)
    }

    fn names_in(
        t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        ns: &str,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, _) = entry?;
            let (kns, name) = k.value();
            if kns != ns {
                break;
            }
            out.push(name.to_owned());
        }
        Ok(out)
    }

    fn delete_namespace(&self, name: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let images = Self::names_in(&tx.open_table(IMAGES)?, name)?;
            let leases = Self::names_in(&tx.open_table(LEASES)?, name)?;
            let mut left = Vec::new();
            if !images.is_empty() {
                left.push(describe("images", &images));
            }
            if !leases.is_empty() {
                left.push(describe("leases", &leases));
            }
            if !left.is_empty() {
                return Err(not_empty(name, &left).into());
            }
            let mut t = tx.open_table(NAMESPACES)?;
            if t.remove(name)?.is_none() {
                return Err(namespace_not_found(name));
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ---- images ----

    fn get_image(&self, ns: &str, name: &str) -> Result<Image> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(IMAGES)?;
        let value = t.get((ns, name))?.ok_or_else(|| image_not_found(name))?;
        to_image(name, decode(name, value.value())?)
    }

    fn list_images(&self, ns: &str, filter: &Filter) -> Result<Vec<Image>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(IMAGES)?;
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, v) = entry?;
            let (kns, name) = k.value();
            if kns != ns {
                break;
            }
            let image = to_image(name, decode(name, v.value())?)?;
            if filter.matches(&image) {
                out.push(image);
            }
        }
        Ok(out)
    }

    /// Every image of `ns` with its target and labels, for the collector.
    pub fn image_refs(&self, ns: &str) -> Result<Vec<ImageRef>, Error> {
        Ok(self
            .list_images(ns, &Filter::default())?
            .into_iter()
            .map(|i| ImageRef {
                name: i.name,
                target: i.target.digest,
                labels: i.labels,
            })
            .collect())
    }

    fn validate_image(image: &Image) -> Result<()> {
        images::validate_name(&image.name)?;
        labels::validate(&image.labels)
            .map_err(|e| e.context(format!("image {:?}", image.name)))?;
        images::validate_target(&image.name, &image.target)?;
        Ok(())
    }

    fn record_of(image: &Image, created: i64, updated: i64) -> ImageRecord {
        ImageRecord {
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.to_string(),
            size: image.target.size,
            annotations: image.target.annotations.clone(),
            labels: image.labels.clone(),
            created,
            updated,
        }
    }

    fn create_image(&self, ns: &str, mut image: Image) -> Result<Image> {
        Self::validate_image(&image)?;
        let now = SystemTime::now();
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(IMAGES)?;
            if t.get((ns, image.name.as_str()))?.is_some() {
                return Err(Error::already_exists(format!(
                    "image {:?}: already exists",
                    image.name
                ))
                .into());
            }
            let rec = Self::record_of(&image, nanos(now), nanos(now));
            t.insert((ns, image.name.as_str()), rec.encode_to_vec().as_slice())?;
            Self::ensure_namespace(&tx, ns)?;
        }
        tx.commit()?;
        strata_core::crashpoint::hit("images.create.committed");
        image.created_at = from_nanos(nanos(now));
        image.updated_at = image.created_at;
        Ok(image)
    }

    /// Returns the stored image and whether a reference may have been dropped (the target or
    /// the labels changed), which is the collector's business.
    fn update_image(&self, ns: &str, image: Image, paths: &[String]) -> Result<(Image, bool)> {
        images::validate_name(&image.name)?;
        let name = image.name.clone();
        let tx = self.db.begin_write()?;
        let (stored, dropped);
        {
            let mut t = tx.open_table(IMAGES)?;
            let rec: ImageRecord = {
                let value = t
                    .get((ns, name.as_str()))?
                    .ok_or_else(|| image_not_found(&name))?;
                decode(&name, value.value())?
            };
            let old = to_image(&name, rec.clone())?;
            let mut updated = old.clone();
            if paths.is_empty() {
                updated.labels = image.labels;
                updated.target = image.target;
            } else {
                for path in paths {
                    if let Some(key) = path.strip_prefix("labels.") {
                        match image.labels.get(key) {
                            Some(v) => updated.labels.insert(key.to_owned(), v.clone()),
                            None => updated.labels.remove(key),
                        };
                    } else if let Some(key) = path.strip_prefix("annotations.") {
                        match image.target.annotations.get(key) {
                            Some(v) => updated.target.annotations.insert(key.to_owned(), v.clone()),
                            None => updated.target.annotations.remove(key),
                        };
                    } else {
                        match path.as_str() {
                            "labels" => updated.labels.clone_from(&image.labels),
                            "target" => updated.target = image.target.clone(),
                            "annotations" => updated
                                .target
                                .annotations
                                .clone_from(&image.target.annotations),
                            _ => {
                                return Err(Error::invalid_argument(format!(
                                    "cannot update {path:?} field on image {name:?}"
                                ))
                                .into());
                            }
                        }
                    }
                }
            }
            Self::validate_image(&updated)?;
            let now = nanos(SystemTime::now());
            let new_rec = Self::record_of(&updated, rec.created, now);
            t.insert((ns, name.as_str()), new_rec.encode_to_vec().as_slice())?;
            dropped = old.target.digest != updated.target.digest || old.labels != updated.labels;
            updated.updated_at = from_nanos(now);
            stored = updated;
            if dropped {
                Self::claim_image(&tx, ns, &rec)?;
            }
        }
        if dropped {
            Self::bump_dropped(&tx)?;
        }
        tx.commit()?;
        Ok((stored, dropped))
    }

    fn delete_image(&self, ns: &str, name: &str, target: Option<&Digest>) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(IMAGES)?;
            if let Some(want) = target {
                let rec: ImageRecord = {
                    let value = t.get((ns, name))?.ok_or_else(|| image_not_found(name))?;
                    decode(name, value.value())?
                };
                if rec.digest != want.to_string() {
                    return Err(Error::not_found(format!(
                        "image {name:?} has target {}, not {want}",
                        rec.digest
                    ))
                    .into());
                }
            }
            let rec: ImageRecord = {
                let Some(removed) = t.remove((ns, name))? else {
                    return Err(image_not_found(name));
                };
                decode(name, removed.value())?
            };
            Self::claim_image(&tx, ns, &rec)?;
        }
        Self::bump_dropped(&tx)?;
        tx.commit()?;
        Ok(())
    }

    // ---- leases ----

    fn generate_lease_id(&self) -> String {
        let now = nanos(SystemTime::now());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut h = Sha256::new();
        h.update(now.to_le_bytes());
        h.update(n.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        let suffix = hex::encode(&h.finalize()[..4]);
        format!("{now}-{suffix}")
    }

    fn create_lease(
        &self,
        ns: &str,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<(Lease, bool)> {
        let id = if id.is_empty() {
            self.generate_lease_id()
        } else {
            id.to_owned()
        };
        leases::validate_id(&id)?;
        labels::validate(&labels).map_err(|e| e.context(format!("lease {id:?}")))?;
        let expires = leases::expiry(&id, &labels)?.is_some();
        let now = nanos(SystemTime::now());
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(LEASES)?;
            if t.get((ns, id.as_str()))?.is_some() {
                return Err(Error::already_exists(format!("lease {id:?}: already exists")).into());
            }
            let rec = LeaseRecord {
                created: now,
                labels: labels.clone(),
            };
            t.insert((ns, id.as_str()), rec.encode_to_vec().as_slice())?;
            Self::ensure_namespace(&tx, ns)?;
        }
        tx.commit()?;
        Ok((
            Lease {
                id,
                created_at: from_nanos(now),
                labels,
            },
            expires,
        ))
    }

    fn delete_lease_in(tx: &redb::WriteTransaction, ns: &str, id: &str) -> Result<bool> {
        let existed = tx.open_table(LEASES)?.remove((ns, id))?.is_some();
        let mut r = tx.open_table(LEASE_RESOURCES)?;
        let keys: Vec<(String, String)> = {
            let mut keys = Vec::new();
            for entry in r.range((ns, id, "", "")..)? {
                let (k, _) = entry?;
                let (kns, kid, kind, rid) = k.value();
                if kns != ns || kid != id {
                    break;
                }
                keys.push((kind.to_owned(), rid.to_owned()));
            }
            keys
        };
        for (kind, rid) in &keys {
            r.remove((ns, id, kind.as_str(), rid.as_str()))?;
            Self::claim(tx, ns, kind, rid)?;
        }
        Ok(existed)
    }

    fn delete_lease(&self, ns: &str, id: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        if !Self::delete_lease_in(&tx, ns, id)? {
            return Err(lease_not_found(id));
        }
        Self::bump_dropped(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn lease_exists(tx: &redb::WriteTransaction, ns: &str, id: &str) -> Result<()> {
        if tx.open_table(LEASES)?.get((ns, id))?.is_none() {
            return Err(lease_not_found(id));
        }
        Ok(())
    }

    fn list_leases(&self, ns: &str, filter: &Filter) -> Result<Vec<Lease>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LEASES)?;
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, v) = entry?;
            let (kns, id) = k.value();
            if kns != ns {
                break;
            }
            let lease = to_lease(id, decode(id, v.value())?);
            if filter.matches(&lease) {
                out.push(lease);
            }
        }
        Ok(out)
    }

    fn add_resource(&self, ns: &str, id: &str, resource: &Resource) -> Result<()> {
        let normal = resource.parse()?.to_resource();
        let tx = self.db.begin_write()?;
        Self::lease_exists(&tx, ns, id)?;
        tx.open_table(LEASE_RESOURCES)?
            .insert((ns, id, normal.kind.as_str(), normal.id.as_str()), ())?;
        tx.commit()?;
        Ok(())
    }

    fn delete_resource(&self, ns: &str, id: &str, resource: &Resource) -> Result<()> {
        let normal = resource.parse()?.to_resource();
        let tx = self.db.begin_write()?;
        Self::lease_exists(&tx, ns, id)?;
        let held = tx
            .open_table(LEASE_RESOURCES)?
            .remove((ns, id, normal.kind.as_str(), normal.id.as_str()))?
            .is_some();
        if held {
            Self::claim(&tx, ns, &normal.kind, &normal.id)?;
            Self::bump_dropped(&tx)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn resources_in(
        t: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
        ns: &str,
        id: &str,
    ) -> Result<Vec<Resource>> {
        let mut out = Vec::new();
        for entry in t.range((ns, id, "", "")..)? {
            let (k, _) = entry?;
            let (kns, kid, kind, rid) = k.value();
            if kns != ns || kid != id {
                break;
            }
            out.push(Resource::new(kind, rid));
        }
        Ok(out)
    }

    fn list_resources(&self, ns: &str, id: &str) -> Result<Vec<Resource>> {
        let tx = self.db.begin_read()?;
        if tx.open_table(LEASES)?.get((ns, id))?.is_none() {
            return Err(lease_not_found(id));
        }
        Self::resources_in(&tx.open_table(LEASE_RESOURCES)?, ns, id)
    }

    /// The leases of `ns` that have not expired at `now`, with what they hold.
    pub fn lease_holds(&self, ns: &str, now: SystemTime) -> Result<Vec<LeaseHold>, Error> {
        let run = || -> Result<Vec<LeaseHold>> {
            let tx = self.db.begin_read()?;
            let resources = tx.open_table(LEASE_RESOURCES)?;
            let mut out = Vec::new();
            for lease in self.list_leases(ns, &Filter::default())? {
                if matches!(lease.expires_at(), Ok(Some(t)) if t <= now) {
                    continue;
                }
                let mut held = Vec::new();
                for r in Self::resources_in(&resources, ns, &lease.id)? {
                    match r.parse() {
                        Ok(l) => held.push(l),
                        Err(e) => {
                            tracing::warn!(lease = %lease.id, error = %e, "resource ignored")
                        }
                    }
                }
                out.push(LeaseHold {
                    flat: lease.labels.contains_key(leases::gc::FLAT),
                    id: lease.id,
                    resources: held,
                });
            }
            Ok(out)
        };
        Ok(run()?)
    }

    /// Every lease of every namespace with an expiry: (namespace, id, expiry).
    fn expiries(&self) -> Result<Vec<(String, String, SystemTime)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LEASES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let (ns, id) = k.value();
            let rec: LeaseRecord = decode(id, v.value())?;
            match leases::expiry(id, &rec.labels) {
                Ok(Some(at)) => out.push((ns.to_owned(), id.to_owned(), at)),
                Ok(None) => {}
                // Recorded before validation or by an older version: the lease never expires.
                Err(e) => tracing::debug!(error = %e, "ignoring an unreadable expiry"),
            }
        }
        Ok(out)
    }

    /// The earliest lease expiry, past or future.
    pub fn next_expiry(&self) -> Result<Option<SystemTime>, Error> {
        Ok(self.expiries()?.into_iter().map(|(_, _, at)| at).min())
    }

    /// Deletes every lease expired at `now`; returns (namespace, id) of each.
    pub fn delete_expired_leases(&self, now: SystemTime) -> Result<Vec<(String, String)>, Error> {
        let run = || -> Result<Vec<(String, String)>> {
            let expired: Vec<(String, String)> = self
                .expiries()?
                .into_iter()
                .filter(|(_, _, at)| *at <= now)
                .map(|(ns, id, _)| (ns, id))
                .collect();
            if expired.is_empty() {
                return Ok(expired);
            }
            let tx = self.db.begin_write()?;
            for (ns, id) in &expired {
                Self::delete_lease_in(&tx, ns, id)?;
            }
            Self::bump_dropped(&tx)?;
            tx.commit()?;
            Ok(expired)
        };
        Ok(run()?)
    }
}

/// FailedPrecondition for a namespace that still holds `left`.
pub(crate) fn not_empty(ns: &str, left: &[String]) -> Error {
    Error::failed_precondition(format!(
        "namespace {ns:?} must be empty, but it still has {}",
        left.join(", ")
    ))
}

/// A boxed future, for the object-safe hooks between the store and the collector.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the store asks of the world outside its database: the garbage collector and the other
/// services. Implemented by [`crate::gc::Collector`]; [`NoEffects`] for a store alone.
pub trait Effects: Send + Sync + 'static {
    /// References were dropped (an image or lease deleted, a resource released, a target
    /// changed): collect soon, or now and wait when `sync`.
    fn references_dropped(&self, sync: bool) -> BoxFuture<'_, Result<(), Error>>;
    /// A lease with an expiry was created or a lease deleted: re-arm the expiry timer.
    fn expiries_changed(&self);
    /// What `ns` still holds in other services (blobs, snapshots), described for a refusal;
    /// empty when nothing.
    fn residents<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>>;
}

/// No collector and no other services: deletions leave content alone and namespaces are empty
/// when this store holds nothing of them.
pub struct NoEffects;

impl Effects for NoEffects {
    fn references_dropped(&self, _sync: bool) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
    fn expiries_changed(&self) {}
    fn residents<'a>(&'a self, _ns: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn check_ns(ns: &str) -> Result<(), Error> {
    identifiers::validate_namespace(ns)
}

/// The local [`ImageStore`].
#[derive(Clone)]
pub struct LocalImages {
    meta: Arc<Metadata>,
    effects: Arc<dyn Effects>,
}

impl LocalImages {
    pub fn new(meta: Arc<Metadata>, effects: Arc<dyn Effects>) -> Self {
        Self { meta, effects }
    }
}

impl ImageStore for LocalImages {
    async fn get(&self, ns: &str, name: &str) -> Result<Image, Error> {
        check_ns(ns)?;
        images::validate_name(name)?;
        let (ns, name) = (ns.to_owned(), name.to_owned());
        self.meta.blocking(move |m| m.get_image(&ns, &name)).await
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Image>, Error> {
        check_ns(ns)?;
        let filter = Filter::parse_all(filters)?;
        let ns = ns.to_owned();
        self.meta
            .blocking(move |m| m.list_images(&ns, &filter))
            .await
    }

    async fn create(&self, ns: &str, image: Image) -> Result<Image, Error> {
        check_ns(ns)?;
        let _gate = self.meta.gate.read().await;
        let ns = ns.to_owned();
        self.meta
            .blocking(move |m| m.create_image(&ns, image))
            .await
    }

    async fn update(&self, ns: &str, image: Image, fieldpaths: &[String]) -> Result<Image, Error> {
        check_ns(ns)?;
        let (image, dropped) = {
            let _gate = self.meta.gate.read().await;
            let (ns, paths) = (ns.to_owned(), fieldpaths.to_vec());
            self.meta
                .blocking(move |m| m.update_image(&ns, image, &paths))
                .await?
        };
        if dropped {
            self.effects.references_dropped(false).await?;
        }
        Ok(image)
    }

    async fn delete(&self, ns: &str, name: &str, opts: DeleteOptions) -> Result<(), Error> {
        check_ns(ns)?;
        images::validate_name(name)?;
        let (n, owned) = (ns.to_owned(), name.to_owned());
        let target = opts.target.clone();
        self.meta
            .blocking(move |m| m.delete_image(&n, &owned, target.as_ref()))
            .await?;
        tracing::debug!(namespace = %ns, image = %name, sync = opts.sync, "image deleted");
        strata_core::crashpoint::hit("images.delete.committed");
        self.effects
            .references_dropped(opts.sync)
            .await
            .map_err(|e| {
                e.context(format!(
                    "image {name:?} deleted; its space is freed by a later garbage collection"
                ))
            })
    }
}

/// The local [`LeaseStore`].
#[derive(Clone)]
pub struct LocalLeases {
    meta: Arc<Metadata>,
    effects: Arc<dyn Effects>,
}

impl LocalLeases {
    pub fn new(meta: Arc<Metadata>, effects: Arc<dyn Effects>) -> Self {
        Self { meta, effects }
    }
}

impl LeaseStore for LocalLeases {
    async fn create(
        &self,
        ns: &str,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<Lease, Error> {
        check_ns(ns)?;
        let (ns, id) = (ns.to_owned(), id.to_owned());
        let (lease, expires) = self
            .meta
            .blocking(move |m| m.create_lease(&ns, &id, labels))
            .await?;
        if expires {
            self.effects.expiries_changed();
        }
        Ok(lease)
    }

    async fn delete(&self, ns: &str, id: &str, sync: bool) -> Result<(), Error> {
        check_ns(ns)?;
        let (n, i) = (ns.to_owned(), id.to_owned());
        self.meta.blocking(move |m| m.delete_lease(&n, &i)).await?;
        tracing::debug!(namespace = %ns, lease = %id, sync, "lease deleted");
        self.effects.expiries_changed();
        self.effects.references_dropped(sync).await.map_err(|e| {
            e.context(format!(
                "lease {id:?} deleted; its space is freed by a later garbage collection"
            ))
        })
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Lease>, Error> {
        check_ns(ns)?;
        let filter = Filter::parse_all(filters)?;
        let ns = ns.to_owned();
        self.meta
            .blocking(move |m| m.list_leases(&ns, &filter))
            .await
    }

    async fn add_resource(&self, ns: &str, id: &str, resource: Resource) -> Result<(), Error> {
        check_ns(ns)?;
        let _gate = self.meta.gate.read().await;
        let (ns, id) = (ns.to_owned(), id.to_owned());
        self.meta
            .blocking(move |m| m.add_resource(&ns, &id, &resource))
            .await
    }

    async fn delete_resource(&self, ns: &str, id: &str, resource: Resource) -> Result<(), Error> {
        check_ns(ns)?;
        let (ns, id) = (ns.to_owned(), id.to_owned());
        self.meta
            .blocking(move |m| m.delete_resource(&ns, &id, &resource))
            .await?;
        self.effects.references_dropped(false).await
    }

    async fn list_resources(&self, ns: &str, id: &str) -> Result<Vec<Resource>, Error> {
        check_ns(ns)?;
        let (ns, id) = (ns.to_owned(), id.to_owned());
        self.meta
            .blocking(move |m| m.list_resources(&ns, &id))
            .await
    }
}

/// The local [`NamespaceStore`].
#[derive(Clone)]
pub struct LocalNamespaces {
    meta: Arc<Metadata>,
    effects: Arc<dyn Effects>,
}

impl LocalNamespaces {
    pub fn new(meta: Arc<Metadata>, effects: Arc<dyn Effects>) -> Self {
        Self { meta, effects }
    }
}

impl NamespaceStore for LocalNamespaces {
    async fn get(&self, name: &str) -> Result<Namespace, Error> {
        check_ns(name)?;
        let name = name.to_owned();
        self.meta.blocking(move |m| m.get_namespace(&name)).await
    }

    async fn list(&self, filter: &str) -> Result<Vec<Namespace>, Error> {
        let filter = Filter::parse_all(&[filter])?;
        self.meta
            .blocking(move |m| m.list_namespaces(&filter))
            .await
    }

    async fn create(&self, namespace: Namespace) -> Result<Namespace, Error> {
        self.meta
            .blocking(move |m| m.create_namespace(namespace))
            .await
    }

    async fn update(
        &self,
        namespace: Namespace,
        fieldpaths: &[String],
    ) -> Result<Namespace, Error> {
        let paths = fieldpaths.to_vec();
        self.meta
            .blocking(move |m| m.update_namespace(namespace, &paths))
            .await
    }

    async fn delete(&self, name: &str) -> Result<(), Error> {
        check_ns(name)?;
        let owned = name.to_owned();
        let mut left = self
            .meta
            .blocking(move |m| {
                m.get_namespace(&owned)?;
                m.namespace_holdings(&owned)
            })
            .await?;
        left.extend(self.effects.residents(name).await.map_err(|e| {
            e.context(format!(
                "namespace {name:?}: checking what other services hold"
            ))
        })?);
        if !left.is_empty() {
            return Err(not_empty(name, &left));
        }
        let owned = name.to_owned();
        self.meta
            .blocking(move |m| m.delete_namespace(&owned))
            .await?;
        tracing::debug!(namespace = %name, "namespace deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn describe_shows_three_names() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(
            describe("images", &names),
            r#"images (5: "a", "b", "c", and 2 more)"#
        );
        assert_eq!(describe("leases", &names[..1]), r#"leases (1: "a")"#);
    }

    #[test]
    fn generated_lease_ids_are_valid_and_distinct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("open");
        let a = meta.generate_lease_id();
        let b = meta.generate_lease_id();
        assert_ne!(a, b);
        leases::validate_id(&a).expect("valid id");
    }

    #[test]
    fn what_is_let_go_is_claimed_until_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("open");
        let (blob, target, labelled) = (Digest::of(b"b"), Digest::of(b"t"), Digest::of(b"l"));
        meta.create_lease("default", "l", HashMap::new())
            .expect("create");
        for r in [
            Resource::new("content", blob.to_string()),
            Resource::new("snapshots/overlayfs", "s"),
            Resource::new("ingests", "ref"),
            Resource::new("images", "held:1"),
        ] {
            meta.add_resource("default", "l", &r).expect("add");
        }
        assert_eq!(meta.claims("default").expect("claims"), Vec::new());
        meta.delete_lease("default", "l").expect("delete");
        let image = Image {
            name: "app:1".into(),
            labels: HashMap::from([(
                "containerd.io/gc.ref.content.x".to_owned(),
                labelled.to_string(),
            )]),
            target: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: target.clone(),
                size: 1,
                annotations: HashMap::new(),
            },
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        meta.create_image("other", image).expect("image");
        meta.delete_image("other", "app:1", None).expect("delete");
        let snapshot = Leased::Snapshot {
            snapshotter: "overlayfs".into(),
            key: "s".into(),
        };
        let mut claims = meta.claims("default").expect("claims");
        claims.sort_by_key(|l| l.to_resource().kind);
        assert_eq!(
            claims,
            vec![Leased::Content(blob.clone()), snapshot.clone()]
        );
        let mut other = meta.claims("other").expect("claims");
        other.sort_by_key(|l| l.to_resource().id);
        let mut want = vec![Leased::Content(target), Leased::Content(labelled)];
        want.sort_by_key(|l| l.to_resource().id);
        assert_eq!(other, want);
        meta.drop_claims("default", &[snapshot]).expect("drop");
        assert_eq!(
            meta.claims("default").expect("claims"),
            vec![Leased::Content(blob)]
        );
    }

    #[test]
    fn expired_leases_are_deleted_with_their_resources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("open");
        let past = leases::format_rfc3339(SystemTime::now() - Duration::from_secs(5));
        let labels = HashMap::from([(leases::gc::EXPIRE.to_owned(), past)]);
        meta.create_lease("default", "old", labels).expect("create");
        meta.create_lease("default", "forever", HashMap::new())
            .expect("create");
        let d = Digest::of(b"x");
        meta.add_resource("default", "old", &Resource::new("content", d.to_string()))
            .expect("add");
        let now = SystemTime::now();
        assert!(meta.next_expiry().expect("next").is_some_and(|t| t <= now));
        assert_eq!(
            meta.lease_holds("default", now).expect("holds").len(),
            1,
            "an expired lease holds nothing"
        );
        let gone = meta.delete_expired_leases(now).expect("delete");
        assert_eq!(gone, vec![("default".to_owned(), "old".to_owned())]);
        assert!(meta.next_expiry().expect("next").is_none());
        let tx = meta.db.begin_read().expect("read");
        let left = Metadata::resources_in(
            &tx.open_table(LEASE_RESOURCES).expect("table"),
            "default",
            "old",
        )
        .expect("resources");
        assert!(left.is_empty());
    }
}
