//! Device access rules on cgroup v2: the unified hierarchy has no `devices` controller, the
//! kernel asks a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup instead. This
//! module turns the container's rules into such a program (hand-assembled eBPF, no helpers),
//! loads it with `bpf(2)` and attaches it to the cgroup's directory, `BPF_F_ALLOW_MULTI` so
//! programs of the ancestors still apply; a program attached before by us is replaced.
//!
//! Semantics are those of the v1 `devices.allow`/`devices.deny` files written in order: the
//! last rule that matches an access decides it, and an access no rule matches is allowed (a
//! new v1 cgroup allows everything until an `a` rule denies it). So the program tests the rules
//! from the last to the first and returns the verdict of the first match. An allow rule
//! matches when it grants every requested access (`r`, `w`, `m`), a deny rule when it refuses
//! any of them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::LinuxDeviceCgroup;

use crate::error::{Error, Result};

/// Device type numbers of `struct bpf_cgroup_dev_ctx.access_type` (low 16 bits).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// Access bits of `access_type` (high 16 bits).
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One device rule: `kind` `None` is every type, `major`/`minor` `None` every number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    pub kind: Option<char>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

fn access_bits(access: &str) -> Result<u32> {
    access.chars().try_fold(0, |bits, c| {
        Ok(bits
            | match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => {
                    return Err(Error::InvalidSpec(format!(
                        "device rule access {access:?}: expected letters of \"rwm\""
                    )));
                }
            })
    })
}

impl Rule {
    /// A rule of the OCI spec; `None` for a type the device cgroup does not check (`p`).
    pub(crate) fn from_spec(r: &LinuxDeviceCgroup) -> Result<Option<Rule>> {
        let kind = match r.typ().map(|t| t.as_str().to_string()).as_deref() {
            None | Some("a") => None,
            Some("b") => Some('b'),
            Some("c" | "u") => Some('c'),
            Some(_) => return Ok(None),
        };
        let num = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
        Ok(Some(Rule {
            allow: r.allow(),
            kind,
            major: num(r.major()),
            minor: num(r.minor()),
            access: access_bits(r.access().as_deref().unwrap_or("rwm"))?,
        }))
    }

    /// An allow rule in the v1 file syntax: `c 1:3 rwm`, `b *:* m`, `a`.
    pub(crate) fn parse_allow(line: &str) -> Result<Rule> {
        let bad = || Error::InvalidSpec(format!("device rule {line:?}"));
        let mut parts = line.split_whitespace();
        let kind = match parts.next() {
            Some("a") => return Ok(Rule::all(true)),
            Some("b") => 'b',
            Some("c") => 'c',
            _ => return Err(bad()),
        };
        let (major, minor) = parts
            .next()
            .and_then(|n| n.split_once(':'))
            .ok_or_else(bad)?;
        let num = |n: &str| -> Result<Option<u32>> {
            if n == "*" {
                Ok(None)
            } else {
                n.parse().map(Some).map_err(|_| bad())
            }
        };
        Ok(Rule {
            allow: true,
            kind: Some(kind),
            major: num(major)?,
            minor: num(minor)?,
            access: access_bits(parts.next().unwrap_or("rwm"))?,
        })
    }

    fn all(allow: bool) -> Rule {
        Rule {
            allow,
            kind: None,
            major: None,
            minor: None,
            access: ACC_ALL,
        }
    }

