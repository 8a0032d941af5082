//! strata-shim: the supervisor of one container, like containerd's shim.
//!
//! `strata-shim --id ID --bundle DIR --state DIR [--runtime builtin|runc|crun|PATH]
//!  [--log PATH] [--stdin PATH] [--stdout PATH] [--stderr PATH]`
//!
//! It detaches into its own session, becomes the subreaper of what the container leaves
//! behind, creates the container, answers on `<state>/shim.sock` (see `strata_shim_protocol`), reaps the
//! container's processes and records init's exit status in `<state>/exit` (written to a
//! temporary file, fsynced and renamed), so a restarted tasks service finds every container
//! again and learns its true exit code. The container's output is appended to the framed log
//! (`--log`, default `<state>/log`; records tell stdout from stderr, see
//! `strata_core::logfile`) and copied to the stdout/stderr paths (FIFOs, as containerd clients
//! give) when given; an exec'd process's to `<state>/exec-<id>.log`. When the process asks for a
//! terminal (`process.terminal`), the supervisor holds the pty master: its output goes to the
//! log as stdout and to the stdout path, the stdin path feeds it. An exit is told (wait, state)
//! only once the process's output has reached the log. It prints `ready <pid>` on stdout once
//! the socket accepts, then closes stdout.

mod runtime;
mod supervisor;

use std::path::PathBuf;

#[derive(Debug, Default)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub state: PathBuf,
    pub runtime: String,
    /// The container's framed log; `<state>/log` when not given.
    pub log: Option<PathBuf>,
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        runtime: "builtin".into(),
        ..Default::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--id" => a.id = value()?,
            "--bundle" => a.bundle = value()?.into(),
            "--state" => a.state = value()?.into(),
            "--runtime" => a.runtime = value()?,
            "--log" => a.log = Some(value()?.into()),
            "--stdin" => a.stdin = Some(value()?.into()),
            "--stdout" => a.stdout = Some(value()?.into()),
            "--stderr" => a.stderr = Some(value()?.into()),
            "--version" => {
                println!("strata-shim {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.id.is_empty() || a.bundle.as_os_str().is_empty() || a.state.as_os_str().is_empty() {
        return Err("--id, --bundle and --state are required".into());
    }
    Ok(a)
}

fn main() {
    // One malloc arena for all threads: a supervisor allocates little, and every arena a
    // thread would otherwise get costs resident memory in each container's supervisor.
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // Started from a sealed in-memory copy of this binary (see strata-tasks' shim_exe), the
    // process would be named after the descriptor it was exec'd by: keep the binary's name,
    // which `ps`, `pgrep` and the benchmarks look for.
    // SAFETY: PR_SET_NAME copies at most 16 bytes from the NUL-terminated string, a static.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"strata-shim".as_ptr(), 0, 0, 0);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("strata-shim: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = supervisor::run(args) {
        eprintln!("strata-shim: {e}");
        std::process::exit(1);
    }
}
