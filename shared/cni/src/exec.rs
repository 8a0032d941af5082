//! Running one plugin: its environment, its stdin, a timeout and bounded output.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::RuntimeConf;
use crate::error::{Error, Result};

/// The most of a plugin's stdout read (a result or an error object).
const MAX_STDOUT: u64 = 4 << 20;
/// The most of a plugin's stderr kept for the log.
const MAX_STDERR: u64 = 64 << 10;
/// What plugins that call tools (iptables, ip, sysctl) find on their PATH.
const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of a plugin call: the CNI variables and a PATH, nothing of the caller's.
pub(crate) fn env(command: &str, rt: &RuntimeConf, dirs: &[PathBuf]) -> Vec<(String, String)> {
    let cni_path = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let args = rt
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let mut env = vec![
        ("CNI_COMMAND".to_owned(), command.to_owned()),
        ("CNI_PATH".to_owned(), cni_path),
        ("PATH".to_owned(), PLUGIN_PATH.to_owned()),
    ];
    if command != "VERSION" {
        env.push(("CNI_CONTAINERID".to_owned(), rt.container_id.clone()));
        env.push(("CNI_NETNS".to_owned(), rt.netns.display().to_string()));
        env.push(("CNI_IFNAME".to_owned(), rt.ifname.clone()));
        env.push(("CNI_ARGS".to_owned(), args));
    }
    env
}

/// Runs plugin `path` (of type `typ`) for `command` with `stdin`; its parsed stdout, `None`
/// when it printed nothing (DEL and CHECK need not).
pub(crate) async fn run(
    path: &Path,
    typ: &str,
    command: &str,
    env: &[(String, String)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Option<Value>> {
    let mut child = tokio::process::Command::new(path)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io("running CNI plugin", path, e))?;
    let input = stdin.to_vec();
    let mut child_stdin = child.stdin.take();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let talk = async {
        let write = async {
            if let Some(mut s) = child_stdin.take() {
                // A plugin may exit without reading all of it; its answer says what happened.
                let _ = s.write_all(&input).await;
            }
        };
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(o) = out.as_mut() {
                let _ = o.take(MAX_STDOUT + 1).read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.take(MAX_STDERR).read_to_end(&mut buf).await;
            }
            buf
        };
        let ((), stdout, stderr) = tokio::join!(write, read_out, read_err);
        let status = child.wait().await;
        (stdout, stderr, status)
    };
    let (stdout, stderr, status) =
        tokio::time::timeout(timeout, talk)
            .await
            .map_err(|_| Error::Timeout {
                plugin: typ.to_owned(),
                command: command.to_owned(),
                seconds: timeout.as_secs(),
            })?;
    let status = status.map_err(|e| Error::io("waiting for CNI plugin", path, e))?;
    if !stderr.is_empty() {
        tracing::debug!(
            plugin = typ,
            command,
            "stderr: {}",
            String::from_utf8_lossy(&stderr)
        );
    }
    if stdout.len() as u64 > MAX_STDOUT {
        return Err(Error::BadResult {
            plugin: typ.to_owned(),
            message: format!("more than {MAX_STDOUT} bytes of output"),
        });
    }
    let parsed = if stdout.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice::<Value>(&stdout))
    };
    if !status.success() {
        return Err(plugin_error(typ, command, parsed, &stderr, status));
    }
    match parsed {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(e)) => Err(Error::BadResult {
            plugin: typ.to_owned(),
            message: format!("not JSON: {e}"),
        }),
    }
}

/// The error of a plugin that failed: the CNI error object it printed (`parsed`), else its
/// stderr, else its exit status.
fn plugin_error(
    typ: &str,
    command: &str,
    parsed: Option<serde_json::Result<Value>>,
    stderr: &[u8],
    status: std::process::ExitStatus,
) -> Error {
    // The CNI error object: {"code": N, "msg": "...", "details": "..."}.
    let (code, msg, details) = match parsed {
        Some(Ok(v)) => (
            v["code"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            v["msg"].as_str().unwrap_or("").to_owned(),
            v["details"].as_str().unwrap_or("").to_owned(),
        ),
        _ => (0, String::new(), String::new()),
    };
    let msg = if msg.is_empty() {
        let text = String::from_utf8_lossy(stderr).trim().to_owned();
        if text.is_empty() {
            format!("exited with {status}")
        } else {
            text
        }
    } else {
        msg
    };
    Error::Plugin {
        plugin: typ.to_owned(),
        command: command.to_owned(),
        code,
        msg,
        details,
    }
}
