//! `containerd.services.tasks.v1.Tasks` over [`Tasks`].

use crate::tasks::{CreateOptions, ProcessView, Status as TaskStatus, Tasks};
use std::sync::Arc;
use strata_api::containerd::services::tasks::v1 as pb;
use strata_api::containerd::services::tasks::v1::tasks_server::{Tasks as TasksApi, TasksServer};
use strata_api::containerd::v1::types as tpb;
use strata_core::containers::ContainerStore;
use strata_core::snapshots::SnapshotStore;
use strata_grpc::convert::{mounts, timestamp};
use strata_grpc::metadata::namespace;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

pub struct TasksService<C, S> {
    tasks: Arc<Tasks<C, S>>,
}

impl<C: ContainerStore, S: SnapshotStore> TasksService<C, S> {
    pub fn new(tasks: Arc<Tasks<C, S>>) -> Self {
        Self { tasks }
    }

    pub fn into_server(self) -> TasksServer<Self> {
        TasksServer::new(self)
    }
}

fn view(p: ProcessView) -> tpb::Process {
    let status = match p.status {
        TaskStatus::Created => tpb::Status::Created,
        TaskStatus::Running => tpb::Status::Running,
        TaskStatus::Stopped => tpb::Status::Stopped,
        TaskStatus::Paused => tpb::Status::Paused,
    };
    tpb::Process {
        container_id: p.container_id.clone(),
        id: if p.exec_id.is_empty() {
            p.container_id
        } else {
            p.exec_id
        },
        pid: p.pid,
        status: status.into(),
        stdin: p.stdin,
        stdout: p.stdout,
        stderr: p.stderr,
        terminal: p.terminal,
        exit_status: p.exit_status,
        exited_at: p.exited_at.map(timestamp),
    }
}

fn json_any(what: &str, any: Option<prost_types::Any>) -> Result<serde_json::Value, Status> {
    let any = any.ok_or_else(|| Status::invalid_argument(format!("{what} is required")))?;
    serde_json::from_slice(&any.value)
        .map_err(|e| Status::invalid_argument(format!("{what} ({}): {e}", any.type_url)))
}

#[tonic::async_trait]
impl<C: ContainerStore, S: SnapshotStore> TasksApi for TasksService<C, S> {
    async fn create(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring from a checkpoint is not supported",
            ));
        }
        let pid = self
            .tasks
            .create(
                &ns,
                &r.container_id,
                CreateOptions {
                    rootfs: mounts::all_from_pb(r.rootfs),
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    terminal: r.terminal,
                },
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateTaskResponse {
            container_id: r.container_id,
            pid,
        }))
    }

    async fn start(
        &self,
        request: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let pid = self
            .tasks
            .start(&ns, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::StartResponse { pid }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace(&request)?;
        let id = request.into_inner().container_id;
        let exit = self.tasks.delete(&ns, &id).await.map_err(to_status)?;
        Ok(Response::new(pb::DeleteResponse {
            id,
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        }))
    }

    async fn delete_process(
        &self,
        request: Request<pb::DeleteProcessRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let exit = self
            .tasks
            .delete_exec(&ns, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteResponse {
            id: r.exec_id,
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let p = self
            .tasks
            .get(&ns, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetResponse {
            process: Some(view(p)),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let ns = namespace(&request)?;
        let tasks = self.tasks.list(&ns).await.map_err(to_status)?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(view).collect(),
        }))
    }

    async fn kill(&self, request: Request<pb::KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        self.tasks
            .kill(&ns, &r.container_id, &r.exec_id, r.signal, r.all)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, request: Request<pb::ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let mut process = json_any("exec spec", r.spec)?;
        // The request and the spec agree on the terminal (containerd clients set both).
        if r.terminal {
            match process.as_object_mut() {
                Some(p) => {
                    p.insert("terminal".into(), serde_json::Value::Bool(true));
                }
                None => {
                    return Err(Status::invalid_argument(format!(
                        "exec {:?}: its spec is not a process object",
                        r.exec_id
                    )));
                }
            }
        }
        self.tasks
            .exec(
                &ns,
                &r.container_id,
                &r.exec_id,
                process,
                (r.stdin, r.stdout, r.stderr),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(
        &self,
        request: Request<pb::ResizePtyRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        self.tasks
            .resize_pty(&ns, &r.container_id, &r.exec_id, r.width, r.height)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, request: Request<pb::CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        self.tasks
            .simple(&ns, &r.container_id, strata_shim_protocol::Request::CloseIo)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn pause(&self, request: Request<pb::PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let id = request.into_inner().container_id;
        self.tasks
            .simple(&ns, &id, strata_shim_protocol::Request::Pause)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let id = request.into_inner().container_id;
        self.tasks
            .simple(&ns, &id, strata_shim_protocol::Request::Resume)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        request: Request<pb::ListPidsRequest>,
    ) -> Result<Response<pb::ListPidsResponse>, Status> {
        let ns = namespace(&request)?;
        let id = request.into_inner().container_id;
        let v = self
            .tasks
            .simple(&ns, &id, strata_shim_protocol::Request::Pids)
            .await
            .map_err(to_status)?;
        let processes = v
            .pids
            .iter()
            .filter_map(|p| u32::try_from(*p).ok())
            .map(|pid| tpb::ProcessInfo { pid, info: None })
            .collect();
        Ok(Response::new(pb::ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        _request: Request<pb::CheckpointTaskRequest>,
    ) -> Result<Response<pb::CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented("checkpoints are not supported"))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let resources = json_any("resources", r.resources)?;
        self.tasks
            .update(&ns, &r.container_id, resources)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        request: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        use crate::metrics::{MetricsError, TaskFields, collect};
        let ns = namespace(&request)?;
        let filters = request.into_inner().filters;
        let filter = strata_core::filters::Filter::parse_all(&filters).map_err(to_status)?;
        let mut metrics = Vec::new();
        for task in self.tasks.list(&ns).await.map_err(to_status)? {
            let fields = TaskFields {
                namespace: &ns,
                id: &task.container_id,
            };
            // A stopped task has no cgroup left, and its pid may name another process by now.
            if task.status == TaskStatus::Stopped || task.pid == 0 || !filter.matches(&fields) {
                continue;
            }
            let (pid, at) = (task.pid, std::time::SystemTime::now());
            let read = tokio::task::spawn_blocking(move || collect(pid))
                .await
                .map_err(|e| {
                    Status::internal(format!("task {:?}: metrics: {e}", task.container_id))
                })?;
            match read {
                Ok(m) => metrics.push(strata_api::containerd::types::Metric {
                    timestamp: Some(timestamp(at)),
                    id: task.container_id,
                    data: Some(m.to_any()),
                }),
                // Ended between the listing and the reading: left out, as containerd does.
                Err(MetricsError::Gone { .. }) => {}
                Err(e) => {
                    return Err(to_status(
                        strata_core::Error::from(e)
                            .context(format!("task {:?}: metrics", task.container_id)),
                    ));
                }
            }
        }
        Ok(Response::new(pb::MetricsResponse { metrics }))
    }

    async fn wait(
        &self,
        request: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let exit = self
            .tasks
            .wait(&ns, &r.container_id, &r.exec_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        }))
    }
}
