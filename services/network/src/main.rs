//! strata-network: serves strata.network.v1 (networks and containers' attachments to them).

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strata_core::Kind;
use strata_core::containers::ContainerStore as _;
use strata_grpc::remote::containers::RemoteContainers;
use strata_grpc::server::{self, CommonArgs};
use strata_network::grpc::{NetworkService, names};
use strata_network::{Manager, Settings};

/// strata's network service: bridge networks through the standard CNI plugins, published
/// ports, and each container's network namespace and /etc files.
#[derive(Debug, Parser)]
#[command(name = "strata-network", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Where containers' persistent network namespaces are bound (config key `netns_dir`)
    /// [default: /run/strata/netns]
    #[arg(long)]
    netns_dir: Option<PathBuf>,
    /// A directory of CNI plugins, searched in order; repeatable (config key `plugin_dirs`)
    /// [default: /usr/lib/cni, /opt/cni/bin]
    #[arg(long = "plugin-dir")]
    plugin_dirs: Vec<PathBuf>,
    /// The default network's bridge (config key `default_bridge`) [default: strata0]
    #[arg(long)]
    default_bridge: Option<String>,
    /// The default network's subnet (config key `default_subnet`) [default: a free /16 from
    /// 10.213.0.0 up, none of Docker's, Podman's, nerdctl's or the host's routes]
    #[arg(long)]
    default_subnet: Option<String>,
    /// Where an operator installs networks as CNI configuration lists (`*.conflist`, read at
    /// start-up); `none` for none (config key `conf_dir`) [default: /etc/strata/cni/net.d]
    #[arg(long)]
    conf_dir: Option<String>,
    /// The tasks service, asked which containers still exist so the attachments of removed ones
    /// are torn down; `none` to never ask (config key `tasks`) [default:
    /// /run/strata/tasks.sock]
    #[arg(long)]
    tasks: Option<String>,
    /// Detach every container and exit, without serving (before removing strata, or after
    /// stopping a test stack; the service must not be running)
    #[arg(long)]
    detach_all: bool,
}

/// The service's own config keys (beside address, root and log_format).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    netns_dir: Option<PathBuf>,
    plugin_dirs: Option<Vec<PathBuf>>,
    default_bridge: Option<String>,
    default_subnet: Option<String>,
    conf_dir: Option<String>,
    tasks: Option<String>,
}

/// How old an attachment must be before a missing container detaches it.
const PRUNE_AGE: Duration = Duration::from_secs(300);

/// Tears down the attachments of containers the tasks service no longer has (a crash between a
/// container's removal and its detach). A namespace whose containers cannot be read is left as
/// it is.
async fn prune(m: &Manager, tasks: &RemoteContainers) {
    // A container is attached before its record is made: a young attachment is left alone.
    let settled = strata_network::manager::now().saturating_sub(PRUNE_AGE.as_secs());
    for a in m
        .attachments()
        .await
        .into_iter()
        .filter(|a| a.attached_at < settled)
    {
        match tasks.get(&a.namespace, &a.container_id).await {
            Err(e) if e.kind() == Kind::NotFound => {
                tracing::info!(container = %a.key(), "the container is gone: detaching it");
                if let Err(e) = m.detach(&a.namespace, &a.container_id).await {
                    tracing::warn!(container = %a.key(), "detaching: {e}");
                }
            }
            Err(e) => {
                tracing::debug!(container = %a.key(), "cannot tell whether the container exists: {e}");
            }
            Ok(_) => {}
        }
    }
}

fn main() -> anyhow::Result<()> {
    server::run(service()).context("starting the async runtime")?
}

async fn service() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (settings, file): (_, FileConfig) = cli.common.resolve("network")?;
    server::init_logging(settings.log_format);
    let plugin_dirs = if !cli.plugin_dirs.is_empty() {
        cli.plugin_dirs
    } else if let Some(d) = file.plugin_dirs {
        d
    } else {
        strata_cni::DEFAULT_PLUGIN_DIRS
            .iter()
            .map(PathBuf::from)
            .collect()
    };
    let s = Settings {
        root: settings.root.clone(),
        netns_dir: cli
            .netns_dir
            .or(file.netns_dir)
            .unwrap_or_else(|| PathBuf::from("/run/strata/netns")),
        plugin_dirs,
        default_bridge: cli
            .default_bridge
            .or(file.default_bridge)
            .unwrap_or_else(|| "strata0".to_owned()),
        default_subnet: cli.default_subnet.or(file.default_subnet),
        conf_dir: match cli
            .conf_dir
            .or(file.conf_dir)
            .unwrap_or_else(|| "/etc/strata/cni/net.d".to_owned())
        {
            d if d == "none" => None,
            d => Some(PathBuf::from(d)),
        },
    };
    let tasks = cli
        .tasks
        .or(file.tasks)
        .unwrap_or_else(|| "/run/strata/tasks.sock".to_owned());
    let manager = Arc::new(
        Manager::open(s.clone())
            .await
            .with_context(|| format!("opening the network state at {}", s.root.display()))?,
    );
    tracing::info!(root = %s.root.display(), netns = %s.netns_dir.display(), "network service open");
    if cli.detach_all {
        let mut failed = 0;
        for a in manager.attachments().await {
            if let Err(e) = manager.detach(&a.namespace, &a.container_id).await {
                tracing::error!(container = %a.key(), "detaching: {e}");
                failed += 1;
            }
        }
        anyhow::ensure!(failed == 0, "{failed} attachments could not be torn down");
        return Ok(());
    }
    if tasks != "none" {
        let remote =
            RemoteContainers::connect(&tasks).with_context(|| format!("tasks address {tasks}"))?;
        let m = Arc::clone(&manager);
        tokio::spawn(async move {
            loop {
                prune(&m, &remote).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
    }
    let routes = tonic::service::Routes::new(NetworkService::new(manager).into_server());
    server::serve(&settings.address, routes, names::ALL, &[]).await?;
    Ok(())
}
