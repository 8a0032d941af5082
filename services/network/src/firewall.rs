//! Rules strata adds beside the CNI plugins', in chains of its own (`STRATA-FORWARD`, jumped to
//! first from FORWARD, and `STRATA-INPUT`, from INPUT), per bridge:
//! - connections the portmap plugin redirected (conntrack state DNAT) into the bridge are
//!   accepted, so published ports answer other hosts when another tool (Docker does) set the
//!   FORWARD policy to DROP; the firewall plugin accepts only the containers' own traffic and
//!   replies to it;
//! - packets from the bridge to 127.0.0.0/8 that are not replies are dropped: portmap sets
//!   `route_localnet` on the bridge so that 127.0.0.1 can be published, which would otherwise
//!   let a container reach the host's loopback-only services (CVE-2020-8558).

use strata_core::{Error, Result};

const FORWARD_CHAIN: &str = "STRATA-FORWARD";
const INPUT_CHAIN: &str = "STRATA-INPUT";

async fn iptables(args: &[&str]) -> std::io::Result<std::process::Output> {
    tokio::process::Command::new("iptables")
        .arg("-w")
        .args(args)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .await
}

async fn ensure_rule(chain: &str, position: Option<&str>, rule: &[&str]) -> Result<()> {
    let check: Vec<&str> = ["-C", chain]
        .into_iter()
        .chain(rule.iter().copied())
        .collect();
    if iptables(&check).await.is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    let add: Vec<&str> = match position {
        Some(p) => ["-I", chain, p]
            .into_iter()
            .chain(rule.iter().copied())
            .collect(),
        None => ["-A", chain]
            .into_iter()
            .chain(rule.iter().copied())
            .collect(),
    };
    let out = iptables(&add).await.map_err(|e| {
        Error::failed_precondition(format!("running iptables: {e} (install iptables)"))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "iptables {}: {}",
            add.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

async fn ensure_chain(chain: &str, from: &str) -> Result<()> {
    // Made by whichever caller comes first; "already exists" is fine.
    let _ = iptables(&["-N", chain]).await;
    ensure_rule(from, Some("1"), &["-j", chain]).await
}

fn forward_rule(bridge: &str) -> [&str; 10] {
    [
        "-o",
        bridge,
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "-m",
        "comment",
        "--comment",
        "strata: published ports",
    ]
}

fn input_rule(bridge: &str) -> [&str; 14] {
    [
        "-i",
        bridge,
        "-d",
        "127.0.0.0/8",
        "!",
        "-s",
        "127.0.0.0/8",
        "-m",
        "conntrack",
        "!",
        "--ctstate",
        "RELATED,ESTABLISHED,DNAT",
        "-j",
        "DROP",
    ]
}

/// Adds the rules of `bridge` (idempotent).
pub async fn ensure(bridge: &str) -> Result<()> {
    ensure_chain(FORWARD_CHAIN, "FORWARD").await?;
    ensure_chain(INPUT_CHAIN, "INPUT").await?;
    let mut fwd: Vec<&str> = forward_rule(bridge).to_vec();
    fwd.extend(["-j", "ACCEPT"]);
    ensure_rule(FORWARD_CHAIN, None, &fwd).await?;
    ensure_rule(INPUT_CHAIN, None, &input_rule(bridge)).await
}

/// Removes the rules of `bridge` (gone already is fine).
pub async fn remove(bridge: &str) {
    let mut fwd: Vec<&str> = vec!["-D", FORWARD_CHAIN];
    fwd.extend(forward_rule(bridge));
    fwd.extend(["-j", "ACCEPT"]);
    let _ = iptables(&fwd).await;
    let mut inp: Vec<&str> = vec!["-D", INPUT_CHAIN];
    inp.extend(input_rule(bridge));
    let _ = iptables(&inp).await;
}
