//! Terminals, logs and output draining through the real binaries (strata-tasks and its
//! supervisors), with the built-in runtime and with runc: a terminal task sees a pty, is resized
//! and reads its stdin FIFO; `strata.tasks.v1.Io/Logs` tells stdout from stderr, tails, follows
//! to the true exit without losing the last output; a container's log outlives its task and
//! goes with the container; an exec'd process gets a terminal too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SPEC_TYPE, Tasks};
use prost::Message as _;
use serde_json::json;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use strata_api::containerd::events as ev;
use strata_api::containerd::services::tasks::v1 as tpb;
use strata_api::containerd::services::tasks::v1::tasks_client::TasksClient;
use strata_api::strata::tasks::v1 as iopb;
use strata_api::strata::tasks::v1::io_client::IoClient;
use strata_core::containers::{Any, Container, ContainerStore};
use strata_grpc::metadata::with_namespace;
use strata_grpc::remote::{RemoteContainers, RemoteEvents};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

const NS: &str = "io-test";

/// Container runtime names: containerd's runc name runs the service's default (built-in);
/// `runc` runs runc.
const BUILTIN: &str = "io.containerd.runc.v2";
const RUNC: &str = "runc";

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is not installed (apt-get install busybox-static)");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for cmd in [
        "sh", "echo", "cat", "sleep", "seq", "tty", "stty", "true", "printf",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(cmd)).unwrap();
    }
    root
}

/// A containerd-style runtime spec running `args` in `rootfs` (no terminal: requests ask).
fn spec(rootfs: &Path, args: &[&str]) -> Any {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_SYS_CHROOT",
        "CAP_AUDIT_WRITE",
    ];
    let v = json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": rootfs.display().to_string()},
        "hostname": "io",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "mount"}, {"type": "network"}]
        }
    });
    Any {
        type_url: SPEC_TYPE.to_owned(),
        value: serde_json::to_vec(&v).unwrap(),
    }
}

fn process(args: &[&str], terminal: bool) -> prost_types::Any {
    let v = json!({"args": args, "cwd": "/", "env": ["PATH=/bin", "TERM=xterm"],
                   "user": {"uid": 0, "gid": 0}, "terminal": terminal});
    prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&v).unwrap(),
    }
}

use strata_testkit::fifo::{mkfifo, slow_reader};

/// Writes to a FIFO the supervisor reads (opening blocks until it has opened its end).
fn feed(fifo: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    f.write_all(data).unwrap();
}

struct Stack {
    tasks: Tasks,
    store: RemoteContainers,
    client: TasksClient<Channel>,
    io: IoClient<Channel>,
}

/// What a Logs stream sent.
#[derive(Debug, Default)]
struct Got {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Output records, in order, as (is stderr, text).
    records: Vec<(bool, String)>,
    exit: Option<u32>,
    /// Output came after the exit.
    after_exit: bool,
}

impl Got {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn req<T>(msg: T) -> tonic::Request<T> {
    with_namespace(NS, msg).unwrap()
}

impl Stack {
    fn start() -> Self {
        let tasks = Tasks::start();
        let channel = strata_grpc::client::channel(&tasks.address()).unwrap();
        Self {
            store: RemoteContainers::new(channel.clone()),
            client: TasksClient::new(channel.clone()),
            io: IoClient::new(channel),
            tasks,
        }
    }

    async fn container(&self, id: &str, runtime: &str, args: &[&str]) {
        let dir = self.tasks.dir.path().join(format!("rootfs-{id}"));
        let rootfs = busybox_rootfs(&dir);
        let mut c = Container::new(id, runtime);
        c.spec = Some(spec(&rootfs, args));
        self.store.create(NS, c).await.unwrap();
    }

