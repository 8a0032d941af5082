//! Compiling OCI profiles: the default profile's answers, several actions, errors.

use oci_spec::runtime::{
    Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};
use strata_seccomp::{
    Arch, Error, allows_unconditionally, compile, default_profile, syscall_number,
};

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | 1;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | 38;

fn nr(name: &str) -> i64 {
    syscall_number(Arch::host().expect("supported machine"), name).expect(name)
}

fn answer(p: &LinuxSeccomp, name: &str, arg0: u64) -> u32 {
    compile(p)
        .expect("compile")
        .result(nr(name), [arg0, 0, 0, 0, 0, 0])
}

#[test]
fn default_profile_answers() {
    let none = default_profile(&[]);
    let admin = default_profile(&[Capability::SysAdmin]);
    let ptrace = default_profile(&[Capability::SysPtrace]);
    for p in [&none, &admin, &ptrace] {
        assert!(compile(p).expect("compile").programs().len() <= 3);
        assert_eq!(answer(p, "read", 0), ALLOW);
        assert_eq!(answer(p, "execve", 0), ALLOW);
        assert_eq!(answer(p, "capset", 0), ALLOW);
        assert_eq!(answer(p, "keyctl", 0), EPERM);
        assert_eq!(answer(p, "add_key", 0), EPERM);
        assert_eq!(answer(p, "socket", 40), EPERM); // AF_VSOCK
        assert_eq!(answer(p, "socket", 38), EPERM); // AF_ALG
        assert_eq!(answer(p, "socket", 1), ALLOW);
        assert_eq!(answer(p, "socket", 41), ALLOW);
        assert_eq!(answer(p, "personality", 0x8), ALLOW);
        assert_eq!(answer(p, "personality", 0x40_0000), EPERM); // READ_IMPLIES_EXEC
        assert_eq!(answer(p, "kexec_load", 0), EPERM);
    }
    // Without CAP_SYS_ADMIN: no namespaces, clone3 falls back to clone.
    assert_eq!(answer(&none, "unshare", 0x1000_0000), EPERM);
    assert_eq!(answer(&none, "mount", 0), EPERM);
    assert_eq!(answer(&none, "clone", 0x3d0f00), ALLOW);
    assert_eq!(answer(&none, "clone", 0x1000_0000 | 0x11), EPERM);
    assert_eq!(answer(&none, "clone3", 0), ENOSYS);
    assert_eq!(answer(&none, "kcmp", 0), EPERM);
    assert_eq!(answer(&none, "ptrace", 0), ALLOW);
    // With it: all of them.
    assert_eq!(answer(&admin, "unshare", 0x1000_0000), ALLOW);
    assert_eq!(answer(&admin, "mount", 0), ALLOW);
    assert_eq!(answer(&admin, "clone", 0x1000_0000 | 0x11), ALLOW);
    assert_eq!(answer(&admin, "clone3", 0), ALLOW);
    assert_eq!(answer(&ptrace, "kcmp", 0), ALLOW);
    // A number no call has.
    let filters = compile(&none).expect("compile");
    assert_eq!(filters.result(4000, [0; 6]), EPERM);
    if Arch::host() == Some(Arch::X86_64) {
        assert_eq!(
            filters.result(0x4000_0000 + nr("unshare"), [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
    assert!(allows_unconditionally(&none, "capset"));
    assert!(allows_unconditionally(&none, "execve"));
    assert!(!allows_unconditionally(&none, "clone"));
    assert!(!allows_unconditionally(&none, "keyctl"));
}

fn rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    s.set_errno_ret(errno);
    s
}

fn profile(default: LinuxSeccompAction, rules: Vec<LinuxSyscall>) -> LinuxSeccomp {
    let mut p = LinuxSeccomp::default();
    p.set_default_action(default);
    p.set_syscalls(Some(rules));
    p
}

#[test]
fn several_actions_stack_with_the_most_severe_winning() {
    use LinuxSeccompAction as A;
    let mut cond = rule(&["socket"], A::ScmpActKillProcess, None);
    cond.set_args(Some(vec![
        LinuxSeccompArgBuilder::default()
            .index(0usize)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .value(40u64)
            .build()
            .expect("arg"),
    ]));
    let p = profile(
        A::ScmpActAllow,
        vec![
            rule(&["keyctl"], A::ScmpActErrno, Some(13)),
            rule(&["keyctl", "add_key"], A::ScmpActErrno, Some(22)),
            rule(&["mount"], A::ScmpActTrap, None),
            rule(&["umount2"], A::ScmpActLog, None),
            rule(&["chown32", "getpid"], A::ScmpActErrno, None),
            cond,
        ],
    );
    let f = compile(&p).expect("compile");
    // No base filter (the default allows), one per action: errno 13, errno 22, trap, log,
    // errno 1, kill.
    let guard = usize::from(Arch::host() == Some(Arch::X86_64));
    assert_eq!(f.programs().len(), 6 + guard);
    let r = |name: &str, a0: u64| f.result(nr(name), [a0, 0, 0, 0, 0, 0]);
    assert_eq!(r("read", 0), ALLOW);
    // The earlier rule's errno, as first-match would.
    assert_eq!(r("keyctl", 0), libc::SECCOMP_RET_ERRNO | 13);
    assert_eq!(r("add_key", 0), libc::SECCOMP_RET_ERRNO | 22);
    assert_eq!(r("mount", 0), libc::SECCOMP_RET_TRAP);
    assert_eq!(r("umount2", 0), libc::SECCOMP_RET_LOG);
    assert_eq!(r("getpid", 0), EPERM);
    assert_eq!(r("socket", 40), libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(r("socket", 2), ALLOW);
    if Arch::host() == Some(Arch::X86_64) {
        // The same calls through the x32 ABI cannot get around the rules.
        let x32 = 0x4000_0000;
        assert_eq!(
            f.result(x32 + nr("keyctl"), [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            f.result(x32 + nr("read"), [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
}

#[test]
fn errors_name_what_is_wrong() {
    use LinuxSeccompAction as A;
    let err = compile(&profile(
        A::ScmpActErrno,
        vec![rule(&["read", "frobnicate"], A::ScmpActAllow, None)],
    ))
    .expect_err("unknown call");
    assert!(
        matches!(&err, Error::UnknownSyscall(n) if n == "frobnicate"),
        "{err}"
    );
    assert!(err.to_string().contains("\"frobnicate\""), "{err}");
    assert!(err.is_invalid_profile());

    // A name of another architecture only is skipped.
    compile(&profile(
        A::ScmpActErrno,
        vec![rule(&["read", "chown32", "_llseek"], A::ScmpActAllow, None)],
    ))
    .expect("other architectures' names are skipped");

    let err = compile(&profile(
        A::ScmpActErrno,
        vec![rule(&["read"], A::ScmpActAllow, Some(5))],
    ))
    .expect_err("errno on allow");
    assert!(err.to_string().contains("errnoRet 5"), "{err}");

    let err = compile(&profile(
        A::ScmpActErrno,
        vec![rule(&["read"], A::ScmpActNotify, None)],
    ))
    .expect_err("notify");
    assert!(!err.is_invalid_profile());
    assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");

    let mut bad_index = rule(&["read"], A::ScmpActAllow, None);
    bad_index.set_args(Some(vec![
        LinuxSeccompArgBuilder::default()
            .index(6usize)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .value(1u64)
            .build()
            .expect("arg"),
    ]));
    let err = compile(&profile(A::ScmpActErrno, vec![bad_index])).expect_err("index 6");
    assert!(err.to_string().contains("argument index 6"), "{err}");

    // An unknown action or operator in config.json fails to parse, naming it.
    let json = r#"{"defaultAction": "SCMP_ACT_FROB"}"#;
    let e = serde_json::from_str::<LinuxSeccomp>(json).expect_err("unknown action");
    assert!(e.to_string().contains("SCMP_ACT_FROB"), "{e}");
}