    /// Whether the rule matches every access, so nothing after it in the program is reached.
    fn is_total(&self) -> bool {
        self.kind.is_none()
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `struct bpf_insn`'s register nibbles: the destination is the low one on little-endian
/// targets, the high one on big-endian ones (C bit-field order).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | (dst & 0xf)
    } else {
        (dst << 4) | (src & 0xf)
    };
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

// Opcodes: class | operation | source.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers: r1 the context; r2 the access bits, r3 the device type, r4 major, r5 minor,
// r6 scratch, r0 the verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

/// A conditional jump to the end of the block it is in, its offset filled in later.
const SKIP: i16 = i16::MIN;

fn verdict(allow: bool) -> [Insn; 2] {
    [
        insn(MOV64_K, R0, 0, 0, i32::from(allow)),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The program for `rules` (in v1 order).
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(MOV64_X, R3, R2, 0, 0),
        insn(ALU32_AND_K, R3, 0, 0, 0xffff),
        insn(ALU32_RSH_K, R2, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        if rule.is_total() {
            prog.extend(verdict(rule.allow));
            return prog;
        }
        let mut block = Vec::new();
        if let Some(kind) = rule.kind {
            let t = if kind == 'b' { DEV_BLOCK } else { DEV_CHAR };
            block.push(insn(JNE_K, R3, 0, SKIP, t));
        }
        if rule.access != ACC_ALL {
            block.push(insn(MOV64_X, R6, R2, 0, 0));
            if rule.allow {
                // Some requested access the rule does not grant: not this rule.
                let missing = (!rule.access & ACC_ALL) as i32;
                block.push(insn(ALU64_AND_K, R6, 0, 0, missing));
                block.push(insn(JNE_K, R6, 0, SKIP, 0));
            } else {
                // No requested access the rule refuses: not this rule.
                block.push(insn(ALU64_AND_K, R6, 0, 0, rule.access as i32));
                block.push(insn(JEQ_K, R6, 0, SKIP, 0));
            }
        }
        if let Some(major) = rule.major {
            block.push(insn(JNE_K, R4, 0, SKIP, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(insn(JNE_K, R5, 0, SKIP, minor as i32));
        }
        block.extend(verdict(rule.allow));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.off == SKIP {
                ins.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
        }
        prog.extend(block);
    }
    // No rule matched: allowed, as in a v1 cgroup without an `a` rule.
    prog.extend(verdict(true));
    prog
}

/// `bpf(2)` with `attr` (a `#[repr(C)]` prefix of `union bpf_attr`; the kernel reads the
/// rest as zero).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> nix::Result<libc::c_long> {
    // SAFETY: attr is a live, initialised value of the size passed; the kernel writes at most
    // that many bytes back.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            libc::c_uint::try_from(std::mem::size_of::<T>()).unwrap_or(libc::c_uint::MAX),
        )
    };
    Errno::result(ret)
}

fn owned(ret: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(|_| Errno::EBADF)?;
    // SAFETY: bpf(2) returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct Attach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct Query {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdById {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Loads `insns` as a cgroup device program; a refusal by the verifier carries its log.
pub(crate) fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"strata_device");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr).and_then(owned) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            // Load again with the verifier's log to say why.
            let mut log = vec![0u8; 1 << 16];
            attr.log_level = 1;
            attr.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr).and_then(owned);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(Error::sys(
                "load",
                format!(
                    "device cgroup program ({} instructions): {}",
                    insns.len(),
                    text.trim()
                ),
                e,
            ))
        }
    }
}

