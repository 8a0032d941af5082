//! What strata's default seccomp profile costs, measured where it is paid, without the noise of
//! a whole container start: compiling it (the built-in runtime does at every create), and each
//! system call made under it (a forked child calls getppid in a loop, with and without the
//! filter installed; the difference per call times the calls a process makes is what it adds).

use anyhow::Context as _;
use clap::Parser;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Compilations timed (the median is printed)
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// System calls per timed loop
    #[arg(long, default_value_t = 200_000)]
    calls: u32,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per getppid() in a forked child, with the filter installed first or not.
fn per_call(filters: Option<&strata_seccomp::Filters>, calls: u32) -> anyhow::Result<f64> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid two-int array for pipe() to fill.
    anyhow::ensure!(unsafe { libc::pipe(fds.as_mut_ptr()) } == 0, "pipe");
    // SAFETY: the child only installs a filter, makes system calls, writes to the pipe and
    // _exits; it touches no lock the parent's other threads could hold (there are none).
    let pid = unsafe { libc::fork() };
    anyhow::ensure!(pid >= 0, "fork");
    if pid == 0 {
        if let Some(f) = filters {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if strata_seccomp::install(f).is_err() {
                // SAFETY: _exit ends the child without running the parent's destructors.
                unsafe { libc::_exit(2) };
            }
        }
        let t = Instant::now();
        for _ in 0..calls {
            // SAFETY: getppid has no arguments and cannot fail.
            unsafe { libc::getppid() };
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(calls);
        let bytes = ns.to_le_bytes();
        // SAFETY: bytes is a valid 8-byte buffer; fds[1] is the pipe's write end.
        unsafe { libc::write(fds[1], bytes.as_ptr().cast(), bytes.len()) };
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: fds[1] is ours to close.
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 8];
    // SAFETY: buf is a valid 8-byte buffer; fds[0] is the pipe's read end.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid int.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
    }
    anyhow::ensure!(n == 8, "the child reported nothing (status {status})");
    Ok(f64::from_le_bytes(buf))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let caps: Vec<strata_runtime::oci_spec::runtime::Capability> =
        strata_runtime::DEFAULT_CAPABILITIES.to_vec();
    let profile = strata_seccomp::default_profile(&caps);
    let mut compile = Vec::new();
    let mut filters = None;
    for _ in 0..a.rounds {
        let t = Instant::now();
        filters = Some(strata_seccomp::compile(&profile).context("compiling")?);
        compile.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let filters = filters.context("no rounds")?;
    let mut plain = Vec::new();
    let mut filtered = Vec::new();
    for _ in 0..5 {
        plain.push(per_call(None, a.calls)?);
        filtered.push(per_call(Some(&filters), a.calls)?);
    }
    let (plain, filtered) = (median(plain), median(filtered));
    println!("compile_ms {:.3}", median(compile));
    println!("syscall_ns_plain {plain:.1}");
    println!("syscall_ns_filtered {filtered:.1}");
    println!("syscall_ns_added {:.1}", filtered - plain);
    Ok(())
}
