//! Applying and producing OCI image layers.
//!
//! [`apply`] streams a (possibly compressed) layer tar into a directory: one thread decompresses
//! and hashes (the diff ID), the calling thread extracts, with large buffers between them and no
//! per-file fsync. Extraction is confined to the root: parents are resolved with
//! `openat2(RESOLVE_IN_ROOT)` and the last component is handled with `*at()` calls that never
//! follow it. Whiteouts become overlayfs whiteouts and opaque markers ([`WhiteoutMode::Overlay`])
//! or deletions ([`WhiteoutMode::Delete`]).
//!
//! [`write_diff`] and [`write_overlay_diff`] produce layer tars from two trees or from an
//! overlayfs upper directory.

#![warn(missing_docs)]

mod apply;
mod bounds;
mod compression;
mod diff;
mod error;
mod pipeline;
mod sys;

use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

use strata_core::Digest;
use tracing::debug;

pub use bounds::{MAX_GNU_LONG_NAME_SIZE, MAX_PAX_HEADER_SIZE, MAX_SPARSE_EXTENSION_BLOCKS};
pub use compression::{Compression, compression_for_media_type, decompress, detect_compression};
pub use diff::{DiffStats, write_diff, write_overlay_diff};
pub use error::ArchiveError;

/// What to do with whiteout entries (`.wh.name`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Applying into an overlayfs upper directory: `.wh.name` becomes a 0/0 character device
    /// `name`; `.wh..wh..opq` in directory D sets `trusted.overlay.opaque=y` on D (no entry is
    /// created).
    Overlay,
    /// Applying onto a mounted, merged tree (or a plain directory copy): `.wh.name` deletes `name`
    /// (recursively); `.wh..wh..opq` deletes everything already in D that this same layer did not
    /// create.
    Delete,
}

/// How [`apply`] writes a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// What whiteout entries become.
    pub whiteouts: WhiteoutMode,
    /// Read-only lower layer directories, topmost first. In Overlay mode a hard link whose target
    /// is in a lower layer (and not in `root`) makes the target be copied up into `root` first
    /// (contents, mode, owner, xattrs, times, and missing parent directories with their lower
    /// metadata); the link then points at the copy.
    pub parents: Vec<PathBuf>,
    /// When true, `syncfs()` the target file system once at the end.
    pub sync: bool,
}

impl ApplyOptions {
    /// No parents, no sync.
    pub fn new(whiteouts: WhiteoutMode) -> Self {
        Self {
            whiteouts,
            parents: Vec::new(),
            sync: false,
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream, every byte of it.
    pub diff_id: Digest,
    /// Bytes in the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Tar entries read (extension headers such as PAX or GNU long names not counted).
    pub entries: u64,
}

/// Decompresses `input` as `compression` says, extracts the tar into `root`, and verifies the
/// uncompressed digest against `expected_diff_id` when given (an error naming both digests on
/// mismatch; the caller discards the snapshot, which is already written by then).
///
/// An entry replaces what exists at its path, except that an existing directory is kept (with
/// new metadata) when the entry is a directory too. Owners, modes (setuid included), times
/// (directories' at the end), xattrs (`SCHILY.xattr.*`), devices and FIFOs are reproduced.
/// Nothing outside `root` is created, changed or read: `..` that climbs above the root and hard
/// links to targets outside it are errors, absolute paths are taken relative to the root, and
/// symbolic links are resolved as if `root` were `/`.
pub fn apply(
    input: impl Read + Send,
    compression: Compression,
    root: &Path,
    opts: &ApplyOptions,
    expected_diff_id: Option<&Digest>,
) -> Result<ApplyStats, ArchiveError> {
    let started = Instant::now();
    let mut ex = apply::Extractor::new(root, opts)?;
    let source = compression::decompress(input, compression)?;
    let (tx, rx) = mpsc::sync_channel(pipeline::QUEUE);
    let (recycle_tx, recycle_rx) = mpsc::sync_channel(pipeline::QUEUE + 2);
    let failed = Rc::new(Cell::new(false));

    let (extracted, produced) = std::thread::scope(|s| {
        let producer = std::thread::Builder::new()
            .name("layer-decompress".into())
            .spawn_scoped(s, move || pipeline::produce(source, tx, recycle_rx))
            .map_err(|e| ArchiveError::io(root, "starting decompression thread for", e))?;
        // The reader is dropped when extraction ends, however it ends, so the producer never
        // waits on a channel nobody reads.
        let extracted = ex.extract(pipeline::ChannelReader::new(rx, recycle_tx, failed.clone()));
        let produced = producer.join();
        Ok::<_, ArchiveError>((extracted, produced))
    })?;

    // Which failure to report: a panic of the producer first; then the extractor's own error
    // (it is about an earlier part of the stream than anything the producer failed on later),
    // unless it only followed from the producer's failure to deliver the stream.
    let produced = match produced {
        Ok(p) => p,
        Err(_) => {
            return Err(ArchiveError::io(
                root,
                "decompressing layer for",
                std::io::Error::other("decompression thread panicked"),
            ));
        }
    };
    let produced = match (extracted, produced) {
        (Err(e), _) if !failed.get() => return Err(e),
        (_, Err(source)) => {
            return Err(ArchiveError::Decompress {
                compression,
                source,
            });
        }
        (Err(e), Ok(_)) => return Err(e),
        (Ok(()), Ok(None)) => {
            return Err(ArchiveError::io(
                root,
                "decompressing layer for",
                std::io::Error::other("decompression stopped before the end of the stream"),
            ));
        }
        (Ok(()), Ok(Some(p))) => p,
    };
    if let Some(expected) = expected_diff_id
        && *expected != produced.digest
    {
        return Err(ArchiveError::DiffIdMismatch {
            expected: expected.clone(),
            actual: produced.digest,
        });
    }
    if opts.sync {
        sys::syncfs(ex.root_fd()).map_err(|e| ArchiveError::io(root, "syncing", e))?;
    }
    debug!(
        root = %root.display(),
        entries = ex.entries,
        bytes = produced.size,
        diff_id = %produced.digest,
        elapsed_ms = started.elapsed().as_millis(),
        "applied layer"
    );
    Ok(ApplyStats {
        diff_id: produced.digest,
        uncompressed_size: produced.size,
        entries: ex.entries,
    })
}
