//! Code that runs in the forked child: the container's init (`create`) or an extra process
//! (`exec`). It never returns: it either `execve`s the container process or reports an error
//! on the status pipe and exits.
//!
//! Status pipe protocol (child to parent, close-on-exec): a single `0` byte means "init is set
//! up and waits for start"; `1` followed by a message is a setup failure; end-of-file without a
//! byte means the process was exec'd (the close-on-exec closed the pipe).

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process, Spec};

use crate::error::{Error, Result};
use crate::{caps, net, rootfs};

/// What the child is.
pub(crate) enum Role<'a> {
    /// The container's init: new namespaces, root file system, wait on the exec FIFO.
    Init {
        spec: &'a Spec,
        rootfs: &'a Path,
        fifo: &'a Path,
        cgroup_paths: Vec<PathBuf>,
    },
    /// A process joining a running container's namespaces (mount last).
    Exec {
        namespaces: Vec<(OwnedFd, CloneFlags)>,
    },
}

/// Everything the child needs; the file descriptors are the parent's (copied by fork).
pub(crate) struct Args<'a> {
    pub role: Role<'a>,
    pub process: &'a Process,
    /// stdin, stdout, stderr; `None` is `/dev/null`.
    pub stdio: [Option<RawFd>; 3],
    /// When the process has a terminal: the socket the child sends the pty master over. The
    /// pty is opened inside the container (its own devpts, as `/dev/ptmx`), so the process
    /// sees `/dev/pts/N` as its terminal.
    pub console_socket: Option<RawFd>,
    /// Read end: the parent writes one byte once the child is in its cgroup.
    pub go: RawFd,
    /// Write end of the status pipe.
    pub status: RawFd,
    /// The compiled seccomp profile, installed last before `execve`.
    pub seccomp: Option<&'a crate::seccomp::Seccomp>,
}

/// Runs the child side and never returns.
pub(crate) fn run(args: Args<'_>) -> Infallible {
    let status = match raise(args.status) {
        Ok(fd) => fd,
        // SAFETY: _exit ends this forked child without running the parent's destructors.
        Err(_) => unsafe { libc::_exit(1) },
    };
    let err = match setup(args, &status) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let mut msg = vec![1u8];
    msg.extend_from_slice(err.to_string().as_bytes());
    write_all(status.as_raw_fd(), &msg);
    // SAFETY: _exit is async-signal-safe and ends this forked child without running the
    // parent's atexit handlers or destructors.
    unsafe { libc::_exit(1) }
}

fn write_all(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice for its length; fd is owned by this process.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return;
        }
        buf = &buf[usize::try_from(n).unwrap_or(buf.len()).min(buf.len())..];
    }
}

/// Duplicates `fd` to a descriptor >= 3 (close-on-exec) so the later dup2 onto 0-2 cannot
/// clobber it.
fn raise(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: fd is open in this process for the duration of the call (the parent passed it).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let new = fcntl(borrowed, FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| Error::sys("dup", format!("fd {fd}"), e))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Closes every descriptor >= 3 that is not in `keep`.
fn close_others(mut keep: Vec<RawFd>) {
    keep.retain(|fd| *fd >= 3);
    keep.sort_unstable();
    keep.dedup();
    let mut lo: u32 = 3;
    for fd in keep.into_iter().filter_map(|fd| u32::try_from(fd).ok()) {
        if fd > lo {
            // SAFETY: close_range only closes descriptors in [lo, fd - 1], none of which
            // this child still uses (the kept ones are excluded).
            unsafe { libc::syscall(libc::SYS_close_range, lo, fd - 1, 0u32) };
        }
        lo = fd + 1;
    }
    // SAFETY: as above, for everything above the last kept descriptor.
    unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32) };
}

