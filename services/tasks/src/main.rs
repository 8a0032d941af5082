//! strata-tasks: serves containerd's Containers, Events and Tasks APIs, and strata's Io
//! (container and exec logs).

use anyhow::{Context as _, bail};
use clap::Parser;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use strata_grpc::server::{self, CommonArgs};
use strata_tasks::grpc::{ContainersService, EventsService, names};
use strata_tasks::io_grpc::{self, IoService};
use strata_tasks::tasks::{self as tasks_core, Tasks};
use strata_tasks::tasks_grpc::TasksService;
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

fn config_str(extra: &toml::Table, key: &str) -> anyhow::Result<Option<String>> {
    match extra.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => bail!("config key {key} must be a string, not {}", v.type_str()),
    }
}

fn config_usize(extra: &toml::Table, key: &str) -> anyhow::Result<Option<usize>> {
    match extra.get(key) {
        None => Ok(None),
        Some(toml::Value::Integer(i)) => match usize::try_from(*i) {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => bail!("config key {key} must be a positive integer, not {i}"),
        },
        Some(v) => bail!("config key {key} must be an integer, not {}", v.type_str()),
    }
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.common.resolve("tasks")?;
    server::init_logging(settings.log_format);
    let config = Config {
        root: settings.root.clone(),
        state: match cli.state {
            Some(p) => p,
            None => config_str(&settings.extra, "state")?
                .map_or_else(|| PathBuf::from(strata_tasks::DEFAULT_STATE), PathBuf::from),
        },
        snapshotter: cli
            .snapshotter
            .or(config_str(&settings.extra, "snapshotter")?)
            .unwrap_or_else(|| strata_tasks::DEFAULT_SNAPSHOTTER.to_owned()),
        event_buffer: config_usize(&settings.extra, "event_buffer")?
            .unwrap_or(strata_tasks::DEFAULT_EVENT_BUFFER),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&config.state)
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
    let shim = match cli.shim.or(config_str(&settings.extra, "shim")?) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("locating strata-tasks")?
            .with_file_name("strata-shim"),
    };
    let runtime = cli
        .runtime
        .or(config_str(&settings.extra, "runtime")?)
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
    let routes = tonic::service::Routes::new(ContainersService::new(containers).into_server())
        .add_service(EventsService::new(exchange).into_server())
        .add_service(TasksService::new(tasks.clone()).into_server())
        .add_service(IoService::new(tasks).into_server());
    let mut served = names::ALL.to_vec();
    served.push("containerd.services.tasks.v1.Tasks");
    served.push(io_grpc::NAME);
    server::serve(&settings.address, routes, &served, &[]).await?;
    Ok(())
}
