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
//!
//! [`ImageStore`]: strata_core::images::ImageStore
//! [`LeaseStore`]: strata_core::leases::LeaseStore
//! [`NamespaceStore`]: strata_core::namespaces::NamespaceStore

mod collection;
mod effects;
mod images;
mod leases;
mod namespaces;

pub use effects::{BoxFuture, Effects, NoEffects};
pub use images::{ImageRef, LocalImages};
pub use leases::{LeaseHold, LocalLeases};
pub use namespaces::LocalNamespaces;

use redb::{Database, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use strata_core::{Error, identifiers};
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

/// `n` names of a kind, for messages: `2 images ("a", "b")`, at most three shown.
pub(crate) fn describe(kind: &str, names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut quoted: Vec<String> = names.iter().take(SHOWN).map(|n| format!("{n:?}")).collect();
    if names.len() > SHOWN {
        quoted.push(format!("and {} more", names.len() - SHOWN));
    }
    format!("{kind} ({}: {})", names.len(), quoted.join(", "))
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
}

fn check_ns(ns: &str) -> Result<(), Error> {
    identifiers::validate_namespace(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_three_names() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(
            describe("images", &names),
            r#"images (5: "a", "b", "c", and 2 more)"#
        );
        assert_eq!(describe("leases", &names[..1]), r#"leases (1: "a")"#);
    }
}
