//! OCI seccomp profiles to classic BPF, and their installation.
//!
//! # Several actions, several filters
//! A `seccompiler` filter has one action for the calls it matches and one for the rest. A
//! profile with several actions (Docker's has three: allow, `EPERM` by default, `ENOSYS` for
//! `clone3`) is compiled into a stack of filters:
//!
//! - the base filter: a call that some rule names answers ALLOW when the conditions of one of
//!   its rules (of any action) hold, and the default action otherwise; a call no rule names
//!   gets the default action (when the default action is ALLOW this filter is left out);
//! - one filter per distinct action other than ALLOW (an action with its errno or trace value
//!   is one action): the calls of its rules answer that action when the conditions of one of
//!   those rules hold, and ALLOW otherwise.
//!
//! The kernel runs every filter of the thread and keeps the result whose action comes first in
//! its precedence order (KILL_PROCESS, KILL_THREAD, TRAP, ERRNO, USER_NOTIF, TRACE, LOG, ALLOW:
//! `seccomp_run_filters` keeps a result only when its action is strictly more severe than the
//! one kept so far, walking from the filter installed last to the first). So for a call:
//!
//! - no rule matches: the base filter says the default action, the others ALLOW: the default
//!   action;
//! - rules match: the base filter says ALLOW, each action filter says its action when one of
//!   its rules matches: the most severe action among the matching rules.
//!
//! That is first-match semantics whenever the rules of one call that can match together have
//! the same action, which holds for Docker's profile and strata's default (a call's rules
//! there differ by capability or argument, never overlap with different actions). Where rules
//! with different actions match the same call, the most severe wins (a deny beats an allow),
//! and between two actions of the same class (two errno values) the filter installed last
//! wins: the action filters are installed in reverse order of first appearance in the profile,
//! so the earlier rule's value is kept, as first-match would.
//!
//! # Arguments
//! Conditions compare all 64 bits of an argument, as libseccomp does on 64-bit machines. The
//! conditions of one rule must all hold (several conditions on the same argument included).
//! `SCMP_CMP_MASKED_EQ` is `args[index] & value == valueTwo`.
//!
//! # Architectures
//! The filter is for the machine's own architecture (x86_64 or aarch64), whatever the
//! profile's `architectures` list says: the rules always apply to native calls, as with runc.
//! A call made through another ABI (32-bit `int 0x80` on x86_64, an arm32 process on aarch64)
//! kills the process: `seccompiler` checks the architecture first. So 32-bit programs do not run
//! under strata's own filter, where runc and crun (libseccomp) filter the 32-bit ABI with the
//! same rules. x32 calls (x86_64's ABI with bit 30 of the number set, which the architecture
//! check does not tell apart) kill the process too: an extra filter says so, or a profile whose
//! default action allows could be bypassed through them. System call names of other architectures only (`chown32`, `_llseek`...)
//! are skipped; a name no architecture has is an error.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Arch, Error, Result};

/// The largest errno a filter may return (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// An action with its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Log,
    Trace(u32),
    Errno(u32),
    Trap,
    KillThread,
    KillProcess,
}

impl Action {
    fn from_oci(action: LinuxSeccompAction, errno: Option<u32>, what: &str) -> Result<Action> {
        use LinuxSeccompAction as A;
        let data = |default: u32| -> Result<u32> {
            let e = errno.unwrap_or(default);
            if e > MAX_ERRNO {
                return Err(Error::Invalid(format!(
                    "{what}: errnoRet {e} is larger than {MAX_ERRNO}"
                )));
            }
            Ok(e)
        };
        let none = |a: Action| -> Result<Action> {
            match errno {
                Some(e) => Err(Error::Invalid(format!(
                    "{what}: errnoRet {e} is set for action {action}, which returns none"
                ))),
                None => Ok(a),
            }
        };
        match action {
            A::ScmpActAllow => none(Action::Allow),
            A::ScmpActLog => none(Action::Log),
            A::ScmpActTrap => none(Action::Trap),
            A::ScmpActKill | A::ScmpActKillThread => none(Action::KillThread),
            A::ScmpActKillProcess => none(Action::KillProcess),
            A::ScmpActErrno => Ok(Action::Errno(data(1)?)),
            A::ScmpActTrace => Ok(Action::Trace(data(1)?)),
            A::ScmpActNotify => Err(Error::Unsupported(format!(
                "{what}: action {action} (a seccomp agent)"
            ))),
        }
    }

    fn to_seccompiler(self) -> SeccompAction {
        match self {
            Action::Allow => SeccompAction::Allow,
            Action::Log => SeccompAction::Log,
            Action::Trace(d) => SeccompAction::Trace(d),
            Action::Errno(e) => SeccompAction::Errno(e),
            Action::Trap => SeccompAction::Trap,
            Action::KillThread => SeccompAction::KillThread,
            Action::KillProcess => SeccompAction::KillProcess,
        }
    }
}

