//! `strata build`: sends the Dockerfile and the build context (a tar stream of the context
//! directory less what `.dockerignore` excludes) to the gateway, and shows the build's
//! progress. The gateway may be on another host: nothing is passed by path.

use crate::Ctx;
use anyhow::Context as _;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use strata_api::strata::gateway::v1 as pb;
use strata_dockerfile::Ignore;
use tokio::sync::mpsc;

/// `strata build` arguments.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name and optionally a tag for the image: NAME[:TAG] (repeatable)
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile]; `-` reads it from stdin
    #[arg(long = "file", short = 'f')]
    pub file: Option<PathBuf>,
    /// A build argument: KEY=VALUE, or KEY to take it from the environment (repeatable)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build [default: the last]
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step; use no cached result
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images even when they are present
    #[arg(long)]
    pub pull: bool,
    /// The network RUN steps get: bridge (the default network), none or host
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// How progress is shown: plain (every line) or tty (one status line per step)
    #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "tty"])]
    pub progress: String,
    /// Print only the image ID
    #[arg(long, short)]
    pub quiet: bool,
    /// The build context: a directory
    pub context: PathBuf,
}

/// Size of the context chunks sent.
const CHUNK: usize = 1 << 20;

/// Reads `.dockerignore` of the context (none: nothing is excluded).
fn ignore_of(context: &Path) -> anyhow::Result<Ignore> {
    let p = context.join(".dockerignore");
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Ignore::parse(&s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignore::parse("")),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes the context at `root` as a tar stream to `out`, less what `ignore` excludes.
/// Links are sent as links.
pub fn write_context(root: &Path, ignore: &Ignore, out: impl std::io::Write) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    walk(root, Path::new(""), ignore, &mut b)?;
    b.into_inner()
        .context("writing the build context")?
        .flush()
        .context("writing the build context")?;
    Ok(())
}

fn walk<W: std::io::Write>(
    root: &Path,
    rel: &Path,
    ignore: &Ignore,
    b: &mut tar::Builder<W>,
) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let full = root.join(&r);
        let key = r.to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(&full)
            .with_context(|| format!("reading {}", full.display()))?;
        let excluded = ignore.excluded(&key);
        if md.is_dir() {
            if !excluded {
                b.append_path_with_name(&full, &r)
                    .with_context(|| format!("adding {}", full.display()))?;
            }
            if !excluded || ignore.may_include_below(&key) {
                walk(root, &r, ignore, b)?;
            }
            continue;
        }
        if excluded {
            continue;
        }
        if !(md.is_file() || md.file_type().is_symlink()) {
            // Sockets, FIFOs and devices cannot be copied into an image: not sent.
            continue;
        }
        b.append_path_with_name(&full, &r)
            .with_context(|| format!("adding {}", full.display()))?;
    }
    Ok(())
}

