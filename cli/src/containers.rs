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

pub async fn ps(
    ctx: &Ctx,
    c: &Clients,
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
        ctx.client
            .clone()
            .list_images(
                ctx.req(strata_api::strata::gateway::v1::ListImagesRequest { filters: vec![] })?,
            )
            .await?
            .into_inner()
            .images
            .into_iter()
            .map(|i| (i.name, i.size))
            .collect()
    } else {
        Default::default()
    };
    let mut rows = Vec::new();
    for ct in list {
        let t = task(ctx, c, &ct.id).await?;
        let status = match &t {
            Some(p) => match TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown) {
                TaskStatus::Running => "Up".to_owned(),
                TaskStatus::Paused => "Up (Paused)".to_owned(),
                TaskStatus::Created => "Created".to_owned(),
                TaskStatus::Stopped => format!("Exited ({})", p.exit_status),
                _ => "Unknown".to_owned(),
            },
            None => "Created (no task)".to_owned(),
        };
        let running = status.starts_with("Up");
        if !all && !running {
            continue;
        }
        let own = if size && !ct.snapshot_key.is_empty() {
            let u = c
                .snapshots
                .clone()
                .usage(ctx.req(spb::UsageRequest {
                    snapshotter: ct.snapshotter.clone(),
                    key: ct.snapshot_key.clone(),
                })?)
                .await
                .map(|r| r.into_inner().size);
            match u {
                Ok(u) => Some(u),
                Err(s) => {
                    eprintln!("{}: size unknown: {}", ct.id, s.message());
                    Some(0)
                }
            }
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
