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

use prost::Message as _;
use redb::{Database, ReadableTable, TableDefinition};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use strata_core::content::futures_like::ChunkStream;
use strata_core::content::{
    CommitOptions, ContentStore, ContentWriter, Info, ReadChunk, Status, WriterOptions,
};
use strata_core::filters::Filter;
use strata_core::{Digest, Error, Kind, identifiers, labels};

/// (namespace, digest hex) → [`BlobRecord`]
const BLOBS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("blobs");
/// (digest hex, namespace) → (): which namespaces hold a blob, to know when its file can go.
const BLOB_REFS: TableDefinition<(&str, &str), ()> = TableDefinition::new("blob_refs");
/// (namespace, ref) → [`IngestRecord`]
const INGESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("ingests");

/// Size of the chunks a read is streamed in.
const READ_CHUNK: u64 = 1 << 20;

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

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the guarded data half-updated: continue.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds an ingest ref for one writer; dropping it releases the ref.
struct RefLock {
    inner: Arc<Inner>,
    key: (String, String),
}

impl Drop for RefLock {
    fn drop(&mut self) {
        lock(&self.inner.locks).remove(&self.key);
    }
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

    fn lock_ref(self: &Arc<Self>, ns: &str, reference: &str) -> Result<RefLock> {
        let key = (ns.to_owned(), reference.to_owned());
        if !lock(&self.locks).insert(key.clone()) {
            return Err(Error::unavailable(format!(
                "ref {reference:?} locked: another writer is active"
            ))
            .into());
        }
        Ok(RefLock {
            inner: self.clone(),
            key,
        })
    }

    fn is_locked(&self, ns: &str, reference: &str) -> bool {
        lock(&self.locks).contains(&(ns.to_owned(), reference.to_owned()))
    }

