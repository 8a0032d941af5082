//! The runtime every service binary shares: flags and TOML config, logs, the listening socket,
//! health and reflection, systemd readiness and clean shutdown.

use crate::config::Config;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::service::Routes;
use tonic::transport::Server;

/// Why a service could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config file was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A log format other than `text` or `json`.
    #[error("invalid --log-format {0:?} (text or json)")]
    LogFormat(String),
    /// The socket's directory could not be created or given its mode.
    #[error("preparing socket directory {path}: {source}")]
    SocketDir {
        /// The directory.
        path: PathBuf,
        /// What creating it or setting its mode failed with.
        source: std::io::Error,
    },
    /// The unix socket's path answers connections: another server runs there.
    #[error("another server is already listening on {0}")]
    InUse(PathBuf),
    /// Binding the socket (or setting a unix socket's mode) failed.
    #[error("listening on {address}: {source}")]
    Bind {
        /// The socket path or TCP address.
        address: String,
        /// What it failed with.
        source: std::io::Error,
    },
    /// The SIGTERM or SIGINT handler could not be installed.
    #[error("installing signal handlers: {source}")]
    Signal {
        /// What installing it failed with.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed while serving.
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// How a service writes its logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags every service takes. Flags override the config file, which overrides defaults.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Unix socket path, or host:port for TCP [default: /run/strata/<service>.sock]
    #[arg(long)]
    pub address: Option<String>,
    /// Directory for persistent state [default: /var/lib/strata/<service>]
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// TOML config file (keys: address, root, log_format and the service's own; an unknown key
    /// is an error)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format (level from RUST_LOG, default info)
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket, at this path.
    Unix(PathBuf),
    /// A TCP socket.
    Tcp(SocketAddr),
}

impl Address {
    /// `host:port` (or `tcp://host:port`) is TCP; anything else (or `unix://path`) a socket path.
    pub fn parse(s: &str) -> Self {
        let s = s.strip_prefix("unix://").unwrap_or(s);
        let tcp = s.strip_prefix("tcp://").unwrap_or(s);
        match tcp.parse::<SocketAddr>() {
            Ok(addr) => Self::Tcp(addr),
            Err(_) => Self::Unix(PathBuf::from(s)),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The resolved settings of one service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the service listens.
    pub address: Address,
    /// The directory of the service's persistent state.
    pub root: PathBuf,
    /// How the service writes its logs.
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// Merges flags, the config file and the defaults for `service`, and returns the service's
    /// own keys of the file, typed as `T` (see [`crate::config`]; an unknown key or a wrong
    /// value is an error naming the key and the file).
    pub fn resolve<T: DeserializeOwned + Default>(
        &self,
        service: &str,
    ) -> Result<(Settings, T), ServeError> {
        self.resolve_with(service, service)
    }

    /// As [`resolve`](Self::resolve), for a service whose default socket is named otherwise
    /// (the gateway listens on `/run/strata/strata.sock`, its state in `/var/lib/strata/gateway`).
    pub fn resolve_with<T: DeserializeOwned + Default>(
        &self,
        service: &str,
        socket: &str,
    ) -> Result<(Settings, T), ServeError> {
        let Config {
            common: file,
            service: own,
        } = match &self.config {
            Some(path) => crate::config::load::<T>(path)?,
            None => Config::default(),
        };
        let address = self
            .address
            .clone()
            .or(file.address)
            .unwrap_or_else(|| format!("/run/strata/{socket}.sock"));
        Ok((
            Settings {
                address: Address::parse(&address),
                root: self
                    .root
                    .clone()
                    .or(file.root)
                    .unwrap_or_else(|| PathBuf::from(format!("/var/lib/strata/{service}"))),
                log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            },
            own,
        ))
    }
}

/// Sets up tracing-subscriber logs on stderr, level from `RUST_LOG` (default `info`).
///
/// Also bounds the heap's arenas (see [`limit_heap_arenas`]): every service calls this first.
pub fn init_logging(format: LogFormat) {
    limit_heap_arenas();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests running several servers) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Tells systemd (Type=notify) that the service is ready, when `NOTIFY_SOCKET` is set.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(b"READY=1\n", &addr)?;
        } else {
            sock.send_to(b"READY=1\n", Path::new(&path))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not notify systemd of readiness");
    }
}

