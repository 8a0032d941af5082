//! A network's own rules, set once when the network is made (or the service starts), in chains
//! of strata's: `STRATA-FORWARD` (jumped to first from FORWARD), `STRATA-INPUT` (from INPUT) and,
//! in the nat table, `STRATA-POSTROUTING` (from POSTROUTING). Per bridge:
//! - FORWARD: traffic between the bridge's containers, connections the portmap plugin redirected
//!   into it (conntrack state DNAT: published ports), replies to its containers' connections and
//!   everything its containers send out are accepted; anything else into the bridge is dropped
//!   (no reaching a container's address from another host or another network but through a
//!   published port, as Docker 28's default). Accepting explicitly keeps traffic flowing when
//!   another tool (Docker does) set the FORWARD policy to DROP.
//! - INPUT: packets from the bridge to 127.0.0.0/8 that are not replies are dropped: portmap
//!   sets `route_localnet` on the bridge so that 127.0.0.1 can be published, which would
//!   otherwise let a container reach the host's loopback-only services (CVE-2020-8558).
//! - nat: what the subnet sends out of any other interface is masqueraded (outbound NAT).
//!
//! Per network rather than per container (the bridge plugin's ipMasq, the firewall plugin):
//! nothing to add or remove at each container start and stop, and nothing a crash can leak.

use strata_core::{Error, Result};

const FORWARD_CHAIN: &str = "STRATA-FORWARD";
/// Jumped to right after `STRATA-FORWARD`: what containers send out, accepted only once no
/// network's rule has dropped it (a container of one network cannot reach into another).
const OUT_CHAIN: &str = "STRATA-FORWARD-OUT";
const INPUT_CHAIN: &str = "STRATA-INPUT";
const NAT_CHAIN: &str = "STRATA-POSTROUTING";

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

/// (table, chain, rule) of every rule of one bridge, in order.
fn rules(bridge: &str, subnet: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let tag = format!("-m comment --comment strata-{bridge}");
    let rule = |table: &'static str, chain: &'static str, text: String| {
        (
            table,
            chain,
            text.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    };
    vec![
        rule(
            "filter",
            FORWARD_CHAIN,
            format!("-i {bridge} -o {bridge} {tag} -j ACCEPT"),
        ),
        rule(
            "filter",
            FORWARD_CHAIN,
            format!("-o {bridge} -m conntrack --ctstate DNAT {tag} -j ACCEPT"),
        ),
        rule(
            "filter",
            FORWARD_CHAIN,
            format!("-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"),
        ),
        rule(
            "filter",
            FORWARD_CHAIN,
            format!("-o {bridge} {tag} -j DROP"),
        ),
        rule("filter", OUT_CHAIN, format!("-i {bridge} {tag} -j ACCEPT")),
        rule(
            "filter",
            INPUT_CHAIN,
            format!(
                "-i {bridge} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate \
                 RELATED,ESTABLISHED,DNAT {tag} -j DROP"
            ),
        ),
        rule(
            "nat",
            NAT_CHAIN,
            format!("-s {subnet} ! -o {bridge} {tag} -j MASQUERADE"),
        ),
    ]
}

async fn run_checked(args: &[&str]) -> Result<()> {
    let out = iptables(args).await.map_err(|e| {
        Error::failed_precondition(format!("running iptables: {e} (install iptables)"))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

async fn exists(table: &str, chain: &str, rule: &[String]) -> bool {
    let mut args = vec!["-t", table, "-C", chain];
    args.extend(rule.iter().map(String::as_str));
    iptables(&args).await.is_ok_and(|o| o.status.success())
}

async fn ensure_chain(table: &str, chain: &str, from: &str) -> Result<()> {
    // Made by whichever caller comes first; "already exists" is fine.
    let _ = iptables(&["-t", table, "-N", chain]).await;
    let jump = vec!["-j".to_owned(), chain.to_owned()];
    if !exists(table, from, &jump).await {
        run_checked(&["-t", table, "-I", from, "1", "-j", chain]).await?;
    }
    Ok(())
}

/// Adds the rules of the network on `bridge` with `subnet` (idempotent: rules present are
/// left, missing ones appended in order).
pub async fn ensure(bridge: &str, subnet: &str) -> Result<()> {
    let _ = iptables(&["-t", "filter", "-N", FORWARD_CHAIN]).await;
    let _ = iptables(&["-t", "filter", "-N", OUT_CHAIN]).await;
    let (first, then) = (
        vec!["-j".to_owned(), FORWARD_CHAIN.to_owned()],
        vec!["-j".to_owned(), OUT_CHAIN.to_owned()],
    );
    if !exists("filter", "FORWARD", &first).await || !exists("filter", "FORWARD", &then).await {
        // Both jumps first in FORWARD, in this order.
        for jump in [FORWARD_CHAIN, OUT_CHAIN] {
            while iptables(&["-t", "filter", "-D", "FORWARD", "-j", jump])
                .await
                .is_ok_and(|o| o.status.success())
            {}
        }
        run_checked(&["-t", "filter", "-I", "FORWARD", "1", "-j", OUT_CHAIN]).await?;
        run_checked(&["-t", "filter", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN]).await?;
    }
    ensure_chain("filter", INPUT_CHAIN, "INPUT").await?;
    ensure_chain("nat", NAT_CHAIN, "POSTROUTING").await?;
    // A partial set (a crash while adding) is removed and added whole: order matters.
    let all = rules(bridge, subnet);
    let mut present = 0;
    for (table, chain, rule) in &all {
        if exists(table, chain, rule).await {
            present += 1;
        }
    }
    if present == all.len() {
        return Ok(());
    }
    remove(bridge, subnet).await;
    for (table, chain, rule) in &all {
        let mut args = vec!["-t", table, "-A", chain];
        args.extend(rule.iter().map(String::as_str));
        run_checked(&args).await?;
    }
    Ok(())
}

/// Removes the rules of the network on `bridge` (gone already is fine).
pub async fn remove(bridge: &str, subnet: &str) {
    for (table, chain, rule) in rules(bridge, subnet) {
        let mut args = vec!["-t", table, "-D", chain];
        args.extend(rule.iter().map(String::as_str));
        while iptables(&args).await.is_ok_and(|o| o.status.success()) {}
    }
}
