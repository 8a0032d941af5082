//! The local snapshot store: metadata for every snapshotter in one redb database, snapshot
//! directories under `<root>/<snapshotter>/snapshots/<id>`.
//!
//! Crash safety: a snapshot directory is built under a temporary name (`new-*`), renamed to its
//! id inside the write transaction that records it, and only then is the transaction committed.
//! Removal commits the metadata first and deletes the directory after. At start-up (and on
//! Cleanup) every directory no record names is removed, so after a kill -9 at any point
//! metadata and disk agree.

use crate::fsutil;
use prost::Message as _;
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use strata_core::filters::Filter;
use strata_core::mount::Mount;
use strata_core::snapshots::{Info, Kind, SnapshotStore, Usage};
use strata_core::{Error, identifiers, labels};

/// (snapshotter, namespace, key) → [`SnapRecord`]
const SNAPSHOTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("snapshots");
/// (snapshotter, namespace, parent, child) → ()
const CHILDREN: TableDefinition<(&str, &str, &str, &str), ()> = TableDefinition::new("children");
/// name → counter (snapshot ids)
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");

/// The label a client sets on Prepare to name the committed snapshot it is about to make
/// (containerd's unpacker): when that snapshot already exists, Prepare answers AlreadyExists.
pub const LABEL_TARGET: &str = "containerd.io/snapshot.ref";

#[derive(Clone, PartialEq, prost::Message)]
struct SnapRecord {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int32, tag = "2")]
    kind: i32,
    #[prost(string, tag = "3")]
    parent: String,
    #[prost(map = "string, string", tag = "4")]
    labels: HashMap<String, String>,
    #[prost(int64, tag = "5")]
    created: i64,
    #[prost(int64, tag = "6")]
    updated: i64,
    #[prost(uint64, tag = "7")]
    size: u64,
    #[prost(uint64, tag = "8")]
    inodes: u64,
}

fn kind_to_i32(k: Kind) -> i32 {
    match k {
        Kind::View => 1,
        Kind::Active => 2,
        Kind::Committed => 3,
    }
}

fn kind_from_i32(v: i32) -> Kind {
    match v {
        1 => Kind::View,
        3 => Kind::Committed,
        _ => Kind::Active,
    }
}

pub use strata_store::StoreError as SnapshotError;
use strata_store::{Result, decode, from_nanos, io_err, nanos};

fn not_found(key: &str) -> SnapshotError {
    Error::not_found(format!("snapshot {key:?}: not found")).into()
}

/// How a snapshotter lays out and mounts its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// overlayfs: each snapshot holds only its own layer; chains mount as overlay lowerdirs.
    Overlay,
    /// Plain directories: each snapshot is a full copy of its parent.
    Native,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Overlay => "overlayfs",
            Backend::Native => "native",
        }
    }
}

struct Inner {
    root: PathBuf,
    db: Database,
    backends: Vec<Backend>,
    /// Extra overlay options (index=off where the kernel has the parameter).
    overlay_options: Vec<String>,
    /// Held while a directory is renamed into place and recorded, and while cleanup decides
    /// what no record names, so cleanup never takes a snapshot being born.
    dirs: std::sync::Mutex<()>,
    /// Directories of removed snapshots, moved out of `snapshots/` and deleted in the
    /// background (by [`deleter`]): a removal is committed and answered without waiting for
    /// its files to go.
    doomed: std::sync::Mutex<std::sync::mpsc::Sender<PathBuf>>,
}

/// Deletes the directories sent to it, one after another, until every sender is gone.
fn deleter(rx: std::sync::mpsc::Receiver<PathBuf>) {
    for path in rx {
        if let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "removal left for the next start");
        }
    }
}

/// The local snapshot store serving one or more snapshotters.
#[derive(Clone)]
pub struct LocalSnapshots {
    inner: Arc<Inner>,
}