/// Installs the SIGTERM and SIGINT handlers now (before readiness is announced, so an early
/// SIGTERM is never lost to the default action) and returns a future that ends on either.
/// How long a stopping service waits for calls in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let err = |source| ServeError::Signal { source };
    let mut term = signal(SignalKind::terminate()).map_err(err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(err)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    })
}

fn prepare_unix(path: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        {
            std::fs::create_dir_all(dir).map_err(|source| ServeError::SocketDir {
                path: dir.to_owned(),
                source,
            })?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(
                |source| ServeError::SocketDir {
                    path: dir.to_owned(),
                    source,
                },
            )?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_owned()));
        }
        // A stale socket from a process that died: nobody answers on it.
        let _ = std::fs::remove_file(path);
    }
    let bind_err = |source| ServeError::Bind {
        address: path.display().to_string(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

/// Serves `routes` plus health (every name in `services` reported SERVING) and reflection (v1 and
/// v1alpha, listing `services`) until SIGTERM or SIGINT; a unix socket is removed on exit.
pub async fn serve(
    address: &Address,
    routes: Routes,
    services: &[&str],
    descriptor_sets: &[&[u8]],
) -> Result<(), ServeError> {
    let routes = with_health_and_reflection(routes, services, descriptor_sets).await?;

    tokio::spawn(trim_heap_when_idle());
    let mut builder = Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .tcp_nodelay(true);
    let router = builder.add_routes(routes);

    // Graceful for a while: calls in flight finish; streams that never end (a follow, an
    // attach) do not hold the service past the grace period.
    let signal = shutdown_signal()?;
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        signal.await;
        let _ = stopping_tx.send(());
    };
    let deadline = async move {
        if stopping.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "calls still running after the grace period: stopping anyway"
            );
        } else {
            std::future::pending::<()>().await;
        }
    };
    match address {
        Address::Unix(path) => {
            let listener = prepare_unix(path)?;
            tracing::info!(address = %address, "serving");
            notify_ready();
            let serve = router.serve_with_incoming_shutdown(
                UnixListenerStream::new(listener)
                    .map(|conn| conn.map(crate::authority::FixAuthority::new)),
                shutdown,
            );
            let result = tokio::select! {
                r = serve => r,
                () = deadline => Ok(()),
            };
            let _ = std::fs::remove_file(path);
            result?;
        }
        Address::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    address: addr.to_string(),
                    source,
                })?;
            tracing::info!(address = %address, "serving");
            notify_ready();
            let serve =
                router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
            tokio::select! {
                r = serve => r?,
                () = deadline => {}
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// `routes` plus health (every name in `services`, and the server as a whole, reported SERVING)
/// and reflection v1 and v1alpha listing `services`.
async fn with_health_and_reflection(
    routes: Routes,
    services: &[&str],
    descriptor_sets: &[&[u8]],
) -> Result<Routes, ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in services {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    fn reflection<'a>(
        b: tonic_reflection::server::Builder<'a>,
        services: &[&str],
        descriptor_sets: &[&'a [u8]],
    ) -> tonic_reflection::server::Builder<'a> {
        let mut b = b
            .register_encoded_file_descriptor_set(strata_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in descriptor_sets {
            b = b.register_encoded_file_descriptor_set(set);
        }
        for name in services.iter().copied().chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]) {
            b = b.with_service_name(name);
        }
        b.include_reflection_service(true)
    }
    let v1 = reflection(
        tonic_reflection::server::Builder::configure(),
        services,
        descriptor_sets,
    )
    .build_v1()?;
    let v1alpha = reflection(
        tonic_reflection::server::Builder::configure(),
        services,
        descriptor_sets,
    )
    .build_v1alpha()?;
    let routes = routes
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    Ok(routes)
}