    fn blob_record(&self, ns: &str, d: &Digest) -> Result<Option<BlobRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BLOBS)?;
        let value = table.get((ns, d.hex()))?;
        value.map(|v| decode(&d.to_string(), v.value())).transpose()
    }

    /// Size of a blob some namespace holds, if any does.
    fn shared_size(&self, d: &Digest) -> Result<Option<u64>> {
        let tx = self.db.begin_read()?;
        let refs = tx.open_table(BLOB_REFS)?;
        let mut range = refs.range((d.hex(), "")..)?;
        let Some(first) = range.next() else {
            return Ok(None);
        };
        let (key, _) = first?;
        let (hex, ns) = key.value();
        if hex != d.hex() {
            return Ok(None);
        }
        let blobs = tx.open_table(BLOBS)?;
        let value = blobs.get((ns, hex))?;
        Ok(match value {
            Some(v) => Some(decode::<BlobRecord>(hex, v.value())?.size),
            None => None,
        })
    }

    fn ingest_record(&self, ns: &str, reference: &str) -> Result<Option<IngestRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(INGESTS)?;
        let value = table.get((ns, reference))?;
        value.map(|v| decode(reference, v.value())).transpose()
    }

    fn status_of(&self, reference: &str, rec: &IngestRecord) -> Result<Status> {
        let path = self.data_path(&rec.id);
        let (offset, updated) = match fs::metadata(&path) {
            Ok(m) => (m.len(), m.modified().unwrap_or(UNIX_EPOCH)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, from_nanos(rec.started)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(Status {
            reference: reference.to_owned(),
            offset,
            total: rec.total,
            expected: Digest::parse(&rec.expected).ok(),
            started_at: from_nanos(rec.started),
            updated_at: updated,
        })
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

    /// Makes a verified blob visible in `ns`. `ingest` names the ingest whose data becomes the
    /// blob; `None` when the blob is already on disk for another namespace.
    fn publish(
        &self,
        ns: &str,
        reference: &str,
        digest: &Digest,
        size: u64,
        ingest: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let _guard = lock(&self.publish);
        let blob = self.blob_path(digest.hex());
        match ingest {
            Some(id) => {
                let data = self.data_path(id);
                if blob.exists() {
                    fs::remove_file(&data).map_err(io_err(&data))?;
                } else {
                    fs::rename(&data, &blob).map_err(io_err(&blob))?;
                    fsync_dir(&self.blobs_dir())?;
                    strata_core::crashpoint::hit("content.commit.renamed");
                }
            }
            None => {
                if !blob.exists() {
                    return Err(Error::failed_precondition(format!(
                        "content {digest} was removed while ref {reference:?} was open; write it again"
                    ))
                    .into());
                }
            }
        }
        let now = nanos(SystemTime::now());
        let tx = self.db.begin_write()?;
        let exists;
        {
            let mut blobs = tx.open_table(BLOBS)?;
            exists = blobs.get((ns, digest.hex()))?.is_some();
            if !exists {
                let rec = BlobRecord {
                    size,
                    created: now,
                    updated: now,
                    labels,
                };
                blobs.insert((ns, digest.hex()), rec.encode_to_vec().as_slice())?;
                tx.open_table(BLOB_REFS)?.insert((digest.hex(), ns), ())?;
            }
            tx.open_table(INGESTS)?.remove((ns, reference))?;
        }
        tx.commit()?;
        strata_core::crashpoint::hit("content.commit.committed");
        if let Some(id) = ingest {
            let dir = self.ingest_dir(id);
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %e, "could not remove ingest directory");
            }
        }
        if exists {
            return Err(Error::already_exists(format!("content {digest}: already exists")).into());
        }
        Ok(())
    }

    fn open_writer(
        self: &Arc<Self>,
        ns: &str,
        reference: &str,
        opts: WriterOptions,
    ) -> Result<LocalWriter> {
        identifiers::validate_namespace(ns)?;
        validate_ref(reference)?;
        if let Some(d) = &opts.expected
            && self.blob_record(ns, d)?.is_some()
        {
            return Err(Error::already_exists(format!("content {d}: already exists")).into());
        }
        let ref_lock = self.lock_ref(ns, reference)?;
        let now = SystemTime::now();
        let state = match self.ingest_record(ns, reference)? {
            Some(mut rec) => {
                if opts.total > 0 && rec.total > 0 && opts.total != rec.total {
                    return Err(Error::failed_precondition(format!(
                        "ref {reference:?}: provided total {} differs from the ingest's {}",
                        opts.total, rec.total
                    ))
                    .into());
                }
                let mut changed = false;
                if opts.total > 0 && rec.total == 0 {
                    rec.total = opts.total;
                    changed = true;
                }
                if let Some(d) = &opts.expected
                    && rec.expected != d.to_string()
                {
                    rec.expected = d.to_string();
                    changed = true;
                }
                if changed {
                    self.put_ingest(ns, reference, &rec)?;
                }
                let (file, hasher, offset) = self.reopen(&rec.id)?;
                WriterState {
                    mode: Mode::Ingest {
                        id: rec.id,
                        file,
                        hasher,
                        offset,
                    },
                    total: rec.total,
                    expected: Digest::parse(&rec.expected).ok(),
                    started: from_nanos(rec.started),
                    updated: now,
                }
            }
            None => {
                let shared = match &opts.expected {
                    Some(d) => self
                        .shared_size(d)?
                        .filter(|&size| opts.total == 0 || opts.total == size)
                        .map(|size| (d.clone(), size)),
                    None => None,
                };
                let mode = match shared {
                    Some((digest, size)) => Mode::Shared { digest, size },
                    None => self.create_ingest(ns, reference, &opts, now)?,
                };
                WriterState {
                    mode,
                    total: opts.total,
                    expected: opts.expected,
                    started: now,
                    updated: now,
                }
            }
        };
        Ok(LocalWriter {
            inner: self.clone(),
            ns: ns.to_owned(),
            reference: reference.to_owned(),
            state: Some(Box::new(state)),
            _lock: ref_lock,
        })
    }

    fn put_ingest(&self, ns: &str, reference: &str, rec: &IngestRecord) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(INGESTS)?
            .insert((ns, reference), rec.encode_to_vec().as_slice())?;
        tx.commit()?;
        Ok(())
    }

    fn ingest_id(ns: &str, reference: &str) -> String {
        let mut h = Sha256::new();
        h.update(ns.as_bytes());
        h.update([0u8]);
        h.update(reference.as_bytes());
        hex::encode(h.finalize())
    }

    fn create_ingest(
        &self,
        ns: &str,
        reference: &str,
        opts: &WriterOptions,
        now: SystemTime,
    ) -> Result<Mode> {
        let id = Self::ingest_id(ns, reference);
        let dir = self.ingest_dir(&id);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let data = self.data_path(&id);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&data)
            .map_err(io_err(&data))?;
        let rec = IngestRecord {
            id: id.clone(),
            total: opts.total,
            expected: opts
                .expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            started: nanos(now),
        };
        self.put_ingest(ns, reference, &rec)?;
        Ok(Mode::Ingest {
            id,
            file,
            hasher: Sha256::new(),
            offset: 0,
        })
    }

    /// Reopens an interrupted ingest, re-hashing what it already holds.
    fn reopen(&self, id: &str) -> Result<(File, Sha256, u64)> {
        let dir = self.ingest_dir(id);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let data = self.data_path(id);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&data)
            .map_err(io_err(&data))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err(&data))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok((file, hasher, offset))
    }

    fn abort(&self, ns: &str, reference: &str) -> Result<()> {
        identifiers::validate_namespace(ns)?;
        validate_ref(reference)?;
        if self.is_locked(ns, reference) {
            return Err(Error::unavailable(format!(
                "ref {reference:?} is locked by an active writer"
            ))
            .into());
        }
        let tx = self.db.begin_write()?;
        let rec = {
            let mut ingests = tx.open_table(INGESTS)?;
            let removed = ingests.remove((ns, reference))?;
            match removed {
                Some(v) => decode::<IngestRecord>(reference, v.value())?,
                None => return Err(ingest_not_found(reference)),
            }
        };
        tx.commit()?;
        let dir = self.ingest_dir(&rec.id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    fn delete(&self, ns: &str, d: &Digest) -> Result<()> {
        let _guard = lock(&self.publish);
        let tx = self.db.begin_write()?;
        let still_held = {
            let mut blobs = tx.open_table(BLOBS)?;
            if blobs.remove((ns, d.hex()))?.is_none() {
                return Err(not_found(d));
            }
            let mut refs = tx.open_table(BLOB_REFS)?;
            refs.remove((d.hex(), ns))?;
            let mut range = refs.range((d.hex(), "")..)?;
            match range.next() {
                Some(entry) => entry?.0.value().0 == d.hex(),
                None => false,
            }
        };
        tx.commit()?;
        if !still_held {
            let path = self.blob_path(d.hex());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    fn info(&self, ns: &str, d: &Digest) -> Result<Info> {
        let rec = self.blob_record(ns, d)?.ok_or_else(|| not_found(d))?;
        Ok(to_info(d.clone(), rec))
    }

    fn update(&self, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let d = info.digest;
        let tx = self.db.begin_write()?;
        let rec = {
            let mut blobs = tx.open_table(BLOBS)?;
            let mut rec: BlobRecord = {
                let value = blobs.get((ns, d.hex()))?;
                match value {
                    Some(v) => decode(&d.to_string(), v.value())?,
                    None => return Err(not_found(&d)),
                }
            };
            if fieldpaths.is_empty() {
                rec.labels = info.labels;
            } else {
                for path in fieldpaths {
                    if !labels::apply_path(&mut rec.labels, &info.labels, path) {
                        return Err(Error::invalid_argument(format!(
                            "cannot update {path:?} field on content info {d}"
                        ))
                        .into());
                    }
                }
            }
            labels::validate(&rec.labels)?;
            rec.updated = nanos(SystemTime::now());
            blobs.insert((ns, d.hex()), rec.encode_to_vec().as_slice())?;
            rec
        };
        tx.commit()?;
        Ok(to_info(d, rec))
    }

    fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>> {
        let tx = self.db.begin_read()?;
        let blobs = tx.open_table(BLOBS)?;
        let mut out = Vec::new();
        for entry in blobs.range((ns, "")..)? {
            let (key, value) = entry?;
            let (kns, hex) = key.value();
            if kns != ns {
                break;
            }
            let d = Digest::parse(&format!("{}:{hex}", Digest::ALGORITHM))?;
            let info = to_info(d, decode(hex, value.value())?);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn list_statuses(&self, ns: &str, filter: &Filter) -> Result<Vec<Status>> {
        let tx = self.db.begin_read()?;
        let ingests = tx.open_table(INGESTS)?;
        let mut out = Vec::new();
        for entry in ingests.range((ns, "")..)? {
            let (key, value) = entry?;
            let (kns, reference) = key.value();
            if kns != ns {
                break;
            }
            let st = self.status_of(reference, &decode(reference, value.value())?)?;
            if filter.matches(&st) {
                out.push(st);
            }
        }
        Ok(out)
    }

    fn open_blob(&self, ns: &str, d: &Digest) -> Result<(File, u64)> {
        if self.blob_record(ns, d)?.is_none() {
            return Err(not_found(d));
        }
        let path = self.blob_path(d.hex());
        let file = File::open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        Ok((file, len))
    }
}

fn to_info(digest: Digest, rec: BlobRecord) -> Info {
    Info {
        digest,
        size: rec.size,
        created_at: from_nanos(rec.created),
        updated_at: from_nanos(rec.updated),
        labels: rec.labels,
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

/// Streams a blob in chunks, reading with `pread` on the blocking pool.
pub struct LocalReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl ChunkStream for LocalReader {
    async fn next_chunk(&mut self) -> Option<ReadChunk> {
        if self.pos >= self.end {
            return None;
        }
        let (file, pos) = (self.file.clone(), self.pos);
        let want = (self.end - pos).min(READ_CHUNK);
        let result = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; usize::try_from(want).unwrap_or(0)];
            file.read_exact_at(&mut buf, pos).map(|()| buf)
        })
        .await;
        Some(match result {
            Ok(Ok(buf)) => {
                self.pos += buf.len() as u64;
                Ok((pos, buf.into()))
            }
            Ok(Err(e)) => Err(Error::internal(format!("reading blob at {pos}: {e}"))),
            Err(e) => Err(Error::internal(format!("reading blob at {pos}: {e}"))),
        })
    }
}

enum Mode {
    Ingest {
        id: String,
        file: File,
        hasher: Sha256,
        offset: u64,
    },
    /// The expected blob is already on disk for another namespace: committing only makes it
    /// visible here, unless the client insists on writing (offset 0), which starts an ingest.
    Shared {
        digest: Digest,
        size: u64,
    },
    Committed(Digest),
}

struct WriterState {
    mode: Mode,
    total: u64,
    expected: Option<Digest>,
    started: SystemTime,
    updated: SystemTime,
}

/// A writer on the local store; holds its ref until dropped.
pub struct LocalWriter {
    inner: Arc<Inner>,
    ns: String,
    reference: String,
    /// Taken while a blocking step runs; `None` afterwards only if that step panicked.
    state: Option<Box<WriterState>>,
    _lock: RefLock,
}

impl LocalWriter {
    async fn step<T, F>(&mut self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Inner>, &str, &str, &mut WriterState) -> Result<T> + Send + 'static,
    {
        let Some(mut state) = self.state.take() else {
            return Err(Error::internal(format!(
                "writer for ref {:?} is broken; open it again",
                self.reference
            )));
        };
        let (inner, ns, r) = (self.inner.clone(), self.ns.clone(), self.reference.clone());
        let (state, result) = tokio::task::spawn_blocking(move || {
            let result = f(&inner, &ns, &r, &mut state);
            (state, result)
        })
        .await
        .map_err(|e| Error::from(StoreError::from(e)))?;
        self.state = Some(state);
        Ok(result?)
    }
}

fn write_step(
    inner: &Arc<Inner>,
    ns: &str,
    reference: &str,
    st: &mut WriterState,
    offset: u64,
    data: &[u8],
) -> Result<u64> {
    if let Mode::Shared { size, .. } = &st.mode {
        if offset == *size && data.is_empty() {
            return Ok(*size);
        }
        if offset != 0 {
            return Err(Error::out_of_range(format!(
                "write @{offset} must occur at current offset {size}"
            ))
            .into());
        }
        let opts = WriterOptions {
            total: st.total,
            expected: st.expected.clone(),
        };
        st.mode = inner.create_ingest(ns, reference, &opts, st.started)?;
    }
    let Mode::Ingest {
        id,
        file,
        hasher,
        offset: current,
    } = &mut st.mode
    else {
        return Err(
            Error::failed_precondition(format!("ref {reference:?} was already committed")).into(),
        );
    };
    let path = inner.data_path(id);
    if offset == 0 && *current > 0 {
        file.set_len(0).map_err(io_err(&path))?;
        *hasher = Sha256::new();
        *current = 0;
    } else if offset != *current {
        return Err(Error::out_of_range(format!(
            "write @{offset} must occur at current offset {current}"
        ))
        .into());
    }
    if !data.is_empty() {
        file.write_all_at(data, *current).map_err(io_err(&path))?;
        hasher.update(data);
        *current += data.len() as u64;
        strata_core::crashpoint::hit("content.write.some");
        st.updated = SystemTime::now();
    }
    Ok(*current)
}

fn commit_step(
    inner: &Arc<Inner>,
    ns: &str,
    reference: &str,
    st: &mut WriterState,
    opts: CommitOptions,
) -> Result<Digest> {
    labels::validate(&opts.labels)?;
    let expected = opts.expected.or_else(|| st.expected.clone());
    let (digest, size, ingest) = match &st.mode {
        Mode::Ingest {
            id,
            file,
            hasher,
            offset,
        } => {
            let path = inner.data_path(id);
            file.sync_data().map_err(io_err(&path))?;
            (
                Digest::from_hasher(hasher.clone()),
                *offset,
                Some(id.clone()),
            )
        }
        Mode::Shared { digest, size } => (digest.clone(), *size, None),
        Mode::Committed(d) => {
            return Err(Error::failed_precondition(format!(
                "ref {reference:?} was already committed as {d}"
            ))
            .into());
        }
    };
    if opts.size != 0 && opts.size != size {
        return Err(Error::failed_precondition(format!(
            "ref {reference:?} failed size validation: {size} != {}",
            opts.size
        ))
        .into());
    }
    if let Some(want) = &expected
        && *want != digest
    {
        return Err(Error::failed_precondition(format!(
            "ref {reference:?}: unexpected commit digest {digest}, expected {want}"
        ))
        .into());
    }
    let result = inner.publish(ns, reference, &digest, size, ingest.as_deref(), opts.labels);
    match &result {
        Ok(()) => st.mode = Mode::Committed(digest.clone()),
        Err(StoreError::Api(e)) if e.is(Kind::AlreadyExists) => {
            st.mode = Mode::Committed(digest.clone());
        }
        Err(_) => {}
    }
    result.map(|()| digest)
}

impl ContentWriter for LocalWriter {
    async fn status(&mut self) -> Result<Status, Error> {
        let state = self.state.as_ref().ok_or_else(|| {
            Error::internal(format!("writer for ref {:?} is broken", self.reference))
        })?;
        let offset = match &state.mode {
            Mode::Ingest { offset, .. } => *offset,
            Mode::Shared { size, .. } => *size,
            Mode::Committed(_) => 0,
        };
        Ok(Status {
            reference: self.reference.clone(),
            offset,
            total: state.total,
            expected: state.expected.clone(),
            started_at: state.started,
            updated_at: state.updated,
        })
    }

    async fn write(&mut self, offset: u64, data: bytes::Bytes) -> Result<u64, Error> {
        self.step(move |inner, ns, r, st| write_step(inner, ns, r, st, offset, &data))
            .await
    }

    async fn commit(&mut self, opts: CommitOptions) -> Result<Digest, Error> {
        self.step(move |inner, ns, r, st| commit_step(inner, ns, r, st, opts))
            .await
    }

    fn digest(&self) -> Digest {
        match self.state.as_deref().map(|s| &s.mode) {
            Some(Mode::Ingest { hasher, .. }) => Digest::from_hasher(hasher.clone()),
            Some(Mode::Shared { digest, .. } | Mode::Committed(digest)) => digest.clone(),
            None => Digest::of(b""),
        }
    }
}

impl LocalContentStore {
    /// Whether `d` is on disk at all, in any namespace (for tests and tools).
    pub fn has_blob_file(&self, d: &Digest) -> bool {
        self.inner.blob_path(d.hex()).exists()
    }
}
