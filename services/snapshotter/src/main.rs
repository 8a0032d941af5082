//! strata-snapshotter: serves containerd's Snapshots API (overlayfs and native) and Diff API.

use anyhow::{Context as _, bail};
use clap::Parser;
use std::sync::Arc;
use strata_grpc::remote::RemoteContentStore;
use strata_grpc::remote::event_queue::{self, default_events};
use strata_grpc::server::{self, CommonArgs};
use strata_snapshotter::diff::Differ;
use strata_snapshotter::grpc::{DiffService, SnapshotsService, names};
use strata_snapshotter::{Backend, LocalSnapshots, store};

/// strata's snapshotter service: overlayfs and native snapshots, layer apply and diff.
#[derive(Debug, Parser)]
#[command(name = "strata-snapshotter", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Snapshotters to serve, comma separated (config key `snapshotters`)
    /// [default: overlayfs,native where overlay is available, else native]
    #[arg(long, value_delimiter = ',')]
    snapshotters: Option<Vec<String>>,
    /// Snapshotter for requests that name none (config key `default_snapshotter`)
    /// [default: the first one served]
    #[arg(long)]
    default_snapshotter: Option<String>,
    /// The content service, for reading layer blobs (config key `content`)
    #[arg(long)]
    content: Option<String>,
    /// The Events API (strata-tasks) where this service's events go, best effort; `none` to
    /// publish none (config key `events`) [default: /run/strata/tasks.sock]
    #[arg(long)]
    events: Option<String>,
}

fn backend(name: &str) -> anyhow::Result<Backend> {
    match name {
        "overlayfs" => Ok(Backend::Overlay),
        "native" => Ok(Backend::Native),
        other => bail!("unknown snapshotter {other:?} (overlayfs or native)"),
    }
}

/// The service's own config keys (beside address, root and log_format).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    snapshotters: Option<Vec<String>>,
    default_snapshotter: Option<String>,
    content: Option<String>,
    events: Option<String>,
}

fn main() -> anyhow::Result<()> {
    server::run(service()).context("starting the async runtime")?
}

async fn service() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (settings, config): (_, Config) = cli.common.resolve("snapshotter")?;
    server::init_logging(settings.log_format);

    let names = match cli.snapshotters.or(config.snapshotters) {
        Some(n) => n,
        None if store::overlay_supported() => vec!["overlayfs".into(), "native".into()],
        None => vec!["native".into()],
    };
    let backends = names
        .iter()
        .map(|n| backend(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if backends.is_empty() {
        bail!("no snapshotter to serve");
    }
    if backends.contains(&Backend::Overlay) && !store::overlay_supported() {
        bail!("overlayfs requested but this kernel has no overlay file system; use native");
    }
    let default = match cli.default_snapshotter.or(config.default_snapshotter) {
        Some(d) => {
            let b = backend(&d)?;
            if !backends.contains(&b) {
                bail!("default snapshotter {d:?} is not among those served");
            }
            d
        }
        None => backends[0].name().to_owned(),
    };
    let content = cli
        .content
        .or(config.content)
        .unwrap_or_else(|| "/run/strata/content.sock".to_owned());

    let store = LocalSnapshots::open(&settings.root, &backends)
        .with_context(|| format!("opening snapshots at {}", settings.root.display()))?;
    tracing::info!(root = %settings.root.display(), snapshotters = ?names, default = %default, "snapshotter ready");
    // Temporary mount points for apply and diff live beside the snapshots. Leftovers of a crash
    // are unmounted and removed; `remove_dir` (never recursive) cannot reach into a tree that is
    // somehow still mounted.
    let scratch = settings.root.join("tmp");
    if scratch.exists() {
        for entry in std::fs::read_dir(&scratch)? {
            let path = entry?.path();
            let _ = strata_mount::unmount(&path);
            if let Err(e) = std::fs::remove_dir(&path) {
                tracing::warn!(path = %path.display(), error = %e, "leaving a scratch directory");
            }
        }
    }
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let content_store = RemoteContentStore::connect(&content)
        .with_context(|| format!("content service address {content}"))?;
    let differ = Arc::new(Differ::new(content_store, scratch));
    let events = cli.events.or(config.events).unwrap_or_else(default_events);
    tracing::info!(%events, "snapshot events");
    let sink =
        event_queue::sink_for(&events).with_context(|| format!("events address {events}"))?;
    let snapshots = SnapshotsService::new(Arc::new(store), default).with_events(sink);
    let routes = tonic::service::Routes::new(snapshots.into_server())
        .add_service(DiffService::new(differ).into_server());
    server::serve(&settings.address, routes, names::ALL, &[]).await?;
    Ok(())
}
