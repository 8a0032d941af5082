//! The snapshot resource: named, namespaced file-system trees. Committed snapshots are immutable
//! and can be parents; active ones are writable; views are read-only. One trait, a local
//! implementation in `strata-snapshotter` and a remote one in `strata-grpc`.

use crate::errdefs::Result;
use crate::mount::Mount;
use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only view of a committed snapshot.
    View,
    /// A writable snapshot, which can be committed.
    Active,
    /// An immutable snapshot, which can be a parent.
    Committed,
}

impl Kind {
    /// The kind's name in filters and messages (`view`, `active`, `committed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// A snapshot as one namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (active, view) or name (committed).
    pub name: String,
    /// The parent's name, empty for none.
    pub parent: String,
    /// What the snapshot is for.
    pub kind: Kind,
    /// When the snapshot was made (for a committed one, its commit).
    pub created_at: SystemTime,
    /// When its labels last changed (or its creation).
    pub updated_at: SystemTime,
    /// Labels.
    pub labels: HashMap<String, String>,
}

impl crate::filters::Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "name" => Some(self.name.clone()),
            [f] if f == "parent" => Some(self.parent.clone()),
            [f] if f == "kind" => Some(self.kind.as_str().to_owned()),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
                self.labels.get(&rest.join(".")).cloned()
            }
            _ => None,
        }
    }
}

/// Disk use of a snapshot's own layer (not its parents').
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes used on disk.
    pub size: u64,
    /// Inodes used.
    pub inodes: u64,
}

/// Every snapshotter a service offers, addressed by name (`overlayfs`, `native`).
pub trait SnapshotStore: Send + Sync + 'static {
    /// The snapshot `key`.
    fn stat(
        &self,
        snapshotter: &str,
        ns: &str,
        key: &str,
    ) -> impl Future<Output = Result<Info>> + Send;
    /// Only labels change; with field paths (`labels`, `labels.<key>`) only those.
    fn update(
        &self,
        snapshotter: &str,
        ns: &str,
        info: Info,
        fieldpaths: &[String],
    ) -> impl Future<Output = Result<Info>> + Send;
    /// The disk use of the snapshot's own layer.
    fn usage(
        &self,
        snapshotter: &str,
        ns: &str,
        key: &str,
    ) -> impl Future<Output = Result<Usage>> + Send;
    /// The mounts that show the active snapshot or view `key`.
    fn mounts(
        &self,
        snapshotter: &str,
        ns: &str,
        key: &str,
    ) -> impl Future<Output = Result<Vec<Mount>>> + Send;
    /// A new active snapshot over `parent` (a committed name, or empty).
    fn prepare(
        &self,
        snapshotter: &str,
        ns: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Mount>>> + Send;
    /// A new read-only view of `parent`.
    fn view(
        &self,
        snapshotter: &str,
        ns: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Mount>>> + Send;
    /// Turns the active snapshot `key` into the committed snapshot `name`.
    fn commit(
        &self,
        snapshotter: &str,
        ns: &str,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// FailedPrecondition while the snapshot has children.
    fn remove(
        &self,
        snapshotter: &str,
        ns: &str,
        key: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The namespace's snapshots that match any of `filters` (`name`, `parent`, `kind`,
    /// `labels.<key>`), all of them without filters.
    fn list(
        &self,
        snapshotter: &str,
        ns: &str,
        filters: &[String],
    ) -> impl Future<Output = Result<Vec<Info>>> + Send;
    /// Removes directories no snapshot owns any more.
    fn cleanup(&self, snapshotter: &str) -> impl Future<Output = Result<()>> + Send;
}
