//! Attaching a client to a process (its output followed from the log, its stdin pipe) and
//! resizing its terminal.

use super::attachments::Attached;
use super::{get_container, key};
use crate::Backends;
use std::sync::Arc;
use strata_api::containerd::services::tasks::v1 as tpb;
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::tasks::v1 as iopb;
use strata_core::{Error, Result};
use strata_grpc::from_status;
use strata_grpc::metadata::with_namespace;
use tokio::net::unix::pipe;

/// What an attach needs once it has begun: the output stream and the stdin pipe.
pub struct Attach {
    pub output: tonic::Streaming<iopb::LogsEvent>,
    pub stdin: Option<Arc<tokio::sync::Mutex<Option<pipe::Sender>>>>,
    pub guard: Attached,
}

/// Begins an attach: registers the client, opens the output stream.
pub async fn attach(b: &Arc<Backends>, ns: &str, start: &pb::AttachStart) -> Result<Attach> {
    let id = &start.container_id;
    get_container(b, ns, id).await?;
    let k = key(ns, id, &start.exec_id);
    let stdin = if start.stdin {
        Some(b.attachments.stdin(&k).ok_or_else(|| {
            Error::failed_precondition(format!(
                "container {id:?}{}: stdin is not open (create it with stdin, -i)",
                if start.exec_id.is_empty() {
                    String::new()
                } else {
                    format!(" exec {:?}", start.exec_id)
                }
            ))
        })?)
    } else {
        None
    };
    let guard = b.attachments.enter(&k);
    let output =
        b.io.clone()
            .logs(with_namespace(
                ns,
                iopb::LogsRequest {
                    container_id: id.clone(),
                    exec_id: start.exec_id.clone(),
                    follow: true,
                    new_only: !start.logs,
                    tail: 0,
                    this_run: start.logs,
                },
            )?)
            .await
            .map_err(from_status)?
            .into_inner();
    Ok(Attach {
        output,
        stdin,
        guard,
    })
}

pub async fn resize(b: &Backends, ns: &str, id: &str, exec_id: &str, r: pb::Resize) -> Result<()> {
    b.tasks
        .clone()
        .resize_pty(with_namespace(
            ns,
            tpb::ResizePtyRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                width: r.width,
                height: r.height,
            },
        )?)
        .await
        .map_err(from_status)?;
    Ok(())
}
