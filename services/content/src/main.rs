//! strata-content: serves containerd's Content API from a local, durable blob store.

use anyhow::Context as _;
use clap::Parser;
use std::sync::Arc;
use strata_content::LocalContentStore;
use strata_content::grpc::ContentService;
use strata_grpc::server::{self, CommonArgs};

/// strata's content service: a content-addressed blob store (containerd Content API).
#[derive(Debug, Parser)]
#[command(name = "strata-content", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (settings, _): (_, strata_grpc::config::NoKeys) = cli.common.resolve("content")?;
    server::init_logging(settings.log_format);
    let store = LocalContentStore::open(&settings.root)
        .with_context(|| format!("opening content store at {}", settings.root.display()))?;
    tracing::info!(root = %settings.root.display(), "content store open");
    let routes = tonic::service::Routes::new(ContentService::new(Arc::new(store)).into_server());
    server::serve(
        &settings.address,
        routes,
        &[strata_api::service_names::CONTENT],
        &[],
    )
    .await?;
    Ok(())
}
