//! The local [`ContainerStore`]: container records in an embedded database, with containerd's
//! validation and update rules, and a `/containers/*` event on the exchange after every change.
//!
//! On disk, under the root, `metadata.redb` (redb: pure Rust, ACID with fsync on commit) with
//! the table `containers`: (namespace, id) → [`ContainerRecord`]. Every change is one write
//! transaction, so a kill -9 leaves either the old or the new record; an event is published
//! only once its change has committed. The Tasks API keeps its own tables in the same database
//! ([`LocalContainers::database`]).

use crate::events::{Exchange, encode};
use prost::Message as _;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use strata_api::containerd::events as ev;
use strata_core::containers::{self, Any, Container, ContainerStore, Runtime};
use strata_core::events::{topics, types};
use strata_core::filters::Filter;
use strata_core::{Error, identifiers, labels};
use strata_grpc::convert_containers::{any_from_pb as any_core, any_to_pb as any_pb};

/// (namespace, id) → [`ContainerRecord`]
const CONTAINERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("containers");

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerRecord {
    #[prost(map = "string, string", tag = "1")]
    labels: HashMap<String, String>,
    #[prost(string, tag = "2")]
    image: String,
    #[prost(string, tag = "3")]
    runtime_name: String,
    #[prost(message, optional, tag = "4")]
    runtime_options: Option<prost_types::Any>,
    #[prost(message, optional, tag = "5")]
    spec: Option<prost_types::Any>,
    #[prost(string, tag = "6")]
    snapshotter: String,
    #[prost(string, tag = "7")]
    snapshot_key: String,
    #[prost(int64, tag = "8")]
    created: i64,
    #[prost(int64, tag = "9")]
    updated: i64,
    #[prost(map = "string, message", tag = "10")]
    extensions: HashMap<String, prost_types::Any>,
    #[prost(string, tag = "11")]
    sandbox: String,
}

pub use strata_store::StoreError;
use strata_store::{Result, from_nanos, nanos};

fn record_of(c: &Container) -> ContainerRecord {
    ContainerRecord {
        labels: c.labels.clone(),
        image: c.image.clone(),
        runtime_name: c.runtime.name.clone(),
        runtime_options: c.runtime.options.clone().map(any_pb),
        spec: c.spec.clone().map(any_pb),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        created: nanos(c.created_at),
        updated: nanos(c.updated_at),
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), any_pb(v.clone())))
            .collect(),
        sandbox: c.sandbox.clone(),
    }
}

fn to_container(id: &str, rec: ContainerRecord) -> Container {
    Container {
        id: id.to_owned(),
        labels: rec.labels,
        image: rec.image,
        runtime: Runtime {
            name: rec.runtime_name,
            options: rec.runtime_options.map(any_core),
        },
        spec: rec.spec.map(any_core),
        snapshotter: rec.snapshotter,
        snapshot_key: rec.snapshot_key,
        created_at: from_nanos(rec.created),
        updated_at: from_nanos(rec.updated),
        extensions: rec
            .extensions
            .into_iter()
            .map(|(k, v)| (k, any_core(v)))
            .collect(),
        sandbox: rec.sandbox,
    }
}

fn decode(ns: &str, id: &str, bytes: &[u8]) -> Result<Container> {
    let rec = ContainerRecord::decode(bytes).map_err(|source| StoreError::Decode {
        key: format!("{ns}/{id}"),
        source,
    })?;
    Ok(to_container(id, rec))
}

fn not_found(ns: &str, id: &str) -> StoreError {
    Error::not_found(format!("container {id:?} in namespace {ns:?}: not found")).into()
}

fn check_ns(ns: &str) -> Result<(), Error> {
    identifiers::validate_namespace(ns)
}

/// Applies containerd's update rules: `from` holds the new values, `paths` what to take.
fn apply_update(stored: &mut Container, from: &Container, paths: &[String]) -> Result<()> {
    let id = &from.id;
    let defaults: Vec<String>;
    let paths = if paths.is_empty() {
        if stored.snapshotter != from.snapshotter {
            return Err(Error::invalid_argument(format!(
                "container {id:?}: snapshotter is immutable ({:?} cannot become {:?})",
                stored.snapshotter, from.snapshotter
            ))
            .into());
        }
        if stored.runtime.name != from.runtime.name {
            return Err(Error::invalid_argument(format!(
                "container {id:?}: runtime name is immutable ({:?} cannot become {:?})",
                stored.runtime.name, from.runtime.name
            ))
            .into());
        }
        defaults = ["labels", "spec", "extensions", "image", "snapshotkey"]
            .map(str::to_owned)
            .to_vec();
        &defaults[..]
    } else {
        paths
    };
    for path in paths {
        if labels::apply_path(&mut stored.labels, &from.labels, path)
            || labels::apply_map_path(&mut stored.extensions, &from.extensions, "extensions", path)
        {
            continue;
        }
        match path.as_str() {
            "spec" => stored.spec.clone_from(&from.spec),
            "image" => stored.image.clone_from(&from.image),
            "snapshotkey" | "snapshot_key" => stored.snapshot_key.clone_from(&from.snapshot_key),
            p if p == "runtime" || p.starts_with("runtime.") || p == "snapshotter" => {
                return Err(Error::invalid_argument(format!(
                    "cannot update {path:?} field on container {id:?}: it is immutable"
                ))
                .into());
            }
            _ => {
                return Err(Error::invalid_argument(format!(
                    "cannot update {path:?} field on container {id:?}"
                ))
                .into());
            }
        }
    }
    // containerd's semantics: a label set to the empty string is no label.
    stored.labels.retain(|_, v| !v.is_empty());
    Ok(())
}

