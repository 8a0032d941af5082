//! The differ: applies layer blobs from the content store onto snapshots, and turns the changes
//! between two mounted trees into a new layer blob in the content store.

use bytes::Bytes;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use strata_archive::{ApplyOptions, Compression, WhiteoutMode};
use strata_core::content::futures_like::ChunkStream;
use strata_core::content::{CommitOptions, ContentStore, ContentWriter, WriterOptions};
use strata_core::descriptor::{Descriptor, UNCOMPRESSED_LABEL, media_types};
use strata_core::mount::Mount;
use strata_core::{Digest, Error, Result};
use strata_mount::TempMount;
use tokio::sync::mpsc;

/// Chunks in flight between the content stream and the extracting thread.
const PIPE_DEPTH: usize = 16;

/// Applies and produces layers, reading and writing blobs through `C`.
pub struct Differ<C> {
    content: C,
    /// Where temporary mount points are made.
    scratch: PathBuf,
}

/// A `Read` over chunks arriving from an async task.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A `Write` that hashes and counts what passes and hands it to an async task in large chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    hasher: sha2::Sha256,
    size: u64,
}

const WRITE_CHUNK: usize = 1 << 20;

/// Gives the heap freed by a layer's apply or diff back to the system. Their buffers (the
/// decompressor's and the tar stage's, some MiB) are freed on threads that glibc serves from
/// arenas of their own, and an arena keeps what is freed inside it: without this, an idle
/// snapshotter held 10-40 MiB of free heap after a few pulls, depending on which threads ran.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only takes each arena's lock and returns its free pages to the
    // kernel; it touches no memory that is in use and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK));
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::other("content writer went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Where and how a layer is written for a set of mounts.
enum Target {
    /// Straight into a directory (an overlay upper dir, or a bind-mounted snapshot).
    Dir {
        root: PathBuf,
        whiteouts: WhiteoutMode,
        parents: Vec<PathBuf>,
    },
    /// Through a temporary mount of the records.
    Mounted(TempMount),
}

fn target_for(mounts: &[Mount], scratch: &Path) -> Result<Target> {
    if let [m] = mounts {
        if m.kind == "overlay"
            && let Some(upper) = m.option("upperdir")
        {
            let parents = m
                .option("lowerdir")
                .map(|l| l.split(':').map(PathBuf::from).collect())
                .unwrap_or_default();
            return Ok(Target::Dir {
                root: PathBuf::from(upper),
                whiteouts: WhiteoutMode::Overlay,
                parents,
            });
        }
        if (m.kind == "bind" || m.kind == "rbind") && m.target.is_empty() {
            if m.has_flag("ro") {
                return Err(Error::invalid_argument(format!(
                    "cannot apply a layer onto read-only mount of {}",
                    m.source
                )));
            }
            return Ok(Target::Dir {
                root: PathBuf::from(&m.source),
                whiteouts: WhiteoutMode::Delete,
                parents: Vec::new(),
            });
        }
    }
    if mounts.is_empty() {
        return Err(Error::invalid_argument("apply needs at least one mount"));
    }
    Ok(Target::Mounted(TempMount::new(mounts, scratch)?))
}

/// The mounts of a read-only lower tree, as directories topmost first, when they are plain
/// directories (bind or lowerdir-only overlay).
fn lower_dirs(mounts: &[Mount]) -> Option<Vec<String>> {
    match mounts {
        [] => Some(Vec::new()),
        [m] if m.kind == "bind" || m.kind == "rbind" => Some(vec![m.source.clone()]),
        [m] if m.kind == "overlay" && m.option("upperdir").is_none() => m
            .option("lowerdir")
            .map(|l| l.split(':').map(str::to_owned).collect()),
        _ => None,
    }
}

impl<C: ContentStore + Clone> Differ<C> {
    pub fn new(content: C, scratch: impl Into<PathBuf>) -> Self {
        Self {
            content,
            scratch: scratch.into(),
        }
    }

    /// Applies the layer `desc` onto the snapshot mounted by `mounts`; returns the descriptor of
    /// the uncompressed layer (its digest is the diff ID). When the descriptor carries the
    /// `containerd.io/uncompressed` annotation, the diff ID is verified while streaming.
    pub async fn apply(
        &self,
        ns: &str,
        desc: &Descriptor,
        mounts: &[Mount],
        sync: bool,
    ) -> Result<Descriptor> {
        let compression = strata_archive::compression_for_media_type(&desc.media_type)?;
        let expected = match desc.annotations.get(UNCOMPRESSED_LABEL) {
            Some(d) => Some(Digest::parse(d).map_err(|e| e.context("uncompressed annotation"))?),
            None => None,
        };
        // Fail early, before mounting anything, when the blob is not there.
        let info = self.content.info(ns, &desc.digest).await?;
        if desc.size != 0 && info.size != desc.size {
            return Err(Error::failed_precondition(format!(
                "layer {} has size {} in the content store, the descriptor says {}",
                desc.digest, info.size, desc.size
            )));
        }
        let mut reader = self.content.read(ns, &desc.digest, 0, 0).await?;
        let target = {
            let mounts = mounts.to_vec();
            let scratch = self.scratch.clone();
            tokio::task::spawn_blocking(move || target_for(&mounts, &scratch))
                .await
                .map_err(|e| Error::internal(format!("preparing apply target: {e}")))??
        };

        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = reader.next_chunk().await {
                let failed = chunk.is_err();
                if tx.send(chunk.map(|(_, b)| b)).await.is_err() || failed {
                    break;
                }
            }
        });
        let digest = desc.digest.clone();
        let stats = tokio::task::spawn_blocking(move || {
            let input = ChannelReader {
                rx,
                current: Bytes::new(),
            };
            let (root, opts) = match &target {
                Target::Dir {
                    root,
                    whiteouts,
                    parents,
                } => (
                    root.clone(),
                    ApplyOptions {
                        whiteouts: *whiteouts,
                        parents: parents.clone(),
                        sync,
                    },
                ),
                Target::Mounted(m) => (
                    m.path().to_owned(),
                    ApplyOptions {
                        whiteouts: WhiteoutMode::Delete,
                        parents: Vec::new(),
                        sync,
                    },
                ),
            };
            let result = strata_archive::apply(input, compression, &root, &opts, expected.as_ref());
            drop(target);
            release_freed_memory();
            result
        })
        .await
        .map_err(|e| Error::internal(format!("applying layer {digest}: {e}")))?
        .map_err(|e| Error::from(e).context(format!("applying layer {digest}")))?;
        feeder.abort();
        strata_core::crashpoint::hit("snapshotter.apply.extracted");
        Ok(Descriptor {
            media_type: media_types::OCI_LAYER.to_owned(),
            digest: stats.diff_id,
            size: stats.uncompressed_size,
            annotations: HashMap::new(),
        })
    }

    /// Writes the changes from `lower` to `upper` as a layer blob of `media_type` (default tar+gzip)
    /// into the content store under `reference`, labelled with `labels` and its diff ID.
    pub async fn diff(
        &self,
        ns: &str,
        lower: &[Mount],
        upper: &[Mount],
        media_type: &str,
        reference: &str,
        mut labels: HashMap<String, String>,
    ) -> Result<Descriptor> {
        let media_type = if media_type.is_empty() {
            media_types::OCI_LAYER_GZIP
        } else {
            media_type
        };
        let compression = strata_archive::compression_for_media_type(media_type)?;
        let reference = if reference.is_empty() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            format!("diff-{}-{nanos}", std::process::id())
        } else {
            reference.to_owned()
        };

        let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_DEPTH);
        let (lower, upper, scratch) = (lower.to_vec(), upper.to_vec(), self.scratch.clone());
        let producer = tokio::task::spawn_blocking(move || -> Result<(Digest, Digest, u64)> {
            let out = ChannelWriter {
                tx,
                buf: Vec::with_capacity(WRITE_CHUNK),
                hasher: <sha2::Sha256 as sha2::Digest>::new(),
                size: 0,
            };
            let (stats, out) = write_layer(&lower, &upper, &scratch, compression, out)?;
            let mut out = out;
            out.flush()
                .map_err(|e| Error::internal(format!("writing layer: {e}")))?;
            let compressed = Digest::from_hasher(out.hasher.clone());
            let size = out.size;
            drop(out);
            release_freed_memory();
            Ok((stats.diff_id, compressed, size))
        });

        let mut w = self
            .content
            .writer(ns, &reference, WriterOptions::default())
            .await?;
        let mut offset = w.status().await?.offset;
        if offset != 0 {
            offset = w.write(0, Bytes::new()).await?;
        }
        while let Some(chunk) = rx.recv().await {
            offset = w.write(offset, chunk).await?;
        }
        let (diff_id, digest, size) = producer
            .await
            .map_err(|e| Error::internal(format!("producing layer: {e}")))??;
        labels.insert(UNCOMPRESSED_LABEL.to_owned(), diff_id.to_string());
        match w
            .commit(CommitOptions {
                size,
                expected: Some(digest.clone()),
                labels: labels.clone(),
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.is(strata_core::Kind::AlreadyExists) => {
                // The same bytes were there already (an empty layer, a layer written twice):
                // the labels asked for go onto them, a back reference above all, or the
                // collector could take the blob before the caller holds it.
                let mut info = self.content.info(ns, &digest).await.map_err(|e| {
                    e.context(format!(
                        "layer {digest}: the same blob was there, then collected; try again"
                    ))
                })?;
                let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                info.labels.extend(labels);
                self.content.update(ns, info, &paths).await?;
            }
            Err(e) => return Err(e),
        }
        let mut annotations = HashMap::new();
        annotations.insert(UNCOMPRESSED_LABEL.to_owned(), diff_id.to_string());
        Ok(Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            annotations,
        })
    }
}

