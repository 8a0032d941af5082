//! run, create, start, exec, logs and rm: containers created and attached to through the
//! gateway's strata.gateway.v1 calls, output read from the tasks service's logs.

use crate::Ctx;
use anyhow::Context as _;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::os::fd::AsFd as _;
use strata_api::containerd::services::tasks::v1 as tpb;
use strata_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::tasks::v1 as iopb;
use strata_api::strata::tasks::v1::io_client::IoClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Options of `run` and `create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Keep stdin open
    #[arg(long, short)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(long, short)]
    pub tty: bool,
    /// Container name (its ID); generated when not given
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit (bytes, or with a unit: 64m, 1g)
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// Number of CPUs (e.g. 0.5)
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Bind mount a host path: SRC:DST[:ro]
    #[arg(long = "volume", short = 'v', value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Network: a network's name [default: bridge, the default network], none (own namespace
    /// with loopback only), host, or container:NAME (another container's)
    #[arg(long = "net", alias = "network")]
    pub net: Option<String>,
    /// Publish a container's port on the host: [IP:][HOST:]CONTAINER[/tcp|udp]
    #[arg(
        long = "publish",
        short = 'p',
        value_name = "[IP:][HOST:]CONTAINER[/PROTO]"
    )]
    pub publish: Vec<String>,
    /// Publish every port the image exposes, each on a free host port
    #[arg(long = "publish-all", short = 'P')]
    pub publish_all: bool,
    /// A DNS server for the container (replaces the host's)
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// A DNS search domain
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// A resolver option (ndots:2, …)
    #[arg(long = "dns-option", value_name = "OPTION")]
    pub dns_options: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// Another name for the container on a user network
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub network_aliases: Vec<String>,
    /// Mount the container's root file system read-only
    #[arg(long)]
    pub read_only: bool,
    /// OCI runtime: builtin, runc, crun or a path [default: the tasks service's]
    #[arg(long)]
    pub runtime: Option<String>,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// user[:group], by name or number
    #[arg(long, short)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(long, short)]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    pub hostname: Option<String>,
    /// Set a label on the container: KEY=VALUE
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// Add a Linux capability (ALL for every one)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (ALL for every one)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Give the container every capability, the host's devices, no seccomp filter and a
    /// writable /sys
    #[arg(long)]
    pub privileged: bool,
    /// Add a host device: HOST[:CONTAINER[:PERMISSIONS]]
    #[arg(long = "device", value_name = "HOST[:CONTAINER[:rwm]]")]
    pub devices: Vec<String>,
    /// Set a namespaced kernel parameter: KEY=VALUE
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctls: Vec<String>,
    /// Add a supplementary group (name or number)
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Mount a tmpfs: DEST[:OPTIONS]
    #[arg(long = "tmpfs", value_name = "DEST[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Set a resource limit: NAME=SOFT[:HARD]
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Security options: seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false]
    #[arg(long = "security-opt", value_name = "OPTION")]
    pub security_opt: Vec<String>,
    pub image: String,
    /// Command and arguments (replacing the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Bytes from `64m`, `1g`, `512k`, `1048576`, `64MiB`.
pub fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let digits: String = t
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let unit = t[digits.len()..]
        .trim_end_matches("ib")
        .trim_end_matches('b');
    let n: f64 = digits
        .parse()
        .with_context(|| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => anyhow::bail!("invalid size {s:?}: unknown unit"),
    };
    #[allow(clippy::cast_possible_truncation)]
    Ok((n * mult) as i64)
}

fn volume(s: &str) -> anyhow::Result<pb::Volume> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, destination, read_only) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => anyhow::bail!("invalid volume {s:?}: expected SRC:DST[:ro]"),
    };
    let source = std::path::absolute(source)
        .with_context(|| format!("volume {s:?}"))?
        .display()
        .to_string();
    Ok(pb::Volume {
        source,
        destination: destination.to_owned(),
        read_only,
    })
}

fn device(s: &str) -> anyhow::Result<pb::Device> {
    let parts: Vec<&str> = s.split(':').collect();
    let perms = |p: &str| p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) && !p.is_empty();
    let (host, inside, permissions) = match parts.as_slice() {
        [h] => (*h, "", ""),
        [h, p] if perms(p) => (*h, "", *p),
        [h, c] => (*h, *c, ""),
        [h, c, p] => (*h, *c, *p),
        _ => anyhow::bail!("invalid device {s:?}: expected HOST[:CONTAINER[:PERMISSIONS]]"),
    };
    Ok(pb::Device {
        host_path: host.to_owned(),
        container_path: inside.to_owned(),
        permissions: permissions.to_owned(),
    })
}

fn ulimit(s: &str) -> anyhow::Result<pb::Ulimit> {
    let bad = || anyhow::anyhow!("invalid ulimit {s:?}: expected NAME=SOFT[:HARD]");
    let (name, limits) = s.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    Ok(pb::Ulimit {
        name: name.to_owned(),
        soft: soft.parse().map_err(|_| bad())?,
        hard: hard.parse().map_err(|_| bad())?,
    })
}

/// `seccomp=FILE` carries the file's contents, as Docker's client sends them.
fn security_opt(s: &str) -> anyhow::Result<String> {
    let Some(file) = s
        .strip_prefix("seccomp=")
        .or_else(|| s.strip_prefix("seccomp:"))
    else {
        return Ok(s.to_owned());
    };
    if file == "unconfined" {
        return Ok(s.to_owned());
    }
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(4 << 20).read_to_string(&mut text))
        .with_context(|| format!("reading seccomp profile {file:?}"))?;
    Ok(format!("seccomp={text}"))
}

fn create_request(a: &CreateArgs) -> anyhow::Result<pb::CreateContainerRequest> {
    let mut labels = std::collections::HashMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    Ok(pb::CreateContainerRequest {
        image: a.image.clone(),
        name: a.name.clone().unwrap_or_default(),
        args: a.command.clone(),
        entrypoint: a.entrypoint.iter().cloned().collect(),
        env: a.env.clone(),
        tty: a.tty,
        stdin: a.interactive,
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        memory: a
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()?
            .unwrap_or(0),
        cpus: a.cpus.unwrap_or(0.0),
        pids_limit: a.pids_limit.unwrap_or(0),
        volumes: a
            .volumes
            .iter()
            .map(|v| volume(v))
            .collect::<anyhow::Result<_>>()?,
        network: a.net.clone().unwrap_or_default(),
        read_only: a.read_only,
        runtime: a.runtime.clone().unwrap_or_default(),
        auto_remove: a.rm,
        labels,
        snapshotter: String::new(),
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        devices: a
            .devices
            .iter()
            .map(|d| device(d))
            .collect::<anyhow::Result<_>>()?,
        sysctls: a
            .sysctls
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("invalid sysctl {kv:?}: expected KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?,
        group_add: a.group_add.clone(),
        tmpfs: a
            .tmpfs
            .iter()
            .map(|t| {
                let (d, o) = t.split_once(':').unwrap_or((t.as_str(), ""));
                pb::Tmpfs {
                    destination: d.to_owned(),
                    options: o.to_owned(),
                }
            })
            .collect(),
        ulimits: a
            .ulimits
            .iter()
            .map(|u| ulimit(u))
            .collect::<anyhow::Result<_>>()?,
        security_opt: a
            .security_opt
            .iter()
            .map(|o| security_opt(o))
            .collect::<anyhow::Result<_>>()?,
        ports: a
            .publish
            .iter()
            .map(|p| crate::network::parse_publish(p))
            .collect::<anyhow::Result<_>>()?,
        publish_all: a.publish_all,
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_options.clone(),
        extra_hosts: a.add_hosts.clone(),
        network_aliases: a.network_aliases.clone(),
    })
}

/// Pulls `image`, as `docker run` does when the image is missing.
async fn pull_missing(ctx: &Ctx, image: &str) -> anyhow::Result<()> {
    {
        {
            eprintln!("Unable to find image '{image}' locally");
            let mut stream = ctx
                .client
                .clone()
                .pull(ctx.req(pb::PullRequest {
                    reference: image.to_owned(),
                    ..Default::default()
                })?)
                .await?
                .into_inner();
            // Progress goes to stderr: stdout is the container's.
            while let Some(ev) = stream.message().await? {
                match ev.event {
                    Some(pb::pull_progress::Event::Resolved(r)) => {
                        eprintln!("{}: pulling {} layers", r.name, r.layers.len());
                    }
                    Some(pb::pull_progress::Event::Done(d)) => {
                        eprintln!("Digest: {}", d.digest);
                        eprintln!("Status: Downloaded newer image for {}", d.name);
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

pub async fn create(ctx: &Ctx, a: &CreateArgs) -> anyhow::Result<String> {
    let req = create_request(a)?;
    // Created at once when the image is here (the common case: no extra round trip); a
    // missing image is pulled, then the creation is tried again.
    match ctx
        .client
        .clone()
        .create_container(ctx.req(req.clone())?)
        .await
    {
        Ok(r) => return Ok(r.into_inner().id),
        Err(s) if s.code() == tonic::Code::NotFound && s.message().starts_with("image ") => {}
        Err(s) => return Err(s.into()),
    }
    pull_missing(ctx, &a.image).await?;
    Ok(ctx
        .client
        .clone()
        .create_container(ctx.req(req)?)
        .await?
        .into_inner()
        .id)
}

async fn start_one(ctx: &Ctx, id: &str, attach: bool) -> anyhow::Result<()> {
    ctx.client
        .clone()
        .start_container(ctx.req(pb::StartContainerRequest {
            id: id.to_owned(),
            attach,
        })?)
        .await?;
    Ok(())
}

/// Puts the terminal in raw mode while alive (keys go to the container's terminal as typed).
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = nix::sys::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &raw)
            .ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// The size of the terminal on stdout (or stdin), if there is one.
fn terminal_size() -> Option<pb::Resize> {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    [stdout.as_fd(), stdin.as_fd()]
        .into_iter()
        .filter_map(|fd| strata_core::tty::size(fd).ok())
        .find(|size| size.width > 0)
        .map(|size| pb::Resize {
            width: size.width,
            height: size.height,
        })
}

/// What an attach is for.
pub struct AttachOpts {
    pub id: String,
    pub exec_id: String,
    pub stdin: bool,
    pub tty: bool,
    /// Include what the current run wrote before the attach.
    pub logs: bool,
}

/// An attach in progress: the output stream and the sender of client events.
struct Session {
    output: tonic::Streaming<iopb::LogsEvent>,
    tx: mpsc::Sender<pb::AttachRequest>,
}

async fn open(ctx: &Ctx, o: &AttachOpts) -> anyhow::Result<Session> {
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AttachRequest {
        event: Some(pb::attach_request::Event::Start(pb::AttachStart {
            container_id: o.id.clone(),
            exec_id: o.exec_id.clone(),
            logs: o.logs,
            stdin: o.stdin,
        })),
    })
    .await
    .context("attach")?;
    let output = ctx
        .client
        .clone()
        .attach(ctx.req(ReceiverStream::new(rx))?)
        .await?
        .into_inner();
    Ok(Session { output, tx })
}

/// Streams a session until the process exits; returns its exit status.
async fn stream(
    ctx: &Ctx,
    channel: &Channel,
    o: &AttachOpts,
    mut s: Session,
) -> anyhow::Result<u32> {
    let raw = if o.tty && o.stdin {
        RawMode::enter()
    } else {
        None
    };
    if o.tty {
        if let Some(size) = terminal_size() {
            let _ =
                s.tx.send(pb::AttachRequest {
                    event: Some(pb::attach_request::Event::Resize(size)),
                })
                .await;
        }
        let tx = s.tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(size) = terminal_size()
                    && tx
                        .send(pb::AttachRequest {
                            event: Some(pb::attach_request::Event::Resize(size)),
                        })
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
    }
    if o.stdin {
        forward_stdin(s.tx.clone());
    }
    if !o.tty {
        proxy_signals(ctx, channel, o);
    }
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut status = None;
    while let Some(ev) = s.output.message().await? {
        match ev.event {
            Some(iopb::logs_event::Event::Output(o)) => {
                if o.stream == iopb::output::Stream::Stderr as i32 {
                    err.write_all(&o.data)?;
                    err.flush()?;
                } else {
                    out.write_all(&o.data)?;
                    out.flush()?;
                }
            }
            Some(iopb::logs_event::Event::Exit(e)) => {
                // The exit comes last: no need to wait for the stream's end.
                status = Some(e.exit_status);
                break;
            }
            None => {}
        }
    }
    drop(raw);
    status.with_context(|| format!("{}: the output ended before the process exited", o.id))
}

/// Sends the CLI's stdin to the session from a thread, then closes the process's stdin at
/// its end.
fn forward_stdin(tx: mpsc::Sender<pb::AttachRequest>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 << 10];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(pb::AttachRequest {
                        event: Some(pb::attach_request::Event::CloseStdin(true)),
                    });
                    return;
                }
                Ok(n) => {
                    let ev = pb::attach_request::Event::Stdin(buf[..n].to_vec().into());
                    if tx
                        .blocking_send(pb::AttachRequest { event: Some(ev) })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
}

/// As docker's signal proxy: the signals the CLI gets (interrupt, terminate, hangup, quit)
/// go to the attached process.
fn proxy_signals(ctx: &Ctx, channel: &Channel, o: &AttachOpts) {
    let (ctx_ns, id, exec_id) = (ctx.namespace.clone(), o.id.clone(), o.exec_id.clone());
    let tasks = TasksClient::new(channel.clone());
    for kind in [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
        tokio::signal::unix::SignalKind::hangup(),
        tokio::signal::unix::SignalKind::quit(),
    ] {
        let Ok(mut sig) = tokio::signal::unix::signal(kind) else {
            continue;
        };
        let (ns, id, exec_id, mut tasks) =
            (ctx_ns.clone(), id.clone(), exec_id.clone(), tasks.clone());
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                let Ok(req) = strata_grpc::metadata::with_namespace(
                    &ns,
                    tpb::KillRequest {
                        container_id: id.clone(),
                        exec_id: exec_id.clone(),
                        signal: kind.as_raw_value().cast_unsigned(),
                        all: false,
                    },
                ) else {
                    return;
                };
                let _ = tasks.kill(req).await;
            }
        });
    }
}

/// `strata run`: create, attach, start, stream; the container's exit status is returned.
pub async fn run(
    ctx: &Ctx,
    channel: &Channel,
    a: &CreateArgs,
    detach: bool,
) -> anyhow::Result<i32> {
    let id = create(ctx, a).await?;
    if detach {
        start_one(ctx, &id, false).await?;
        println!("{id}");
        return Ok(0);
    }
    let o = AttachOpts {
        id: id.clone(),
        exec_id: String::new(),
        stdin: a.interactive,
        tty: a.tty,
        logs: true,
    };
    // Started first, then attached from the start of its output: nothing is missed.
    if let Err(e) = start_one(ctx, &id, true).await {
        if a.rm {
            let _ = remove(ctx, &id, true).await;
        }
        return Err(e);
    }
    let session = open(ctx, &o).await?;
    let status = stream(ctx, channel, &o, session).await?;
    if a.rm {
        // The gateway removes it too; whoever comes second finds nothing to do.
        match remove(ctx, &id, false).await {
            Ok(()) => {}
            Err(e)
                if e.downcast_ref::<tonic::Status>()
                    .is_some_and(|s| s.code() == tonic::Code::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(i32::try_from(status).unwrap_or(255))
}

/// `strata start`: starts containers; with `attach`, streams the (single) container's output.
pub async fn start(
    ctx: &Ctx,
    channel: &Channel,
    ids: &[String],
    attach: bool,
    interactive: bool,
) -> anyhow::Result<i32> {
    if !attach {
        for id in ids {
            start_one(ctx, id, false).await?;
            println!("{id}");
        }
        return Ok(0);
    }
    let [id] = ids else {
        anyhow::bail!("attach to one container at a time");
    };
    let tty = container_tty(ctx, channel, id).await?;
    let o = AttachOpts {
        id: id.clone(),
        exec_id: String::new(),
        stdin: interactive,
        tty,
        logs: true,
    };
    start_one(ctx, id, true).await?;
    let session = open(ctx, &o).await?;
    let status = stream(ctx, channel, &o, session).await?;
    Ok(i32::try_from(status).unwrap_or(255))
}

async fn container_tty(ctx: &Ctx, channel: &Channel, id: &str) -> anyhow::Result<bool> {
    use strata_api::containerd::services::containers::v1 as cpb;
    let c = cpb::containers_client::ContainersClient::new(channel.clone())
        .get(ctx.req(cpb::GetContainerRequest { id: id.to_owned() })?)
        .await?
        .into_inner()
        .container
        .with_context(|| format!("container {id}"))?;
    Ok(c.spec
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false))
}

/// Options of `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open
    #[arg(long, short)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(long, short)]
    pub tty: bool,
    /// Run in the background
    #[arg(long, short)]
    pub detach: bool,
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    #[arg(long, short)]
    pub user: Option<String>,
    #[arg(long, short)]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub async fn exec(ctx: &Ctx, channel: &Channel, a: &ExecArgs) -> anyhow::Result<i32> {
    let r = ctx
        .client
        .clone()
        .exec(ctx.req(pb::ExecRequest {
            container_id: a.container.clone(),
            args: a.command.clone(),
            env: a.env.clone(),
            tty: a.tty,
            stdin: a.interactive && !a.detach,
            user: a.user.clone().unwrap_or_default(),
            workdir: a.workdir.clone().unwrap_or_default(),
            exec_id: String::new(),
            detach: a.detach,
        })?)
        .await?
        .into_inner();
    if a.detach {
        return Ok(0);
    }
    let o = AttachOpts {
        id: a.container.clone(),
        exec_id: r.exec_id,
        stdin: a.interactive,
        tty: a.tty,
        logs: true,
    };
    let session = open(ctx, &o).await?;
    let status = stream(ctx, channel, &o, session).await?;
    Ok(i32::try_from(status).unwrap_or(255))
}

pub async fn logs(
    ctx: &Ctx,
    channel: &Channel,
    id: &str,
    follow: bool,
    tail: Option<i64>,
) -> anyhow::Result<()> {
    let mut s = IoClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .logs(ctx.req(iopb::LogsRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            follow,
            new_only: false,
            tail: tail.unwrap_or(0),
            this_run: false,
        })?)
        .await?
        .into_inner();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(ev) = s.message().await? {
        if let Some(iopb::logs_event::Event::Output(o)) = ev.event {
            if o.stream == iopb::output::Stream::Stderr as i32 {
                err.write_all(&o.data)?;
                err.flush()?;
            } else {
                out.write_all(&o.data)?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

pub async fn remove(ctx: &Ctx, id: &str, force: bool) -> anyhow::Result<()> {
    ctx.client
        .clone()
        .remove_container(ctx.req(pb::RemoveContainerRequest {
            id: id.to_owned(),
            force,
        })?)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("12x").is_err());
    }

    #[test]
    fn volumes_parse() {
        let v = volume("/a:/b:ro").unwrap();
        assert_eq!(
            (v.source.as_str(), v.destination.as_str(), v.read_only),
            ("/a", "/b", true)
        );
        assert!(volume("/a").is_err());
    }
}
