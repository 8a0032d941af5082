//! Reading a committed blob: [`LocalReader`] streams it in chunks with `pread`.

use super::{Inner, not_found};
use super::{Result, io_err};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use strata_core::content::ReadChunk;
use strata_core::content::futures_like::ChunkStream;
use strata_core::{Digest, Error};

/// Size of the chunks a read is streamed in.
const READ_CHUNK: u64 = 1 << 20;

impl Inner {
    pub(super) fn open_blob(&self, ns: &str, d: &Digest) -> Result<(File, u64)> {
        if self.blob_record(ns, d)?.is_none() {
            return Err(not_found(d));
        }
        let path = self.blob_path(d.hex());
        let file = File::open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        Ok((file, len))
    }
}

/// Streams a blob in chunks, reading with `pread` on the blocking pool.
pub struct LocalReader {
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
}

impl ChunkStream for LocalReader {
    async fn next_chunk(&mut self) -> Option<ReadChunk> {
        if self.pos >= self.end {
            return None;
        }
        let (file, pos) = (self.file.clone(), self.pos);
        let want = (self.end - pos).min(READ_CHUNK);
        let result = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; usize::try_from(want).unwrap_or(0)];
            file.read_exact_at(&mut buf, pos).map(|()| buf)
        })
        .await;
        Some(match result {
            Ok(Ok(buf)) => {
                self.pos += buf.len() as u64;
                Ok((pos, buf.into()))
            }
            Ok(Err(e)) => Err(Error::internal(format!("reading blob at {pos}: {e}"))),
            Err(e) => Err(Error::internal(format!("reading blob at {pos}: {e}"))),
        })
    }
}
