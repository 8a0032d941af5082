//! Reading back what a process wrote: the framed logs supervisors keep (records that tell
//! stdout from stderr, see [`strata_core::logfile`]) of a container (every task it has had) or
//! of an exec'd process. `follow` keeps reading as the log grows and ends with the process's
//! exit, which the supervisor tells only once the process's output is all in the log, so the
//! last output is never lost. Knows nothing of gRPC.

use crate::tasks::{ExitInfo, Tasks};
use std::collections::VecDeque;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strata_core::containers::ContainerStore;
use strata_core::logfile::{self, Decoder, HEADER_LEN, Stream};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Result};
use tokio::sync::mpsc;

/// How often a followed log is looked at for new records.
const POLL: Duration = Duration::from_millis(20);
/// Bytes read from a log at a time.
const CHUNK: usize = 256 << 10;
/// Events queued for a slow reader before the log reader waits for it.
const QUEUE: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    pub container_id: String,
    /// Empty for the container's own log.
    pub exec_id: String,
    /// Go on as the log grows, until the process has exited; end with its exit.
    pub follow: bool,
    /// Start at the log's current end.
    pub new_only: bool,
    /// Start with the last this many lines of what is in the log (0: all of it).
    pub tail: usize,
    /// Start where the container's current task began.
    pub this_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Output {
        stream: Stream,
        data: Vec<u8>,
    },
    Exit {
        status: u32,
        at: std::time::SystemTime,
    },
}

impl From<ExitInfo> for LogEvent {
    fn from(e: ExitInfo) -> Self {
        LogEvent::Exit {
            status: e.status,
            at: e.at,
        }
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("log {}: {e}", path.display()))
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("reading log {}: {e}", path.display()))
}

/// Output records: which stream, what it wrote.
type Records = Vec<(Stream, Vec<u8>)>;
type Tx = mpsc::Sender<Result<LogEvent>>;

/// The last `n` lines of output, as records (the first one possibly cut at a line start).
/// Kept short while records are pushed: only what may still hold the last `n` lines stays.
#[derive(Debug)]
pub struct Tail {
    n: usize,
    records: VecDeque<(Stream, Vec<u8>)>,
    newlines: usize,
}

fn newlines(data: &[u8]) -> usize {
    data.iter().filter(|b| **b == b'\n').count()
}

impl Tail {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            records: VecDeque::new(),
            newlines: 0,
        }
    }

    pub fn push(&mut self, stream: Stream, data: Vec<u8>) {
        self.newlines += newlines(&data);
        self.records.push_back((stream, data));
        // The last n lines begin after at most the (n+1)-th newline from the end: records
        // before one that leaves that many behind it are not needed.
        while self.records.len() > 1 {
            let first = self.records.front().map_or(0, |(_, d)| newlines(d));
            if self.newlines - first > self.n {
                self.records.pop_front();
                self.newlines -= first;
            } else {
                break;
            }
        }
    }

    pub fn finish(self) -> Records {
        let mut records: Vec<_> = self.records.into();
        let mut seen = 0;
        let mut last = true;
        for i in (0..records.len()).rev() {
            let data = &records[i].1;
            for j in (0..data.len()).rev() {
                // A final newline ends the last line; it does not start another.
                let skip = last && data[j] == b'\n';
                last = false;
                if skip || data[j] != b'\n' {
                    continue;
                }
                seen += 1;
                if seen == self.n {
                    let rest = records[i].1.split_off(j + 1);
                    let mut out = Vec::with_capacity(records.len() - i);
                    if !rest.is_empty() {
                        out.push((records[i].0, rest));
                    }
                    out.extend(records.drain(i + 1..));
                    return out;
                }
            }
        }
        records
    }
}