/// The local [`strata_core::diff::Diff`]: the snapshotter's own differ, without gRPC.
impl<C: ContentStore + Clone> strata_core::diff::Diff for Differ<C> {
    async fn apply(
        &self,
        ns: &str,
        layer: &Descriptor,
        mounts: &[Mount],
        opts: strata_core::diff::ApplyOptions,
    ) -> Result<Descriptor> {
        Differ::apply(self, ns, layer, mounts, opts.sync_fs).await
    }

    async fn diff(
        &self,
        ns: &str,
        lower: &[Mount],
        upper: &[Mount],
        opts: strata_core::diff::DiffOptions,
    ) -> Result<Descriptor> {
        Differ::diff(
            self,
            ns,
            lower,
            upper,
            &opts.media_type,
            &opts.reference,
            opts.labels,
        )
        .await
    }
}

/// Produces the layer tar (compressed as asked) into `out`; returns the tar's stats and `out`.
fn write_layer(
    lower: &[Mount],
    upper: &[Mount],
    scratch: &Path,
    compression: Compression,
    out: ChannelWriter,
) -> Result<(strata_archive::DiffStats, ChannelWriter)> {
    let io_err = |e: io::Error| Error::internal(format!("compressing layer: {e}"));
    let mut compressor: Box<dyn FinishWrite> = match compression {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::fast(),
        )),
        Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(out, 3).map_err(io_err)?),
    };
    // Fast path: the upper is an overlay whose lower layers are exactly `lower`: its upper
    // directory already says what changed.
    let overlay_upper = match upper {
        [m] if m.kind == "overlay" => m.option("upperdir").and_then(|u| {
            let theirs: Vec<String> = m
                .option("lowerdir")
                .map(|l| l.split(':').map(str::to_owned).collect())
                .unwrap_or_default();
            (lower_dirs(lower).as_ref() == Some(&theirs)).then(|| u.to_owned())
        }),
        _ => None,
    };
    let stats = match overlay_upper {
        Some(dir) => strata_archive::write_overlay_diff(Path::new(&dir), &mut compressor)?,
        None => {
            let empty;
            let lower_mount;
            let lower_path = if lower.is_empty() {
                empty = tempfile::tempdir_in(scratch)
                    .map_err(|e| Error::internal(format!("scratch dir: {e}")))?;
                empty.path().to_owned()
            } else {
                lower_mount = TempMount::new(lower, scratch)?;
                lower_mount.path().to_owned()
            };
            let upper_mount = TempMount::new(upper, scratch)?;
            strata_archive::write_diff(&lower_path, upper_mount.path(), &mut compressor)?
        }
    };
    let out = compressor.finish_write().map_err(io_err)?;
    Ok((stats, out))
}

/// Finishing a compressor hands back the writer beneath it.
trait FinishWrite: Write + Send {
    fn finish_write(self: Box<Self>) -> io::Result<ChannelWriter>;
}

struct Plain(ChannelWriter);

impl Write for Plain {
    fn write(&mut self, d: &[u8]) -> io::Result<usize> {
        self.0.write(d)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FinishWrite for Plain {
    fn finish_write(self: Box<Self>) -> io::Result<ChannelWriter> {
        Ok(self.0)
    }
}

impl FinishWrite for flate2::write::GzEncoder<ChannelWriter> {
    fn finish_write(self: Box<Self>) -> io::Result<ChannelWriter> {
        (*self).finish()
    }
}

impl FinishWrite for zstd::stream::write::Encoder<'static, ChannelWriter> {
    fn finish_write(self: Box<Self>) -> io::Result<ChannelWriter> {
        (*self).finish()
    }
}
