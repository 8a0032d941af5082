//! Ingest ref locks: one live writer per (namespace, ref), released when its writer drops.

use super::{Inner, Result};
use std::sync::{Arc, Mutex, MutexGuard};
use strata_core::Error;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the guarded data half-updated: continue.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds an ingest ref for one writer; dropping it releases the ref.
pub(super) struct RefLock {
    inner: Arc<Inner>,
    key: (String, String),
}

impl Drop for RefLock {
    fn drop(&mut self) {
        lock(&self.inner.locks).remove(&self.key);
    }
}

impl Inner {
    pub(super) fn lock_ref(self: &Arc<Self>, ns: &str, reference: &str) -> Result<RefLock> {
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

    pub(super) fn is_locked(&self, ns: &str, reference: &str) -> bool {
        lock(&self.locks).contains(&(ns.to_owned(), reference.to_owned()))
    }
}