/// The offset just past the last whole record among the first `len` bytes of the log (its
/// length when the reader looked), hopping from header to header.
pub(crate) fn end_of_records(path: &Path) -> Result<u64> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path, e)),
    };
    let len = f.metadata().map_err(|e| io_err(path, e))?.len();
    let mut pos = 0u64;
    let mut head = [0u8; HEADER_LEN];
    loop {
        if pos + HEADER_LEN as u64 > len {
            return Ok(pos);
        }
        f.seek(SeekFrom::Start(pos)).map_err(|e| io_err(path, e))?;
        f.read_exact(&mut head).map_err(|e| io_err(path, e))?;
        let Some((_, n)) = logfile::parse_header(&head, pos).map_err(|e| corrupt(path, e))? else {
            return Ok(pos);
        };
        let next = pos + (HEADER_LEN + n) as u64;
        if next > len {
            return Ok(pos);
        }
        pos = next;
    }
}

/// The last `n` lines of the log and the offset just past them.
fn read_tail(path: &Path, n: usize) -> Result<(Records, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut tail = Tail::new(n);
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let got = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if got == 0 {
            break;
        }
        dec.feed(&buf[..got]);
        while let Some((s, d)) = dec.next_record().map_err(|e| corrupt(path, e))? {
            tail.push(s, d);
        }
    }
    Ok((tail.finish(), dec.offset()))
}

/// A log read from a record boundary on; the file is opened once it exists.
struct Reader {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    start: u64,
    dec: Decoder,
    buf: Vec<u8>,
}

impl Reader {
    fn new(path: PathBuf, start: u64) -> Self {
        Self {
            path,
            file: None,
            start,
            dec: Decoder::at(start),
            buf: vec![0u8; CHUNK],
        }
    }

    /// Reads what is there now (one chunk at most); returns the whole records it completes
    /// and whether anything was read.
    async fn read(&mut self) -> Result<(Records, bool)> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        if self.file.is_none() {
            match tokio::fs::File::open(&self.path).await {
                Ok(mut f) => {
                    f.seek(SeekFrom::Start(self.start))
                        .await
                        .map_err(|e| io_err(&self.path, e))?;
                    self.file = Some(f);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((Vec::new(), false));
                }
                Err(e) => return Err(io_err(&self.path, e)),
            }
        }
        let Some(f) = self.file.as_mut() else {
            return Ok((Vec::new(), false));
        };
        let got = f
            .read(&mut self.buf)
            .await
            .map_err(|e| io_err(&self.path, e))?;
        self.dec.feed(&self.buf[..got]);
        let mut out = Vec::new();
        while let Some(r) = self.dec.next_record().map_err(|e| corrupt(&self.path, e))? {
            out.push(r);
        }
        Ok((out, got > 0))
    }
}