fn dup_onto(fd: &OwnedFd, target: RawFd) -> Result<()> {
    // SAFETY: both descriptors are valid; dup2 atomically replaces `target`.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(Error::sys(
            "dup2",
            format!("fd {} onto {target}", fd.as_raw_fd()),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

fn setup(args: Args<'_>, status: &OwnedFd) -> Result<Infallible> {
    nix::sys::stat::umask(Mode::empty());
    let go = raise(args.go)?;
    let mut stdio = Vec::new();
    for fd in args.stdio {
        stdio.push(match fd {
            Some(fd) => raise(fd)?,
            None => OwnedFd::from(
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| Error::io("open", "/dev/null", e))?,
            ),
        });
    }
    let console_socket = args.console_socket.map(raise).transpose()?;
    // Drop every other inherited descriptor now: parallel creates in the parent leave their
    // pipe ends in us, and holding them would keep other callers from seeing EOF.
    let mut keep: Vec<RawFd> = [go.as_raw_fd(), status.as_raw_fd()]
        .into_iter()
        .chain(stdio.iter().map(AsRawFd::as_raw_fd))
        .chain(console_socket.as_ref().map(AsRawFd::as_raw_fd))
        .collect();
    if let Role::Exec { namespaces } = &args.role {
        keep.extend(namespaces.iter().map(|(fd, _)| fd.as_raw_fd()));
    }
    close_others(keep);

    // The parent moves us into the container's cgroup meanwhile. The first write to a
    // `cgroup.procs` waits for an RCU grace period in the kernel (several milliseconds), so an
    // init sets up its namespaces and root during that wait and only then waits to be let go:
    // nothing of the container's own runs before it is in its cgroup (device files are checked
    // again at open). A new cgroup namespace takes the cgroup current when it is made, so an
    // init that makes one, and an exec'd process, wait first.
    let mut go = Some(go);
    if !matches!(args.role, Role::Init { spec, .. } if !new_cgroup_ns(spec)) {
        wait_for_go(go.take())?;
    }

    let fifo = match &args.role {
        Role::Init {
            spec,
            rootfs: root,
            fifo,
            cgroup_paths,
        } => {
            let fifo_fd = nix::fcntl::open(*fifo, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| Error::sys("open", fifo.display().to_string(), e))?;
            init_namespaces(spec)?;
            rootfs::setup(spec, root, cgroup_paths)?;
            sysctls(spec)?;
            rootfs::finish(spec)?;
            Some(fifo_fd)
        }
        Role::Exec { namespaces } => {
            for (fd, flag) in namespaces {
                setns(fd, *flag).map_err(|e| Error::sys("setns", format!("{flag:?}"), e))?;
            }
            None
        }
    };

    let is_init = matches!(args.role, Role::Init { .. });
    let console = console_socket
        .as_ref()
        .map(|sock| make_console(args.process, sock, is_init))
        .transpose()?;
    drop(console_socket);
    let hold_admin = args.seccomp.is_some_and(|s| s.hold_admin);
    let (path, argv, envp) = prepare_process(args.process, console.as_ref(), &stdio, hold_admin)?;
    let after_seccomp = crate::seccomp::after_install(args.seccomp, args.process)?;
    drop(stdio);
    drop(console);

    wait_for_go(go.take())?;
    if let Some(fifo) = fifo {
        // The parent reads just this byte; the descriptor closes at exec.
        write_all(status.as_raw_fd(), &[0]);
        // Block until `start` writes to the FIFO.
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: byte is a valid one-byte buffer; fifo is open for reading.
            let n = unsafe { libc::read(fifo.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(1) }
        }
        drop(fifo);
        if let Some(seccomp) = args.seccomp
            && let Err(e) = crate::seccomp::install(seccomp, after_seccomp)
        {
            write_all(2, format!("{e}\n").as_bytes());
            // SAFETY: as below.
            unsafe { libc::_exit(127) }
        }
        let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err_or_errno();
        let msg = format!("exec {:?}: {err}\n", path);
        write_all(2, msg.as_bytes());
        // SAFETY: as above.
        unsafe { libc::_exit(127) }
    }
    if let Some(seccomp) = args.seccomp {
        crate::seccomp::install(seccomp, after_seccomp)?;
    }
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err_or_errno();
    Err(Error::sys("exec", format!("{path:?}"), err))
}

/// Whether `spec` asks for a new cgroup namespace (one without a path to join).
fn new_cgroup_ns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
        })
}

