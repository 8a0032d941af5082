//! strata-tasks: serves containerd's Containers, Events and Tasks APIs, and strata's Io
//! (container and exec logs).

use anyhow::Context as _;
use clap::Parser;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use strata_grpc::server::{self, CommonArgs};
use strata_tasks::grpc::io::IoService;
use strata_tasks::grpc::tasks::TasksService;
use strata_tasks::grpc::{ContainersService, EventsService, names};
use strata_tasks::tasks::{self as tasks_core, Tasks};
use strata_tasks::{Config, Exchange, LocalContainers};

/// strata's tasks service: containers and events.
#[derive(Debug, Parser)]
#[command(name = "strata-tasks", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Directory for runtime state (task bundles and sockets; lost at reboot), created at
    /// start-up (config key `state`) [default: /run/strata/tasks]
    #[arg(long)]
    state: Option<PathBuf>,
    /// The snapshotter service, where the Tasks API will mount root filesystems from (config key
    /// `snapshotter`) [default: /run/strata/snapshotter.sock]
    #[arg(long)]
    snapshotter: Option<String>,
    /// The per-container supervisor binary (config key `shim`) [default: strata-shim beside
    /// this binary]
    #[arg(long)]
    shim: Option<String>,
    /// Runtime for containers that name containerd's runc runtime or none: builtin, runc, crun
    /// or a path (config key `runtime`) [default: builtin]
    #[arg(long)]
    runtime: Option<String>,
}

/// The service's own config keys (beside address, root and log_format).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    state: Option<PathBuf>,
    snapshotter: Option<String>,
    shim: Option<PathBuf>,
    runtime: Option<String>,
    event_buffer: Option<NonZeroUsize>,
}

/// Closes the exchange at SIGTERM or SIGINT, so open subscriptions end and the server can stop.
fn close_on_signal(exchange: Arc<Exchange>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        exchange.close();
    });
    Ok(())
}

fn main() -> anyhow::Result<()> {
    server::run(service()).context("starting the async runtime")?
}

async fn service() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (settings, file): (_, FileConfig) = cli.common.resolve("tasks")?;
    server::init_logging(settings.log_format);
    let config = Config {
        root: settings.root.clone(),
        state: cli
            .state
            .or(file.state)
            .unwrap_or_else(|| PathBuf::from(strata_tasks::DEFAULT_STATE)),
        snapshotter: cli
            .snapshotter
            .or(file.snapshotter)
            .unwrap_or_else(|| strata_tasks::DEFAULT_SNAPSHOTTER.to_owned()),
        event_buffer: file
            .event_buffer
            .map_or(strata_tasks::DEFAULT_EVENT_BUFFER, NonZeroUsize::get),
    };
    // Root only: tasks' bundles (config.json holds their environment), logs and root file
    // systems are below.
    strata_tasks::private::create_root(&config.state)
        .with_context(|| format!("creating state directory {}", config.state.display()))?;

    let exchange = Arc::new(Exchange::new(config.event_buffer));
    let logs_in = config.state.clone();
    let containers = LocalContainers::open(&config.root, exchange.clone())
        .with_context(|| format!("opening tasks metadata at {}", config.root.display()))?
        // A container's log goes with its record.
        .on_delete(move |ns, id| {
            let log = tasks_core::container_log(&logs_in, ns, id);
            match std::fs::remove_file(&log) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %log.display(), error = %e, "could not remove a container's log");
                }
            }
        });
    tracing::info!(
        root = %config.root.display(),
        state = %config.state.display(),
        snapshotter = %config.snapshotter,
        event_buffer = config.event_buffer,
        containers = containers.count().unwrap_or_default(),
        "tasks store open"
    );
    close_on_signal(exchange.clone())?;
    let containers = Arc::new(containers);
    // The supervisor binary ships beside this one.
    let shim = match cli.shim.map(PathBuf::from).or(file.shim) {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating strata-tasks")?
            .with_file_name("strata-shim"),
    };
    let runtime = cli
        .runtime
        .or(file.runtime)
        .unwrap_or_else(|| "builtin".to_owned());
    let snapshots = strata_grpc::remote::RemoteSnapshots::connect(&config.snapshotter)
        .with_context(|| format!("snapshotter address {}", config.snapshotter))?;
    let tasks = Arc::new(Tasks::new(
        config.state.clone(),
        shim,
        runtime,
        containers.clone(),
        snapshots,
        exchange.clone(),
    ));
    // The sealed copy supervisors run from (one per service start, not per container).
    if let Err(e) = tasks.prepare_shim() {
        tracing::error!(error = %e, "no container can start until the supervisor binary can be copied");
    }
    // Tasks whose supervisor is gone (a deletion cut short by a crash): their mounts go now.
    tasks.recover().await;
    let routes = tonic::service::Routes::new(ContainersService::new(containers).into_server())
        .add_service(EventsService::new(exchange).into_server())
        .add_service(TasksService::new(tasks.clone()).into_server())
        .add_service(IoService::new(tasks).into_server());
    server::serve(&settings.address, routes, names::ALL, &[]).await?;
    Ok(())
}
