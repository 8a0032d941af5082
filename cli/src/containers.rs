//! Container commands over the containerd APIs the gateway routes (Containers, Tasks,
//! Snapshots): ps, kill, stop, wait.

use crate::Ctx;
use crate::output;
use anyhow::Context as _;
use strata_api::containerd::services::containers::v1 as cpb;
use strata_api::containerd::services::containers::v1::containers_client::ContainersClient;
use strata_api::containerd::services::snapshots::v1 as spb;
use strata_api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use strata_api::containerd::services::tasks::v1 as tpb;
use strata_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use strata_api::containerd::v1::types::Status as TaskStatus;
use tonic::transport::Channel;

pub struct Clients {
    containers: ContainersClient<Channel>,
    tasks: TasksClient<Channel>,
    snapshots: SnapshotsClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        Self {
            containers: ContainersClient::new(channel.clone()),
            tasks: TasksClient::new(channel.clone()),
            snapshots: SnapshotsClient::new(channel),
        }
    }
}

/// The task of a container, if it has one.
async fn task(
    ctx: &Ctx,
    c: &Clients,
    id: &str,
) -> anyhow::Result<Option<strata_api::containerd::v1::types::Process>> {
    match c
        .tasks
        .clone()
        .get(ctx.req(tpb::GetRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        })?)
        .await
    {
        Ok(r) => Ok(r.into_inner().process),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s.into()),
    }
}