/// Blocks until the parent writes its byte on `go` (it has put us into the cgroup); end of
/// file means the parent gave up. `None`: already waited.
fn wait_for_go(go: Option<OwnedFd>) -> Result<()> {
    let Some(go) = go else {
        return Ok(());
    };
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: byte is a valid one-byte buffer; go is an open pipe read end.
        let n = unsafe { libc::read(go.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        if n == 1 {
            return Ok(());
        }
        if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        return Err(Error::sys(
            "read",
            "sync pipe (the parent went away before releasing the child)",
            nix::errno::Errno::EPIPE,
        ));
    }
}

/// Opens a pty in the container's own devpts (`/dev/ptmx`, the root being the container's by
/// now), sends its master to the parent over `sock` and returns the slave. For init, the slave
/// is also bind-mounted on `/dev/console` when that can be done.
fn make_console(p: &Process, sock: &OwnedFd, is_init: bool) -> Result<OwnedFd> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(|e| {
        Error::sys(
            "open",
            "/dev/ptmx (a terminal needs /dev/pts mounted in the container)",
            e,
        )
    })?;
    grantpt(&master).map_err(|e| Error::sys("grantpt", "/dev/ptmx", e))?;
    unlockpt(&master).map_err(|e| Error::sys("unlockpt", "/dev/ptmx", e))?;
    let name = ptsname_r(&master).map_err(|e| Error::sys("ptsname", "/dev/ptmx", e))?;
    let slave = nix::fcntl::open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys("open", name.clone(), e))?;
    if let Some(b) = p.console_size() {
        let size = strata_core::tty::Size {
            width: u32::try_from(b.width()).unwrap_or(u32::MAX),
            height: u32::try_from(b.height()).unwrap_or(u32::MAX),
        };
        strata_core::tty::set_size(&slave, size).map_err(|e| {
            let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            Error::sys("ioctl TIOCSWINSZ", name.clone(), errno)
        })?;
    }
    if is_init {
        // Best effort: a read-only /dev or one without a console leaves the terminal as is.
        let _ = rootfs::bind_console(std::os::fd::AsFd::as_fd(&slave));
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| Error::sys("sendmsg", "console socket", e))?;
    drop(master);
    Ok(slave)
}

trait ExecResult {
    fn unwrap_err_or_errno(self) -> nix::errno::Errno;
}

impl ExecResult for nix::Result<Infallible> {
    fn unwrap_err_or_errno(self) -> nix::errno::Errno {
        match self {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}

/// Joins namespaces that have a path and unshares the rest (pid was handled by the fork).
fn init_namespaces(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let mut flags = CloneFlags::empty();
    let mut new_net = false;
    let mut new_uts = false;
    for ns in linux.namespaces().iter().flatten() {
        let flag = match ns.typ() {
            LinuxNamespaceType::Pid | LinuxNamespaceType::User => continue,
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            LinuxNamespaceType::Time => {
                return Err(Error::Unsupported("time namespace".into()));
            }
        };
        match ns.path() {
            Some(path) => {
                let fd = fs::File::open(path).map_err(|e| Error::io("open namespace", path, e))?;
                setns(&fd, flag).map_err(|e| Error::sys("setns", path.display().to_string(), e))?;
            }
            None => {
                flags |= flag;
                new_net |= flag == CloneFlags::CLONE_NEWNET;
                new_uts |= flag == CloneFlags::CLONE_NEWUTS;
            }
        }
    }
    unshare(flags).map_err(|e| Error::sys("unshare", format!("{flags:?}"), e))?;
    if new_net {
        net::loopback_up()?;
    }
    if new_uts {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).map_err(|e| Error::sys("sethostname", h.clone(), e))?;
        }
        if let Some(d) = spec.domainname() {
            // SAFETY: d points to d.len() valid bytes for the duration of the call.
            if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } < 0 {
                return Err(Error::sys(
                    "setdomainname",
                    d.clone(),
                    nix::errno::Errno::last(),
                ));
            }
        }
    }
    Ok(())
}

