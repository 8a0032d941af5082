//! The local content store.
//!
//! On disk, under the root:
//! - `blobs/sha256/<hex>`: committed blobs, stored once whatever the number of namespaces that
//!   hold them. A blob appears here only after its digest was verified and its data fsynced, by
//!   an atomic rename from its ingest directory.
//! - `ingest/<id>/data`: in-progress writes, `<id>` being the sha256 of namespace and ref.
//! - `metadata.redb`: which namespace holds which blob (with labels and times) and the open
//!   ingests, in an embedded transactional database (redb: pure Rust, ACID with fsync on commit,
//!   no C library or server to ship).
//!
//! Crash safety: data is fsynced and renamed before the database commit that makes it visible;
//! at start-up, blobs no namespace holds and ingest directories no record names are removed, so
//! after a kill -9 at any point nothing committed is lost and nothing half-written is visible.

mod blobs;
mod ingests;
mod locks;
mod reader;
mod writer;

pub use reader::LocalReader;
pub use writer::LocalWriter;

use redb::{Database, ReadableTable, TableDefinition};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use strata_core::content::{ContentStore, Info, Status, WriterOptions};
use strata_core::filters::Filter;
use strata_core::{Digest, Error, identifiers};

/// (namespace, digest hex) → [`BlobRecord`]
const BLOBS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("blobs");
/// (digest hex, namespace) → (): which namespaces hold a blob, to know when its file can go.
const BLOB_REFS: TableDefinition<(&str, &str), ()> = TableDefinition::new("blob_refs");
/// (namespace, ref) → [`IngestRecord`]
const INGESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("ingests");

#[derive(Clone, PartialEq, prost::Message)]
struct BlobRecord {
    #[prost(uint64, tag = "1")]
    size: u64,
    #[prost(int64, tag = "2")]
    created: i64,
    #[prost(int64, tag = "3")]
    updated: i64,
    #[prost(map = "string, string", tag = "4")]
    labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct IngestRecord {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(uint64, tag = "2")]
    total: u64,
    #[prost(string, tag = "3")]
    expected: String,
    #[prost(int64, tag = "4")]
    started: i64,
}

pub use strata_store::StoreError;
use strata_store::{Result, decode, from_nanos, io_err, nanos};

fn not_found(d: &Digest) -> StoreError {
    Error::not_found(format!("content {d}: not found")).into()
}

fn ingest_not_found(reference: &str) -> StoreError {
    Error::not_found(format!("ingest ref {reference:?}: not found")).into()
}

fn validate_ref(reference: &str) -> Result<()> {
    if reference.is_empty() {
        return Err(Error::invalid_argument("ref must not be empty").into());
    }
    Ok(())
}

struct Inner {
    root: PathBuf,
    db: Database,
    /// Ingest refs with a live writer: a second writer is refused.
    locks: Mutex<HashSet<(String, String)>>,
    /// Serialises the short sections that publish or remove blob files, so a delete never
    /// removes a file a concurrent commit is making visible.
    publish: Mutex<()>,
}

/// The local, durable content store.
#[derive(Clone)]
pub struct LocalContentStore {
    inner: Arc<Inner>,
}

