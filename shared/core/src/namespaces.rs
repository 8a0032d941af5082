//! The namespace resource: the named partitions every other resource lives in, with labels.
//! Namespaces are created explicitly or, implicitly, by the first image or lease made in them;
//! a namespace can only be deleted once it holds nothing (no images, leases, blobs or snapshots).

use crate::errdefs::Result;
use std::collections::HashMap;
use std::future::Future;

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's name, an identifier.
    pub name: String,
    /// Labels.
    pub labels: HashMap<String, String>,
}

impl crate::filters::Adaptor for Namespace {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "name" => Some(self.name.clone()),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
                self.labels.get(&rest.join(".")).cloned()
            }
            _ => None,
        }
    }
}

/// The namespaces a service knows.
pub trait NamespaceStore: Send + Sync + 'static {
    /// NotFound naming the namespace when absent.
    fn get(&self, name: &str) -> impl Future<Output = Result<Namespace>> + Send;
    /// Every namespace matching `filter` (containerd filter syntax, fields `name` and
    /// `labels.<key>`; empty for all), by name.
    fn list(&self, filter: &str) -> impl Future<Output = Result<Vec<Namespace>>> + Send;
    /// AlreadyExists when taken.
    fn create(&self, namespace: Namespace) -> impl Future<Output = Result<Namespace>> + Send;
    /// Without field paths the labels are replaced; with `labels.<key>` paths only those keys
    /// change (an empty or absent value removes the key). NotFound when absent.
    fn update(
        &self,
        namespace: Namespace,
        fieldpaths: &[String],
    ) -> impl Future<Output = Result<Namespace>> + Send;
    /// NotFound when absent; FailedPrecondition naming what is left when the namespace still
    /// holds images, leases, blobs or snapshots.
    fn delete(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
}
