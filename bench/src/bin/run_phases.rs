//! The phases of `strata run --rm IMAGE CMD`, timed from the client side: the same gateway calls
//! the CLI makes (connect, CreateContainer, StartContainer with attach, Attach
//! until the exit event, RemoveContainer), each timed, several rounds. Prints one line per phase
//! with its median in milliseconds (`phase <name> <ms>`), then the median total.

use anyhow::{Context as _, bail};
use clap::Parser;
use std::time::Instant;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::gateway::v1::gateway_client::GatewayClient;
use strata_api::strata::tasks::v1 as iopb;
use strata_grpc::metadata::with_namespace;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser)]
struct Args {
    /// The gateway's socket
    #[arg(long)]
    address: String,
    /// The image to run (already pulled)
    #[arg(long)]
    image: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Runtime: builtin, runc, crun or a path; empty for the tasks service's default
    #[arg(long, default_value = "")]
    runtime: String,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Command run in the container
    #[arg(trailing_var_arg = true, default_values_t = ["/bin/true".to_owned()])]
    command: Vec<String>,
}

const PHASES: [&str; 5] = ["connect", "create", "start", "attach-exit", "remove"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One `run --rm`: the time of each phase in milliseconds, in the order of `PHASES`.
async fn once(a: &Args) -> anyhow::Result<[f64; 5]> {
    let mut t = [0.0; 5];
    let mut mark = Instant::now();
    let mut lap = |i: usize, t: &mut [f64; 5]| {
        t[i] = mark.elapsed().as_secs_f64() * 1000.0;
        mark = Instant::now();
    };
    let ns = a.namespace.as_str();
    let channel = strata_grpc::client::channel(&a.address)?;
    let mut client = GatewayClient::new(channel);
    // The channel is lazy: the version call makes the connection (and costs one round trip).
    client
        .version(with_namespace(ns, pb::VersionRequest {})?)
        .await
        .context("connect")?;
    lap(0, &mut t);
    let id = client
        .create_container(with_namespace(
            ns,
            pb::CreateContainerRequest {
                image: a.image.clone(),
                args: a.command.clone(),
                network: "none".to_owned(),
                runtime: a.runtime.clone(),
                auto_remove: true,
                ..Default::default()
            },
        )?)
        .await
        .context("create")?
        .into_inner()
        .id;
    lap(1, &mut t);
    client
        .start_container(with_namespace(
            ns,
            pb::StartContainerRequest {
                id: id.clone(),
                attach: true,
            },
        )?)
        .await
        .context("start")?;
    lap(2, &mut t);
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::AttachRequest {
        event: Some(pb::attach_request::Event::Start(pb::AttachStart {
            container_id: id.clone(),
            exec_id: String::new(),
            logs: true,
            stdin: false,
        })),
    })
    .await
    .context("attach")?;
    let mut out = client
        .attach(with_namespace(ns, ReceiverStream::new(rx))?)
        .await
        .context("attach")?
        .into_inner();
    let mut status = None;
    while let Some(ev) = out.message().await.context("attach")? {
        if let Some(iopb::logs_event::Event::Exit(e)) = ev.event {
            status = Some(e.exit_status);
        }
    }
    drop(tx);
    lap(3, &mut t);
    match status {
        Some(0) => {}
        Some(s) => bail!("{id} exited with {s}"),
        None => bail!("{id}: the output ended before the exit"),
    }
    match client
        .remove_container(with_namespace(
            ns,
            pb::RemoveContainerRequest {
                id: id.clone(),
                force: false,
            },
        )?)
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(s).context("remove"),
    }
    lap(4, &mut t);
    Ok(t)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
    let mut totals = Vec::new();
    for _ in 0..args.rounds {
        let t = once(&args).await?;
        for (i, ms) in t.iter().enumerate() {
            times[i].push(*ms);
        }
        totals.push(t.iter().sum());
    }
    for (name, v) in PHASES.iter().zip(times) {
        println!("phase {name} {:.2}", median(v));
    }
    println!("phase total {:.2}", median(totals));
    Ok(())
}
