//! `strata`: the command-line client of the strata gateway.

#![forbid(unsafe_code)]

mod build;
mod containers;
mod network;
mod output;
mod run;
mod save;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal as _;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::gateway::v1::gateway_client::GatewayClient;
use tonic::transport::Channel;

/// strata: pull, list and inspect images and run containers through the strata gateway.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
struct Cli {
    /// Gateway address: unix socket path or host:port
    #[arg(
        long,
        global = true,
        env = "STRATA_ADDRESS",
        default_value = "/run/strata/strata.sock"
    )]
    address: String,
    /// Namespace (the one ctr uses by default, so both see the same images)
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "STRATA_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull an image from a registry
    Pull {
        /// busybox, debian:bookworm, 127.0.0.1:5000/repo:tag, repo@sha256:…
        reference: String,
        /// os/arch[/variant] [default: this machine's]
        #[arg(long)]
        platform: Option<String>,
        /// Use plain HTTP for this registry (loopback registries always are)
        #[arg(long)]
        plain_http: bool,
        /// Print one line per event instead of progress bars
        #[arg(long, short)]
        quiet: bool,
    },
    /// List images
    Images {
        /// Only image IDs
        #[arg(long, short)]
        quiet: bool,
        #[arg(long)]
        json: bool,
        /// containerd filters, e.g. name~=busybox
        #[arg(long, short)]
        filter: Vec<String>,
    },
    /// Show an image's or a container's details as JSON
    Inspect {
        /// An image, or a container
        #[arg(value_name = "IMAGE|CONTAINER")]
        image: String,
    },
    /// Show the layers and commands an image was built from
    History {
        image: String,
        #[arg(long)]
        json: bool,
        /// Do not truncate commands
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove images
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import an OCI image layout or `docker save` archive (tar)
    Import {
        file: std::path::PathBuf,
        /// Name for an image whose archive names none
        #[arg(long)]
        name: Option<String>,
    },
    /// Load images from an archive `strata save` or `docker save` wrote (as `import`)
    Load {
        /// The archive [default: standard input]
        #[arg(long, short)]
        input: Option<std::path::PathBuf>,
        /// Print one line per event instead of progress bars
        #[arg(long, short)]
        quiet: bool,
    },
    /// Save images to an archive (an OCI layout with Docker's manifest.json)
    Save {
        /// The file to write [default: standard output]
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Make an image of a container's changes
    Commit {
        /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
        /// USER, VOLUME, WORKDIR, STOPSIGNAL)
        #[arg(long, short = 'c', value_name = "INSTRUCTION")]
        change: Vec<String>,
        /// Commit message
        #[arg(long, short)]
        message: Option<String>,
        /// Author (e.g. "Jane <jane@example.com>")
        #[arg(long, short)]
        author: Option<String>,
        /// Pause the container while its changes are read
        #[arg(long, short, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        pause: bool,
        container: String,
        /// REPO[:TAG] for the new image
        #[arg(value_name = "REPO[:TAG]")]
        reference: Option<String>,
    },
    /// Run a command in a new container (pulls the image if it is missing)
    Run {
        /// Run in the background and print the container ID
        #[arg(long, short)]
        detach: bool,
        #[command(flatten)]
        args: run::CreateArgs,
    },
    /// Create a container without starting it
    Create {
        #[command(flatten)]
        args: run::CreateArgs,
    },
    /// Start stopped or created containers
    Start {
        /// Attach to the container's output (one container)
        #[arg(long, short)]
        attach: bool,
        /// Attach stdin too
        #[arg(long, short)]
        interactive: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container
    Exec {
        #[command(flatten)]
        args: run::ExecArgs,
    },
    /// Show a container's output
    Logs {
        /// Keep following the output until the container exits
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines
        #[arg(long)]
        tail: Option<i64>,
        container: String,
    },
    /// List containers
    Ps {
        /// Also stopped containers
        #[arg(long, short)]
        all: bool,
        /// Show each container's own layer size (what it wrote; the image's layers are shared)
        #[arg(long, short)]
        size: bool,
        #[arg(long)]
        json: bool,
        /// Only container IDs
        #[arg(long, short)]
        quiet: bool,
    },
    /// Send a signal to a container's main process
    Kill {
        #[arg(long, short, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: SIGTERM, then SIGKILL after a grace period
    Stop {
        /// Seconds to wait before killing
        #[arg(long, short, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to stop and print their exit codes
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers (their thin read-write layer goes with them)
    Rm {
        /// Kill running containers first
        #[arg(long, short)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Manage networks
    Network {
        #[command(subcommand)]
        command: network::NetworkCommand,
    },
    /// Show a container's published ports
    Port {
        container: String,
        /// Only this port: PORT[/PROTO]
        port: Option<String>,
    },
    /// System information
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Version of this client and of the gateway
    Version,
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
    /// Give an image another name (TARGET refers to SOURCE's content)
    Tag {
        /// An image's name or ID prefix
        source: String,
        /// The new name: [REGISTRY/]REPOSITORY[:TAG]
        target: String,
    },
    /// Build an image from a Dockerfile and a context directory
    Build(build::BuildArgs),
    /// Manage the build cache
    Builder {
        #[command(subcommand)]
        command: BuilderCommand,
    },
    /// Push an image to the registry its name points at
    Push {
        /// The image's name: REGISTRY/REPOSITORY[:TAG] (give it one with `strata tag`)
        reference: String,
        /// Use plain HTTP for this registry (loopback registries always are)
        #[arg(long)]
        plain_http: bool,
        /// Print one line per event instead of progress bars
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BuilderCommand {
    /// Remove the build cache: later builds run every step again
    Prune {
        /// Do not ask for confirmation (accepted for Docker's sake: strata never asks)
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Disk usage: images, layers shared between images, unique bytes
    Df {
        #[arg(long)]
        json: bool,
        /// One row per layer
        #[arg(long, short)]
        verbose: bool,
    },
}

pub(crate) struct Ctx {
    client: GatewayClient<Channel>,
    namespace: String,
}

impl Ctx {
    pub(crate) fn req<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        Ok(strata_grpc::metadata::with_namespace(&self.namespace, msg)?)
    }
}

/// A gRPC failure as a user reads it: the server's message, no stack trace.
fn describe(status: &tonic::Status, address: &str) -> String {
    match status.code() {
        // Only a failure to reach the gateway itself: an Unavailable the gateway answers (a
        // registry it could not reach, a service behind it) is its own message.
        tonic::Code::Unavailable
            if status
                .message()
                .starts_with(&format!("{} {address}:", strata_grpc::client::CONNECTING))
                || status.message().starts_with("tcp connect error") =>
        {
            format!(
                "cannot reach the strata gateway at {address}: is it running? ({})",
                status.message()
            )
        }
        // Made here from a transport failure (a server's answer carries no source): the
        // connection to the gateway broke mid-call, as when it stops or restarts.
        _ if std::error::Error::source(status).is_some() => format!(
            "lost the connection to the strata gateway at {address} ({})",
            status.message()
        ),
        _ if status.message().is_empty() => format!("{:?}", status.code()),
        _ => status.message().to_owned(),
    }
}

/// A signal by name (KILL, SIGTERM, term) or number.
fn signal_number(s: &str) -> anyhow::Result<u32> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let name = s.to_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Ok(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => anyhow::bail!("unknown signal {s:?}"),
    })
}

// One thread: a client waits on the gateway, and starting worker threads (and reading the
// cgroup CPU quota to size them) would only add to every command's start-up.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let address = cli.address.clone();
    if let Err(e) = run(cli).await {
        let msg = match e.downcast_ref::<tonic::Status>() {
            Some(s) => describe(s, &address),
            None => format!("{e:#}"),
        };
        eprintln!("Error: {msg}");
        std::process::exit(1);
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the CLI's dispatcher: one arm per subcommand, each a request and its output"
)]
async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "strata", &mut std::io::stdout());
        return Ok(());
    }
    let channel = strata_grpc::client::channel(&cli.address)?;
    let ctx = Ctx {
        client: GatewayClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
        namespace: cli.namespace,
    };
    match cli.command {
        Command::Pull {
            reference,
            platform,
            plain_http,
            quiet,
        } => {
            let req = ctx.req(pb::PullRequest {
                reference,
                platform: platform.unwrap_or_default(),
                plain_http,
                snapshotter: String::new(),
            })?;
            let stream = ctx.client.clone().pull(req).await?.into_inner();
            output::progress(stream, quiet || !std::io::stdout().is_terminal()).await
        }
        Command::Import { file, name } => {
            let f = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("opening {}", file.display()))?;
            let stream = output::import_stream(f, name.unwrap_or_default());
            let req = ctx.req(stream)?;
            let progress = ctx.client.clone().import(req).await?.into_inner();
            output::progress(progress, !std::io::stdout().is_terminal()).await
        }
        Command::Load { input, quiet } => {
            let path = input.unwrap_or_else(|| "/dev/stdin".into());
            let f = tokio::fs::File::open(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            let stream = output::import_stream(f, String::new());
            let req = ctx.req(stream)?;
            let progress = ctx.client.clone().import(req).await?.into_inner();
            output::progress(progress, quiet || !std::io::stdout().is_terminal()).await
        }
        Command::Save { output, images } => save::save(&ctx, output, images).await,
        Command::Commit {
            change,
            message,
            author,
            pause,
            container,
            reference,
        } => {
            let made = ctx
                .client
                .clone()
                .commit(ctx.req(pb::CommitRequest {
                    container,
                    reference: reference.unwrap_or_default(),
                    changes: change,
                    message: message.unwrap_or_default(),
                    no_pause: !pause,
                    author: author.unwrap_or_default(),
                })?)
                .await?
                .into_inner();
            println!("{}", made.id);
            Ok(())
        }
        Command::Images {
            quiet,
            json,
            filter,
        } => {
            let resp = ctx
                .client
                .clone()
                .list_images(ctx.req(pb::ListImagesRequest { filters: filter })?)
                .await?
                .into_inner();
            output::images(&resp.images, quiet, json)
        }
        Command::Inspect { image } => {
            let resp = ctx
                .client
                .clone()
                .inspect_image(ctx.req(pb::InspectImageRequest {
                    name: image.clone(),
                })?)
                .await;
            match resp {
                Ok(r) => {
                    println!("{}", r.into_inner().json);
                    Ok(())
                }
                // Not an image: a container, as `docker inspect` takes either.
                Err(s) if s.code() == tonic::Code::NotFound => {
                    let c = containers::Clients::new(channel.clone());
                    containers::inspect(&ctx, &c, channel.clone(), &image)
                        .await
                        .map_err(|e| match e.downcast::<tonic::Status>() {
                            Ok(cs) if cs.code() == tonic::Code::NotFound => {
                                anyhow::anyhow!("no such image or container: {image}")
                            }
                            Ok(cs) => cs.into(),
                            Err(e) => e,
                        })
                }
                Err(s) => Err(s.into()),
            }
        }
        Command::History {
            image,
            json,
            no_trunc,
        } => {
            let resp = ctx
                .client
                .clone()
                .image_history(ctx.req(pb::ImageHistoryRequest { name: image })?)
                .await?
                .into_inner();
            output::history(&resp.entries, json, no_trunc)
        }
        Command::Rmi { images } => {
            let mut failed = false;
            for name in images {
                match ctx
                    .client
                    .clone()
                    // As with docker rmi, the space is freed when the command returns.
                    .remove_image(ctx.req(pb::RemoveImageRequest {
                        name: name.clone(),
                        sync: true,
                    })?)
                    .await
                {
                    Ok(r) => println!("Untagged: {name}\nDeleted: {}", r.into_inner().digest),
                    Err(s) => {
                        eprintln!("Error: {}", s.message());
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some images could not be removed");
            }
            Ok(())
        }
        Command::System {
            command: SystemCommand::Df { json, verbose },
        } => {
            let resp = ctx
                .client
                .clone()
                .disk_usage(ctx.req(pb::DiskUsageRequest {})?)
                .await?
                .into_inner();
            output::df(&resp, json, verbose)
        }
        Command::Version => {
            println!("Client: strata {}", env!("CARGO_PKG_VERSION"));
            let v = ctx
                .client
                .clone()
                .version(ctx.req(pb::VersionRequest {})?)
                .await?
                .into_inner();
            println!("Server: strata-gateway {} {}", v.version, v.revision);
            Ok(())
        }
        Command::Network { command } => network::network(&ctx, channel.clone(), command).await,
        Command::Port { container, port } => {
            network::port(&ctx, channel.clone(), &container, port.as_deref()).await
        }
        Command::Ps {
            all,
            size,
            json,
            quiet,
        } => {
            let c = containers::Clients::new(channel.clone());
            containers::ps(&ctx, &c, channel.clone(), all, size, json, quiet).await
        }
        Command::Kill {
            signal,
            containers: ids,
        } => {
            let c = containers::Clients::new(channel.clone());
            let sig = signal_number(&signal)?;
            for id in ids {
                containers::kill(&ctx, &c, &id, sig).await?;
                println!("{id}");
            }
            Ok(())
        }
        Command::Stop {
            time,
            containers: ids,
        } => {
            let c = containers::Clients::new(channel.clone());
            for id in ids {
                containers::stop(&ctx, &c, &id, time).await?;
                println!("{id}");
            }
            Ok(())
        }
        Command::Wait { containers: ids } => {
            let c = containers::Clients::new(channel.clone());
            for id in ids {
                println!("{}", containers::wait(&ctx, &c, &id).await?);
            }
            Ok(())
        }
        Command::Rm {
            force,
            containers: ids,
        } => {
            let mut failed = false;
            for id in ids {
                match run::remove(&ctx, &id, force).await {
                    Ok(()) => println!("{id}"),
                    Err(e) => {
                        let msg = match e.downcast_ref::<tonic::Status>() {
                            Some(s) => s.message().to_owned(),
                            None => format!("{e:#}"),
                        };
                        eprintln!("Error: {msg}");
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some containers could not be removed");
            }
            Ok(())
        }
        Command::Run { detach, args } => {
            let code = run::run(&ctx, &channel, &args, detach).await?;
            std::process::exit(code);
        }
        Command::Create { args } => {
            println!("{}", run::create(&ctx, &args).await?);
            Ok(())
        }
        Command::Start {
            attach,
            interactive,
            containers: ids,
        } => {
            let code = run::start(&ctx, &channel, &ids, attach || interactive, interactive).await?;
            std::process::exit(code);
        }
        Command::Exec { args } => {
            let code = run::exec(&ctx, &channel, &args).await?;
            std::process::exit(code);
        }
        Command::Logs {
            follow,
            tail,
            container,
        } => run::logs(&ctx, &channel, &container, follow, tail).await,
        Command::Completions { .. } => Ok(()),
        Command::Tag { source, target } => {
            ctx.client
                .clone()
                .tag(ctx.req(pb::TagRequest { source, target })?)
                .await?;
            Ok(())
        }
        Command::Build(args) => build::build(&ctx, args).await,
        Command::Builder {
            command: BuilderCommand::Prune { force: _ },
        } => {
            let r = ctx
                .client
                .clone()
                .prune_build_cache(ctx.req(pb::PruneBuildCacheRequest {})?)
                .await?
                .into_inner();
            println!("removed {} cached build steps", r.removed);
            Ok(())
        }
        Command::Push {
            reference,
            plain_http,
            quiet,
        } => {
            let req = ctx.req(pb::PushRequest {
                reference,
                plain_http,
            })?;
            let stream = ctx.client.clone().push(req).await?.into_inner();
            output::push_progress(stream, quiet || !std::io::stdout().is_terminal()).await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
