//! The crate's error type and its mapping onto [`strata_core::Kind`].

use std::io;
use std::path::PathBuf;

use strata_core::{Digest, Kind};

use crate::Compression;

/// Everything that can go wrong applying or producing a layer. Each message names the entry,
/// path or input it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The media type names no layer format this crate knows.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),

    /// An entry tried to create, change or read something outside the root.
    #[error("layer entry {path:?} escapes the root: {reason}")]
    Escape {
        /// The entry's path, as the tar names it.
        path: String,
        /// How it leaves the root (a `..` climbing above it, in its path or a link target).
        reason: String,
    },

    /// An entry is malformed or cannot be applied as the layer describes it.
    #[error("layer entry {path:?}: {reason}")]
    InvalidEntry {
        /// The entry's path, as the tar names it.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The tar stream itself is malformed (bad header checksum, truncated entry...).
    #[error("malformed layer tar {context}: {source}")]
    MalformedTar {
        /// Where in the stream (`after "etc/passwd"`, `after its end`, …).
        context: String,
        /// What reading the tar failed with.
        #[source]
        source: io::Error,
    },

    /// The compressed stream could not be read or decompressed.
    #[error("decompressing {compression} layer stream: {source}")]
    Decompress {
        /// The stream's compression.
        compression: Compression,
        /// What the decoder failed with.
        #[source]
        source: io::Error,
    },

    /// The uncompressed stream does not hash to the expected diff ID.
    #[error("layer diff ID mismatch: expected {expected}, computed {actual}")]
    DiffIdMismatch {
        /// The diff ID the caller gave.
        expected: Digest,
        /// The digest of the stream as read.
        actual: Digest,
    },

    /// A file-system operation for one layer entry failed.
    #[error("layer entry {path:?}: {op}: {source}")]
    Entry {
        /// The entry's path, as the tar names it.
        path: String,
        /// The operation that failed, in words.
        op: String,
        /// What it failed with.
        #[source]
        source: io::Error,
    },

    /// A file-system operation on a local path (the root, a lower layer, a tree being diffed, the
    /// output) failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// The local path operated on.
        path: PathBuf,
        /// The operation that failed, in words.
        op: &'static str,
        /// What it failed with.
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// The category callers branch on.
    pub fn kind(&self) -> Kind {
        match self {
            Self::UnsupportedMediaType(_)
            | Self::Escape { .. }
            | Self::InvalidEntry { .. }
            | Self::MalformedTar { .. }
            | Self::DiffIdMismatch { .. } => Kind::InvalidArgument,
            Self::Decompress { source, .. } => match source.kind() {
                io::ErrorKind::InvalidData
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::UnexpectedEof => Kind::InvalidArgument,
                _ => Kind::Internal,
            },
            Self::Entry { .. } | Self::Io { .. } => Kind::Internal,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            op,
            source,
        }
    }
}

impl From<ArchiveError> for strata_core::Error {
    fn from(e: ArchiveError) -> Self {
        strata_core::Error::new(e.kind(), e.to_string())
    }
}

/// Lossy text of a raw tar path, for messages.
pub(crate) fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let e = ArchiveError::Escape {
            path: "../x".into(),
            reason: "\"..\" climbs above the root".into(),
        };
        let core: strata_core::Error = e.into();
        assert_eq!(core.kind(), Kind::InvalidArgument);
        assert!(core.message().contains("\"../x\""), "{core}");

        let e = ArchiveError::io(
            "/r",
            "opening root",
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert_eq!(e.kind(), Kind::Internal);
        assert!(e.to_string().starts_with("opening root \"/r\": "), "{e}");

        let e = ArchiveError::Decompress {
            compression: Compression::Gzip,
            source: io::Error::new(io::ErrorKind::InvalidData, "corrupt deflate stream"),
        };
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert_eq!(
            e.to_string(),
            "decompressing gzip layer stream: corrupt deflate stream"
        );
    }
}