/// The rules of one call within one filter: `None` matches always, `Some(rules)` when one of
/// the rules matches.
type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add(chains: &mut Chains, nr: i64, rule: Option<&SeccompRule>) {
    let entry = chains.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (entry.as_mut(), rule) {
        (Some(rules), Some(r)) => rules.push(r.clone()),
        (Some(_), None) => *entry = None,
        (None, _) => {}
    }
}

/// A compiled profile: BPF programs to install in order, with their `seccomp(2)` flags.
#[derive(Debug, Clone)]
pub struct Filters {
    programs: Vec<BpfProgram>,
    flags: libc::c_ulong,
}

impl Filters {
    /// The programs, in installation order.
    pub fn programs(&self) -> &[BpfProgram] {
        &self.programs
    }

    /// What the kernel would answer (`SECCOMP_RET_*` with its data) for call `nr` of this
    /// machine's architecture with `args`, evaluating every program as the kernel does.
    pub fn result(&self, nr: i64, args: [u64; 6]) -> u32 {
        let arch = match Arch::host() {
            Some(Arch::X86_64) | None => 0xc000_003e,
            Some(Arch::Aarch64) => 0xc000_00b7,
        };
        let mut data = [0u32; 16];
        let lo = |v: u64| u32::try_from(v & 0xffff_ffff).unwrap_or(0);
        let hi = |v: u64| u32::try_from(v >> 32).unwrap_or(0);
        data[0] = lo(u64::from_ne_bytes(nr.to_ne_bytes()));
        data[1] = arch;
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = lo(*a);
            data[5 + 2 * i] = hi(*a);
        }
        let mut best: Option<u32> = None;
        for p in self.programs.iter().rev() {
            let r = run(p, &data);
            if best.is_none_or(|b| severity(r) < severity(b)) {
                best = Some(r);
            }
        }
        best.unwrap_or(libc::SECCOMP_RET_ALLOW)
    }
}

/// The kernel's ordering of results: smaller is more severe (`ACTION_ONLY` compares signed).
fn severity(ret: u32) -> i32 {
    i32::from_ne_bytes((ret & libc::SECCOMP_RET_ACTION_FULL).to_ne_bytes())
}

/// A classic BPF interpreter for the instructions `seccompiler` emits.
fn run(program: &[seccompiler::sock_filter], data: &[u32; 16]) -> u32 {
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    let k = |i: &seccompiler::sock_filter| usize::try_from(i.k).unwrap_or(usize::MAX);
    while let Some(i) = program.get(pc) {
        let class = i.code & 0x07;
        pc += 1;
        match class {
            0x00 => acc = data.get(k(i) / 4).copied().unwrap_or(0), // LD W ABS
            0x04 if i.code & 0xf0 == 0x50 => acc &= i.k,            // ALU AND K
            0x05 => {
                let taken = match i.code & 0xf0 {
                    0x00 => {
                        pc = pc.saturating_add(k(i));
                        continue;
                    }
                    0x10 => acc == i.k,
                    0x20 => acc > i.k,
                    0x30 => acc >= i.k,
                    0x40 => acc & i.k != 0,
                    _ => return libc::SECCOMP_RET_KILL_PROCESS,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x06 => return i.k,
            _ => return libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
    libc::SECCOMP_RET_KILL_PROCESS
}

fn operator(op: LinuxSeccompOperator, value: u64) -> SeccompCmpOp {
    use LinuxSeccompOperator as O;
    match op {
        O::ScmpCmpNe => SeccompCmpOp::Ne,
        O::ScmpCmpLt => SeccompCmpOp::Lt,
        O::ScmpCmpLe => SeccompCmpOp::Le,
        O::ScmpCmpEq => SeccompCmpOp::Eq,
        O::ScmpCmpGe => SeccompCmpOp::Ge,
        O::ScmpCmpGt => SeccompCmpOp::Gt,
        O::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(value),
    }
}

/// The conditions on the arguments of rule `s` (named `what` in errors), `None` when it has
/// none, and whether they can never match.
fn conditions(s: &LinuxSyscall, what: &str) -> Result<(Option<SeccompRule>, bool)> {
    let mut conditions = Vec::new();
    let mut never = false;
    for a in s.args().iter().flatten() {
        let index = u8::try_from(a.index())
            .ok()
            .filter(|i| *i <= 5)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what}: argument index {} is not 0 to 5",
                    a.index()
                ))
            })?;
        let (value, op) = match a.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => {
                let want = a.value_two().unwrap_or(0);
                // libseccomp compares with valueTwo as given: bits outside the mask can
                // never be equal.
                never |= want & !a.value() != 0;
                (want, operator(a.op(), a.value()))
            }
            op => (a.value(), operator(op, 0)),
        };
        conditions.push(
            SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                .map_err(|e| Error::Invalid(format!("{what}: {e}")))?,
        );
    }
    let rule = if conditions.is_empty() {
        None
    } else {
        Some(SeccompRule::new(conditions).map_err(|e| Error::Invalid(format!("{what}: {e}")))?)
    };
    Ok((rule, never))
}

