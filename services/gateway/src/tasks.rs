//! The tasks service as the gateway uses it: one client over containerd's Tasks API and
//! strata's Io API, with domain-level methods, so the rest of the gateway builds no requests.
//! (Tasks have no resource trait in `strata-core`: only the gateway drives them remotely.)

use strata_api::containerd::services::tasks::v1 as tpb;
use strata_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use strata_api::containerd::v1::types::Status as PbStatus;
use strata_api::strata::tasks::v1 as iopb;
use strata_api::strata::tasks::v1::io_client::IoClient;
use strata_core::{Kind, Result};
use strata_grpc::from_status;
use strata_grpc::metadata::with_namespace;
use tonic::transport::Channel;

/// What a task (or exec'd process) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The service could not tell.
    Unknown,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Stopped,
    /// Frozen.
    Paused,
    /// Being frozen.
    Pausing,
}

/// A task's (or exec'd process's) state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Its pid in the host's pid namespace (0 before it starts).
    pub pid: u32,
    /// What it is doing.
    pub status: Status,
}

/// How a task is created.
#[derive(Debug, Clone, Default)]
pub struct CreateTask {
    /// A FIFO the supervisor reads the process's stdin from; empty for none.
    pub stdin: String,
    /// Whether the process gets a terminal.
    pub terminal: bool,
}

/// A process to start in a running container.
#[derive(Debug, Clone, Default)]
pub struct ExecProcess {
    /// A FIFO the supervisor reads the process's stdin from; empty for none.
    pub stdin: String,
    /// Whether the process gets a terminal.
    pub terminal: bool,
    /// The OCI process spec, as JSON.
    pub process: Vec<u8>,
}

/// Which output of a process is followed.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Go on until the process has exited and everything it wrote has been sent.
    pub follow: bool,
    /// Only what is written from now on.
    pub new_only: bool,
    /// Begin where the container's current task began.
    pub this_run: bool,
}

/// Which stream of a process wrote some output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Its standard output (or its terminal).
    Stdout,
    /// Its standard error.
    Stderr,
}

/// What a process's log says, in order: its output, then its exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// Bytes the process wrote.
    Output {
        /// Where it wrote them.
        stream: Stream,
        /// What it wrote.
        data: bytes::Bytes,
    },
    /// The process exited.
    Exit {
        /// Its exit status (128 + the signal when a signal ended it).
        status: u32,
        /// When, if the tasks service knows.
        at: Option<std::time::SystemTime>,
    },
}

/// A process's output and exit, as the Io service sends them.
pub struct Output {
    stream: tonic::Streaming<iopb::LogsEvent>,
}

impl Output {
    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Result<Option<OutputEvent>> {
        use iopb::logs_event::Event;
        loop {
            let Some(msg) = self.stream.message().await.map_err(from_status)? else {
                return Ok(None);
            };
            match msg.event {
                Some(Event::Output(o)) => {
                    let stream = if o.stream == iopb::output::Stream::Stderr as i32 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    };
                    return Ok(Some(OutputEvent::Output {
                        stream,
                        data: o.data,
                    }));
                }
                Some(Event::Exit(x)) => {
                    let at = x
                        .exited_at
                        .and_then(|t| std::time::SystemTime::try_from(t).ok());
                    return Ok(Some(OutputEvent::Exit {
                        status: x.exit_status,
                        at,
                    }));
                }
                // A kind of event this gateway does not know: skipped.
                None => {}
            }
        }
    }
}

/// Largest message exchanged with the Io service.
const MAX_MESSAGE: usize = 64 << 20;

/// The tasks service's Tasks and Io APIs.
#[derive(Clone)]
pub struct TaskClient {
    tasks: TasksClient<Channel>,
    io: IoClient<Channel>,
}

