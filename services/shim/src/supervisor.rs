//! The supervisor's body: detach, create the container, serve the control socket, reap.

use crate::Args;
use crate::runtime::{Fds, Runtime};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime};
use strata_core::Kind;
use strata_core::logfile::{self, HEADER_LEN, Stream};
use strata_shim_protocol::{Exit, Reply, Request, SOCKET, Status};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A process, told apart from any later one given the same pid: its pid and its start time
/// (clock ticks after boot, field 22 of `/proc/<pid>/stat`). A pid alone is reused once its
/// process is reaped; the pair is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

/// A process's start time, while it is alive or a zombie (not yet reaped).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces and parentheses: fields follow the
    // last ')'. Field 3 (state) comes first; field 22 (starttime) is the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Now, in the unit of [`start_time`]: a process started after this reads no less.
pub fn boot_ticks() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer, which points at a live
    // local.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return 0;
    }
    // SAFETY: sysconf takes an integer name and touches no memory of ours.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs * hz + nanos * hz / 1_000_000_000
}

/// Exits by process identity.
#[derive(Default)]
struct Exits {
    /// Processes someone has identified ([`Reaper::identify`]) and will take the exit of.
    wanted: HashSet<ProcId>,
    /// Exits of wanted processes, until taken.
    done: HashMap<ProcId, Exit>,
    /// Exits of processes nobody has identified (yet): orphans reparented to the supervisor, or
    /// an external runtime's process that exited before its pid file was read. The oldest go
    /// beyond [`KEEP_EXITS`]; a wanted process's exit never does.
    unclaimed: VecDeque<(ProcId, Exit)>,
}

/// Owns `waitpid` for the whole process: every exit is recorded here by process identity, and
/// whoever waits for a process (init, an exec, a runtime command) takes its exit from here.
///
/// The reaper learns of an exit without reaping (`waitid(WNOWAIT)`), so the zombie still holds
/// its pid and its `/proc` entry while its start time is read; it reaps only while holding
/// [`gate`](Self::gate) exclusively. A spawner holds the gate shared from before the fork until
/// it has identified the child, so no child is reaped, and its pid reused, before its start
/// time is known.
#[derive(Default)]
pub struct Reaper {
    exits: Mutex<Exits>,
    changed: Condvar,
    /// Init and where its exit is recorded on disk, once known.
    init: Mutex<Option<(ProcId, PathBuf)>>,
    gate: RwLock<()>,
    /// Raised when a child is spawned: a reaper idle for want of children looks again at once.
    spawned: Mutex<bool>,
    kick: Condvar,
}