fn sysctls(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    for (key, value) in linux.sysctl().iter().flatten() {
        if key.contains('/') || key.contains("..") {
            return Err(Error::InvalidSpec(format!("sysctl {key:?}")));
        }
        let path = Path::new("sys").join(key.replace('.', "/"));
        crate::inroot::write_proc(&path, value.as_bytes())?;
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

type Prepared = (CString, Vec<CString>, Vec<CString>);

fn cstring(s: &[u8], what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidSpec(format!("{what} {s:?} contains a NUL byte")))
}

/// Session, terminal or stdio, rlimits, cwd, user, capabilities, no_new_privileges; returns
/// the resolved executable, argv and envp. With `hold_admin`, `CAP_SYS_ADMIN` stays effective
/// for installing seccomp (see `seccomp.rs`).
fn prepare_process(
    p: &Process,
    console: Option<&OwnedFd>,
    stdio: &[OwnedFd],
    hold_admin: bool,
) -> Result<Prepared> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", "container process", e))?;
    match console {
        Some(tty) => {
            // SAFETY: TIOCSCTTY takes an integer argument; tty is an open pty slave.
            if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
                return Err(Error::sys(
                    "ioctl TIOCSCTTY",
                    "pty slave",
                    nix::errno::Errno::last(),
                ));
            }
            for target in 0..3 {
                dup_onto(tty, target)?;
            }
        }
        None => {
            for (target, fd) in (0..3).zip(stdio) {
                dup_onto(fd, target)?;
            }
        }
    }
    for r in p.rlimits().iter().flatten() {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: lim is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) } < 0 {
            return Err(Error::sys(
                "setrlimit",
                format!("{} {}:{}", r.typ(), r.soft(), r.hard()),
                nix::errno::Errno::last(),
            ));
        }
    }
    if let Some(adj) = p.oom_score_adj() {
        crate::inroot::write_proc(Path::new("self/oom_score_adj"), adj.to_string().as_bytes())?;
    }

    let env: Vec<String> = p.env().clone().unwrap_or_default();
    let args = p
        .args()
        .as_ref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::InvalidSpec("process.args is empty".into()))?;
    let exe = resolve(&args[0], &env)?;

    let cwd = p.cwd();
    nix::unistd::chdir(cwd).map_err(|e| Error::sys("chdir", cwd.display().to_string(), e))?;

    let user = p.user();
    let keep_caps = p.capabilities().is_some() || hold_admin;
    if keep_caps {
        caps::keep_caps(true)?;
    }
    if let Some(c) = p.capabilities() {
        caps::drop_bounding(c)?;
    }
    let mut groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    groups.dedup();
    nix::unistd::setgroups(&groups)
        .map_err(|e| Error::sys("setgroups", format!("{groups:?}"), e))?;
    nix::unistd::setgid(Gid::from_raw(user.gid()))
        .map_err(|e| Error::sys("setgid", user.gid().to_string(), e))?;
    nix::unistd::setuid(Uid::from_raw(user.uid()))
        .map_err(|e| Error::sys("setuid", user.uid().to_string(), e))?;
    if let Some(c) = p.capabilities() {
        caps::apply(c, if hold_admin { caps::SYS_ADMIN } else { 0 })?;
    }
    if keep_caps {
        caps::keep_caps(false)?;
    }
    let umask = user.umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask));
    if p.no_new_privileges() == Some(true) {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } < 0 {
            return Err(Error::sys(
                "prctl",
                "PR_SET_NO_NEW_PRIVS",
                nix::errno::Errno::last(),
            ));
        }
    }
    // Nothing but 0-2 and our own close-on-exec descriptors crosses the exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors >= 3.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };

    let argv = args
        .iter()
        .map(|a| cstring(a.as_bytes(), "argument"))
        .collect::<Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|e| cstring(e.as_bytes(), "environment entry"))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        cstring(exe.as_os_str().as_bytes(), "executable")?,
        argv,
        envp,
    ))
}

/// Finds `arg0` on the process's `PATH` (inside the container), like execvp.
fn resolve(arg0: &str, env: &[String]) -> Result<PathBuf> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        if let Ok(md) = fs::metadata(&candidate)
            && md.is_file()
            && md.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(Error::InvalidSpec(format!(
        "executable {arg0:?}: not found in PATH {path:?}"
    )))
}
