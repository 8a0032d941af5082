//! strata-gateway: one socket for every containerd service strata serves, and strata's own API.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser;
use std::sync::Arc;
use strata_api::service_names;
use strata_gateway::Backends;
use strata_gateway::grpc::{Backend, GatewayService, IntrospectionService, VersionService};
use strata_gateway::hooks::Hooks;
use strata_gateway::router::{self, Forward, ServiceName as _};
use strata_grpc::server::{self, CommonArgs};

/// strata's gateway: routes containerd's services and serves strata.gateway.v1.
#[derive(Debug, Parser)]
#[command(name = "strata-gateway", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// The content service (config key `content`) [default: /run/strata/content.sock]
    #[arg(long)]
    content: Option<String>,
    /// The snapshotter service (config key `snapshotter`) [default: /run/strata/snapshotter.sock]
    #[arg(long)]
    snapshotter: Option<String>,
    /// The images service (config key `images`) [default: /run/strata/images.sock]
    #[arg(long)]
    images: Option<String>,
    /// The tasks service (config key `tasks`) [default: /run/strata/tasks.sock]
    #[arg(long)]
    tasks: Option<String>,
    /// Registries reached over plain HTTP besides loopback ones, comma separated (config key
    /// `insecure_registries`)
    #[arg(long, value_delimiter = ',')]
    insecure_registries: Option<Vec<String>>,
    /// The network service; `none` for none, when containers get no network but a private
    /// loopback or the host's (config key `network`) [default: /run/strata/network.sock]
    #[arg(long)]
    network: Option<String>,
    /// Blobs larger than this many bytes are pushed in chunks of the same size, smaller ones in
    /// one request (config key `chunked_upload_threshold`) [default: 1 GiB]
    #[arg(long, env = "STRATA_CHUNKED_UPLOAD_THRESHOLD")]
    chunked_upload_threshold: Option<u64>,
}

/// The gateway's own config keys (beside address, root and log_format).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    content: Option<String>,
    snapshotter: Option<String>,
    images: Option<String>,
    tasks: Option<String>,
    insecure_registries: Option<Vec<String>>,
    network: Option<String>,
    chunked_upload_threshold: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    server::run(service()).context("starting the async runtime")?
}

async fn service() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (settings, config): (_, Config) = cli.common.resolve_with("gateway", "strata")?;
    server::init_logging(settings.log_format);
    let addr = |flag: Option<String>, file: Option<String>, default: &str| -> String {
        flag.or(file)
            .unwrap_or_else(|| format!("/run/strata/{default}.sock"))
    };
    let content = addr(cli.content, config.content, "content");
    let snapshotter = addr(cli.snapshotter, config.snapshotter, "snapshotter");
    let images = addr(cli.images, config.images, "images");
    let tasks = addr(cli.tasks, config.tasks, "tasks");
    let network = addr(cli.network, config.network, "network");
    let insecure = cli
        .insecure_registries
        .or(config.insecure_registries)
        .unwrap_or_default();

    let channel = |a: &str| strata_grpc::client::channel(a).with_context(|| format!("address {a}"));
    let (content_ch, snap_ch, images_ch) = (
        channel(&content)?,
        channel(&snapshotter)?,
        channel(&images)?,
    );
    let tasks_ch = channel(&tasks)?;
    let network_ch = if network == "none" {
        None
    } else {
        Some(channel(&network)?)
    };
    private_root(&settings.root)?;
    let mut backends = Backends::new(
        content_ch.clone(),
        snap_ch.clone(),
        images_ch.clone(),
        tasks_ch.clone(),
        insecure,
        settings.root.clone(),
    )?;
    if let Some(ch) = &network_ch {
        backends = backends.with_network(ch.clone());
    }
    if let Some(t) = cli
        .chunked_upload_threshold
        .or(config.chunked_upload_threshold)
    {
        anyhow::ensure!(t > 0, "chunked_upload_threshold: must be above 0");
        backends.chunked_upload_threshold = t;
    }
    let backends = Arc::new(backends);
    tracing::info!(%content, %snapshotter, %images, %tasks, %network, "gateway backends");
    rearm_auto_remove(backends.clone(), images_ch.clone());

    let introspection = IntrospectionService::new(
        introspected(
            [
                content_ch.clone(),
                snap_ch.clone(),
                images_ch.clone(),
                tasks_ch.clone(),
            ],
            network_ch.clone(),
        ),
        &settings.root,
    )
    .with_context(|| format!("gateway identity in {}", settings.root.display()))?;
    let hooks = Arc::new(Hooks::new(images_ch.clone(), "overlayfs"));
    let routes = tonic::service::Routes::new(GatewayService::new(backends).into_server())
        .add_service(introspection.into_server())
        .add_service(VersionService.into_server())
        .add_service(Forward::<router::Content>::new(content_ch).with_hooks(hooks.clone()))
        .add_service(Forward::<router::Snapshots>::new(snap_ch.clone()).with_hooks(hooks.clone()))
        .add_service(Forward::<router::Diff>::new(snap_ch))
        .add_service(Forward::<router::Images>::new(images_ch.clone()))
        .add_service(Forward::<router::Leases>::new(images_ch.clone()))
        .add_service(
            Forward::<router::Namespaces>::new(images_ch.clone()).with_hooks(hooks.clone()),
        )
        .add_service(Forward::<router::GarbageCollector>::new(images_ch))
        .add_service(Forward::<router::Containers>::new(tasks_ch.clone()).with_hooks(hooks.clone()))
        .add_service(Forward::<router::Events>::new(tasks_ch.clone()))
        .add_service(Forward::<router::Tasks>::new(tasks_ch.clone()))
        .add_service(Forward::<router::Io>::new(tasks_ch));
    let has_network = network_ch.is_some();
    let routes = match network_ch {
        Some(ch) => routes.add_service(Forward::<router::Networks>::new(ch)),
        None => routes,
    };
    let names = served_names(has_network);
    server::serve(&settings.address, routes, &names, &[]).await?;
    Ok(())
}

