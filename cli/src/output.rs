//! What the user sees: progress bars, tables and JSON.

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::gateway::v1::layer_progress::State;
use tokio::io::AsyncReadExt as _;
use tokio_stream::StreamExt as _;

/// Bytes as Docker prints them (decimal units).
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if v < 10.0 {
        format!("{v:.2}{}", units[i])
    } else if v < 100.0 {
        format!("{v:.1}{}", units[i])
    } else {
        format!("{v:.0}{}", units[i])
    }
}

/// "3 minutes ago", as Docker prints creation times.
pub fn ago(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return "N/A".into();
    };
    let then = UNIX_EPOCH + Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0));
    let secs = SystemTime::now()
        .duration_since(then)
        .unwrap_or_default()
        .as_secs();
    let (n, unit) = match secs {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        86_400..=604_799 => (secs / 86_400, "day"),
        604_800..=2_629_799 => (secs / 604_800, "week"),
        2_629_800..=31_557_599 => (secs / 2_629_800, "month"),
        _ => (secs / 31_557_600, "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// Splits `registry/repo:tag` into (repository, tag) as `docker images` shows them.
fn repo_tag(name: &str) -> (String, String) {
    // An image known only by its ID (a commit without a name), as Docker shows one.
    if name.starts_with("sha256:") {
        return ("<none>".into(), "<none>".into());
    }
    let name = name.split('@').next().unwrap_or(name);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (
            name[..last_slash + i].to_owned(),
            name[last_slash + i + 1..].to_owned(),
        ),
        None => (name.to_owned(), "<none>".into()),
    }
}

pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

pub fn images(images: &[pb::ImageSummary], quiet: bool, json: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<_> = images
            .iter()
            .map(|i| {
                let (repo, tag) = repo_tag(&i.name);
                serde_json::json!({
                    "Name": i.name,
                    "Repository": repo,
                    "Tag": tag,
                    "ID": i.config_digest,
                    "Digest": i.digest,
                    "Created": i.created.as_ref().map(|t| t.seconds),
                    "Size": i.size,
                    "SharedSize": i.shared_size,
                    "Labels": i.labels,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if quiet {
        for i in images {
            println!("{}", short(&i.config_digest));
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "REPOSITORY".into(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for i in images {
        let (repo, tag) = repo_tag(&i.name);
        rows.push(vec![
            repo,
            tag,
            short(&i.config_digest),
            ago(i.created.as_ref()),
            size(i.size),
        ]);
    }
    print_table(&rows);
    Ok(())
}

pub fn history(entries: &[pb::HistoryEntry], json: bool, no_trunc: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "Created": e.created.as_ref().map(|t| t.seconds),
                    "CreatedBy": e.created_by,
                    "Size": e.size,
                    "EmptyLayer": e.empty_layer,
                    "Comment": e.comment,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut rows = vec![vec![
        "CREATED".into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for e in entries {
        let mut by = e.created_by.replace('\t', " ");
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        rows.push(vec![
            ago(e.created.as_ref()),
            by,
            size(e.size),
            e.comment.clone(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

pub fn df(d: &pb::DiskUsageResponse, json: bool, verbose: bool) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "Images": d.images,
            "Layers": d.layers,
            "SharedLayers": d.shared_layers,
            "UniqueBytes": d.unique_bytes,
            "SharedBytes": d.shared_bytes,
            "TotalBytes": d.total_bytes,
            "ContentBytes": d.content_bytes,
            "LayerUsage": d.layer_usage.iter().map(|l| serde_json::json!({
                "ChainID": l.chain_id, "Size": l.size, "Images": l.images,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_table(&[
        vec![
            "TYPE".into(),
            "TOTAL".into(),
            "SHARED".into(),
            "SIZE".into(),
            "UNIQUE".into(),
            "SHARED SIZE".into(),
        ],
        vec![
            "Images".into(),
            d.images.to_string(),
            String::new(),
            size(d.total_bytes),
            size(d.unique_bytes),
            size(d.shared_bytes),
        ],
        vec![
            "Layers".into(),
            d.layers.to_string(),
            d.shared_layers.to_string(),
            size(d.total_bytes),
            size(d.unique_bytes),
            size(d.shared_bytes),
        ],
        vec![
            "Content (compressed blobs)".into(),
            String::new(),
            String::new(),
            size(d.content_bytes),
            String::new(),
            String::new(),
        ],
    ]);
    if verbose {
        println!();
        let mut rows = vec![vec![
            "LAYER (CHAIN ID)".into(),
            "SIZE".into(),
            "IMAGES".into(),
        ]];
        for l in &d.layer_usage {
            rows.push(vec![short(&l.chain_id), size(l.size), l.images.to_string()]);
        }
        print_table(&rows);
    }
    Ok(())
}

/// Streams a file as import requests of 1 MiB.
pub fn import_stream(
    mut f: tokio::fs::File,
    name: String,
) -> impl tokio_stream::Stream<Item = pb::ImportRequest> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = match f.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            let msg = pb::ImportRequest {
                data: buf.into(),
                name: if first { name.clone() } else { String::new() },
                snapshotter: String::new(),
            };
            first = false;
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One progress bar per blob on a terminal; when plain, one line per change of a blob's state.
struct Bars {
    multi: MultiProgress,
    bar_style: ProgressStyle,
    text_style: ProgressStyle,
    bars: HashMap<String, ProgressBar>,
    last: HashMap<String, i32>,
    plain: bool,
}

impl Bars {
    fn new(plain: bool) -> anyhow::Result<Self> {
        Ok(Self {
            multi: MultiProgress::with_draw_target(if plain {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stdout()
            }),
            bar_style: ProgressStyle::with_template(
                "{prefix}: {msg:<16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .context("progress style")?
            .progress_chars("=> "),
            text_style: ProgressStyle::with_template("{prefix}: {msg}")
                .context("progress style")?,
            bars: HashMap::new(),
            last: HashMap::new(),
            plain,
        })
    }

    /// A line for each blob about to be handled.
    fn add(&mut self, layers: &[pb::LayerInfo], msg: &'static str) {
        for l in layers {
            let bar = self
                .multi
                .add(ProgressBar::new(u64::try_from(l.size).unwrap_or(0)));
            bar.set_style(self.text_style.clone());
            bar.set_prefix(short(&l.digest));
            bar.set_message(msg);
            self.bars.insert(l.digest.clone(), bar);
        }
    }

    /// Blob `digest` is in `state` (`msg`); `transfer` is (bytes done, total) while it moves.
    fn update(&mut self, digest: &str, state: i32, msg: String, transfer: Option<(i64, i64)>) {
        let bar = self.bars.entry(digest.to_owned()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(0));
            b.set_prefix(short(digest));
            b
        });
        if let Some((current, total)) = transfer {
            bar.set_style(self.bar_style.clone());
            bar.set_length(u64::try_from(total).unwrap_or(0));
            bar.set_position(u64::try_from(current).unwrap_or(0));
        } else {
            bar.set_style(self.text_style.clone());
        }
        if self.plain && self.last.get(digest) != Some(&state) {
            println!("{}: {msg}", short(digest));
            self.last.insert(digest.to_owned(), state);
        }
        bar.set_message(msg);
    }

    fn finish(&self) {
        for b in self.bars.values() {
            b.finish();
        }
    }
}

/// Renders pull or import progress: one bar per layer on a terminal, lines otherwise.
pub async fn progress(
    mut stream: tonic::Streaming<pb::PullProgress>,
    plain: bool,
) -> anyhow::Result<()> {
    let mut bars = Bars::new(plain)?;
    while let Some(event) = stream.next().await {
        let event = event?;
        match event.event {
            Some(pb::pull_progress::Event::Resolved(r)) => {
                println!("{}: resolved to {}", r.name, r.digest);
                bars.add(&r.layers, "Waiting");
            }
            Some(pb::pull_progress::Event::Layer(l)) => {
                let state = State::try_from(l.state).unwrap_or(State::Waiting);
                let msg = match state {
                    State::Waiting => "Waiting",
                    State::Exists => "Already exists",
                    State::Downloading => "Downloading",
                    State::Shared => "Fetched by another pull",
                    State::Extracting => "Extracting",
                    State::Done => "Pull complete",
                };
                let transfer = (state == State::Downloading).then_some((l.current, l.total));
                bars.update(&l.digest, l.state, msg.to_owned(), transfer);
            }
            Some(pb::pull_progress::Event::Done(d)) => {
                bars.finish();
                println!("Digest: {}", d.digest);
                println!(
                    "Fetched {} in {} layer(s), reused {} in {} layer(s) already here; unpacked {} layer(s)",
                    size(d.fetched_bytes),
                    d.layers_fetched,
                    size(d.reused_bytes),
                    d.layers_reused,
                    d.layers_unpacked
                );
                println!("Status: image {} is ready", d.name);
            }
            None => {}
        }
    }
    Ok(())
}

/// Renders push progress as `docker push` does: one line (or bar, on a terminal) per blob,
/// then the tag and digest.
pub async fn push_progress(
    mut stream: tonic::Streaming<pb::PushProgress>,
    plain: bool,
) -> anyhow::Result<()> {
    use pb::blob_push_progress::State as Push;
    let mut bars = Bars::new(plain)?;
    while let Some(event) = stream.next().await {
        let event = event?;
        match event.event {
            Some(pb::push_progress::Event::Resolved(r)) => {
                println!("The push refers to repository [{}]", repo_tag(&r.name).0);
                bars.add(&r.layers, "Preparing");
            }
            Some(pb::push_progress::Event::Blob(l)) => {
                let state = Push::try_from(l.state).unwrap_or(Push::Waiting);
                let msg = match state {
                    Push::Waiting => "Waiting".to_owned(),
                    Push::Exists => "Layer already exists".to_owned(),
                    Push::Mounted => format!("Mounted from {}", l.from),
                    Push::Uploading => "Pushing".to_owned(),
                    Push::Done => "Pushed".to_owned(),
                };
                let transfer = (state == Push::Uploading).then_some((l.current, l.total));
                bars.update(&l.digest, l.state, msg, transfer);
            }
            Some(pb::push_progress::Event::Done(d)) => {
                bars.finish();
                if !d.note.is_empty() {
                    println!("Note: {}", d.note);
                }
                println!("{}: digest: {}", repo_tag(&d.name).1, d.digest);
                println!(
                    "Uploaded {} in {} blob(s); {} already there, {} mounted; {} manifest(s)",
                    size(d.uploaded_bytes),
                    d.blobs_uploaded,
                    d.blobs_existing,
                    d.blobs_mounted,
                    d.manifests
                );
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_tag() {
        assert_eq!(
            repo_tag("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox".into(), "latest".into())
        );
        assert_eq!(
            repo_tag("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b".into(), "v1".into())
        );
        assert_eq!(
            repo_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "<none>".into())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size(999), "999B");
        assert_eq!(size(4_400_000), "4.40MB");
        assert_eq!(size(124_000_000), "124MB");
    }
}
