//! strata-images: serves containerd's Images, Leases and Namespaces APIs and strata's
//! GarbageCollector, collecting through the content and snapshotter services.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;
use strata_grpc::remote::event_queue::{self, default_events};
use strata_grpc::remote::{RemoteContentStore, RemoteSnapshots};
use strata_grpc::server::{self, CommonArgs};
use strata_images::containers;
use strata_images::gc::Collector;
use strata_images::grpc::{GcService, ImagesService, LeasesService, NamespacesService, names};
use strata_images::{GcConfig, Local};

/// strata's images service: images, leases, namespaces and garbage collection.
#[derive(Debug, Parser)]
#[command(name = "strata-images", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// The content service, where unreferenced blobs are deleted (config key `content`)
    /// [default: /run/strata/content.sock]
    #[arg(long)]
    content: Option<String>,
    /// The snapshotter service, where unreferenced snapshots are removed (config key
    /// `snapshotter`) [default: /run/strata/snapshotter.sock]
    #[arg(long)]
    snapshotter: Option<String>,
    /// The tasks service, whose containers are roots of garbage collection (config key
    /// `tasks`); `none` when this deployment has no tasks service (no container holds
    /// anything) [default: /run/strata/tasks.sock]
    #[arg(long)]
    tasks: Option<String>,
    /// The Events API (strata-tasks) where image and namespace events go, best effort; `none`
    /// to publish none (config key `events`) [default: /run/strata/tasks.sock]
    #[arg(long)]
    events: Option<String>,
}

/// The service's own config keys (beside address, root and log_format).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    content: Option<String>,
    snapshotter: Option<String>,
    tasks: Option<String>,
    events: Option<String>,
    snapshotters: Option<Vec<String>>,
    gc_grace_seconds: Option<u64>,
    gc_delay_ms: Option<u64>,
}

impl Config {
    fn gc(&self) -> GcConfig {
        let mut gc = GcConfig::default();
        if let Some(s) = self.gc_grace_seconds {
            gc.grace = Duration::from_secs(s);
        }
        if let Some(ms) = self.gc_delay_ms {
            gc.delay = Duration::from_millis(ms);
        }
        if let Some(names) = &self.snapshotters {
            gc.snapshotters.clone_from(names);
        }
        gc
    }
}

fn main() -> anyhow::Result<()> {
    server::run(service()).context("starting the async runtime")?
}

async fn service() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (settings, config): (_, Config) = cli.common.resolve("images")?;
    server::init_logging(settings.log_format);
    let gc = config.gc();
    let content_addr = cli
        .content
        .or(config.content)
        .unwrap_or_else(|| "/run/strata/content.sock".to_owned());
    let snapshotter_addr = cli
        .snapshotter
        .or(config.snapshotter)
        .unwrap_or_else(|| "/run/strata/snapshotter.sock".to_owned());
    // The collector's deletions publish no events, as containerd's collector's do not.
    let content = RemoteContentStore::connect(&content_addr)
        .with_context(|| format!("content service address {content_addr}"))?
        .without_events();
    let snapshots = RemoteSnapshots::connect(&snapshotter_addr)
        .with_context(|| format!("snapshotter service address {snapshotter_addr}"))?
        .without_events();
    let events = cli.events.or(config.events).unwrap_or_else(default_events);
    let sink =
        event_queue::sink_for(&events).with_context(|| format!("events address {events}"))?;

    tracing::info!(
        root = %settings.root.display(),
        content = %content_addr,
        snapshotter = %snapshotter_addr,
        grace_seconds = gc.grace.as_secs(),
        snapshotters = ?gc.snapshotters,
        %events,
        "images store open"
    );
    let tasks_addr = cli
        .tasks
        .or(config.tasks)
        .unwrap_or_else(|| "/run/strata/tasks.sock".to_owned());
    let container_roots = containers::for_tasks(&tasks_addr)
        .with_context(|| format!("tasks service address {tasks_addr}"))?;
    if container_roots.is_none() {
        tracing::info!("no tasks service (tasks = \"none\"): containers hold nothing");
    }
    let local = Local::with_collector(&settings.root, |meta| {
        let collector = Collector::new(meta, content, snapshots, gc);
        match container_roots {
            Some(p) => collector.with_root_provider(p),
            None => collector,
        }
    })
    .with_context(|| format!("opening images metadata at {}", settings.root.display()))?;
    local.collector.start();
    let images = ImagesService::new(Arc::new(local.images)).with_events(sink.clone());
    let namespaces = NamespacesService::new(Arc::new(local.namespaces)).with_events(sink);
    let routes = tonic::service::Routes::new(images.into_server())
        .add_service(LeasesService::new(Arc::new(local.leases)).into_server())
        .add_service(namespaces.into_server())
        .add_service(GcService::new(local.collector).into_server());
    server::serve(&settings.address, routes, names::ALL, &[]).await?;
    Ok(())
}