/// Makes the gateway's root directory root's only: it holds the FIFOs that feed containers'
/// stdin.
fn private_root(root: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("creating {}", root.display()))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("narrowing {} to 0700", root.display()))?;
    Ok(())
}

/// Removes now, in the background, the `--rm` containers whose task ended while no gateway ran.
fn rearm_auto_remove(b: Arc<Backends>, ch: tonic::transport::Channel) {
    tokio::spawn(async move {
        use strata_api::containerd::services::namespaces::v1 as npb;
        // Tried again (1 s doubling to 30 s) while the images service is away.
        let mut pause = std::time::Duration::from_secs(1);
        loop {
            let list = npb::namespaces_client::NamespacesClient::new(ch.clone())
                .list(npb::ListNamespacesRequest {
                    filter: String::new(),
                })
                .await;
            match list {
                Ok(r) => {
                    let names = r
                        .into_inner()
                        .namespaces
                        .into_iter()
                        .map(|n| n.name)
                        .collect();
                    strata_gateway::run::rearm_auto_remove(b, names).await;
                    break;
                }
                Err(s) => {
                    tracing::warn!(error = %s.message(), "auto-remove: listing namespaces");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    });
}

/// The services the gateway serves, for health and reflection.
fn served_names(has_network: bool) -> Vec<&'static str> {
    let mut names = vec![
        service_names::GATEWAY,
        service_names::INTROSPECTION,
        service_names::VERSION,
        router::Content::NAME,
        router::Snapshots::NAME,
        router::Diff::NAME,
        router::Images::NAME,
        router::Leases::NAME,
        router::Namespaces::NAME,
        router::GarbageCollector::NAME,
        router::Containers::NAME,
        router::Events::NAME,
        router::Tasks::NAME,
        router::Io::NAME,
    ];
    if has_network {
        names.push(router::Networks::NAME);
    }
    names
}

/// The backends introspection reports on: content, snapshotter, images, tasks (in that order)
/// and the network service when there is one.
fn introspected(
    [content, snapshotter, images, tasks]: [tonic::transport::Channel; 4],
    network: Option<tonic::transport::Channel>,
) -> Vec<Backend> {
    vec![
        Backend {
            name: "content",
            channel: content,
        },
        Backend {
            name: "snapshotter",
            channel: snapshotter,
        },
        Backend {
            name: "images",
            channel: images,
        },
        Backend {
            name: "tasks",
            channel: tasks,
        },
    ]
    .into_iter()
    .chain(network.map(|channel| Backend {
        name: "network",
        channel,
    }))
    .collect()
}
