//! The supervisor's body: detach, create the container, serve the control socket, reap.

use crate::Args;
use crate::protocol::{Exit, Reply, Request};
use crate::runtime::{Fds, Runtime};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Owns `waitpid` for the whole process: every exit is recorded here, and whoever waits for a
/// pid (init, an exec, a runtime command) reads it from here.
#[derive(Default)]
pub struct Reaper {
    exits: Mutex<HashMap<i32, Exit>>,
    changed: Condvar,
    /// Init's pid and where its exit is recorded on disk, once known.
    init: Mutex<Option<(i32, PathBuf)>>,
}

/// Exit statuses of processes nobody asked for (orphans reparented to the supervisor) are kept
/// at most this many.
const KEEP_EXITS: usize = 1024;

fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

impl Reaper {
    fn run(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.record(pid.as_raw(), u32::try_from(code).unwrap_or(255))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.record(pid.as_raw(), 128 + sig as u32)
                }
                Ok(_) => {}
                Err(nix::Error::ECHILD) => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(nix::Error::EINTR) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    fn record(&self, pid: i32, status: u32) {
        let (at_secs, at_nanos) = now();
        let exit = Exit {
            status,
            at_secs,
            at_nanos,
        };
        // Init's exit reaches the disk before anyone is told of it.
        if let Some((init, path)) = lock(&self.init).as_ref()
            && *init == pid
        {
            write_exit(path, &exit);
        }
        let mut exits = lock(&self.exits);
        if exits.len() >= KEEP_EXITS {
            exits.clear();
        }
        exits.insert(pid, exit);
        self.changed.notify_all();
    }

    /// Names init; its exit (even one already recorded) is written to `path`.
    fn set_init(&self, pid: i32, path: PathBuf) {
        let mut init = lock(&self.init);
        if let Some(e) = self.peek(pid) {
            write_exit(&path, &e);
        }
        *init = Some((pid, path));
    }

    /// Blocks until `pid` has exited; returns its exit status.
    pub fn wait_for(&self, pid: i32) -> u32 {
        self.wait_exit(pid).status
    }

    fn wait_exit(&self, pid: i32) -> Exit {
        let mut exits = lock(&self.exits);
        loop {
            if let Some(e) = exits.get(&pid) {
                return e.clone();
            }
            exits = self
                .changed
                .wait(exits)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn peek(&self, pid: i32) -> Option<Exit> {
        lock(&self.exits).get(&pid).cloned()
    }
}

struct Shared {
    runtime: Mutex<Runtime>,
    reaper: Arc<Reaper>,
    state: PathBuf,
    init: i32,
    started: Mutex<bool>,
    paused: Mutex<bool>,
    /// The write end of the container's stdin pipe, until CloseIo.
    stdin: Mutex<Option<File>>,
    execs: Mutex<HashMap<String, i32>>,
}

fn write_exit(path: &Path, exit: &Exit) {
    if let Ok(json) = serde_json::to_vec(exit)
        && let Err(e) = write_atomic(path, &json)
    {
        eprintln!(
            "strata-shim: recording the exit status in {}: {e}",
            path.display()
        );
    }
}

/// Writes `data` to `path` atomically: temporary file, fsync, rename.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Opens a client's stdio path (often a FIFO) without blocking on a missing peer.
fn open_rw(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(p)
}

/// Copies one output stream of the container to the log file and to the client's path.
fn copy_out(mut from: File, log: Arc<Mutex<File>>, to: Option<File>) {
    std::thread::spawn(move || {
        let mut to = to;
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = lock(&log).write_all(&buf[..n]);
            if let Some(t) = to.as_mut()
                && t.write_all(&buf[..n]).is_err()
            {
                to = None;
            }
        }
    });
}

fn pipe() -> std::io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((File::from(r), File::from(w)))
}

