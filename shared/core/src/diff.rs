//! The diff resource: layers applied onto mounted snapshots, and the changes between two mount
//! sets written as a layer blob. One trait, a local implementation beside the snapshotter (its
//! `Differ`) and a remote one (a gRPC client of the Diff API) in `strata-grpc`.

use crate::descriptor::Descriptor;
use crate::errdefs::Result;
use crate::mount::Mount;
use std::collections::HashMap;
use std::future::Future;

/// How a layer is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Sync the file system written to before answering.
    pub sync_fs: bool,
}

/// How the changes between two mount sets are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// The layer's media type (empty: an OCI tar+gzip layer); it chooses the compression.
    pub media_type: String,
    /// The ingest reference the blob is written under (empty: one the differ makes up).
    pub reference: String,
    /// Labels of the committed blob (the differ adds the uncompressed digest's).
    pub labels: HashMap<String, String>,
}

/// Applies and produces layers in a namespace's content store.
pub trait Diff: Send + Sync + 'static {
    /// Applies `layer` (a blob in the content store) onto the snapshot mounted by `mounts`;
    /// returns the descriptor of the uncompressed layer, whose digest is the diff ID. When the
    /// layer carries the [`crate::descriptor::UNCOMPRESSED_LABEL`] annotation, the diff ID is
    /// verified while the layer is applied.
    fn apply(
        &self,
        ns: &str,
        layer: &Descriptor,
        mounts: &[Mount],
        opts: ApplyOptions,
    ) -> impl Future<Output = Result<Descriptor>> + Send;
    /// Writes the changes from `lower` to `upper` as a layer blob into the content store and
    /// returns its descriptor.
    fn diff(
        &self,
        ns: &str,
        lower: &[Mount],
        upper: &[Mount],
        opts: DiffOptions,
    ) -> impl Future<Output = Result<Descriptor>> + Send;
}