fn command_of(spec: Option<&prost_types::Any>) -> String {
    spec.and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
        .and_then(|v| {
            v["process"]["args"].as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_default()
}

/// Published ports as Docker prints them: `0.0.0.0:32768->80/tcp`.
fn ports_text(a: &strata_api::strata::network::v1::Attachment) -> String {
    a.ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every attachment of the namespace, by container (none without a network service).
async fn attachments(
    ctx: &Ctx,
    channel: Channel,
) -> anyhow::Result<std::collections::HashMap<String, strata_api::strata::network::v1::Attachment>>
{
    use strata_api::strata::network::v1 as npb;
    let r = npb::networks_client::NetworksClient::new(channel)
        .list_attachments(ctx.req(npb::ListAttachmentsRequest {})?)
        .await;
    match r {
        Ok(r) => Ok(r
            .into_inner()
            .attachments
            .into_iter()
            .map(|a| (a.container_id.clone(), a))
            .collect()),
        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Default::default()),
        Err(s) => Err(s.into()),
    }
}

/// `strata inspect CONTAINER`: the container as Docker's inspect shows it (the fields strata
/// has), with its network settings.
pub async fn inspect(ctx: &Ctx, c: &Clients, channel: Channel, id: &str) -> anyhow::Result<()> {
    let ct = c
        .containers
        .clone()
        .get(ctx.req(cpb::GetContainerRequest { id: id.to_owned() })?)
        .await?
        .into_inner()
        .container
        .context("no container in the answer")?;
    let spec: serde_json::Value = ct
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or_default();
    let t = task(ctx, c, id).await?;
    let (status, pid, exit) = match &t {
        Some(p) => (
            match TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown) {
                TaskStatus::Running => "running",
                TaskStatus::Paused => "paused",
                TaskStatus::Created => "created",
                TaskStatus::Stopped => "exited",
                _ => "unknown",
            },
            p.pid,
            p.exit_status,
        ),
        None => ("created", 0, 0),
    };
    let a = crate::network::attachment(ctx, channel, id).await?;
    let network = a.as_ref().map_or_else(
        || serde_json::json!({"Networks": {}, "Ports": {}}),
        |a| {
            let (ip, prefix) = a.address.split_once('/').unwrap_or((&a.address, ""));
            let mut ports = serde_json::Map::new();
            for p in &a.ports {
                let key = format!("{}/{}", p.container_port, p.protocol);
                let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
                if let Some(list) = entry.as_array_mut() {
                    list.push(serde_json::json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
                }
            }
            let mut networks = serde_json::Map::new();
            networks.insert(
                a.network.clone(),
                serde_json::json!({
                    "IPAddress": ip,
                    "IPPrefixLen": prefix.parse::<u32>().unwrap_or(0),
                    "Gateway": a.gateway,
                    "MacAddress": a.mac_address,
                    "Aliases": a.aliases,
                }),
            );
            for l in &a.links {
                let (ip, prefix) = l.address.split_once('/').unwrap_or((&l.address, ""));
                networks.insert(
                    l.network.clone(),
                    serde_json::json!({
                        "IPAddress": ip,
                        "IPPrefixLen": prefix.parse::<u32>().unwrap_or(0),
                        "Gateway": l.gateway,
                        "MacAddress": l.mac_address,
                        "Aliases": l.aliases,
                    }),
                );
            }
            serde_json::json!({
                "Networks": networks,
                "Ports": ports,
                "SandboxKey": a.netns_path,
            })
        },
    );
    let v = serde_json::json!([{
        "Id": ct.id,
        "Created": ct.created_at.as_ref().map(|t| t.seconds),
        "Image": ct.image,
        "State": {"Status": status, "Running": status == "running", "Pid": pid, "ExitCode": exit},
        "Config": {
            "Hostname": spec["hostname"],
            "Cmd": spec["process"]["args"],
            "Env": spec["process"]["env"],
            "WorkingDir": spec["process"]["cwd"],
            "Labels": ct.labels,
        },
        "HostConfig": {
            "Runtime": ct.runtime.as_ref().map(|r| r.name.clone()),
            "CapAdd": spec["process"]["capabilities"]["bounding"],
            "ReadonlyRootfs": spec["root"]["readonly"],
            "Mounts": spec["mounts"],
        },
        "NetworkSettings": network,
    }]);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// A task's status as `ps` shows it.
fn status_text(t: Option<&strata_api::containerd::v1::types::Process>) -> String {
    match t {
        Some(p) => match TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown) {
            TaskStatus::Running => "Up".to_owned(),
            TaskStatus::Paused => "Up (Paused)".to_owned(),
            TaskStatus::Created => "Created".to_owned(),
            TaskStatus::Stopped => format!("Exited ({})", p.exit_status),
            _ => "Unknown".to_owned(),
        },
        None => "Created (no task)".to_owned(),
    }
}

/// The size of container `ct`'s own layer (its snapshot's usage); 0, said on stderr, when
/// the snapshotter cannot tell.
async fn own_size(ctx: &Ctx, c: &Clients, ct: &cpb::Container) -> anyhow::Result<i64> {
    let u = c
        .snapshots
        .clone()
        .usage(ctx.req(spb::UsageRequest {
            snapshotter: ct.snapshotter.clone(),
            key: ct.snapshot_key.clone(),
        })?)
        .await
        .map(|r| r.into_inner().size);
    Ok(match u {
        Ok(u) => u,
        Err(s) => {
            eprintln!("{}: size unknown: {}", ct.id, s.message());
            0
        }
    })
}

/// The size of each image, by name.
async fn image_sizes(ctx: &Ctx) -> anyhow::Result<std::collections::HashMap<String, i64>> {
    Ok(ctx
        .client
        .clone()
        .list_images(
            ctx.req(strata_api::strata::gateway::v1::ListImagesRequest { filters: vec![] })?,
        )
        .await?
        .into_inner()
        .images
        .into_iter()
        .map(|i| (i.name, i.size))
        .collect())
}

#[allow(clippy::too_many_arguments)]
pub async fn ps(
    ctx: &Ctx,
    c: &Clients,
    channel: Channel,
    all: bool,
    size: bool,
    json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let list = c
        .containers
        .clone()
        .list(ctx.req(cpb::ListContainersRequest { filters: vec![] })?)
        .await?
        .into_inner()
        .containers;
    // Virtual size = the container's own layer + its image's (shared) layers.
    let image_sizes: std::collections::HashMap<String, i64> = if size {
        image_sizes(ctx).await?
    } else {
        Default::default()
    };
    let attached = if quiet {
        Default::default()
    } else {
        attachments(ctx, channel).await?
    };
    let mut rows = Vec::new();
    for ct in list {
        let t = task(ctx, c, &ct.id).await?;
        let status = status_text(t.as_ref());
        let running = status.starts_with("Up");
        if !all && !running {
            continue;
        }
        let own = if size && !ct.snapshot_key.is_empty() {
            Some(own_size(ctx, c, &ct).await?)
        } else {
            None
        };
        let own = own.map(|o| (o, o + image_sizes.get(&ct.image).copied().unwrap_or(0)));
        rows.push((ct, status, own));
    }
    if quiet {
        for (ct, _, _) in &rows {
            println!("{}", ct.id);
        }
        return Ok(());
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(ct, status, own)| {
                serde_json::json!({
                    "ID": ct.id, "Image": ct.image, "Command": command_of(ct.spec.as_ref()),
                    "Status": status, "Size": own.map(|o| o.0),
                    "VirtualSize": own.map(|o| o.1), "Labels": ct.labels,
                    "Ports": attached.get(&ct.id).map(ports_text).unwrap_or_default(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut table = vec![vec![
        "CONTAINER ID".to_owned(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
    ]];
    if size {
        table[0].push("SIZE".into());
    }
    for (ct, status, own) in rows {
        let mut cmd = command_of(ct.spec.as_ref());
        if cmd.chars().count() > 22 {
            cmd = cmd.chars().take(21).collect::<String>() + "…";
        }
        let mut row = vec![
            ct.id.clone(),
            ct.image.clone(),
            format!("\"{cmd}\""),
            output::ago(ct.created_at.as_ref()),
            status,
            attached.get(&ct.id).map(ports_text).unwrap_or_default(),
        ];
        if let Some((own, virt)) = own {
            row.push(format!(
                "{} (virtual {})",
                output::size(own),
                output::size(virt)
            ));
        }
        table.push(row);
    }
    output::print_table(&table);
    Ok(())
}

pub async fn kill(ctx: &Ctx, c: &Clients, id: &str, signal: u32) -> anyhow::Result<()> {
    c.tasks
        .clone()
        .kill(ctx.req(tpb::KillRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            signal,
            all: false,
        })?)
        .await
        .with_context(|| format!("killing {id}"))?;
    Ok(())
}

/// Waits for the container's task to end; returns its exit status.
pub async fn wait(ctx: &Ctx, c: &Clients, id: &str) -> anyhow::Result<u32> {
    let r = c
        .tasks
        .clone()
        .wait(ctx.req(tpb::WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        })?)
        .await?;
    Ok(r.into_inner().exit_status)
}

/// SIGTERM, then SIGKILL after `timeout` seconds, as `docker stop` does.
pub async fn stop(ctx: &Ctx, c: &Clients, id: &str, timeout: u64) -> anyhow::Result<()> {
    let Some(t) = task(ctx, c, id).await? else {
        return Ok(());
    };
    if t.status == i32::from(TaskStatus::Stopped) {
        return Ok(());
    }
    kill(ctx, c, id, 15).await?;
    match tokio::time::timeout(std::time::Duration::from_secs(timeout), wait(ctx, c, id)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => {
            kill(ctx, c, id, 9).await?;
            wait(ctx, c, id).await.map(|_| ())
        }
    }
}
