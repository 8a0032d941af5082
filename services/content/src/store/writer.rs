//! [`LocalWriter`]: opening, resuming and writing an ingest, and committing it, which
//! verifies the data and publishes it as a blob.

use super::locks::{RefLock, lock};
use super::{BLOB_REFS, BLOBS, BlobRecord, INGESTS, IngestRecord, Inner, StoreError, validate_ref};
use super::{Result, from_nanos, io_err, nanos};
use prost::Message as _;
use redb::ReadableTable;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use strata_core::content::{CommitOptions, ContentWriter, Status, WriterOptions};
use strata_core::{Digest, Error, Kind, identifiers, labels};

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Inner {
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

    pub(super) fn open_writer(
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
