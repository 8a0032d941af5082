//! strata's default seccomp profile, as data.
//!
//! Its effect is Docker's default profile's: everything not listed fails with `EPERM`; the
//! calls a normal program needs are allowed; a few are allowed only with argument conditions;
//! the calls that only make sense with a capability are allowed exactly when the container holds
//! that capability. The grouping below is ours; the comparison test in `tests/` checks, call by
//! call, that the effect matches the profile Docker ships.

use oci_spec::runtime::{
    Arch as OciArch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator,
    LinuxSyscall,
};

use crate::Arch;

/// What a rule does when its conditions hold.
#[derive(Clone, Copy, Debug)]
enum Act {
    Allow,
    /// Fail the call with this errno.
    Errno(u32),
}

/// One argument condition: `args[index] <op> value` (for `MaskedEq`: `args[index] & value ==
/// value_two`).
#[derive(Clone, Copy, Debug)]
struct Cond {
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

const fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> Cond {
    Cond {
        index,
        op,
        value,
        value_two: 0,
    }
}

/// One rule of the profile.
#[derive(Clone, Copy, Debug)]
struct Rule {
    names: &'static [&'static str],
    act: Act,
    /// All must hold; none means always.
    args: &'static [Cond],
    /// The rule applies only when the container holds every one of these.
    needs: &'static [Capability],
    /// The rule is dropped when the container holds any of these.
    unless: &'static [Capability],
    /// The rule applies only on this architecture.
    only_on: Option<Arch>,
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        act: Act::Allow,
        args: &[],
        needs: &[],
        unless: &[],
        only_on: None,
    }
}

const fn allow_if(names: &'static [&'static str], args: &'static [Cond]) -> Rule {
    Rule {
        args,
        ..allow(names)
    }
}

const fn allow_with(cap: &'static [Capability], names: &'static [&'static str]) -> Rule {
    Rule {
        needs: cap,
        ..allow(names)
    }
}

const fn allow_on(arch: Arch, names: &'static [&'static str]) -> Rule {
    Rule {
        only_on: Some(arch),
        ..allow(names)
    }
}