fn build_args(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_owned(), v.to_owned());
            }
            Some(_) => anyhow::bail!("--build-arg {a:?}: KEY=VALUE or KEY"),
            // KEY alone: from the environment, skipped when unset (as Docker does).
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// Runs a build; prints the image ID at the end.
pub async fn build(ctx: &Ctx, args: BuildArgs) -> anyhow::Result<()> {
    let context = args.context.clone();
    if !context.is_dir() {
        anyhow::bail!("build context {}: not a directory", context.display());
    }
    let (dockerfile, dockerfile_name) = read_dockerfile(args.file.as_deref(), &context)?;
    let ignore = ignore_of(&context)?;
    let network = match args.network.as_str() {
        "bridge" | "default" => String::new(),
        n @ ("none" | "host") => n.to_owned(),
        n => anyhow::bail!("--network {n}: one of bridge, none and host"),
    };
    let start = pb::BuildStart {
        dockerfile,
        tags: args.tags.clone(),
        build_args: build_args(&args.build_args)?,
        target: args.target.clone().unwrap_or_default(),
        no_cache: args.no_cache,
        network,
        pull: args.pull,
        dockerfile_name,
    };
    let (tx, rx) = mpsc::channel::<pb::BuildRequest>(8);
    tx.send(pb::BuildRequest {
        event: Some(pb::build_request::Event::Start(start)),
    })
    .await
    .context("starting the build")?;
    // The context is written by a thread into chunks the call streams.
    let sender = tx.clone();
    let writer = std::thread::spawn(move || -> anyhow::Result<()> {
        let out = ChunkWriter {
            tx: sender.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        write_context(&context, &ignore, out)?;
        let _ = sender.blocking_send(pb::BuildRequest {
            event: Some(pb::build_request::Event::ContextEnd(true)),
        });
        Ok(())
    });
    drop(tx);
    let mut stream = ctx
        .client
        .clone()
        .build(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx))?)
        .await?
        .into_inner();
    let quiet = args.quiet;
    let mut done = None;
    let mut stdout = std::io::stdout();
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                let _ = writer.join();
                return Err(e.into());
            }
        };
        use pb::build_progress::Event as E;
        match msg.event {
            Some(E::Step(s)) if !quiet => {
                let stage = if s.stage_name.is_empty() {
                    format!("stage-{}", s.stage)
                } else {
                    s.stage_name.clone()
                };
                let cached = if s.cached { " CACHED" } else { "" };
                let _ = writeln!(
                    stdout,
                    "#{} [{stage} {}/{}] {}{cached}",
                    s.number, s.number, s.total, s.instruction
                );
            }
            Some(E::Output(d)) if !quiet => {
                let _ = stdout.write_all(&d);
                let _ = stdout.flush();
            }
            Some(E::Pull(p)) if !quiet => {
                if let Some(pb::pull_progress::Event::Done(d)) = p.event {
                    let _ = writeln!(stdout, "pulled {} ({})", d.name, d.digest);
                }
            }
            // The image exists: nothing the gateway does after (removing the context it
            // unpacked) is worth waiting for.
            Some(E::Done(d)) => {
                done = Some(d);
                break;
            }
            _ => {}
        }
    }
    match writer.join() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("writing the build context: the writer thread panicked"),
    }
    let d = done.ok_or_else(|| anyhow::anyhow!("the build ended without a result"))?;
    print_built(&d, quiet);
    Ok(())
}

/// The Dockerfile's text and the name the build shows for it: `file` (`-` for stdin), else
/// `Dockerfile` in `context`.
fn read_dockerfile(file: Option<&Path>, context: &Path) -> anyhow::Result<(String, String)> {
    Ok(match file {
        Some(f) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the Dockerfile from stdin")?;
            (s, "Dockerfile (stdin)".to_owned())
        }
        Some(f) => (
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            f.display().to_string(),
        ),
        None => {
            let f = context.join("Dockerfile");
            (
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?,
                "Dockerfile".to_owned(),
            )
        }
    })
}

/// Prints the built image: its ID alone when `quiet`, else with the step counts and its tags.
fn print_built(d: &pb::BuildDone, quiet: bool) {
    if quiet {
        println!("{}", d.id);
    } else {
        println!(
            "built {} ({} steps run, {} cached)",
            d.id, d.steps_run, d.steps_cached
        );
        for n in &d.names {
            if !n.starts_with("sha256:") {
                println!("tagged {n}");
            }
        }
    }
}

/// Cuts what is written into chunks for the call.
struct ChunkWriter {
    tx: mpsc::Sender<pb::BuildRequest>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(pb::BuildRequest {
                event: Some(pb::build_request::Event::Context(data.into())),
            })
            .map_err(|_| std::io::Error::other("the build ended before its context was sent"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_context_leaves_out_what_dockerignore_excludes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("keep.txt"), b"k").unwrap();
        std::fs::write(d.path().join("notes.md"), b"n").unwrap();
        std::fs::write(d.path().join("README.md"), b"r").unwrap();
        std::fs::create_dir(d.path().join("build")).unwrap();
        std::fs::write(d.path().join("build/out.o"), b"o").unwrap();
        let ignore = Ignore::parse("*.md\n!README.md\nbuild\n");
        let mut out = Vec::new();
        write_context(d.path(), &ignore, &mut out).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["README.md", "keep.txt"]);
    }
}