/// Pipes for a process's stdio: the ends the process gets, and output copied to log and paths.
fn plumb(
    stdin: Option<&Path>,
    stdout: Option<&Path>,
    stderr: Option<&Path>,
    log: &Arc<Mutex<File>>,
) -> std::io::Result<(Fds, Option<File>)> {
    let (in_r, in_w) = match stdin {
        Some(p) => {
            let (r, w) = pipe()?;
            let src = p.to_owned();
            let w2 = w.try_clone()?;
            // Client's stdin (a FIFO) → the container, until the client closes it.
            std::thread::spawn(move || {
                let Ok(mut s) = File::open(&src) else { return };
                let mut w2 = w2;
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if w2.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            (Some(OwnedFd::from(r)), Some(w))
        }
        None => (None, None),
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    copy_out(out_r, log.clone(), stdout.map(open_rw).transpose()?);
    copy_out(err_r, log.clone(), stderr.map(open_rw).transpose()?);
    Ok((
        Fds {
            stdin: in_r,
            stdout: Some(OwnedFd::from(out_w)),
            stderr: Some(OwnedFd::from(err_w)),
        },
        in_w,
    ))
}

fn status_of(s: &Shared) -> String {
    if s.reaper.peek(s.init).is_some() {
        "stopped".into()
    } else if *lock(&s.paused) {
        "paused".into()
    } else if *lock(&s.started) {
        "running".into()
    } else {
        "created".into()
    }
}

fn handle(s: &Shared, req: Request) -> (Reply, bool) {
    let ok = Reply::default;
    let res = |r: crate::runtime::Result<()>| match r {
        Ok(()) => ok(),
        Err(e) => Reply::err(e.to_string()),
    };
    match req {
        Request::State => (
            Reply {
                status: Some(status_of(s)),
                pid: Some(s.init),
                exit: s.reaper.peek(s.init),
                ..ok()
            },
            false,
        ),
        Request::Start => {
            let r = lock(&s.runtime).start();
            if r.is_ok() {
                *lock(&s.started) = true;
            }
            (res(r), false)
        }
        Request::Kill { signal, all } => (res(lock(&s.runtime).kill(signal, all)), false),
        Request::Wait => {
            let exit = s.reaper.wait_exit(s.init);
            (
                Reply {
                    exit: Some(exit),
                    ..ok()
                },
                false,
            )
        }
        Request::Pids => match lock(&s.runtime).pids() {
            Ok(pids) => (Reply { pids, ..ok() }, false),
            Err(e) => (Reply::err(e.to_string()), false),
        },
        Request::Pause => {
            let r = lock(&s.runtime).pause();
            if r.is_ok() {
                *lock(&s.paused) = true;
            }
            (res(r), false)
        }
        Request::Resume => {
            let r = lock(&s.runtime).resume();
            if r.is_ok() {
                *lock(&s.paused) = false;
            }
            (res(r), false)
        }
        Request::CloseIo => {
            lock(&s.stdin).take();
            (ok(), false)
        }
        Request::Exec {
            exec_id,
            process,
            stdin,
            stdout,
            stderr,
        } => {
            if lock(&s.execs).contains_key(&exec_id) {
                return (
                    Reply::err(format!("exec {exec_id:?}: already exists")),
                    false,
                );
            }
            let log = match OpenOptions::new()
                .create(true)
                .append(true)
                .open(s.state.join(format!("exec-{exec_id}.log")))
            {
                Ok(f) => Arc::new(Mutex::new(f)),
                Err(e) => return (Reply::err(format!("exec {exec_id:?}: log: {e}")), false),
            };
            let path =
                |p: &Option<String>| p.as_deref().filter(|s| !s.is_empty()).map(PathBuf::from);
            let (fds, _stdin) = match plumb(
                path(&stdin).as_deref(),
                path(&stdout).as_deref(),
                path(&stderr).as_deref(),
                &log,
            ) {
                Ok(v) => v,
                Err(e) => return (Reply::err(format!("exec {exec_id:?}: stdio: {e}")), false),
            };
            match lock(&s.runtime).exec(&process, fds, &s.state, &exec_id) {
                Ok(pid) => {
                    lock(&s.execs).insert(exec_id, pid);
                    (
                        Reply {
                            pid: Some(pid),
                            ..ok()
                        },
                        false,
                    )
                }
                Err(e) => (Reply::err(format!("exec {exec_id:?}: {e}")), false),
            }
        }
        Request::WaitExec { exec_id } => {
            let pid = lock(&s.execs).get(&exec_id).copied();
            match pid {
                Some(pid) => (
                    Reply {
                        exit: Some(s.reaper.wait_exit(pid)),
                        pid: Some(pid),
                        ..ok()
                    },
                    false,
                ),
                None => (Reply::err(format!("exec {exec_id:?}: not found")), false),
            }
        }
        Request::KillExec { exec_id, signal } => {
            let pid = lock(&s.execs).get(&exec_id).copied();
            match pid {
                Some(pid) => {
                    let r = nix::sys::signal::kill(
                        Pid::from_raw(pid),
                        nix::sys::signal::Signal::try_from(signal).ok(),
                    );
                    match r {
                        Ok(()) => (ok(), false),
                        Err(e) => (Reply::err(format!("exec {exec_id:?}: kill: {e}")), false),
                    }
                }
                None => (Reply::err(format!("exec {exec_id:?}: not found")), false),
            }
        }
        Request::Update { resources } => {
            (res(lock(&s.runtime).update(&resources, &s.state)), false)
        }
        Request::Delete { force } => {
            if !force && s.reaper.peek(s.init).is_none() {
                return (
                    Reply::err("container is still running: kill it first or delete with force"),
                    false,
                );
            }
            let r = lock(&s.runtime).delete(force);
            let done = r.is_ok();
            (res(r), done)
        }
    }
}

fn serve_conn(s: Arc<Shared>, conn: UnixStream) {
    let Ok(mut w) = conn.try_clone() else { return };
    let reader = BufReader::new(conn);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let (reply, exit) = match serde_json::from_str::<Request>(&line) {
            Ok(req) => handle(&s, req),
            Err(e) => (Reply::err(format!("bad request {line:?}: {e}")), false),
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        if exit {
            // Gone before the caller hears so: nobody connects to a supervisor that is leaving.
            let _ = std::fs::remove_file(s.state.join("shim.sock"));
        }
        let _ = w.write_all(&out);
        if exit {
            std::process::exit(0);
        }
    }
}

pub fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.state)
        .map_err(|e| format!("creating {}: {e}", args.state.display()))?;
    // The supervisor outlives its starter: hold none of its pipes. Diagnostics go to shim.log.
    let diag = args.state.join("shim.log");
    let diag = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&diag)
        .map_err(|e| format!("{}: {e}", diag.display()))?;
    nix::unistd::dup2_stderr(diag).map_err(|e| format!("redirecting stderr: {e}"))?;
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null);
    }
    // Our own session: a terminal or a dying parent does not take the container with it.
    let _ = nix::unistd::setsid();
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "becoming a subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    let reaper = Arc::new(Reaper::default());
    let log_path = args.state.join("log");
    let log = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?,
    ));
    let (fds, stdin) = plumb(
        args.stdin.as_deref(),
        args.stdout.as_deref(),
        args.stderr.as_deref(),
        &log,
    )
    .map_err(|e| format!("container stdio: {e}"))?;
    let mut runtime = Runtime::new(
        &args.runtime,
        &args.id,
        &args.bundle,
        &args.state,
        reaper.clone(),
    )
    .map_err(|e| e.to_string())?;
    {
        let r = reaper.clone();
        std::thread::spawn(move || r.run());
    }
    let init = runtime
        .create(fds)
        .map_err(|e| format!("creating container {}: {e}", args.id))?;
    write_atomic(&args.state.join("init.pid"), init.to_string().as_bytes())
        .map_err(|e| format!("init.pid: {e}"))?;
    let shared = Arc::new(Shared {
        runtime: Mutex::new(runtime),
        reaper: reaper.clone(),
        state: args.state.clone(),
        init,
        started: Mutex::new(false),
        paused: Mutex::new(false),
        stdin: Mutex::new(stdin),
        execs: Mutex::new(HashMap::new()),
    });
    reaper.set_init(init, args.state.join("exit"));
    let sock = args.state.join("shim.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    println!("ready {init}");
    let _ = std::io::stdout().flush();
    // Nothing more goes to the caller's stdout: it may be a pipe it waits on.
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let s = shared.clone();
        std::thread::spawn(move || serve_conn(s, conn));
    }
    Ok(())
}