/// Sends records; false when the reader has gone.
async fn send_records(tx: &Tx, records: Records) -> bool {
    for (stream, data) in records {
        if tx
            .send(Ok(LogEvent::Output { stream, data }))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// Sends everything the log holds now; false when the reader has gone.
async fn drain(tx: &Tx, reader: &mut Reader) -> Result<bool> {
    loop {
        let (records, more) = reader.read().await?;
        if !send_records(tx, records).await {
            return Ok(false);
        }
        if !more {
            return Ok(true);
        }
    }
}

impl<C: ContainerStore, S: SnapshotStore> Tasks<C, S> {
    /// Streams a log as [`LogEvent`]s (see [`LogsRequest`]). NotFound when neither the log nor
    /// the process exists.
    pub async fn logs(
        self: &Arc<Self>,
        ns: &str,
        req: LogsRequest,
    ) -> Result<mpsc::Receiver<Result<LogEvent>>> {
        let (id, exec_id) = (req.container_id.as_str(), req.exec_id.as_str());
        let path = self.log_path(ns, id, exec_id)?;
        let has_log = path.exists();
        // Whether there is a process whose exit may come: known to the supervisor, or created
        // and not yet started.
        let process = if exec_id.is_empty() {
            self.has_task(ns, id)?
        } else {
            self.is_pending(ns, id, exec_id)
                || (self.has_task(ns, id)? && self.exit_now(ns, id, exec_id).await.is_ok())
        };
        if !has_log && !process {
            return Err(Error::not_found(if exec_id.is_empty() {
                format!("container {id:?}: no log and no task")
            } else {
                format!("exec {exec_id:?} of container {id:?}: no log and no such process")
            }));
        }
        // Already exited (its output all in the log): told after the log, without following.
        let exited = if process {
            self.exit_now(ns, id, exec_id).await.ok().flatten()
        } else {
            None
        };
        let (first, start) = {
            let (p, tail, new_only) = (path.clone(), req.tail, req.new_only);
            let run_start = if req.this_run && exec_id.is_empty() {
                self.run_start(ns, id)?
            } else {
                0
            };
            tokio::task::spawn_blocking(move || -> Result<_> {
                if run_start > 0 && !new_only && tail == 0 {
                    Ok((Vec::new(), run_start))
                } else if new_only {
                    Ok((Vec::new(), end_of_records(&p)?))
                } else if tail > 0 {
                    read_tail(&p, tail)
                } else {
                    Ok((Vec::new(), 0))
                }
            })
            .await
            .map_err(|e| Error::internal(format!("reading log {}: {e}", path.display())))??
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let this = self.clone();
        let (ns, id, exec_id) = (ns.to_owned(), id.to_owned(), exec_id.to_owned());
        let follow = req.follow && process && exited.is_none();
        tokio::spawn(async move {
            let mut reader = Reader::new(path, start);
            let run = async {
                if !send_records(&tx, first).await {
                    return Ok(());
                }
                if !follow {
                    if drain(&tx, &mut reader).await?
                        && let Some(e) = exited
                    {
                        let _ = tx.send(Ok(e.into())).await;
                    }
                    return Ok(());
                }
                let wait = this.wait(&ns, &id, &exec_id);
                tokio::pin!(wait);
                loop {
                    let (records, more) = reader.read().await?;
                    if !send_records(&tx, records).await {
                        return Ok(());
                    }
                    if more {
                        continue;
                    }
                    tokio::select! {
                        exit = &mut wait => {
                            // Told only once the output is in the log: read it to the end.
                            if drain(&tx, &mut reader).await?
                                && let Ok(e) = exit
                            {
                                let _ = tx.send(Ok(e.into())).await;
                            }
                            return Ok(());
                        }
                        () = tokio::time::sleep(POLL) => {}
                        () = tx.closed() => return Ok(()),
                    }
                }
            };
            let result: Result<()> = run.await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tail(n: usize, records: &[(Stream, &str)]) -> Vec<(Stream, String)> {
        let mut t = Tail::new(n);
        for (s, d) in records {
            t.push(*s, d.as_bytes().to_vec());
        }
        t.finish()
            .into_iter()
            .map(|(s, d)| (s, String::from_utf8(d).unwrap()))
            .collect()
    }

    use Stream::{Stderr as E, Stdout as O};

    #[test]
    fn tail_keeps_the_last_lines_and_their_streams() {
        let recs = [(O, "a\nb\n"), (E, "c\n"), (O, "d\ne\nf\n")];
        assert_eq!(tail(2, &recs), vec![(O, "e\nf\n".into())]);
        assert_eq!(
            tail(4, &recs),
            vec![(E, "c\n".into()), (O, "d\ne\nf\n".into())]
        );
        assert_eq!(
            tail(5, &recs),
            vec![
                (O, "b\n".into()),
                (E, "c\n".into()),
                (O, "d\ne\nf\n".into())
            ]
        );
        assert_eq!(tail(100, &recs).len(), 3);
        // A last line without its newline counts as a line.
        assert_eq!(
            tail(2, &[(O, "x\ny\n"), (E, "z")]),
            vec![(O, "y\n".into()), (E, "z".into())]
        );
        // Lines split over records.
        assert_eq!(
            tail(1, &[(O, "a\nhal"), (O, "f\n")]),
            vec![(O, "hal".into()), (O, "f\n".into())]
        );
    }

    #[test]
    fn tail_of_many_records_stays_small() {
        let mut t = Tail::new(3);
        for i in 0..10_000 {
            t.push(O, format!("{i}\n").into_bytes());
        }
        assert!(t.records.len() <= 5, "{}", t.records.len());
        let out: Vec<u8> = t.finish().into_iter().flat_map(|(_, d)| d).collect();
        assert_eq!(out, b"9997\n9998\n9999\n");
    }
}
