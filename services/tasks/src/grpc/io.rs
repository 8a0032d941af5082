//! `strata.tasks.v1.Io` over [`Tasks::logs`](crate::tasks::Tasks): protobuf ⇄ domain and
//! errors ⇄ status codes only.

use crate::logs::{LogEvent, LogsRequest};
use crate::tasks::Tasks;
use futures_util::stream::{self, Stream};
use std::pin::Pin;
use std::sync::Arc;
use strata_api::strata::tasks::v1 as pb;
use strata_api::strata::tasks::v1::io_server::{Io, IoServer};
use strata_core::containers::ContainerStore;
use strata_core::logfile;
use strata_core::snapshots::SnapshotStore;
use strata_grpc::convert::timestamp;
use strata_grpc::metadata::namespace;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

pub struct IoService<C, S> {
    tasks: Arc<Tasks<C, S>>,
}

impl<C: ContainerStore, S: SnapshotStore> IoService<C, S> {
    pub fn new(tasks: Arc<Tasks<C, S>>) -> Self {
        Self { tasks }
    }

    pub fn into_server(self) -> IoServer<Self> {
        IoServer::new(self)
    }
}

fn to_pb(e: LogEvent) -> pb::LogsEvent {
    use pb::logs_event::Event;
    let event = match e {
        LogEvent::Output { stream, data } => Event::Output(pb::Output {
            stream: match stream {
                logfile::Stream::Stdout => pb::output::Stream::Stdout,
                logfile::Stream::Stderr => pb::output::Stream::Stderr,
            }
            .into(),
            data: data.into(),
        }),
        LogEvent::Exit { status, at } => Event::Exit(pb::ProcessExit {
            exit_status: status,
            exited_at: Some(timestamp(at)),
        }),
    };
    pb::LogsEvent { event: Some(event) }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<C: ContainerStore, S: SnapshotStore> Io for IoService<C, S> {
    type LogsStream = BoxStream<pb::LogsEvent>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let tail = usize::try_from(r.tail).map_err(|_| {
            Status::invalid_argument(format!("tail {} must not be negative", r.tail))
        })?;
        let rx = self
            .tasks
            .logs(
                &ns,
                LogsRequest {
                    container_id: r.container_id,
                    exec_id: r.exec_id,
                    follow: r.follow,
                    new_only: r.new_only,
                    tail,
                    this_run: r.this_run,
                },
            )
            .await
            .map_err(to_status)?;
        let events = stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item.map(to_pb).map_err(to_status), rx))
        });
        Ok(Response::new(Box::pin(events)))
    }
}