impl Inner {
    fn backend(&self, name: &str) -> Result<Backend> {
        self.backends
            .iter()
            .copied()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = self.backends.iter().map(|b| b.name()).collect();
                Error::invalid_argument(format!(
                    "snapshotter {name:?} not loaded (this service has: {})",
                    known.join(", ")
                ))
                .into()
            })
    }

    fn snapshots_dir(&self, b: Backend) -> PathBuf {
        self.root.join(b.name()).join("snapshots")
    }

    /// Where removed snapshots' directories wait for deletion (emptied at start-up).
    fn removed_dir(&self, b: Backend) -> PathBuf {
        self.root.join(b.name()).join("removed")
    }

    fn dir(&self, b: Backend, id: u64) -> PathBuf {
        self.snapshots_dir(b).join(id.to_string())
    }

    fn fs_dir(&self, b: Backend, id: u64) -> PathBuf {
        self.dir(b, id).join("fs")
    }

    fn get(&self, b: Backend, ns: &str, key: &str) -> Result<Option<SnapRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let v = t.get((b.name(), ns, key))?;
        v.map(|v| decode(key, v.value())).transpose()
    }

    fn must_get(&self, b: Backend, ns: &str, key: &str) -> Result<SnapRecord> {
        self.get(b, ns, key)?.ok_or_else(|| not_found(key))
    }

    /// Ids of `parent` and its ancestors, topmost first.
    fn chain(&self, b: Backend, ns: &str, parent: &str) -> Result<Vec<u64>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut ids = Vec::new();
        let mut next = parent.to_owned();
        while !next.is_empty() {
            let v = t.get((b.name(), ns, next.as_str()))?;
            let rec: SnapRecord = match v {
                Some(v) => decode(&next, v.value())?,
                None => {
                    return Err(
                        Error::not_found(format!("parent snapshot {next:?}: not found")).into(),
                    );
                }
            };
            ids.push(rec.id);
            next = rec.parent;
        }
        Ok(ids)
    }

    fn to_info(key: &str, rec: &SnapRecord) -> Info {
        Info {
            name: key.to_owned(),
            parent: rec.parent.clone(),
            kind: kind_from_i32(rec.kind),
            created_at: from_nanos(rec.created),
            updated_at: from_nanos(rec.updated),
            labels: rec.labels.clone(),
        }
    }

    fn mounts_for(&self, b: Backend, kind: Kind, id: u64, parents: &[u64]) -> Vec<Mount> {
        let path = |id| self.fs_dir(b, id).display().to_string();
        let bind = |source: String, ro: bool| {
            vec![Mount {
                kind: "bind".into(),
                source,
                target: String::new(),
                options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
            }]
        };
        if b == Backend::Native || parents.is_empty() {
            return bind(path(id), kind == Kind::View);
        }
        let mut options = Vec::new();
        if kind == Kind::Active {
            options.push(format!(
                "workdir={}",
                self.dir(b, id).join("work").display()
            ));
            options.push(format!("upperdir={}", path(id)));
        } else if parents.len() == 1 {
            return bind(path(parents[0]), true);
        }
        let lowers: Vec<String> = parents.iter().map(|&p| path(p)).collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        options.extend(self.overlay_options.iter().cloned());
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }]
    }

    fn create(
        &self,
        b: Backend,
        ns: &str,
        key: &str,
        parent: &str,
        kind: Kind,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        identifiers::validate_namespace(ns)?;
        if key.is_empty() {
            return Err(Error::invalid_argument("snapshot key must not be empty").into());
        }
        labels::validate(&labels)?;
        if self.get(b, ns, key)?.is_some() {
            return Err(Error::already_exists(format!("snapshot {key:?}: already exists")).into());
        }
        if let Some(target) = labels.get(LABEL_TARGET)
            && self.get(b, ns, target)?.is_some()
        {
            return Err(Error::already_exists(format!(
                "target snapshot {target:?}: already exists"
            ))
            .into());
        }
        let check_parent = |rec: Option<SnapRecord>| -> Result<()> {
            match rec {
                None => {
                    Err(Error::not_found(format!("parent snapshot {parent:?}: not found")).into())
                }
                Some(r) if kind_from_i32(r.kind) != Kind::Committed => {
                    Err(Error::invalid_argument(format!(
                        "parent {parent:?} is not a committed snapshot"
                    ))
                    .into())
                }
                Some(_) => Ok(()),
            }
        };
        if !parent.is_empty() {
            check_parent(self.get(b, ns, parent)?)?;
        }

        let tmp = self.build_dir(b, ns, parent)?;

        let now = nanos(SystemTime::now());
        let _dirs = self
            .dirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = self.db.begin_write()?;
        let id;
        {
            let mut t = tx.open_table(SNAPSHOTS)?;
            if t.get((b.name(), ns, key))?.is_some() {
                return Err(
                    Error::already_exists(format!("snapshot {key:?}: already exists")).into(),
                );
            }
            if !parent.is_empty() {
                let p = t.get((b.name(), ns, parent))?;
                check_parent(p.map(|v| decode(parent, v.value())).transpose()?)?;
            }
            let mut seq = tx.open_table(SEQUENCES)?;
            let next = seq.get("snapshot")?.map_or(0, |v| v.value()) + 1;
            seq.insert("snapshot", next)?;
            id = next;
            let rec = SnapRecord {
                id,
                kind: kind_to_i32(kind),
                parent: parent.to_owned(),
                labels,
                created: now,
                updated: now,
                size: 0,
                inodes: 0,
            };
            t.insert((b.name(), ns, key), rec.encode_to_vec().as_slice())?;
            if !parent.is_empty() {
                tx.open_table(CHILDREN)?
                    .insert((b.name(), ns, parent, key), ())?;
            }
        }
        let tmp_path = tmp.keep();
        let dest = self.dir(b, id);
        if let Err(e) = fs::rename(&tmp_path, &dest) {
            let _ = fs::remove_dir_all(&tmp_path);
            return Err(io_err(&dest)(e));
        }
        strata_core::crashpoint::hit("snapshotter.prepare.renamed");
        if let Err(e) = tx.commit() {
            let _ = fs::remove_dir_all(&dest);
            return Err(e.into());
        }
        let parents = self.chain(b, ns, parent)?;
        Ok(self.mounts_for(b, kind, id, &parents))
    }

    /// Builds a new snapshot's directory under a temporary name: `fs` (a copy of the
    /// parent's for the native backend) and, for overlay, `work`.
    fn build_dir(&self, b: Backend, ns: &str, parent: &str) -> Result<tempfile::TempDir> {
        let snaps = self.snapshots_dir(b);
        let tmp = tempfile::Builder::new()
            .prefix("new-")
            .tempdir_in(&snaps)
            .map_err(io_err(&snaps))?;
        let fs_dir = tmp.path().join("fs");
        fs::create_dir(&fs_dir).map_err(io_err(&fs_dir))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755)).map_err(io_err(&fs_dir))?;
        if b == Backend::Overlay {
            let work = tmp.path().join("work");
            fs::create_dir(&work).map_err(io_err(&work))?;
        } else if !parent.is_empty() {
            let pid = self.must_get(b, ns, parent)?.id;
            let src = self.fs_dir(b, pid);
            fsutil::copy_tree(&src, &fs_dir).map_err(io_err(&src))?;
        }
        Ok(tmp)
    }

    fn mounts(&self, b: Backend, ns: &str, key: &str) -> Result<Vec<Mount>> {
        let rec = self.must_get(b, ns, key)?;
        let kind = kind_from_i32(rec.kind);
        if kind == Kind::Committed {
            return Err(Error::failed_precondition(format!(
                "snapshot {key:?} is committed: only active and view snapshots have mounts"
            ))
            .into());
        }
        let parents = self.chain(b, ns, &rec.parent)?;
        Ok(self.mounts_for(b, kind, rec.id, &parents))
    }

    fn commit(
        &self,
        b: Backend,
        ns: &str,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(
                Error::invalid_argument("committed snapshot name must not be empty").into(),
            );
        }
        labels::validate(&labels)?;
        let rec = self.must_get(b, ns, key)?;
        if kind_from_i32(rec.kind) != Kind::Active {
            return Err(
                Error::failed_precondition(format!("snapshot {key:?} is not active")).into(),
            );
        }
        // Usage of the layer is fixed from now on: measure it once.
        let fs_dir = self.fs_dir(b, rec.id);
        let usage = fsutil::usage(&fs_dir).map_err(io_err(&fs_dir))?;
        let now = nanos(SystemTime::now());
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(SNAPSHOTS)?;
            if t.get((b.name(), ns, name))?.is_some() {
                return Err(
                    Error::already_exists(format!("snapshot {name:?}: already exists")).into(),
                );
            }
            let current: SnapRecord = match t.remove((b.name(), ns, key))? {
                Some(v) => decode(key, v.value())?,
                None => return Err(not_found(key)),
            };
            let committed = SnapRecord {
                id: current.id,
                kind: kind_to_i32(Kind::Committed),
                parent: current.parent.clone(),
                labels,
                created: now,
                updated: now,
                size: usage.size,
                inodes: usage.inodes,
            };
            t.insert((b.name(), ns, name), committed.encode_to_vec().as_slice())?;
            if !current.parent.is_empty() {
                let mut c = tx.open_table(CHILDREN)?;
                c.remove((b.name(), ns, current.parent.as_str(), key))?;
                c.insert((b.name(), ns, current.parent.as_str(), name), ())?;
            }
        }
        strata_core::crashpoint::hit("snapshotter.commit.measured");
        tx.commit()?;
        Ok(())
    }

    fn remove(&self, b: Backend, ns: &str, key: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        let id;
        {
            let mut c = tx.open_table(CHILDREN)?;
            let child = {
                let mut range = c.range((b.name(), ns, key, "")..)?;
                match range.next() {
                    Some(entry) => {
                        let (k, _) = entry?;
                        let (sn, kns, parent, child) = k.value();
                        (sn == b.name() && kns == ns && parent == key).then(|| child.to_owned())
                    }
                    None => None,
                }
            };
            if let Some(child) = child {
                return Err(Error::failed_precondition(format!(
                    "cannot remove snapshot {key:?}: it has a child {child:?}"
                ))
                .into());
            }
            let mut t = tx.open_table(SNAPSHOTS)?;
            let rec: SnapRecord = match t.remove((b.name(), ns, key))? {
                Some(v) => decode(key, v.value())?,
                None => return Err(not_found(key)),
            };
            if !rec.parent.is_empty() {
                c.remove((b.name(), ns, rec.parent.as_str(), key))?;
            }
            id = rec.id;
        }
        tx.commit()?;
        let dir = self.dir(b, id);
        strata_core::crashpoint::hit("snapshotter.remove.committed");
        let doomed = self.removed_dir(b).join(id.to_string());
        match fs::rename(&dir, &doomed) {
            Ok(()) => {
                let sent = self
                    .doomed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .send(doomed);
                if let Err(std::sync::mpsc::SendError(path)) = sent
                    && let Err(e) = fs::remove_dir_all(&path)
                {
                    tracing::warn!(path = %path.display(), error = %e, "removal left for the next start");
                }
            }
            Err(e) => tracing::warn!(path = %dir.display(), error = %e, "removal left for cleanup"),
        }
        Ok(())
    }

    fn update(&self, b: Backend, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let key = info.name.clone();
        let tx = self.db.begin_write()?;
        let rec = {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let mut rec: SnapRecord = {
                let v = t.get((b.name(), ns, key.as_str()))?;
                match v {
                    Some(v) => decode(&key, v.value())?,
                    None => return Err(not_found(&key)),
                }
            };
            if fieldpaths.is_empty() {
                rec.labels = info.labels;
            } else {
                for path in fieldpaths {
                    if !labels::apply_path(&mut rec.labels, &info.labels, path) {
                        return Err(Error::invalid_argument(format!(
                            "cannot update {path:?} field on snapshot {key:?}"
                        ))
                        .into());
                    }
                }
            }
            labels::validate(&rec.labels)?;
            rec.updated = nanos(SystemTime::now());
            t.insert((b.name(), ns, key.as_str()), rec.encode_to_vec().as_slice())?;
            rec
        };
        tx.commit()?;
        Ok(Self::to_info(&key, &rec))
    }

    fn usage(&self, b: Backend, ns: &str, key: &str) -> Result<Usage> {
        let rec = self.must_get(b, ns, key)?;
        if kind_from_i32(rec.kind) == Kind::Committed {
            return Ok(Usage {
                size: rec.size,
                inodes: rec.inodes,
            });
        }
        let fs_dir = self.fs_dir(b, rec.id);
        fsutil::usage(&fs_dir).map_err(io_err(&fs_dir))
    }

    fn list(&self, b: Backend, ns: &str, filter: &Filter) -> Result<Vec<Info>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for entry in t.range((b.name(), ns, "")..)? {
            let (k, v) = entry?;
            let (sn, kns, key) = k.value();
            if sn != b.name() || kns != ns {
                break;
            }
            let info = Self::to_info(key, &decode(key, v.value())?);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Removes directories of `b` that no record names (leftovers of crashes and removals).
    /// At start-up that includes half-built `new-*` directories; later they belong to
    /// snapshots being created.
    fn cleanup(&self, b: Backend, startup: bool) -> Result<()> {
        let _dirs = self
            .dirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut ids = std::collections::HashSet::new();
        for entry in t.range((b.name(), "", "")..)? {
            let (k, v) = entry?;
            let (sn, _, key) = k.value();
            if sn != b.name() {
                break;
            }
            ids.insert(decode::<SnapRecord>(key, v.value())?.id.to_string());
        }
        drop(t);
        drop(tx);
        let dir = self.snapshots_dir(b);
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.contains(&name) || (!startup && name.starts_with("new-")) {
                continue;
            }
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing snapshot directory no record names");
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

/// Whether this kernel can mount overlayfs (it is listed in /proc/filesystems).
pub fn overlay_supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false)
}

