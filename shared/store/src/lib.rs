//! Shared by the services' metadata stores (content, snapshotter, images, tasks): each keeps its
//! records in redb, encoded with prost, and runs blocking work on tokio's pool; their failures
//! are one [`StoreError`], mapped to a [`strata_core::Error`] for callers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_core::Error;

/// Failures inside a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A failure with a category callers act on (not found, already exists, …).
    #[error(transparent)]
    Api(#[from] Error),
    /// A file operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// What the operation failed with.
        source: io::Error,
    },
    /// The redb database failed (opening, a transaction, a table, storage or a commit).
    #[error("metadata database: {0}")]
    Db(Box<redb::Error>),
    /// A stored record does not decode as the message it should be.
    #[error("corrupt metadata record {key}: {source}")]
    Decode {
        /// The record's key.
        key: String,
        /// What prost reported.
        source: prost::DecodeError,
    },
    /// The blocking task doing the work panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

macro_rules! db_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Api(e) => e,
            other => Error::internal(other.to_string()),
        }
    }
}

/// A result whose error is a [`StoreError`] unless told otherwise.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maps an I/O error to one naming `path`.
pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A time as stored: nanoseconds since the epoch.
pub fn nanos(t: SystemTime) -> i64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A stored time back: nanoseconds since the epoch, negatives read as the epoch.
pub fn from_nanos(n: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

/// Decodes a stored record, naming its key when it is corrupt.
pub fn decode<M: prost::Message + Default>(key: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|source| StoreError::Decode {
        key: key.to_owned(),
        source,
    })
}

/// The page cache of a metadata database. redb's default (1 GiB) let a service's memory grow
/// with every record it ever read; the metadata of a host fits in far less, and what is not
/// cached is read from the page cache of the kernel. 256 KiB: with 1 MiB, the cache filling
/// over a soak round grew the snapshotter's heap by 30 % (bench/soak.sh); with 256 KiB every
/// service stays within 10 %, at no cost a benchmark shows.
pub const DB_CACHE_BYTES: usize = 256 << 10;

/// Opens (or creates) a store's metadata database at `path`, with a bounded cache.
pub fn open_database(path: &Path) -> Result<redb::Database> {
    Ok(redb::Builder::new()
        .set_cache_size(DB_CACHE_BYTES)
        .create(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        assert_eq!(from_nanos(nanos(t)), t);
        assert_eq!(from_nanos(-5), UNIX_EPOCH);
    }
}
