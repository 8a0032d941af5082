//! Stdin FIFOs: created and held open by the gateway at task or exec start, written from
//! attached clients, closed for good when the client ends stdin or the container goes.

use super::{io_dir, key, lock};
use crate::Backends;
use std::path::PathBuf;
use std::sync::Arc;
use strata_core::{Error, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

/// Creates a FIFO for the stdin of `exec_id` (empty: init) and opens its write end.
pub(super) async fn open_stdin(b: &Backends, ns: &str, id: &str, exec_id: &str) -> Result<PathBuf> {
    let dir = io_dir(b, ns, id);
    let name = if exec_id.is_empty() {
        "init.stdin".to_owned()
    } else {
        format!("exec-{exec_id}.stdin")
    };
    let path = dir.join(name);
    let io = |e: std::io::Error| Error::internal(format!("stdin pipe {}: {e}", path.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io(e.into()))?;
    // Read and write: opening never waits for the supervisor, and the pipe stays open as long
    // as the gateway holds it.
    let sender = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(&path)
        .map_err(io)?;
    lock(&b.attachments.stdin).insert(
        key(ns, id, exec_id),
        Arc::new(tokio::sync::Mutex::new(Some(sender))),
    );
    Ok(path)
}

pub(super) fn close_stdin(b: &Backends, ns: &str, id: &str, exec_id: &str) {
    lock(&b.attachments.stdin).remove(&key(ns, id, exec_id));
    let dir = io_dir(b, ns, id);
    let name = if exec_id.is_empty() {
        "init.stdin".to_owned()
    } else {
        format!("exec-{exec_id}.stdin")
    };
    let _ = std::fs::remove_file(dir.join(name));
}

/// Writes stdin data from an attached client.
pub async fn write_stdin(
    stdin: &Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    data: &[u8],
) -> Result<()> {
    let mut s = stdin.lock().await;
    match s.as_mut() {
        Some(w) => w
            .write_all(data)
            .await
            .map_err(|e| Error::failed_precondition(format!("writing stdin: {e}"))),
        None => Err(Error::failed_precondition("stdin is closed")),
    }
}

/// Closes stdin for good: the process reads end of file.
pub async fn end_stdin(b: &Backends, ns: &str, id: &str, exec_id: &str) {
    let k = key(ns, id, exec_id);
    if let Some(s) = b.attachments.stdin(&k) {
        s.lock().await.take();
    }
    lock(&b.attachments.stdin).remove(&k);
    // The supervisor holds the process's end open until told: what the pipe held is delivered,
    // then the process reads end of file.
    if let Err(e) = b.tasks.close_stdin(ns, id, exec_id).await {
        tracing::debug!(container = %id, exec = %exec_id, error = %e, "closing stdin");
    }
}