/// Compiles `profile` for this machine's architecture (see the module documentation for how
/// several actions and other architectures are handled). Errors name the system call, action
/// or field at fault.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filters> {
    let arch = Arch::host_or_err()?;
    let target = match arch {
        Arch::X86_64 => TargetArch::x86_64,
        Arch::Aarch64 => TargetArch::aarch64,
    };
    if profile.listener_path().is_some() {
        return Err(Error::Unsupported("listenerPath (a seccomp agent)".into()));
    }
    let mut flags: libc::c_ulong = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // The filter goes into a process that has a single thread, and notifications are
            // refused: these two change nothing.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync
            | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    let default = Action::from_oci(
        profile.default_action(),
        match profile.default_action() {
            LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace => {
                profile.default_errno_ret()
            }
            _ => None,
        },
        "defaultAction",
    )?;

    let mut base: Chains = BTreeMap::new();
    let mut by_action: Vec<(Action, Chains)> = Vec::new();
    for (i, s) in profile.syscalls().iter().flatten().enumerate() {
        let names = s.names().join(",");
        let what = format!("rule {i} ({names})");
        let action = Action::from_oci(s.action(), s.errno_ret(), &what)?;
        let (rule, never) = conditions(s, &what)?;
        for name in s.names() {
            let nr = match crate::syscall_number(arch, name) {
                Some(nr) => nr,
                None if crate::is_known(name) => continue,
                None => return Err(Error::UnknownSyscall(name.clone())),
            };
            if never {
                continue;
            }
            add(&mut base, nr, rule.as_ref());
            if action != Action::Allow {
                let at = match by_action.iter().position(|(a, _)| *a == action) {
                    Some(at) => at,
                    None => {
                        by_action.push((action, BTreeMap::new()));
                        by_action.len() - 1
                    }
                };
                if let Some((_, chains)) = by_action.get_mut(at) {
                    add(chains, nr, rule.as_ref());
                }
            }
        }
    }

    let build = |chains: Chains, mismatch: Action, matched: Action| -> Result<BpfProgram> {
        let rules = chains
            .into_iter()
            .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
            .collect();
        let filter = SeccompFilter::new(
            rules,
            mismatch.to_seccompiler(),
            matched.to_seccompiler(),
            target,
        )
        .and_then(BpfProgram::try_from)
        .map_err(|e| Error::Invalid(format!("compile: {e}")))?;
        Ok(filter)
    };
    let mut programs = Vec::new();
    if arch == Arch::X86_64 && (default != Action::Allow || !by_action.is_empty()) {
        programs.push(x32_guard());
    }
    if default != Action::Allow {
        programs.push(build(base, default, Action::Allow)?);
    }
    for (action, chains) in by_action.into_iter().rev() {
        programs.push(build(chains, Action::Allow, action)?);
    }
    Ok(Filters { programs, flags })
}

/// On x86_64: kills x32 calls (`nr >= __X32_SYSCALL_BIT`); anything else is left to the other
/// filters (which kill other architectures).
fn x32_guard() -> BpfProgram {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code: u16, jt: u8, jf: u8, k: u32| seccompiler::sock_filter { code, jt, jf, k };
    let (ld_abs, jeq, jge, ret) = (0x20, 0x15, 0x35, 0x06);
    vec![
        op(ld_abs, 0, 0, 4), // arch
        op(jeq, 1, 0, AUDIT_ARCH_X86_64),
        op(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
        op(ld_abs, 0, 0, 0), // nr
        op(jge, 0, 1, X32_SYSCALL_BIT),
        op(ret, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs `filters` in the calling thread, in order. The thread needs `no_new_privs` set or
/// `CAP_SYS_ADMIN` in its effective set. Filters cannot be removed; a failure half way leaves
/// the programs installed so far in place (the caller must not go on to run anything).
pub fn install(filters: &Filters) -> Result<()> {
    let count = filters.programs.len();
    for (index, p) in filters.programs.iter().enumerate() {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len()).map_err(|_| Error::Install {
                index,
                count,
                source: std::io::Error::from_raw_os_error(libc::E2BIG),
            })?,
            // seccompiler's sock_filter has the kernel's layout (#[repr(C)], as libc's).
            filter: p.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: prog points to `len` valid instructions that outlive the call; the kernel
        // copies the program before returning.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                filters.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Error::Install {
                index: index + 1,
                count,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Whether `profile` lets call `name` through (ALLOW or LOG) whatever its arguments: no rule
/// with another action names it, and a rule without conditions allows it or the default action
/// does. The runtime checks `capset` and `execve` with it: it needs both after installing.
pub fn allows_unconditionally(profile: &LinuxSeccomp, name: &str) -> bool {
    let lets_through = |a: LinuxSeccompAction| {
        matches!(
            a,
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        )
    };
    let rules: Vec<_> = profile
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.names().iter().any(|n| n == name))
        .collect();
    if rules.iter().any(|s| !lets_through(s.action())) {
        return false;
    }
    lets_through(profile.default_action())
        || rules
            .iter()
            .any(|s| s.args().as_ref().is_none_or(|a| a.is_empty()))
}
