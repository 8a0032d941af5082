//! strata-content: serves containerd's Content API from a local, durable blob store.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser;
use std::sync::Arc;
use strata_content::LocalContentStore;
use strata_content::grpc::{ContentService, names};
use strata_grpc::remote::event_queue::{self, default_events};
use strata_grpc::server::{self, CommonArgs};

/// strata's content service: a content-addressed blob store (containerd Content API).
#[derive(Debug, Parser)]
#[command(name = "strata-content", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// The Events API (strata-tasks) where this service's events go, best effort; `none` to
    /// publish none (config key `events`) [default: /run/strata/tasks.sock]
    #[arg(long)]
    events: Option<String>,
}

/// The service's own config keys (beside address, root and log_format).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    events: Option<String>,
}

fn main() -> anyhow::Result<()> {
    server::run(service()).context("starting the async runtime")?
}

async fn service() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (settings, config): (_, Config) = cli.common.resolve("content")?;
    server::init_logging(settings.log_format);
    let store = LocalContentStore::open(&settings.root)
        .with_context(|| format!("opening content store at {}", settings.root.display()))?;
    let events = cli.events.or(config.events).unwrap_or_else(default_events);
    tracing::info!(root = %settings.root.display(), %events, "content store open");
    let sink =
        event_queue::sink_for(&events).with_context(|| format!("events address {events}"))?;
    let service = ContentService::new(Arc::new(store)).with_events(sink);
    let routes = tonic::service::Routes::new(service.into_server());
    server::serve(&settings.address, routes, names::ALL, &[]).await?;
    Ok(())
}
