//! [`Effects`]: what the store asks of the world outside its database (the collector, the
//! other services), and [`NoEffects`] for a store alone.

use std::future::Future;
use std::pin::Pin;
use strata_core::Error;

/// A boxed future, for the object-safe hooks between the store and the collector.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the store asks of the world outside its database: the garbage collector and the other
/// services. Implemented by [`crate::gc::Collector`]; [`NoEffects`] for a store alone.
pub trait Effects: Send + Sync + 'static {
    /// References were dropped (an image or lease deleted, a resource released, a target
    /// changed): collect soon, or now and wait when `sync`.
    fn references_dropped(&self, sync: bool) -> BoxFuture<'_, Result<(), Error>>;
    /// A lease with an expiry was created or a lease deleted: re-arm the expiry timer.
    fn expiries_changed(&self);
    /// What `ns` still holds in other services (blobs, snapshots), described for a refusal;
    /// empty when nothing.
    fn residents<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>>;
}

/// No collector and no other services: deletions leave content alone and namespaces are empty
/// when this store holds nothing of them.
pub struct NoEffects;

impl Effects for NoEffects {
    fn references_dropped(&self, _sync: bool) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
    fn expiries_changed(&self) {}
    fn residents<'a>(&'a self, _ns: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