    async fn create(&self, id: &str, stdin: &str, stdout: &str, terminal: bool) -> u32 {
        self.client
            .clone()
            .create(req(tpb::CreateTaskRequest {
                container_id: id.into(),
                stdin: stdin.into(),
                stdout: stdout.into(),
                terminal,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .pid
    }

    async fn start_task(&self, id: &str, exec_id: &str) {
        self.client
            .clone()
            .start(req(tpb::StartRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            }))
            .await
            .unwrap();
    }

    async fn wait(&self, id: &str, exec_id: &str) -> u32 {
        self.client
            .clone()
            .wait(req(tpb::WaitRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .exit_status
    }

    async fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<(), Code> {
        self.client
            .clone()
            .resize_pty(req(tpb::ResizePtyRequest {
                container_id: id.into(),
                exec_id: exec_id.into(),
                width,
                height,
            }))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    }

    async fn delete_task(&self, id: &str) {
        self.client
            .clone()
            .delete(req(tpb::DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
            .unwrap();
    }

    async fn logs(&self, r: iopb::LogsRequest) -> Result<Got, tonic::Status> {
        collect(self.io.clone(), r).await
    }

    /// A Logs stream read to its end in the background.
    fn logs_later(
        &self,
        r: iopb::LogsRequest,
    ) -> tokio::task::JoinHandle<Result<Got, tonic::Status>> {
        tokio::spawn(collect(self.io.clone(), r))
    }
}

/// Reads a Logs stream to its end.
async fn collect(mut io: IoClient<Channel>, r: iopb::LogsRequest) -> Result<Got, tonic::Status> {
    {
        let mut stream = io.logs(req(r)).await?.into_inner();
        let mut got = Got::default();
        while let Some(ev) = stream.next().await {
            match ev?.event.expect("an event") {
                iopb::logs_event::Event::Output(o) => {
                    let err = o.stream == iopb::output::Stream::Stderr as i32;
                    if err {
                        got.stderr.extend_from_slice(&o.data);
                    } else {
                        got.stdout.extend_from_slice(&o.data);
                    }
                    got.records
                        .push((err, String::from_utf8_lossy(&o.data).into_owned()));
                    got.after_exit |= got.exit.is_some();
                }
                iopb::logs_event::Event::Exit(e) => {
                    assert!(got.exit.is_none(), "two exits");
                    assert!(e.exited_at.is_some());
                    got.exit = Some(e.exit_status);
                }
            }
        }
        assert!(!got.after_exit, "output after the exit: {got:?}");
        Ok(got)
    }
}

/// `tail` is the last `n` lines of `full`: the same records at the end, the first one
/// possibly cut at a line start.
fn assert_tail(full: &[(bool, String)], tail: &[(bool, String)], n: usize) {
    let text: String = tail.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(text.lines().count(), n, "{tail:?}");
    let all: String = full.iter().map(|(_, t)| t.as_str()).collect();
    assert!(all.ends_with(&text), "{tail:?} is not the end of the log");
    assert!(!tail.is_empty() && tail.len() <= full.len(), "{tail:?}");
    let skip = full.len() - tail.len();
    assert_eq!(&tail[1..], &full[skip + 1..], "{tail:?}");
    assert_eq!(tail[0].0, full[skip].0, "{tail:?}");
    assert!(full[skip].1.ends_with(&tail[0].1), "{tail:?}");
}

fn logs_req(id: &str, exec_id: &str) -> iopb::LogsRequest {
    iopb::LogsRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

fn have_runc() {
    let ok = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "runc is not installed (apt-get install runc)");
}

/// A terminal task: a pty for the process (`tty`), \r\n line ends, a resize seen by
/// `stty size`, and stdin from the FIFO read by `read` and by `cat` through the terminal.
async fn terminal_task(runtime: &str) {
    let stack = Stack::start();
    let id = format!("tty-{}", runtime.replace('.', "-"));
    stack
        .container(
            &id,
            runtime,
            &[
                "sh",
                "-c",
                "tty; read line; stty size; echo got=$line; cat; echo cat-done; exit 5",
            ],
        )
        .await;
    let events = RemoteEvents::connect(&stack.tasks.address()).unwrap();
    let mut sub = events
        .subscribe(&[r#"topic=="/tasks/create""#.to_owned()])
        .await
        .unwrap();
    let fifo = stack.tasks.dir.path().join("tty-stdin");
    mkfifo(&fifo);
    let out = stack.tasks.dir.path().join("tty-stdout");
    std::fs::write(&out, b"").unwrap();
    stack
        .create(&id, fifo.to_str().unwrap(), out.to_str().unwrap(), true)
        .await;
    // The request's terminal is reported, in the event and by Get.
    let env = sub.next().await.unwrap().unwrap();
    let created = ev::TaskCreate::decode(env.event.unwrap().value.as_slice()).unwrap();
    assert!(created.io.unwrap().terminal, "TaskCreate says no terminal");
    let got = stack
        .client
        .clone()
        .get(req(tpb::GetRequest {
            container_id: id.clone(),
            exec_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(got.process.unwrap().terminal);
    stack.start_task(&id, "").await;
    stack.resize(&id, "", 123, 45).await.unwrap();
    assert_eq!(
        stack.resize(&id, "ghost", 80, 24).await,
        Err(Code::NotFound)
    );
    // The shell reads the size only after the first line: the resize is in place by then.
    // ^D at a line start ends `cat`'s input.
    let input = fifo.clone();
    tokio::task::spawn_blocking(move || feed(&input, b"hello\nmeow\n\x04"))
        .await
        .unwrap();
    assert_eq!(stack.wait(&id, "").await, 5);
    let logs = stack.logs(logs_req(&id, "")).await.unwrap();
    let text = logs.out();
    assert!(
        text.lines().any(|l| l.starts_with("/dev/pts/")),
        "no pty: {text:?}"
    );
    assert!(text.contains("45 123\r\n"), "{text:?}");
    assert!(text.contains("got=hello\r\n"), "{text:?}");
    // Once echoed by the terminal, once written back by cat.
    assert_eq!(text.matches("meow\r\n").count(), 2, "{text:?}");
    assert!(text.contains("cat-done\r\n"), "{text:?}");
    assert!(!text.contains("^@"), "stray input: {text:?}");
    assert_eq!(logs.err(), "", "a terminal has one stream");
    assert_eq!(logs.exit, Some(5));
    // The client's stdout path got the same output.
    let copied = std::fs::read_to_string(&out).unwrap();
    assert!(copied.contains("cat-done\r\n"), "{copied:?}");
    stack.delete_task(&id).await;
}

/// Logs of a container: streams apart, tail, follow to the true exit with the last line, the
/// log surviving its task and going with the container; no resize without a terminal.
async fn container_logs(runtime: &str) {
    let stack = Stack::start();
    let id = format!("logs-{}", runtime.replace('.', "-"));
    stack
        .container(
            &id,
            runtime,
            &[
                "sh",
                "-c",
                "echo out1; echo err1 >&2; seq 1 20000; echo err2 >&2; exit 3",
            ],
        )
        .await;
    // Neither a log nor a task yet.
    let err = stack.logs(logs_req(&id, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&id), "{err:?}");

    // A client that reads its stdout FIFO late holds the output up: the exit waits for it.
    let fifo = stack.tasks.dir.path().join("logs-stdout");
    mkfifo(&fifo);
    stack.create(&id, "", fifo.to_str().unwrap(), false).await;
    let reader = slow_reader(fifo, "\n20000\n");
    assert_eq!(
        stack.resize(&id, "", 80, 24).await,
        Err(Code::FailedPrecondition)
    );
    // Followed from before the start: everything, then the exit.
    let follow = stack.logs_later(iopb::LogsRequest {
        follow: true,
        ..logs_req(&id, "")
    });
    stack.start_task(&id, "").await;
    let got = follow.await.unwrap().unwrap();
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert_eq!(got.out(), format!("out1\n{expected}"));
    assert_eq!(got.err(), "err1\nerr2\n");
    assert_eq!(got.exit, Some(3));
    assert_eq!(reader.join().unwrap(), got.out());

    // After the exit, without follow: the same, and the exit.
    let again = stack.logs(logs_req(&id, "")).await.unwrap();
    assert_eq!(again.out(), got.out());
    assert_eq!(again.exit, Some(3));
    // The last lines of the log, whichever stream wrote them (the order of the two streams'
    // records is the order the supervisor copied them in).
    let tail = stack
        .logs(iopb::LogsRequest {
            tail: 2,
            ..logs_req(&id, "")
        })
        .await
        .unwrap();
    assert_tail(&again.records, &tail.records, 2);
    // Only what comes from now on: nothing, the process has exited.
    let new_only = stack
        .logs(iopb::LogsRequest {
            new_only: true,
            follow: true,
            ..logs_req(&id, "")
        })
        .await
        .unwrap();
    assert!(new_only.records.is_empty(), "{:?}", new_only.records);
    assert_eq!(new_only.exit, Some(3));

    // The log outlives the task, and a new task appends to it.
    stack.delete_task(&id).await;
    let kept = stack.logs(logs_req(&id, "")).await.unwrap();
    assert_eq!(kept.out(), got.out());
    assert_eq!(kept.exit, None, "no task, no exit");
    stack.create(&id, "", "", false).await;
    stack.start_task(&id, "").await;
    assert_eq!(stack.wait(&id, "").await, 3);
    let twice = stack.logs(logs_req(&id, "")).await.unwrap();
    assert_eq!(twice.out().matches("out1\n").count(), 2);
    assert_eq!(twice.err(), "err1\nerr2\nerr1\nerr2\n");
    stack.delete_task(&id).await;

    // The log goes with the container.
    let log = stack
        .tasks
        .dir
        .path()
        .join("state")
        .join(NS)
        .join(format!("{id}.log"));
    assert!(log.exists(), "{}", log.display());
    stack.store.delete(NS, &id).await.unwrap();
    assert!(!log.exists(), "{} left behind", log.display());
    let err = stack.logs(logs_req(&id, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// An exec'd process with a terminal, in a container without one: its own log, a resize of
/// its terminal, stdin through its FIFO; its log goes when it is deleted.
async fn exec_terminal(runtime: &str) {
    let stack = Stack::start();
    let id = format!("exec-{}", runtime.replace('.', "-"));
    stack.container(&id, runtime, &["sleep", "1000"]).await;
    stack.create(&id, "", "", false).await;
    stack.start_task(&id, "").await;
    let fifo = stack.tasks.dir.path().join("exec-stdin");
    mkfifo(&fifo);
    stack
        .client
        .clone()
        .exec(req(tpb::ExecProcessRequest {
            container_id: id.clone(),
            exec_id: "sh1".into(),
            stdin: fifo.display().to_string(),
            terminal: true,
            spec: Some(process(
                &["sh", "-c", "tty; read l; stty size; echo l=$l; exit 9"],
                false,
            )),
            ..Default::default()
        }))
        .await
        .unwrap();
    // Not started: no terminal yet.
    assert_eq!(
        stack.resize(&id, "sh1", 80, 24).await,
        Err(Code::FailedPrecondition)
    );
    let follow = stack.logs_later(iopb::LogsRequest {
        follow: true,
        ..logs_req(&id, "sh1")
    });
    stack.start_task(&id, "sh1").await;
    stack.resize(&id, "sh1", 77, 22).await.unwrap();
    let input = fifo.clone();
    tokio::task::spawn_blocking(move || feed(&input, b"there\n"))
        .await
        .unwrap();
    let got = follow.await.unwrap().unwrap();
    let text = got.out();
    assert!(
        text.lines().any(|l| l.starts_with("/dev/pts/")),
        "no pty: {text:?}"
    );
    assert!(text.contains("22 77\r\n"), "{text:?}");
    assert!(text.contains("l=there\r\n"), "{text:?}");
    assert_eq!(got.exit, Some(9));
    assert_eq!(stack.wait(&id, "sh1").await, 9);
    // The container's own log has none of it; the task has no terminal.
    let own = stack.logs(logs_req(&id, "")).await.unwrap();
    assert!(own.records.is_empty(), "{:?}", own.records);
    assert_eq!(
        stack.resize(&id, "", 80, 24).await,
        Err(Code::FailedPrecondition)
    );
    // Deleting the process removes its log.
    let del = stack
        .client
        .clone()
        .delete_process(req(tpb::DeleteProcessRequest {
            container_id: id.clone(),
            exec_id: "sh1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.exit_status, 9);
    let err = stack.logs(logs_req(&id, "sh1")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("sh1"), "{err:?}");
    stack
        .client
        .clone()
        .kill(req(tpb::KillRequest {
            container_id: id.clone(),
            signal: 9,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(stack.wait(&id, "").await, 137);
    stack.delete_task(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_terminal_task() {
    terminal_task(BUILTIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_terminal_task() {
    have_runc();
    terminal_task(RUNC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_container_logs() {
    container_logs(BUILTIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_container_logs() {
    have_runc();
    container_logs(RUNC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_exec_terminal() {
    exec_terminal(BUILTIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_exec_terminal() {
    have_runc();
    exec_terminal(RUNC).await;
}