/// The ids of the device programs attached to the cgroup `cg` itself.
fn attached(cg: &OwnedFd) -> nix::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = Query {
        target_fd: cg.as_raw_fd().cast_unsigned(),
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(ids.len()).unwrap_or(0),
        ..Query::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Enforces `rules` (v1 order) on the v2 cgroup directory `dir`: attaches their program and
/// detaches the device programs attached to it before.
pub(crate) fn apply(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(&program(rules))?;
    let cg = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys("open cgroup", dir.display().to_string(), e))?;
    let what = || dir.display().to_string();
    let before = attached(&cg).map_err(|e| Error::sys("query device programs of", what(), e))?;
    let mut attr = Attach {
        target_fd: cg.as_raw_fd().cast_unsigned(),
        attach_bpf_fd: prog.as_raw_fd().cast_unsigned(),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Attach::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| Error::sys("attach device program to", what(), e))?;
    for id in before {
        let mut get = GetFdById {
            prog_id: id,
            ..GetFdById::default()
        };
        let old = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get).and_then(owned) {
            Ok(fd) => fd,
            // Detached meanwhile.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::sys("open device program of", what(), e)),
        };
        let mut attr = Attach {
            target_fd: cg.as_raw_fd().cast_unsigned(),
            attach_bpf_fd: old.as_raw_fd().cast_unsigned(),
            attach_type: BPF_CGROUP_DEVICE,
            ..Attach::default()
        };
        match bpf(BPF_PROG_DETACH, &mut attr) {
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::sys("detach device program from", what(), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        assert_eq!(
            Rule::parse_allow("c 136:* rwm").expect("parse"),
            Rule {
                allow: true,
                kind: Some('c'),
                major: Some(136),
                minor: None,
                access: ACC_ALL
            }
        );
        assert_eq!(
            Rule::parse_allow("b *:* m").expect("parse").access,
            ACC_MKNOD
        );
        assert!(Rule::parse_allow("x 1:2 r").is_err());
        assert!(Rule::parse_allow("c 1:2 rq").is_err());
    }

    #[test]
    fn a_total_rule_ends_the_program() {
        // deny all, then allow c 1:3: the allow is tested first, the deny ends the program.
        let rules = [
            Rule::all(false),
            Rule::parse_allow("c 1:3 rwm").expect("parse"),
        ];
        let p = program(&rules);
        let last = p.len() - 1;
        assert_eq!(p[last].code, EXIT);
        assert_eq!(p[last - 1].code, MOV64_K);
        assert_eq!(p[last - 1].imm, 0);
        // The allow block: type, major, minor checks, then the verdict 1.
        assert_eq!(p[6].code, JNE_K);
        assert_eq!(p[6].imm, DEV_CHAR);
        assert_eq!(p[6].off, 4);
        assert_eq!(p[9].imm, 1);
        // Without a total rule the program ends allowing.
        let p = program(&rules[1..]);
        assert_eq!(p[p.len() - 2].imm, 1);
    }

    /// A process in a v2 cgroup with the program attached gets exactly the accesses the rules
    /// grant: partial grants, a later deny of one access, the deny-all default.
    #[test]
    fn the_kernel_enforces_the_rules_on_a_v2_cgroup() {
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|p| {
                nix::sys::statfs::statfs(*p)
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            })
            .expect("a cgroup2 mount");
        let dir = root.join(format!("strata-test-bpf-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create cgroup");
        let rules = [
            Rule::all(false),
            Rule::parse_allow("c 1:3 r").expect("parse"),
            Rule::parse_allow("c 1:5 rwm").expect("parse"),
            Rule {
                allow: false,
                kind: Some('c'),
                major: Some(1),
                minor: Some(5),
                access: ACC_WRITE,
            },
        ];
        apply(&dir, &rules).expect("apply");
        // Applying again replaces the program rather than adding one.
        apply(&dir, &rules).expect("apply again");
        let cg = nix::fcntl::open(&dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .expect("open cgroup");
        assert_eq!(attached(&cg).expect("query").len(), 1);

        // (path, flags) the child tries; bit i of its exit code is set when attempt i opened.
        let tries: [(&std::ffi::CStr, i32); 6] = [
            (c"/dev/null", libc::O_RDONLY),
            (c"/dev/null", libc::O_WRONLY),
            (c"/dev/zero", libc::O_RDONLY),
            (c"/dev/zero", libc::O_WRONLY),
            (c"/dev/zero", libc::O_RDWR),
            (c"/dev/full", libc::O_RDONLY),
        ];
        let (go_r, go_w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child only calls async-signal-safe functions (read, open, close, _exit).
        let child = match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let mut byte = 0u8;
                // SAFETY: byte is a valid one-byte buffer; go_r is open.
                unsafe { libc::read(go_r.as_raw_fd(), (&raw mut byte).cast(), 1) };
                let mut opened = 0;
                for (i, (path, flags)) in tries.iter().enumerate() {
                    // SAFETY: path is a valid C string.
                    let fd = unsafe { libc::open(path.as_ptr(), *flags) };
                    if fd >= 0 {
                        opened |= 1 << i;
                        // SAFETY: fd was just opened by this process.
                        unsafe { libc::close(fd) };
                    }
                }
                // SAFETY: ends the forked child without running the test harness's code.
                unsafe { libc::_exit(opened) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        std::fs::write(dir.join("cgroup.procs"), child.to_string()).expect("move child");
        nix::unistd::write(&go_w, &[1]).expect("release child");
        let status = nix::sys::wait::waitpid(child, None).expect("wait");
        let _ = std::fs::remove_dir(&dir);
        let nix::sys::wait::WaitStatus::Exited(_, opened) = status else {
            panic!("child: {status:?}");
        };
        // null: read only; zero: read, not write; full: nothing.
        assert_eq!(opened, 0b000101, "opened {opened:06b}");
    }

    /// The kernel's verifier accepts the program of the default rules.
    #[test]
    fn the_kernel_loads_the_default_program() {
        let mut rules = vec![Rule::all(false)];
        for r in crate::resources::DEFAULT_DEVICE_RULES {
            rules.push(Rule::parse_allow(r).expect("parse"));
        }
        rules.push(Rule {
            allow: false,
            kind: Some('b'),
            major: Some(8),
            minor: None,
            access: ACC_WRITE,
        });
        load(&program(&rules)).expect("load");
    }
}