/// Held while a child is spawned and identified: the reaper reaps nothing meanwhile. Never held
/// while waiting for an exit.
pub struct Spawning<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

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
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        loop {
            // Which child has exited, without reaping it: it keeps its pid meanwhile.
            let pid = match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(status) => match status.pid() {
                    Some(p) => p,
                    None => continue,
                },
                Err(nix::Error::ECHILD) => {
                    self.idle();
                    continue;
                }
                Err(nix::Error::EINTR) => continue,
                Err(_) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            let gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
            let start = start_time(pid.as_raw()).unwrap_or(0);
            let reaped = waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            let id = ProcId {
                pid: pid.as_raw(),
                start,
            };
            // The exit is recorded before the gate opens: whoever identifies a process under
            // the gate finds it either alive, a zombie, or among the recorded exits, never
            // reaped but not yet recorded.
            match reaped {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.record(id, u32::try_from(code).unwrap_or(255))
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => self.record(id, 128 + sig as u32),
                // Reaped by someone else meanwhile (the runtime library, on a failed start).
                _ => {}
            }
            drop(gate);
        }
    }

    /// No children: sleeps until one is spawned (or a while, for orphans reparented to us).
    fn idle(&self) {
        let mut spawned = lock(&self.spawned);
        if !*spawned {
            spawned = self
                .kick
                .wait_timeout(spawned, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        *spawned = false;
    }

    /// Tells the reaper a child now exists, so its exit is reaped without delay.
    pub fn kick(&self) {
        *lock(&self.spawned) = true;
        self.kick.notify_all();
    }

    /// Holds off reaping while a child is spawned and identified.
    pub fn spawning(&self) -> Spawning<'_> {
        Spawning(self.gate.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, id: ProcId, status: u32) {
        let (at_secs, at_nanos) = now();
        let exit = Exit {
            status,
            at_secs,
            at_nanos,
        };
        // Init's exit reaches the disk before anyone is told of it. The init lock is held
        // until the exit is in place, so set_init either sees it there or is seen here.
        let init = lock(&self.init);
        if let Some((init, path)) = init.as_ref()
            && *init == id
        {
            write_exit(path, &exit);
        }
        let mut exits = lock(&self.exits);
        if exits.wanted.contains(&id) {
            exits.done.insert(id, exit);
        } else {
            if exits.unclaimed.len() >= KEEP_EXITS {
                exits.unclaimed.pop_front();
            }
            exits.unclaimed.push_back((id, exit));
        }
        drop(init);
        self.changed.notify_all();
    }

    /// Identifies the process `pid`, started no earlier than `not_before` (see
    /// [`boot_ticks`]), and marks its exit wanted: whoever identified it takes the exit with
    /// [`wait_exit`](Self::wait_exit). A child of ours spawned under `_gate` is alive or a
    /// zombie; an external runtime's process (its pid read from a pid file) may already be
    /// reaped, its exit unclaimed: the earliest such exit of that pid since `not_before` is
    /// its own (the pid could be another's only after it was reaped). None: no such process.
    pub fn identify(&self, _gate: &Spawning<'_>, pid: i32, not_before: u64) -> Option<ProcId> {
        let mut exits = lock(&self.exits);
        let earliest = exits
            .unclaimed
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| id.pid == pid && id.start >= not_before)
            .min_by_key(|(_, (id, _))| id.start)
            .map(|(i, _)| i);
        let id = if let Some(i) = earliest
            && let Some((id, exit)) = exits.unclaimed.remove(i)
        {
            exits.done.insert(id, exit);
            id
        } else {
            ProcId {
                pid,
                start: start_time(pid).filter(|s| *s >= not_before)?,
            }
        };
        exits.wanted.insert(id);
        Some(id)
    }

    /// Names init; its exit (even one already recorded) is written to `path`.
    fn set_init(&self, id: ProcId, path: PathBuf) {
        let mut init = lock(&self.init);
        if let Some(e) = lock(&self.exits).done.get(&id) {
            write_exit(&path, e);
        }
        *init = Some((id, path));
    }

    /// Blocks until the process has exited; returns its exit status.
    pub fn wait_for(&self, id: ProcId) -> u32 {
        self.wait_exit(id).status
    }

    /// Blocks until the identified process has exited, and takes its exit: it is told once,
    /// to the one who identified it.
    fn wait_exit(&self, id: ProcId) -> Exit {
        let mut exits = lock(&self.exits);
        loop {
            if let Some(e) = exits.done.remove(&id) {
                exits.wanted.remove(&id);
                return e;
            }
            exits = self
                .changed
                .wait(exits)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// How long after a process's exit its output copiers may take to reach end of file before the
/// exit is told anyway: processes it left behind (daemons) can hold its output open for ever.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Output copiers of one process still running.
#[derive(Default)]
struct Drain {
    open: Mutex<usize>,
    changed: Condvar,
}

impl Drain {
    fn add(&self) {
        *lock(&self.open) += 1;
    }

    fn done(&self) {
        let mut open = lock(&self.open);
        *open = open.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Waits until every copier has reached end of file, or until `deadline`.
    fn wait(&self, deadline: Instant) {
        let mut open = lock(&self.open);
        while *open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            open = self
                .changed
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// A process's exit once it may be told: the process has exited and its output is drained.
#[derive(Default)]
struct Finished {
    /// Its exit as soon as it is reaped, before its output is drained.
    reaped: Mutex<Option<Exit>>,
    exit: Mutex<Option<Exit>>,
    changed: Condvar,
}

impl Finished {
    fn reaped(&self) -> bool {
        lock(&self.reaped).is_some()
    }

    fn set(&self, exit: Exit) {
        *lock(&self.exit) = Some(exit);
        self.changed.notify_all();
    }

    fn get(&self) -> Option<Exit> {
        lock(&self.exit).clone()
    }

    fn wait(&self) -> Exit {
        let mut exit = lock(&self.exit);
        loop {
            if let Some(e) = exit.as_ref() {
                return e.clone();
            }
            exit = self
                .changed
                .wait(exit)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// Init or an exec'd process.
struct Proc {
    pid: i32,
    /// A pidfd of the process (signals go to it, never to a later holder of its pid).
    pidfd: Option<OwnedFd>,
    /// The pty master, when the process has a terminal (for resizes).
    console: Option<File>,
    finished: Arc<Finished>,
    /// Its own log (exec'd processes), removed with it.
    log: Option<PathBuf>,
}

/// Marks the process finished once it has exited and `drain` has emptied (or [`DRAIN_LIMIT`]
/// has passed since the exit).
fn watch(reaper: Arc<Reaper>, id: ProcId, drain: Arc<Drain>) -> Arc<Finished> {
    let finished = Arc::new(Finished::default());
    let f = finished.clone();
    std::thread::spawn(move || {
        let exit = reaper.wait_exit(id);
        *lock(&f.reaped) = Some(exit.clone());
        drain.wait(Instant::now() + DRAIN_LIMIT);
        f.set(exit);
    });
    finished
}

struct Shared {
    runtime: Mutex<Runtime>,
    reaper: Arc<Reaper>,
    state: PathBuf,
    init: Proc,
    started: Mutex<bool>,
    paused: Mutex<bool>,
    /// The write end of the container's stdin pipe, until CloseIo.
    stdin: Mutex<Option<File>>,
    execs: Mutex<HashMap<String, Proc>>,
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

/// Mode of the files a supervisor creates (logs, records): root only, set at creation.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories it creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates (0600) or truncates `path` for writing.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates `path` and its missing parents, each 0700.
pub fn create_private_dirs(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Writes `data` to `path` atomically: temporary file, fsync, rename.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = create_private(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Opens a client's stdio path (often a FIFO) without blocking on a missing peer.
fn open_rw(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(p)
}

/// A framed log (see `strata_core::logfile`), shared by a process's output copiers.
type Log = Arc<Mutex<File>>;

fn open_log(path: &Path) -> std::io::Result<Log> {
    Ok(Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(path)?,
    )))
}

/// Copies one output stream of a process to its log (one record per read, written whole) and
/// to the client's path, until end of file; then tells `drain`.
fn copy_out(mut from: File, stream: Stream, log: Log, to: Option<File>, drain: Arc<Drain>) {
    drain.add();
    std::thread::spawn(move || {
        let mut to = to;
        let mut buf = vec![0u8; HEADER_LEN + (32 << 10)];
        loop {
            let n = match from.read(&mut buf[HEADER_LEN..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A pty master answers EIO once the last holder of its slave has gone.
                Err(_) => break,
            };
            logfile::put_header(&mut buf, stream, n);
            let _ = lock(&log).write_all(&buf[..HEADER_LEN + n]);
            if let Some(t) = to.as_mut()
                && t.write_all(&buf[HEADER_LEN..HEADER_LEN + n]).is_err()
            {
                to = None;
            }
        }
        drain.done();
    });
}

/// Copies the client's stdin (a FIFO) to `to` until the client closes it.
fn copy_in(src: PathBuf, to: File) {
    std::thread::spawn(move || {
        let Ok(mut s) = File::open(&src) else { return };
        let mut to = to;
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
}

fn pipe() -> std::io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((File::from(r), File::from(w)))
}

/// The client's stdio paths for a process; empty paths are none.
#[derive(Default)]
struct Paths {
    stdin: Option<PathBuf>,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

/// Pipes for a process without a terminal: the ends the process gets, the write end of its
/// stdin, and output copied to the log and paths.
fn pipes(paths: &Paths, log: &Log, drain: &Arc<Drain>) -> std::io::Result<(Fds, Option<File>)> {
    let (in_r, in_w) = match &paths.stdin {
        Some(p) => {
            let (r, w) = pipe()?;
            copy_in(p.clone(), w.try_clone()?);
            (Some(OwnedFd::from(r)), Some(w))
        }
        None => (None, None),
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let out_to = paths.stdout.as_deref().map(open_rw).transpose()?;
    let err_to = paths.stderr.as_deref().map(open_rw).transpose()?;
    copy_out(out_r, Stream::Stdout, log.clone(), out_to, drain.clone());
    copy_out(err_r, Stream::Stderr, log.clone(), err_to, drain.clone());
    Ok((
        Fds {
            stdin: in_r,
            stdout: Some(OwnedFd::from(out_w)),
            stderr: Some(OwnedFd::from(err_w)),
        },
        in_w,
    ))
}

/// Serves a process's terminal: master → log (as stdout) and the stdout path, stdin path →
/// master. Returns the master, for resizes.
fn serve_console(
    master: OwnedFd,
    paths: &Paths,
    log: &Log,
    drain: &Arc<Drain>,
) -> std::io::Result<File> {
    let master = File::from(master);
    let out_to = paths.stdout.as_deref().map(open_rw).transpose()?;
    copy_out(
        master.try_clone()?,
        Stream::Stdout,
        log.clone(),
        out_to,
        drain.clone(),
    );
    if let Some(p) = &paths.stdin {
        copy_in(p.clone(), master.try_clone()?);
    }
    Ok(master)
}

fn status_of(s: &Shared) -> Status {
    if s.init.finished.get().is_some() {
        Status::Stopped
    } else if *lock(&s.paused) {
        Status::Paused
    } else if *lock(&s.started) {
        Status::Running
    } else {
        Status::Created
    }
}

/// Refuses `op` on a container whose init has exited, or (`op` start) one already started.
fn refuse(s: &Shared, op: &str) -> Option<Reply> {
    let why = if s.init.finished.reaped() {
        "its init has exited"
    } else if op == "start" && *lock(&s.started) {
        "it is already started"
    } else {
        return None;
    };
    Some(Reply::fail(
        Kind::FailedPrecondition,
        format!("container cannot {op}: {why}"),
    ))
}

/// A pidfd of the process `id`, when it is still that process (alive or not yet reaped). Called
/// under the reaper's gate, so the pid is not reaped and reused meanwhile.
fn open_pidfd(_gate: &Spawning<'_>, id: ProcId) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel has just returned this new descriptor; nothing else owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    (start_time(id.pid) == Some(id.start)).then_some(fd)
}

/// Signals a process through its pidfd (never a later holder of its pid), or by pid when it has
/// none.
fn send_signal(pid: i32, pidfd: Option<&OwnedFd>, signal: i32) -> nix::Result<()> {
    let Some(fd) = pidfd else {
        return nix::sys::signal::kill(
            Pid::from_raw(pid),
            nix::sys::signal::Signal::try_from(signal).ok(),
        );
    };
    // SAFETY: pidfd_send_signal reads no memory through a null siginfo; the descriptor is an
    // open pidfd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Runs `start`, which makes a process (init or an exec) and returns its pid, and identifies
/// the process: with the built-in runtime it is our child, made under the reaper's gate; with an
/// external one its pid comes from a pid file once the runtime command has exited (the gate
/// must not be held then: the reaper reaps that command). None: the process was not found.
#[allow(clippy::type_complexity)]
fn spawn<T>(
    reaper: &Reaper,
    builtin: bool,
    start: impl FnOnce() -> crate::runtime::Result<(i32, T)>,
) -> (
    crate::runtime::Result<(i32, T)>,
    Option<(ProcId, Option<OwnedFd>)>,
) {
    let not_before = boot_ticks();
    let gate = builtin.then(|| reaper.spawning());
    let made = start();
    reaper.kick();
    let Ok((pid, _)) = &made else {
        return (made, None);
    };
    let gate = gate.unwrap_or_else(|| reaper.spawning());
    let child = reaper
        .identify(&gate, *pid, not_before)
        .map(|id| (id, open_pidfd(&gate, id)));
    (made, child)
}

fn exec_not_found(exec_id: &str) -> Reply {
    Reply::fail(Kind::NotFound, format!("exec {exec_id:?}: not found"))
}

/// Runs an exec'd process: its stdio (pipes or a terminal), its log, its exit watch.
fn exec(s: &Shared, exec_id: String, process: &serde_json::Value, paths: &Paths) -> Reply {
    if exec_id.is_empty() || exec_id.contains('/') || exec_id.starts_with('.') {
        return Reply::fail(
            Kind::InvalidArgument,
            format!("exec id {exec_id:?}: not a valid name"),
        );
    }
    if lock(&s.execs).contains_key(&exec_id) {
        return Reply::fail(
            Kind::AlreadyExists,
            format!("exec {exec_id:?}: already exists"),
        );
    }
    let terminal = process["terminal"].as_bool().unwrap_or(false);
    let log_path = s.state.join(format!("exec-{exec_id}.log"));
    let log = match open_log(&log_path) {
        Ok(l) => l,
        Err(e) => return Reply::fail(Kind::Internal, format!("exec {exec_id:?}: log: {e}")),
    };
    let drain = Arc::new(Drain::default());
    let (fds, _stdin) = if terminal {
        (Fds::default(), None)
    } else {
        match pipes(paths, &log, &drain) {
            Ok(v) => v,
            Err(e) => return Reply::fail(Kind::Internal, format!("exec {exec_id:?}: stdio: {e}")),
        }
    };
    let runtime = lock(&s.runtime);
    let (spawned, child) = spawn(&s.reaper, runtime.is_builtin(), || {
        runtime.exec(process, fds, &s.state, &exec_id, terminal)
    });
    drop(runtime);
    let (pid, master) = match spawned {
        Ok(v) => v,
        Err(e) => return Reply::fail(e.kind(), format!("exec {exec_id:?}: {e}")),
    };
    let Some((id, pidfd)) = child else {
        return Reply::fail(
            Kind::Internal,
            format!("exec {exec_id:?}: its process {pid} was gone before it could be watched"),
        );
    };
    let console = match master.map(|m| serve_console(m, paths, &log, &drain)) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            let _ = send_signal(pid, pidfd.as_ref(), libc::SIGKILL);
            return Reply::fail(Kind::Internal, format!("exec {exec_id:?}: terminal: {e}"));
        }
        None if terminal => {
            let _ = send_signal(pid, pidfd.as_ref(), libc::SIGKILL);
            return Reply::fail(
                Kind::Internal,
                format!("exec {exec_id:?}: the runtime made no terminal"),
            );
        }
        None => None,
    };
    let finished = watch(s.reaper.clone(), id, drain);
    lock(&s.execs).insert(
        exec_id,
        Proc {
            pid,
            pidfd,
            console,
            finished,
            log: Some(log_path),
        },
    );
    Reply {
        pid: Some(pid),
        ..Reply::default()
    }
}

fn handle(s: &Shared, req: Request) -> (Reply, bool) {
    let ok = Reply::default;
    let res = |r: crate::runtime::Result<()>| match r {
        Ok(()) => ok(),
        Err(e) => Reply::fail(e.kind(), e.to_string()),
    };
    match req {
        Request::State => (
            Reply {
                status: Some(status_of(s)),
                pid: Some(s.init.pid),
                exit: s.init.finished.get(),
                ..ok()
            },
            false,
        ),
        Request::Start => {
            if let Some(no) = refuse(s, "start") {
                return (no, false);
            }
            let r = lock(&s.runtime).start();
            if r.is_ok() {
                *lock(&s.started) = true;
            }
            (res(r), false)
        }
        Request::Kill { signal, all } => (res(lock(&s.runtime).kill(signal, all)), false),
        Request::Wait => {
            let exit = s.init.finished.wait();
            (
                Reply {
                    exit: Some(exit),
                    pid: Some(s.init.pid),
                    ..ok()
                },
                false,
            )
        }
        Request::Pids => match lock(&s.runtime).pids() {
            Ok(pids) => (Reply { pids, ..ok() }, false),
            Err(e) => (Reply::fail(e.kind(), e.to_string()), false),
        },
        Request::Pause => {
            if let Some(no) = refuse(s, "pause") {
                return (no, false);
            }
            let r = lock(&s.runtime).pause();
            if r.is_ok() {
                *lock(&s.paused) = true;
            }
            (res(r), false)
        }
        Request::Resume => {
            if let Some(no) = refuse(s, "resume") {
                return (no, false);
            }
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
            let path = |p: Option<String>| p.filter(|s| !s.is_empty()).map(PathBuf::from);
            let paths = Paths {
                stdin: path(stdin),
                stdout: path(stdout),
                stderr: path(stderr),
            };
            (exec(s, exec_id, &process, &paths), false)
        }
        Request::WaitExec { exec_id } => (wait_exec(s, &exec_id), false),
        Request::StateExec { exec_id } => (state_exec(s, &exec_id), false),
        Request::DeleteExec { exec_id } => (delete_exec(s, &exec_id), false),
        Request::ResizePty {
            exec_id,
            width,
            height,
        } => (resize_pty(s, &exec_id, width, height), false),
        Request::KillExec { exec_id, signal } => (kill_exec(s, &exec_id, signal), false),
        Request::Update { resources } => {
            (res(lock(&s.runtime).update(&resources, &s.state)), false)
        }
        Request::Delete { force } => delete(s, force),
    }
}

/// `WaitExec`: waits for exec `exec_id` to exit; its pid and exit.
fn wait_exec(s: &Shared, exec_id: &str) -> Reply {
    let found = lock(&s.execs)
        .get(exec_id)
        .map(|p| (p.pid, p.finished.clone()));
    match found {
        Some((pid, finished)) => Reply {
            exit: Some(finished.wait()),
            pid: Some(pid),
            ..Reply::default()
        },
        None => exec_not_found(exec_id),
    }
}

/// `Delete`: deletes the container, which has exited unless `force`; whether the supervisor
/// is done (it exits after answering).
fn delete(s: &Shared, force: bool) -> (Reply, bool) {
    if !force && !s.init.finished.reaped() {
        return (
            Reply::fail(
                Kind::FailedPrecondition,
                "container is still running: kill it first or delete with force",
            ),
            false,
        );
    }
    if s.init.finished.reaped() {
        // Its output is in the log before the container goes.
        s.init.finished.wait();
    }
    match lock(&s.runtime).delete(force) {
        Ok(()) => (Reply::default(), true),
        Err(e) => (Reply::fail(e.kind(), e.to_string()), false),
    }
}

/// `StateExec`: the status, pid and exit of exec `exec_id`.
fn state_exec(s: &Shared, exec_id: &str) -> Reply {
    let execs = lock(&s.execs);
    match execs.get(exec_id) {
        Some(p) => {
            let exit = p.finished.get();
            let status = if exit.is_some() {
                Status::Stopped
            } else {
                Status::Running
            };
            Reply {
                status: Some(status),
                pid: Some(p.pid),
                exit,
                ..Reply::default()
            }
        }
        None => exec_not_found(exec_id),
    }
}

/// `DeleteExec`: forgets exec `exec_id`, which has exited, with its log and state files.
fn delete_exec(s: &Shared, exec_id: &str) -> Reply {
    let mut execs = lock(&s.execs);
    let Some(p) = execs.get(exec_id) else {
        return exec_not_found(exec_id);
    };
    let Some(exit) = p.finished.get() else {
        return Reply::fail(
            Kind::FailedPrecondition,
            format!("exec {exec_id:?} is still running: kill it first"),
        );
    };
    let pid = p.pid;
    if let Some(p) = execs.remove(exec_id)
        && let Some(log) = p.log
    {
        let _ = std::fs::remove_file(log);
    }
    for ext in ["json", "pid"] {
        let _ = std::fs::remove_file(s.state.join(format!("exec-{exec_id}.{ext}")));
    }
    Reply {
        exit: Some(exit),
        pid: Some(pid),
        ..Reply::default()
    }
}

/// `ResizePty`: sets the terminal size of exec `exec_id`, or of init when it is empty.
fn resize_pty(s: &Shared, exec_id: &str, width: u32, height: u32) -> Reply {
    let execs = lock(&s.execs);
    let (what, console) = if exec_id.is_empty() {
        ("init".to_owned(), s.init.console.as_ref())
    } else {
        match execs.get(exec_id) {
            Some(p) => (format!("exec {exec_id:?}"), p.console.as_ref()),
            None => return exec_not_found(exec_id),
        }
    };
    let Some(console) = console else {
        return Reply::fail(
            Kind::FailedPrecondition,
            format!("{what} has no terminal to resize"),
        );
    };
    match strata_core::tty::set_size(console, strata_core::tty::Size { width, height }) {
        Ok(()) => Reply::default(),
        Err(e) => Reply::fail(
            Kind::Internal,
            format!("{what}: resizing its terminal: {e}"),
        ),
    }
}

/// `KillExec`: sends `signal` to exec `exec_id`, unless it has been reaped.
fn kill_exec(s: &Shared, exec_id: &str, signal: i32) -> Reply {
    let execs = lock(&s.execs);
    let Some(p) = execs.get(exec_id) else {
        return exec_not_found(exec_id);
    };
    // Its pid may already be another process's: a reaped exec is not signalled.
    if p.finished.reaped() {
        return Reply::fail(
            Kind::NotFound,
            format!("exec {exec_id:?}: it has already exited"),
        );
    }
    match send_signal(p.pid, p.pidfd.as_ref(), signal) {
        Ok(()) => Reply::default(),
        Err(e) => {
            let kind = match e {
                nix::Error::ESRCH => Kind::NotFound,
                nix::Error::EINVAL => Kind::InvalidArgument,
                _ => Kind::Internal,
            };
            Reply::fail(kind, format!("exec {exec_id:?}: signal {signal}: {e}"))
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
            Err(e) => (
                Reply::fail(Kind::InvalidArgument, format!("bad request {line:?}: {e}")),
                false,
            ),
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        if exit {
            // Gone before the caller hears so: nobody connects to a supervisor that is leaving.
            let _ = std::fs::remove_file(s.state.join(SOCKET));
        }
        let _ = w.write_all(&out);
        if exit {
            std::process::exit(0);
        }
    }
}

/// Whether the bundle's process asks for a terminal (`process.terminal` in config.json).
fn wants_terminal(bundle: &Path) -> Result<bool, String> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(spec["process"]["terminal"].as_bool().unwrap_or(false))
}

/// Makes the supervisor independent of its starter: the state directory `state` created,
/// stderr to its `shim.log`, stdin from `/dev/null`, a session of its own, and the subreaper
/// of what the runtime leaves behind.
fn detach(state: &Path) -> Result<(), String> {
    create_private_dirs(state).map_err(|e| format!("creating {}: {e}", state.display()))?;
    // The supervisor outlives its starter: hold none of its pipes. Diagnostics go to shim.log.
    let diag = state.join("shim.log");
    let diag = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
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
    Ok(())
}

pub fn run(args: Args) -> Result<(), String> {
    detach(&args.state)?;
    let terminal = wants_terminal(&args.bundle)?;
    let reaper = Arc::new(Reaper::default());
    let log_path = args.log.clone().unwrap_or_else(|| args.state.join("log"));
    let log = open_log(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let paths = Paths {
        stdin: args.stdin.clone(),
        stdout: args.stdout.clone(),
        stderr: args.stderr.clone(),
    };
    let drain = Arc::new(Drain::default());
    let (fds, stdin) = if terminal {
        (Fds::default(), None)
    } else {
        pipes(&paths, &log, &drain).map_err(|e| format!("container stdio: {e}"))?
    };
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
    let (made, child) = spawn(&reaper, runtime.is_builtin(), || {
        runtime.create(fds, terminal)
    });
    let (init, master) = made.map_err(|e| format!("creating container {}: {e}", args.id))?;
    let Some((init_id, pidfd)) = child else {
        return Err(format!(
            "creating container {}: its init {init} was gone before it could be watched",
            args.id
        ));
    };
    // Before anyone may take its exit: the exit reaches the disk first.
    reaper.set_init(init_id, args.state.join("exit"));
    let console = match master {
        Some(m) => Some(
            serve_console(m, &paths, &log, &drain)
                .map_err(|e| format!("container terminal: {e}"))?,
        ),
        None if terminal => {
            let _ = runtime.delete(true);
            return Err(format!(
                "creating container {}: the runtime made no terminal",
                args.id
            ));
        }
        None => None,
    };
    write_atomic(&args.state.join("init.pid"), init.to_string().as_bytes())
        .map_err(|e| format!("init.pid: {e}"))?;
    let finished = watch(reaper.clone(), init_id, drain);
    let shared = Arc::new(Shared {
        runtime: Mutex::new(runtime),
        reaper: reaper.clone(),
        state: args.state.clone(),
        init: Proc {
            pid: init,
            pidfd,
            console,
            finished,
            log: None,
        },
        started: Mutex::new(false),
        paused: Mutex::new(false),
        stdin: Mutex::new(stdin),
        execs: Mutex::new(HashMap::new()),
    });
    let sock = args.state.join(SOCKET);
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
