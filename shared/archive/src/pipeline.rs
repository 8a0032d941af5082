//! The decompress-and-hash stage of [`crate::apply`]: one thread reads the compressed input,
//! decompresses it, hashes the tar bytes and hands them on in large buffers through a bounded
//! channel; the extracting thread reads them through [`ChannelReader`].

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use sha2::{Digest as _, Sha256};
use strata_core::Digest;

/// Size of one buffer handed from the decompressor to the extractor.
pub(crate) const CHUNK: usize = 1 << 20;
/// Buffers in flight between the two threads (bounds memory to about QUEUE + 2 chunks).
pub(crate) const QUEUE: usize = 6;

pub(crate) enum Chunk {
    Data(Vec<u8>),
    /// The producer failed; its error is returned from its thread.
    Failed,
}

/// What the producer saw once the stream ended.
pub(crate) struct Produced {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// Reads `src` to its end, hashing every byte and sending it on in `CHUNK`-sized buffers.
/// Returns `Ok(None)` when the consumer hung up first (it failed and reports its own error).
pub(crate) fn produce(
    mut src: impl Read,
    tx: SyncSender<Chunk>,
    recycle: Receiver<Vec<u8>>,
) -> io::Result<Option<Produced>> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut eof = false;
    while !eof {
        let mut buf = match recycle.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(CHUNK),
        };
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match src.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The consumer learns that the stream broke; the error itself is returned.
                    let _ = tx.send(Chunk::Failed);
                    return Err(e);
                }
            }
        }
        if filled == 0 {
            break;
        }
        hasher.update(&buf[..filled]);
        size += filled as u64;
        buf.truncate(filled);
        if tx.send(Chunk::Data(buf)).is_err() {
            return Ok(None);
        }
    }
    Ok(Some(Produced {
        digest: Digest::from_hasher(hasher),
        size,
    }))
}

/// The extractor's end of the channel, as a `Read`.
pub(crate) struct ChannelReader {
    rx: Receiver<Chunk>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    /// Set when the producer reported a failure: errors seen by the tar parser after this are
    /// consequences, and the producer's error is the one to report.
    failed: Rc<Cell<bool>>,
}

impl ChannelReader {
    pub(crate) fn new(
        rx: Receiver<Chunk>,
        recycle: SyncSender<Vec<u8>>,
        failed: Rc<Cell<bool>>,
    ) -> Self {
        Self {
            rx,
            recycle,
            cur: Vec::new(),
            pos: 0,
            done: false,
            failed,
        }
    }

    fn next_chunk(&mut self) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        match self.rx.recv() {
            Ok(Chunk::Data(v)) => {
                let old = std::mem::replace(&mut self.cur, v);
                self.pos = 0;
                if old.capacity() > 0 {
                    // Full or disconnected: the producer allocates a new one instead.
                    let _ = self.recycle.try_send(old);
                }
                Ok(true)
            }
            Ok(Chunk::Failed) => {
                self.done = true;
                self.failed.set(true);
                Err(io::Error::other("layer stream failed"))
            }
            Err(_) => {
                self.done = true;
                Ok(false)
            }
        }
    }

    /// Consumes the rest of the stream (padding after the end-of-archive blocks) so the producer
    /// hashes every byte.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        self.pos = self.cur.len();
        while self.next_chunk()? {
            self.pos = self.cur.len();
        }
        Ok(())
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.cur.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