impl TaskClient {
    /// A client on `channel` (the tasks service).
    pub fn new(channel: Channel) -> Self {
        Self {
            tasks: TasksClient::new(channel.clone()),
            io: IoClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }

    /// The state of container `id`'s task (empty `exec_id`) or of one of its exec'd processes;
    /// `None` when there is none.
    pub async fn get(&self, ns: &str, id: &str, exec_id: &str) -> Result<Option<Process>> {
        let req = with_namespace(
            ns,
            tpb::GetRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?;
        match self.tasks.clone().get(req).await.map_err(from_status) {
            Ok(r) => Ok(r.into_inner().process.map(|p| Process {
                pid: p.pid,
                status: status(p.status),
            })),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates container `id`'s task.
    pub async fn create(&self, ns: &str, id: &str, task: CreateTask) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::CreateTaskRequest {
                container_id: id.to_owned(),
                stdin: task.stdin,
                terminal: task.terminal,
                ..Default::default()
            },
        )?;
        self.tasks.clone().create(req).await.map_err(from_status)?;
        Ok(())
    }

    /// Starts a created task (empty `exec_id`) or exec'd process; returns its pid.
    pub async fn start(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
        let req = with_namespace(
            ns,
            tpb::StartRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?;
        let resp = self.tasks.clone().start(req).await.map_err(from_status)?;
        Ok(resp.into_inner().pid)
    }

    /// Waits for a task or exec'd process to exit; returns its exit status.
    pub async fn wait(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32> {
        let req = with_namespace(
            ns,
            tpb::WaitRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?;
        let resp = self.tasks.clone().wait(req).await.map_err(from_status)?;
        Ok(resp.into_inner().exit_status)
    }

    /// Deletes container `id`'s task.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::DeleteTaskRequest {
                container_id: id.to_owned(),
            },
        )?;
        self.tasks.clone().delete(req).await.map_err(from_status)?;
        Ok(())
    }

    /// Deletes an exec'd process.
    pub async fn delete_process(&self, ns: &str, id: &str, exec_id: &str) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::DeleteProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            },
        )?;
        self.tasks
            .clone()
            .delete_process(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    /// Sends `signal` to the task's process (to every process of the container with `all`).
    pub async fn kill(&self, ns: &str, id: &str, signal: u32, all: bool) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all,
            },
        )?;
        self.tasks.clone().kill(req).await.map_err(from_status)?;
        Ok(())
    }

    /// Freezes container `id`'s task.
    pub async fn pause(&self, ns: &str, id: &str) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::PauseTaskRequest {
                container_id: id.to_owned(),
            },
        )?;
        self.tasks.clone().pause(req).await.map_err(from_status)?;
        Ok(())
    }

    /// Thaws container `id`'s task.
    pub async fn resume(&self, ns: &str, id: &str) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::ResumeTaskRequest {
                container_id: id.to_owned(),
            },
        )?;
        self.tasks.clone().resume(req).await.map_err(from_status)?;
        Ok(())
    }

    /// Adds process `exec_id` to container `id`'s running task (not started yet).
    pub async fn exec(&self, ns: &str, id: &str, exec_id: &str, p: ExecProcess) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::ExecProcessRequest {
                container_id: id.to_owned(),
                stdin: p.stdin,
                stdout: String::new(),
                stderr: String::new(),
                terminal: p.terminal,
                spec: Some(prost_types::Any {
                    type_url: crate::spec::PROCESS_TYPE.to_owned(),
                    value: p.process,
                }),
                exec_id: exec_id.to_owned(),
            },
        )?;
        self.tasks.clone().exec(req).await.map_err(from_status)?;
        Ok(())
    }

    /// Closes the process's end of its stdin once what the pipe holds is delivered.
    pub async fn close_stdin(&self, ns: &str, id: &str, exec_id: &str) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::CloseIoRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: true,
            },
        )?;
        self.tasks
            .clone()
            .close_io(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    /// Resizes the process's terminal.
    pub async fn resize_pty(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let req = with_namespace(
            ns,
            tpb::ResizePtyRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                width,
                height,
            },
        )?;
        self.tasks
            .clone()
            .resize_pty(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    /// The output of a task or exec'd process, from its log.
    pub async fn logs(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        opts: LogsOptions,
    ) -> Result<Output> {
        let req = with_namespace(
            ns,
            iopb::LogsRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                follow: opts.follow,
                new_only: opts.new_only,
                tail: 0,
                this_run: opts.this_run,
            },
        )?;
        let resp = self.io.clone().logs(req).await.map_err(from_status)?;
        Ok(Output {
            stream: resp.into_inner(),
        })
    }
}

fn status(s: i32) -> Status {
    match PbStatus::try_from(s).unwrap_or(PbStatus::Unknown) {
        PbStatus::Unknown => Status::Unknown,
        PbStatus::Created => Status::Created,
        PbStatus::Running => Status::Running,
        PbStatus::Stopped => Status::Stopped,
        PbStatus::Paused => Status::Paused,
        PbStatus::Pausing => Status::Pausing,
    }
}
