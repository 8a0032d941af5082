//! Leases and the resources they hold, their expiry, and [`LocalLeases`], the local
//! [`LeaseStore`].

use super::{Effects, LEASE_RESOURCES, LEASES, LeaseRecord, Metadata, StoreError, check_ns};
use super::{Result, decode, from_nanos, nanos};
use prost::Message as _;
use redb::ReadableTable;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use strata_core::filters::Filter;
use strata_core::leases::{self, Lease, LeaseStore, Leased, Resource};
use strata_core::{Error, labels};

fn lease_not_found(id: &str) -> StoreError {
    Error::not_found(format!("lease {id:?}: not found")).into()
}

fn to_lease(id: &str, rec: LeaseRecord) -> Lease {
    Lease {
        id: id.to_owned(),
        created_at: from_nanos(rec.created),
        labels: rec.labels,
    }
}

/// A lease as the collector sees it: what it holds and whether it is flat.
#[derive(Debug, Clone)]
pub struct LeaseHold {
    pub id: String,
    pub flat: bool,
    pub resources: Vec<Leased>,
}

impl Metadata {
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

    pub(super) fn create_lease(
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

    pub(super) fn delete_lease(&self, ns: &str, id: &str) -> Result<()> {
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

    pub(super) fn add_resource(&self, ns: &str, id: &str, resource: &Resource) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use strata_core::Digest;

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