use Capability as C;
use LinuxSeccompOperator as Op;

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET`: a `clone` asking for any new namespace needs `CAP_SYS_ADMIN`.
pub(crate) const CLONE_NAMESPACE_FLAGS: u64 = 0x7e02_0000;

/// `personality(2)` values a program may set without a capability: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `UNAME26 | PER_LINUX32`, and `0xffffffff` (query only).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Address families: `AF_ALG` (38) and `AF_VSOCK` (40) are refused, everything else allowed.
const AF_ALG: u64 = 38;
const AF_NFC: u64 = 39;
const AF_VSOCK: u64 = 40;

/// `ENOSYS`: `clone3` without `CAP_SYS_ADMIN` answers "not implemented", so the C library falls
/// back to `clone`, whose flags the filter can see (`clone3` passes them in memory).
const ENOSYS: u32 = 38;

#[rustfmt::skip]
const RULES: &[Rule] = &[
    // Files, directories and descriptors.
    allow(&[
        "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv", "pread64",
        "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek", "dup",
        "dup2", "dup3", "fcntl", "ioctl", "flock", "pipe", "pipe2", "splice", "tee", "vmsplice",
        "sendfile", "copy_file_range", "readahead", "fadvise64", "fallocate", "truncate",
        "ftruncate", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "stat", "lstat",
        "fstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2",
        "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir", "mknod",
        "mknodat", "link", "linkat", "symlink", "symlinkat", "readlink", "readlinkat", "unlink",
        "unlinkat", "rename", "renameat", "renameat2", "chmod", "fchmod", "fchmodat", "fchmodat2",
        "chown", "fchown", "fchownat", "lchown", "umask", "utime", "utimes", "futimesat",
        "utimensat", "name_to_handle_at", "statmount", "listmount",
    ]),
    // Extended attributes.
    allow(&[
        "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr", "fsetxattr",
        "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat", "removexattr",
        "lremovexattr", "fremovexattr", "removexattrat",
    ]),
    // Waiting for events.
    allow(&[
        "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl",
        "epoll_ctl_old", "epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd",
        "eventfd2", "signalfd", "signalfd4", "inotify_init", "inotify_init1", "inotify_add_watch",
        "inotify_rm_watch", "fanotify_mark", "io_setup", "io_destroy", "io_submit", "io_cancel",
        "io_getevents", "io_pgetevents", "ioprio_get", "ioprio_set",
    ]),
    // Memory.
    allow(&[
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock",
        "mlock2", "mlockall", "munlock", "munlockall", "remap_file_pages", "membarrier",
        "memfd_create", "memfd_secret", "mseal", "map_shadow_stack", "pkey_alloc", "pkey_free",
        "pkey_mprotect", "cachestat",
    ]),
    // Processes, threads and scheduling (`clone` and `clone3` have rules of their own below).
    allow(&[
        "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "getpid",
        "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "set_tid_address",
        "set_robust_list", "get_robust_list", "rseq", "futex", "futex_waitv", "futex_wait",
        "futex_wake", "futex_requeue", "get_thread_area", "set_thread_area", "prctl", "seccomp",
        "pidfd_open", "process_mrelease", "getrusage", "getrlimit", "setrlimit", "prlimit64",
        "getpriority", "setpriority", "sched_yield", "sched_getaffinity", "sched_setaffinity",
        "sched_getattr", "sched_setattr", "sched_getparam", "sched_setparam", "sched_getscheduler",
        "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
        "sched_rr_get_interval", "getcpu", "uretprobe",
    ]),
    // ptrace stopped being a way around seccomp in Linux 4.8; strata needs a newer kernel
    // (close_range, 5.9), so these are allowed outright.
    allow(&["ptrace", "process_vm_readv", "process_vm_writev"]),
    // Signals.
    allow(&[
        "kill", "tkill", "tgkill", "pidfd_send_signal", "rt_sigaction", "rt_sigprocmask",
        "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
        "rt_sigreturn", "sigaltstack", "pause", "restart_syscall",
    ]),
    // Users, groups and capabilities of the caller.
    allow(&[
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "setuid",
        "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
        "setgroups", "capget", "capset",
    ]),
    // Clocks and timers (reading; setting the clock needs CAP_SYS_TIME below).
    allow(&[
        "clock_gettime", "clock_getres", "clock_nanosleep", "clock_adjtime", "adjtimex",
        "gettimeofday", "nanosleep", "alarm", "getitimer", "setitimer", "times", "timer_create",
        "timer_delete", "timer_gettime", "timer_settime", "timer_getoverrun", "timerfd_create",
        "timerfd_gettime", "timerfd_settime",
    ]),
    // Sockets (`socket` itself has rules below).
    allow(&[
        "socketpair", "bind", "connect", "listen", "accept", "accept4", "getsockname",
        "getpeername", "getsockopt", "setsockopt", "sendto", "sendmsg", "sendmmsg", "recvfrom",
        "recvmsg", "recvmmsg", "shutdown",
    ]),
    // System V and POSIX inter-process communication.
    allow(&[
        "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl", "shmget",
        "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
        "mq_notify", "mq_getsetattr",
    ]),
    // The system as a whole, read only; self-sandboxing.
    allow(&[
        "uname", "sysinfo", "getrandom", "riscv_hwprobe", "landlock_create_ruleset",
        "landlock_add_rule", "landlock_restrict_self",
    ]),
    // The same calls under the names 32-bit programs use (x86, arm): allowed for them when
    // the runtime filters those architectures too (runc and crun do; strata's own filter kills
    // 32-bit calls, see `compile`).
    allow(&[
        "_llseek", "_newselect", "mmap2", "ipc", "socketcall", "send", "recv", "sigreturn",
        "sigprocmask", "waitpid", "time", "ugetrlimit", "stat64", "lstat64", "fstat64", "fstatat64",
        "statfs64", "fstatfs64", "truncate64", "ftruncate64", "fcntl64", "sendfile64",
        "fadvise64_64", "chown32", "fchown32", "lchown32", "getuid32", "geteuid32", "getgid32",
        "getegid32", "getresuid32", "getresgid32", "getgroups32", "setuid32", "setgid32",
        "setreuid32", "setregid32", "setresuid32", "setresgid32", "setfsuid32", "setfsgid32",
        "setgroups32",
    ]),
    // 64-bit time variants of 32-bit architectures.
    allow(&[
        "clock_gettime64", "clock_getres_time64", "clock_nanosleep_time64", "clock_adjtime64",
        "timer_gettime64", "timer_settime64", "timerfd_gettime64", "timerfd_settime64",
        "futex_time64", "io_pgetevents_time64", "mq_timedsend_time64", "mq_timedreceive_time64",
        "ppoll_time64", "pselect6_time64", "recvmmsg_time64", "rt_sigtimedwait_time64",
        "sched_rr_get_interval_time64", "semtimedop_time64", "utimensat_time64",
    ]),
    // socket: every address family but AF_ALG and AF_VSOCK.
    allow_if(&["socket"], &[arg(0, Op::ScmpCmpLt, AF_ALG)]),
    allow_if(&["socket"], &[arg(0, Op::ScmpCmpEq, AF_NFC)]),
    allow_if(&["socket"], &[arg(0, Op::ScmpCmpGt, AF_VSOCK)]),
    // personality: only the harmless execution domains.
    allow_if(&["personality"], &[arg(0, Op::ScmpCmpEq, PERSONALITIES[0])]),
    allow_if(&["personality"], &[arg(0, Op::ScmpCmpEq, PERSONALITIES[1])]),
    allow_if(&["personality"], &[arg(0, Op::ScmpCmpEq, PERSONALITIES[2])]),
    allow_if(&["personality"], &[arg(0, Op::ScmpCmpEq, PERSONALITIES[3])]),
    allow_if(&["personality"], &[arg(0, Op::ScmpCmpEq, PERSONALITIES[4])]),
    // clone without namespace flags (processes and threads); with CAP_SYS_ADMIN, any clone.
    Rule {
        unless: &[C::SysAdmin],
        ..allow_if(
            &["clone"],
            &[Cond {
                index: 0,
                op: Op::ScmpCmpMaskedEq,
                value: CLONE_NAMESPACE_FLAGS,
                value_two: 0,
            }],
        )
    },
    Rule {
        act: Act::Errno(ENOSYS),
        unless: &[C::SysAdmin],
        ..allow(&["clone3"])
    },
    // Architecture-specific calls.
    allow_on(Arch::X86_64, &["arch_prctl", "modify_ldt"]),
    allow_on(
        Arch::Aarch64,
        &[
            "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
            "cacheflush", "set_tls",
        ],
    ),
    // Calls that need a capability, allowed when the container holds it.
    allow_with(
        &[C::SysAdmin],
        &[
            "clone", "clone3", "unshare", "setns", "mount", "umount", "umount2", "mount_setattr",
            "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "sethostname",
            "setdomainname", "quotactl", "quotactl_fd", "fanotify_init", "lookup_dcookie", "bpf",
            "perf_event_open", "syslog", "lsm_get_self_attr", "lsm_set_self_attr",
            "lsm_list_modules",
        ],
    ),
    allow_with(&[C::DacReadSearch], &["open_by_handle_at"]),
    allow_with(
        &[C::SysPtrace],
        &[
            "kcmp", "pidfd_getfd", "process_madvise", "ptrace", "process_vm_readv",
            "process_vm_writev",
        ],
    ),
    allow_with(&[C::SysBoot], &["reboot"]),
    allow_with(&[C::SysChroot], &["chroot"]),
    allow_with(
        &[C::SysModule],
        &["init_module", "finit_module", "delete_module"],
    ),
    allow_with(&[C::SysPacct], &["acct"]),
    allow_with(&[C::SysRawio], &["iopl", "ioperm"]),
    allow_with(
        &[C::SysTime],
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    allow_with(&[C::SysTtyConfig], &["vhangup"]),
    allow_with(
        &[C::SysNice],
        &[
            "mbind", "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node",
        ],
    ),
    allow_with(&[C::Syslog], &["syslog"]),
    allow_with(&[C::Bpf], &["bpf"]),
    allow_with(&[C::Perfmon], &["perf_event_open"]),
];

/// The OCI architectures a profile for `arch` lists: the native one and the 32-bit ABIs it
/// runs, so that runc and crun filter those too.
pub(crate) fn oci_arches(arch: Arch) -> Vec<OciArch> {
    match arch {
        Arch::X86_64 => vec![
            OciArch::ScmpArchX86_64,
            OciArch::ScmpArchX86,
            OciArch::ScmpArchX32,
        ],
        Arch::Aarch64 => vec![OciArch::ScmpArchAarch64, OciArch::ScmpArchArm],
    }
}

/// strata's default profile for `arch` and a container holding `caps`.
pub(crate) fn profile(arch: Arch, caps: &[Capability]) -> LinuxSeccomp {
    let holds = |c: &Capability| caps.contains(c);
    let syscalls: Vec<LinuxSyscall> = RULES
        .iter()
        .filter(|r| r.only_on.is_none_or(|a| a == arch))
        .filter(|r| r.needs.iter().all(holds))
        .filter(|r| !r.unless.iter().any(holds))
        .map(|r| {
            let mut s = LinuxSyscall::default();
            s.set_names(r.names.iter().map(|n| (*n).to_string()).collect());
            match r.act {
                Act::Allow => {
                    s.set_action(LinuxSeccompAction::ScmpActAllow);
                }
                Act::Errno(errno) => {
                    s.set_action(LinuxSeccompAction::ScmpActErrno);
                    s.set_errno_ret(Some(errno));
                }
            }
            if !r.args.is_empty() {
                s.set_args(Some(
                    r.args
                        .iter()
                        .map(|c| {
                            let two = (c.op == Op::ScmpCmpMaskedEq).then_some(c.value_two);
                            crate::oci_arg(c.index, c.op, c.value, two)
                        })
                        .collect(),
                ));
            }
            s
        })
        .collect();
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActErrno);
    p.set_default_errno_ret(Some(1)); // EPERM
    p.set_architectures(Some(oci_arches(arch)));
    p.set_syscalls(Some(syscalls));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_namespace_flags_are_the_namespace_flags() {
        let flags = [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ];
        let mask = flags
            .iter()
            .fold(0u64, |m, f| m | u64::from(f.unsigned_abs()));
        assert_eq!(mask, CLONE_NAMESPACE_FLAGS);
        assert_eq!(u32::try_from(libc::ENOSYS).ok(), Some(ENOSYS));
        assert_eq!(u64::try_from(libc::AF_VSOCK).ok(), Some(AF_VSOCK));
        assert_eq!(u64::try_from(libc::AF_ALG).ok(), Some(AF_ALG));
    }

    #[test]
    fn every_name_is_a_known_system_call() {
        for r in RULES {
            for n in r.names {
                assert!(crate::is_known(n), "{n} is no system call strata knows");
            }
        }
    }
}