impl Inner {
    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join(Digest::ALGORITHM)
    }
    fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs_dir().join(hex)
    }
    fn ingest_dir(&self, id: &str) -> PathBuf {
        self.root.join("ingest").join(id)
    }
    fn data_path(&self, id: &str) -> PathBuf {
        self.ingest_dir(id).join("data")
    }

    /// Removes what a crash may have left: blob files no namespace holds, ingest directories no
    /// record names, records of blobs whose file is gone.
    fn recover(&self) -> Result<()> {
        let tx = self.db.begin_write()?;
        let mut ids = HashSet::new();
        let mut referenced = HashSet::new();
        let mut missing = Vec::new();
        {
            let ingests = tx.open_table(INGESTS)?;
            for entry in ingests.iter()? {
                let (key, value) = entry?;
                let rec: IngestRecord = decode(key.value().1, value.value())?;
                ids.insert(rec.id);
            }
            let refs = tx.open_table(BLOB_REFS)?;
            for entry in refs.iter()? {
                let (key, _) = entry?;
                let (hex, ns) = key.value();
                if self.blob_path(hex).exists() {
                    referenced.insert(hex.to_owned());
                } else {
                    missing.push((hex.to_owned(), ns.to_owned()));
                }
            }
        }
        if !missing.is_empty() {
            let mut refs = tx.open_table(BLOB_REFS)?;
            let mut blobs = tx.open_table(BLOBS)?;
            for (hex, ns) in &missing {
                tracing::error!(namespace = %ns, digest = %hex, "blob file missing; dropping its record");
                refs.remove((hex.as_str(), ns.as_str()))?;
                blobs.remove((ns.as_str(), hex.as_str()))?;
            }
        }
        tx.commit()?;

        let ingest_root = self.root.join("ingest");
        for entry in fs::read_dir(&ingest_root).map_err(io_err(&ingest_root))? {
            let entry = entry.map_err(io_err(&ingest_root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                tracing::info!(ingest = %name, "removing ingest left without a record");
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let entry = entry.map_err(io_err(&blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                tracing::info!(digest = %name, "removing blob no namespace holds");
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }
}

impl LocalContentStore {
    /// Opens (creating if needed) the store under `root` and cleans what a crash left.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self::open_inner(root.as_ref())?)
    }

    fn open_inner(root: &Path) -> Result<Self> {
        for dir in [
            root.join("blobs").join(Digest::ALGORITHM),
            root.join("ingest"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let db = strata_store::open_database(&root.join("metadata.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(BLOBS)?;
        tx.open_table(BLOB_REFS)?;
        tx.open_table(INGESTS)?;
        tx.commit()?;
        let inner = Inner {
            root: root.to_owned(),
            db,
            locks: Mutex::new(HashSet::new()),
            publish: Mutex::new(()),
        };
        inner.recover()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Where a committed blob lives on disk (for services on the same host that read it directly).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner.blob_path(d.hex())
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Inner>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(StoreError::from)?;
        Ok(result?)
    }
}

fn check_ns(ns: &str) -> Result<(), Error> {
    identifiers::validate_namespace(ns)
}

impl ContentStore for LocalContentStore {
    type Writer = LocalWriter;
    type Reader = LocalReader;

    async fn info(&self, ns: &str, digest: &Digest) -> Result<Info, Error> {
        check_ns(ns)?;
        let (ns, d) = (ns.to_owned(), digest.clone());
        self.blocking(move |i| i.info(&ns, &d)).await
    }

    async fn update(&self, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info, Error> {
        check_ns(ns)?;
        let (ns, paths) = (ns.to_owned(), fieldpaths.to_vec());
        self.blocking(move |i| i.update(&ns, info, &paths)).await
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Info>, Error> {
        check_ns(ns)?;
        let filter = Filter::parse_all(filters)?;
        let ns = ns.to_owned();
        self.blocking(move |i| i.list(&ns, &filter)).await
    }

    async fn delete(&self, ns: &str, digest: &Digest) -> Result<(), Error> {
        check_ns(ns)?;
        let (ns, d) = (ns.to_owned(), digest.clone());
        self.blocking(move |i| i.delete(&ns, &d)).await
    }

    async fn read(
        &self,
        ns: &str,
        digest: &Digest,
        offset: u64,
        size: u64,
    ) -> Result<LocalReader, Error> {
        check_ns(ns)?;
        let (ns, d) = (ns.to_owned(), digest.clone());
        let (file, len) = self.blocking(move |i| i.open_blob(&ns, &d)).await?;
        if offset > len {
            return Err(Error::out_of_range(format!(
                "read of {digest} at offset {offset} is past its length of {len} bytes"
            )));
        }
        let end = if size == 0 {
            len
        } else {
            offset.saturating_add(size).min(len)
        };
        Ok(LocalReader {
            file: Arc::new(file),
            pos: offset,
            end,
        })
    }

    async fn status(&self, ns: &str, reference: &str) -> Result<Status, Error> {
        check_ns(ns)?;
        let (ns, r) = (ns.to_owned(), reference.to_owned());
        self.blocking(move |i| {
            let rec = i
                .ingest_record(&ns, &r)?
                .ok_or_else(|| ingest_not_found(&r))?;
            i.status_of(&r, &rec)
        })
        .await
    }

    async fn list_statuses(&self, ns: &str, filters: &[String]) -> Result<Vec<Status>, Error> {
        check_ns(ns)?;
        let filter = Filter::parse_all(filters)?;
        let ns = ns.to_owned();
        self.blocking(move |i| i.list_statuses(&ns, &filter)).await
    }

    async fn abort(&self, ns: &str, reference: &str) -> Result<(), Error> {
        let (ns, r) = (ns.to_owned(), reference.to_owned());
        self.blocking(move |i| i.abort(&ns, &r)).await
    }

    async fn writer(
        &self,
        ns: &str,
        reference: &str,
        opts: WriterOptions,
    ) -> Result<LocalWriter, Error> {
        let (ns, r) = (ns.to_owned(), reference.to_owned());
        self.blocking(move |i| i.open_writer(&ns, &r, opts)).await
    }
}