/// Called with (namespace, id) once a container's deletion has committed.
type DeleteHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The local container store. Cheap to clone.
#[derive(Clone)]
pub struct LocalContainers {
    db: Arc<Database>,
    events: Arc<Exchange>,
    /// Held from a change's commit to its event, so events come in commit order.
    order: Arc<Mutex<()>>,
    on_delete: Option<DeleteHook>,
}

impl LocalContainers {
    /// Opens (creating if needed) `root/metadata.redb`; changes are announced on `events`.
    pub fn open(root: &Path, events: Arc<Exchange>) -> Result<Self, Error> {
        Ok(Self::open_inner(root, events)?)
    }

    fn open_inner(root: &Path, events: Arc<Exchange>) -> Result<Self> {
        // Root only: container records hold their specs, environment values included.
        crate::private::create_root(root).map_err(|source| StoreError::Io {
            path: root.to_owned(),
            source,
        })?;
        let path = root.join("metadata.redb");
        let db = strata_store::open_database(&path)?;
        // Made by the database with the umask's mode: narrowed to root only (the directory
        // above is 0700 from its creation, so a new one was never readable meanwhile).
        crate::private::restrict(&path, crate::private::FILE_MODE).map_err(|source| {
            StoreError::Io {
                path: path.clone(),
                source,
            }
        })?;
        let tx = db.begin_write()?;
        tx.open_table(CONTAINERS)?;
        tx.commit()?;
        Ok(Self {
            db: Arc::new(db),
            events,
            order: Arc::new(Mutex::new(())),
            on_delete: None,
        })
    }

    /// Runs `hook` with (namespace, id) after each container deletion has committed: what
    /// the service keeps beside a container (its output log) goes with it.
    #[must_use]
    pub fn on_delete(mut self, hook: impl Fn(&str, &str) + Send + Sync + 'static) -> Self {
        self.on_delete = Some(Arc::new(hook));
        self
    }

    /// The database, for other modules of the service to keep their own tables in.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// The number of container records, in every namespace.
    pub fn count(&self) -> Result<u64, Error> {
        let run = || -> Result<u64> {
            let tx = self.db.begin_read()?;
            Ok(tx.open_table(CONTAINERS)?.len()?)
        };
        Ok(run()?)
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(StoreError::from)?;
        Ok(result?)
    }

    /// Runs the change `f` on the blocking pool and, once it has committed, publishes the
    /// event `announce` makes of its result, in commit order.
    async fn write<T, F, A>(
        &self,
        ns: &str,
        topic: &'static str,
        f: F,
        announce: A,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
        A: FnOnce(&T) -> Any + Send + 'static,
    {
        let (db, events, order) = (self.db.clone(), self.events.clone(), self.order.clone());
        let ns = ns.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let _order = order
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let out = f(&db)?;
            if let Err(e) = events.publish(&ns, topic, announce(&out)) {
                tracing::warn!(namespace = %ns, topic, error = %e, "publishing event failed");
            }
            Ok::<_, StoreError>(out)
        })
        .await
        .map_err(StoreError::from)?;
        Ok(result?)
    }
}

fn get_in(db: &Database, ns: &str, id: &str) -> Result<Container> {
    let tx = db.begin_read()?;
    let t = tx.open_table(CONTAINERS)?;
    let v = t.get((ns, id))?.ok_or_else(|| not_found(ns, id))?;
    decode(ns, id, v.value())
}