impl LocalSnapshots {
    /// Opens the store under `root` for `backends`, cleaning what a crash left.
    pub fn open(root: impl AsRef<Path>, backends: &[Backend]) -> Result<Self, Error> {
        Ok(Self::open_inner(root.as_ref(), backends)?)
    }

    fn open_inner(root: &Path, backends: &[Backend]) -> Result<Self> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let db = strata_store::open_database(&root.join("metadata.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(SNAPSHOTS)?;
        tx.open_table(CHILDREN)?;
        tx.open_table(SEQUENCES)?;
        tx.commit()?;
        let overlay_options = if Path::new("/sys/module/overlay/parameters/index").exists() {
            vec!["index=off".to_owned()]
        } else {
            Vec::new()
        };
        let (doomed, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("snapshot-rm".into())
            .spawn(move || deleter(rx))
            .map_err(io_err(root))?;
        let inner = Inner {
            root: root.to_owned(),
            db,
            backends: backends.to_vec(),
            overlay_options,
            dirs: std::sync::Mutex::new(()),
            doomed: std::sync::Mutex::new(doomed),
        };
        for &b in backends {
            use std::os::unix::fs::PermissionsExt;
            let dir = inner.snapshots_dir(b);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
            // What a removal before a crash or stop had not deleted yet.
            let removed = inner.removed_dir(b);
            if removed.exists() {
                fs::remove_dir_all(&removed).map_err(io_err(&removed))?;
            }
            fs::create_dir_all(&removed).map_err(io_err(&removed))?;
            fs::set_permissions(&removed, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&removed))?;
            inner.cleanup(b, true)?;
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The snapshotters this store serves.
    pub fn backends(&self) -> &[Backend] {
        &self.inner.backends
    }

    /// Where the tree of a snapshot lives (for the differ on the same host).
    pub fn fs_path(&self, snapshotter: &str, ns: &str, key: &str) -> Result<PathBuf, Error> {
        let b = self.inner.backend(snapshotter)?;
        let rec = self.inner.must_get(b, ns, key)?;
        Ok(self.inner.fs_dir(b, rec.id))
    }

    async fn blocking<T, F>(&self, snapshotter: &str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, Backend) -> Result<T> + Send + 'static,
    {
        let b = self.inner.backend(snapshotter)?;
        let inner = self.inner.clone();
        let r = tokio::task::spawn_blocking(move || f(&inner, b))
            .await
            .map_err(SnapshotError::from)?;
        Ok(r?)
    }
}

fn check_ns(ns: &str) -> Result<(), Error> {
    identifiers::validate_namespace(ns)
}

impl SnapshotStore for LocalSnapshots {
    async fn stat(&self, sn: &str, ns: &str, key: &str) -> Result<Info, Error> {
        check_ns(ns)?;
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.blocking(sn, move |i, b| {
            let rec = i.must_get(b, &ns, &key)?;
            Ok(Inner::to_info(&key, &rec))
        })
        .await
    }

    async fn update(
        &self,
        sn: &str,
        ns: &str,
        info: Info,
        fieldpaths: &[String],
    ) -> Result<Info, Error> {
        check_ns(ns)?;
        let (ns, paths) = (ns.to_owned(), fieldpaths.to_vec());
        self.blocking(sn, move |i, b| i.update(b, &ns, info, &paths))
            .await
    }

    async fn usage(&self, sn: &str, ns: &str, key: &str) -> Result<Usage, Error> {
        check_ns(ns)?;
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.blocking(sn, move |i, b| i.usage(b, &ns, &key)).await
    }

    async fn mounts(&self, sn: &str, ns: &str, key: &str) -> Result<Vec<Mount>, Error> {
        check_ns(ns)?;
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.blocking(sn, move |i, b| i.mounts(b, &ns, &key)).await
    }

    async fn prepare(
        &self,
        sn: &str,
        ns: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        let (ns, key, parent) = (ns.to_owned(), key.to_owned(), parent.to_owned());
        self.blocking(sn, move |i, b| {
            i.create(b, &ns, &key, &parent, Kind::Active, labels)
        })
        .await
    }

    async fn view(
        &self,
        sn: &str,
        ns: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        let (ns, key, parent) = (ns.to_owned(), key.to_owned(), parent.to_owned());
        self.blocking(sn, move |i, b| {
            i.create(b, &ns, &key, &parent, Kind::View, labels)
        })
        .await
    }

    async fn commit(
        &self,
        sn: &str,
        ns: &str,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        check_ns(ns)?;
        let (ns, name, key) = (ns.to_owned(), name.to_owned(), key.to_owned());
        self.blocking(sn, move |i, b| i.commit(b, &ns, &name, &key, labels))
            .await
    }

    async fn remove(&self, sn: &str, ns: &str, key: &str) -> Result<(), Error> {
        check_ns(ns)?;
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.blocking(sn, move |i, b| i.remove(b, &ns, &key)).await
    }

    async fn list(&self, sn: &str, ns: &str, filters: &[String]) -> Result<Vec<Info>, Error> {
        check_ns(ns)?;
        let filter = Filter::parse_all(filters)?;
        let ns = ns.to_owned();
        self.blocking(sn, move |i, b| i.list(b, &ns, &filter)).await
    }

    async fn cleanup(&self, sn: &str) -> Result<(), Error> {
        self.blocking(sn, move |i, b| i.cleanup(b, false)).await
    }
}