/// How long an idle thread of tokio's blocking pool waits for more work before it ends (tokio's
/// default: ten seconds). A burst of container starts runs dozens of these threads at once
/// (mounts, database transactions, log reads), and while they live their stacks and allocator
/// caches count in the service's memory: strata-tasks read 6.7 MiB five seconds after 50
/// concurrent `run --rm`, 51 threads alive, and 5.3 MiB once they had ended.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a service's `main` future on the runtime every service uses: tokio's multi-threaded
/// runtime, made once glibc's tunables are in force ([`crate::tunables::ensure`], which may
/// execute the program again) and the allocator's bounds are set ([`limit_heap_arenas`], which
/// must come before any thread exists to bound every arena), whose idle blocking threads end
/// after [`BLOCKING_KEEP_ALIVE`]. A service's `main` calls it first.
pub fn run<F: std::future::Future>(main: F) -> std::io::Result<F::Output> {
    crate::tunables::ensure();
    limit_heap_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()?;
    Ok(runtime.block_on(main))
}

/// Gives the heap freed after a burst of work back to the system once the service is idle
/// again: glibc keeps what is freed inside an arena, so after a load of concurrent requests a
/// service held megabytes of free heap for good. Every two seconds, when the process used less
/// than 1 ms of CPU in the interval (it is idle) and more than 5 ms since the last trim (it
/// worked since), it trims once. (The allocator's own count of free bytes cannot tell: it
/// still counts what a trim gave back, so a burst that reused and freed the same memory looked
/// like nothing to trim.)
async fn trim_heap_when_idle() {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(2);
    const IDLE: std::time::Duration = std::time::Duration::from_millis(1);
    const WORKED: std::time::Duration = std::time::Duration::from_millis(5);
    let mut last = cpu_time();
    let mut trimmed_at = last;
    loop {
        tokio::time::sleep(EVERY).await;
        let now = cpu_time();
        let used = now.saturating_sub(last);
        last = now;
        if used <= IDLE && now.saturating_sub(trimmed_at) > WORKED {
            trim_heap();
            last = cpu_time();
            trimmed_at = last;
        }
    }
}

/// CPU time the process has used (user and system).
fn cpu_time() -> std::time::Duration {
    // SAFETY: getrusage writes one rusage into the zeroed struct it is given and reads nothing
    // else; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) != 0 {
            return std::time::Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + std::time::Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only takes each arena's lock and returns its free pages to the
    // kernel; it touches no memory that is in use and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bounds what glibc's allocator keeps after a burst of work:
/// - At most two arenas. By default it makes one per thread that meets contention, up to
///   eight per core, and never frees one: each thread of tokio's blocking pool or of a layer's
///   extraction that came and went left an arena behind holding a megabyte or more, so a
///   service's heap grew with every burst of work (the snapshotter: 11 -> 16 MiB over one more
///   round of `bench/soak.sh`; with two arenas, flat at 5 MiB). The services are not
///   allocation-bound; a little contention costs nothing measurable.
/// - Blocks of 16 KiB and more are mapped on their own and given back when freed. By default
///   the threshold starts at 128 KiB and rises to the largest block freed, so the buffers of
///   a burst (HTTP/2 frames, layer chunks, database pages) were carved out of the arenas,
///   where the small allocations made beside them kept their pages from being trimmed: after
///   the same load again the snapshotter's heap read 3.5 MiB one time and 5.6 MiB the next
///   (glibc's in-use count 2.0 MiB both times). With the fixed threshold it stays within 6 %.
pub fn limit_heap_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; M_ARENA_MAX takes effect for arenas made
    // after the call and M_MMAP_THRESHOLD for blocks allocated after it, and both are safe to
    // set while other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Blocks at least this large get a mapping of their own (see [`limit_heap_arenas`]).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 16 * 1024;