fn list_in(db: &Database, ns: &str, filter: &Filter) -> Result<Vec<Container>> {
    let tx = db.begin_read()?;
    let t = tx.open_table(CONTAINERS)?;
    let mut out = Vec::new();
    for entry in t.range((ns, "")..)? {
        let (k, v) = entry?;
        let (kns, id) = k.value();
        if kns != ns {
            break;
        }
        let c = decode(ns, id, v.value())?;
        if filter.matches(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn create_in(db: &Database, ns: &str, mut c: Container) -> Result<Container> {
    c.labels.retain(|_, v| !v.is_empty());
    containers::validate(&c)?;
    let now = from_nanos(nanos(SystemTime::now()));
    c.created_at = now;
    c.updated_at = now;
    let tx = db.begin_write()?;
    {
        let mut t = tx.open_table(CONTAINERS)?;
        if t.get((ns, c.id.as_str()))?.is_some() {
            return Err(
                Error::already_exists(format!("container {:?}: already exists", c.id)).into(),
            );
        }
        t.insert(
            (ns, c.id.as_str()),
            record_of(&c).encode_to_vec().as_slice(),
        )?;
    }
    tx.commit()?;
    Ok(c)
}

fn update_in(db: &Database, ns: &str, c: Container, paths: &[String]) -> Result<Container> {
    if c.id.is_empty() {
        return Err(Error::invalid_argument("update needs a container id").into());
    }
    identifiers::validate("container id", &c.id)?;
    let tx = db.begin_write()?;
    let stored;
    {
        let mut t = tx.open_table(CONTAINERS)?;
        let mut updated = {
            let v = t
                .get((ns, c.id.as_str()))?
                .ok_or_else(|| not_found(ns, &c.id))?;
            decode(ns, &c.id, v.value())?
        };
        apply_update(&mut updated, &c, paths)?;
        containers::validate(&updated)?;
        updated.updated_at = from_nanos(nanos(SystemTime::now()));
        t.insert(
            (ns, c.id.as_str()),
            record_of(&updated).encode_to_vec().as_slice(),
        )?;
        stored = updated;
    }
    tx.commit()?;
    Ok(stored)
}

fn delete_in(db: &Database, ns: &str, id: &str) -> Result<()> {
    let tx = db.begin_write()?;
    {
        let mut t = tx.open_table(CONTAINERS)?;
        if t.remove((ns, id))?.is_none() {
            return Err(not_found(ns, id));
        }
    }
    tx.commit()?;
    Ok(())
}

impl ContainerStore for LocalContainers {
    async fn get(&self, ns: &str, id: &str) -> Result<Container, Error> {
        check_ns(ns)?;
        let (ns, id) = (ns.to_owned(), id.to_owned());
        self.blocking(move |db| get_in(db, &ns, &id)).await
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Container>, Error> {
        check_ns(ns)?;
        let filter = Filter::parse_all(filters)?;
        let ns = ns.to_owned();
        self.blocking(move |db| list_in(db, &ns, &filter)).await
    }

    async fn create(&self, ns: &str, container: Container) -> Result<Container, Error> {
        check_ns(ns)?;
        // A task usually follows: its cgroup attach's wait in the kernel starts now.
        crate::attach::prime();
        let owned = ns.to_owned();
        let c = self
            .write(
                ns,
                topics::CONTAINER_CREATE,
                move |db| create_in(db, &owned, container),
                |c: &Container| {
                    let event = ev::ContainerCreate {
                        id: c.id.clone(),
                        image: c.image.clone(),
                        runtime: Some(ev::container_create::Runtime {
                            name: c.runtime.name.clone(),
                            options: c.runtime.options.clone().map(any_pb),
                        }),
                    };
                    encode(types::CONTAINER_CREATE, &event)
                },
            )
            .await?;
        tracing::debug!(namespace = %ns, id = %c.id, "container created");
        Ok(c)
    }

    async fn update(
        &self,
        ns: &str,
        container: Container,
        fieldpaths: &[String],
    ) -> Result<Container, Error> {
        check_ns(ns)?;
        let owned = ns.to_owned();
        let paths = fieldpaths.to_vec();
        let c = self
            .write(
                ns,
                topics::CONTAINER_UPDATE,
                move |db| update_in(db, &owned, container, &paths),
                |c: &Container| {
                    let event = ev::ContainerUpdate {
                        id: c.id.clone(),
                        image: c.image.clone(),
                        labels: c.labels.clone(),
                        snapshot_key: c.snapshot_key.clone(),
                    };
                    encode(types::CONTAINER_UPDATE, &event)
                },
            )
            .await?;
        tracing::debug!(namespace = %ns, id = %c.id, "container updated");
        Ok(c)
    }

    async fn delete(&self, ns: &str, id: &str) -> Result<(), Error> {
        check_ns(ns)?;
        let (owned, oid, eid) = (ns.to_owned(), id.to_owned(), id.to_owned());
        self.write(
            ns,
            topics::CONTAINER_DELETE,
            move |db| delete_in(db, &owned, &oid),
            move |_: &()| encode(types::CONTAINER_DELETE, &ev::ContainerDelete { id: eid }),
        )
        .await?;
        if let Some(hook) = &self.on_delete {
            hook(ns, id);
        }
        tracing::debug!(namespace = %ns, id, "container deleted");
        Ok(())
    }
}
