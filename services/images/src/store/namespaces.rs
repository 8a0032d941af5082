//! Namespaces in the database, and [`LocalNamespaces`], the local [`NamespaceStore`]. A namespace
//! is deleted only when neither this store nor the other services hold anything in it.

use super::{Effects, IMAGES, LEASES, Metadata, NAMESPACES, NamespaceRecord, StoreError};
use super::{Result, check_ns, decode, describe, nanos};
use prost::Message as _;
use redb::ReadableTable;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use strata_core::filters::Filter;
use strata_core::namespaces::{Namespace, NamespaceStore};
use strata_core::{Error, identifiers, labels};

fn namespace_not_found(name: &str) -> StoreError {
    Error::not_found(format!("namespace {name:?}: not found")).into()
}

impl Metadata {
    pub(super) fn ensure_namespace(tx: &redb::WriteTransaction, ns: &str) -> Result<()> {
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
            if paths.is_empty() {
                rec.labels = ns.labels.clone();
            }
            for path in paths {
                if !labels::apply_path(&mut rec.labels, &ns.labels, path) {
                    return Err(Error::invalid_argument(format!(
                        "cannot update {path:?} field on namespace {:?}",
                        ns.name
                    ))
                    .into());
                }
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
}

/// FailedPrecondition for a namespace that still holds `left`.
pub(crate) fn not_empty(ns: &str, left: &[String]) -> Error {
    Error::failed_precondition(format!(
        "namespace {ns:?} must be empty, but it still has {}",
        left.join(", ")
    ))
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
