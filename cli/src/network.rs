//! `strata network …`, `strata port` and the `-p` syntax: networks and published ports,
//! through the network service behind the gateway (strata.network.v1).

use crate::Ctx;
use anyhow::Context as _;
use strata_api::strata::network::v1 as npb;
use strata_api::strata::network::v1::networks_client::NetworksClient;
use tonic::transport::Channel;

/// `strata network` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network whose containers resolve each other by name
    Create {
        /// CIDR, e.g. 10.213.5.0/24 [default: a free /24]
        #[arg(long)]
        subnet: Option<String>,
        /// Set a label: KEY=VALUE
        #[arg(long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
        /// Only names
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show networks as JSON
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a running or created container to one more network
    Connect {
        /// Another name for the container on that network
        #[arg(long = "alias")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network it was connected to
    Disconnect { network: String, container: String },
    /// Remove networks (refused while a container is attached)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Parses Docker's `-p`: `[IP:][HOST:]CONTAINER[/PROTO]`; no host port (or an empty one, as in
/// `IP::80`) takes a free one.
pub fn parse_publish(s: &str) -> anyhow::Result<npb::PortMapping> {
    let bad = |why: &str| anyhow::anyhow!("invalid port {s:?}: {why}");
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) if p == "tcp" || p == "udp" => (a, p),
        Some((_, p)) => return Err(bad(&format!("protocol {p:?} is not tcp or udp"))),
        None => (s, "tcp"),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(bad("expected [IP:][HOST:]CONTAINER[/PROTO]")),
    };
    let port = |what: &str, p: &str| -> anyhow::Result<u32> {
        if p.contains('-') {
            return Err(bad("port ranges are not supported"));
        }
        let n: u32 = p
            .parse()
            .map_err(|_| bad(&format!("{what} {p:?} is not a number")))?;
        if !(1..=65535).contains(&n) {
            return Err(bad(&format!("{what} {n} is out of range (1-65535)")));
        }
        Ok(n)
    };
    Ok(npb::PortMapping {
        host_ip: ip.to_owned(),
        host_port: if host.is_empty() {
            0
        } else {
            port("host port", host)?
        },
        container_port: port("container port", container)?,
        protocol: proto.to_owned(),
    })
}

fn labels(list: &[String]) -> std::collections::HashMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn network_json(n: &npb::Network) -> serde_json::Value {
    serde_json::json!({
        "Name": n.name,
        "Driver": n.driver,
        "Default": n.default,
        "Bridge": n.bridge,
        "IPAM": {"Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
        "NameResolution": n.names,
        "Labels": n.labels,
        "Created": n.created_at.as_ref().map_or(0, |t| t.seconds),
        "Containers": n.containers,
    })
}

/// Runs a `strata network` subcommand.
pub async fn network(ctx: &Ctx, channel: Channel, cmd: NetworkCommand) -> anyhow::Result<()> {
    let mut c = NetworksClient::new(channel);
    match cmd {
        NetworkCommand::Create {
            subnet,
            labels: l,
            name,
        } => {
            let n = c
                .create(ctx.req(npb::CreateNetworkRequest {
                    name,
                    subnet: subnet.unwrap_or_default(),
                    labels: labels(&l),
                })?)
                .await?
                .into_inner();
            println!("{}", n.name);
        }
        NetworkCommand::Ls { json, quiet } => {
            let list = c
                .list(ctx.req(npb::ListNetworksRequest {})?)
                .await?
                .into_inner()
                .networks;
            if json {
                let all: Vec<_> = list.iter().map(network_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if quiet {
                for n in &list {
                    println!("{}", n.name);
                }
            } else {
                println!(
                    "{:<20} {:<10} {:<18} {:<16} CONTAINERS",
                    "NAME", "DRIVER", "SUBNET", "BRIDGE"
                );
                for n in &list {
                    println!(
                        "{:<20} {:<10} {:<18} {:<16} {}",
                        n.name,
                        n.driver,
                        n.subnet,
                        n.bridge,
                        n.containers.len()
                    );
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut all = Vec::new();
            for name in names {
                let n = c
                    .get(ctx.req(npb::GetNetworkRequest { name })?)
                    .await?
                    .into_inner();
                all.push(network_json(&n));
            }
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        NetworkCommand::Connect {
            aliases,
            network,
            container,
        } => {
            c.connect_network(ctx.req(npb::ConnectRequest {
                container_id: container,
                network,
                aliases,
            })?)
            .await?;
        }
        NetworkCommand::Disconnect { network, container } => {
            c.disconnect_network(ctx.req(npb::DisconnectRequest {
                container_id: container,
                network,
            })?)
            .await?;
        }
        NetworkCommand::Rm { names } => {
            for name in names {
                c.remove(ctx.req(npb::RemoveNetworkRequest { name: name.clone() })?)
                    .await?;
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// The attachment of container `id`, or `None` when it has none.
pub async fn attachment(
    ctx: &Ctx,
    channel: Channel,
    id: &str,
) -> anyhow::Result<Option<npb::Attachment>> {
    let r = NetworksClient::new(channel)
        .get_attachment(ctx.req(npb::GetAttachmentRequest {
            container_id: id.to_owned(),
        })?)
        .await;
    match r {
        Ok(a) => Ok(Some(a.into_inner())),
        Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::Unimplemented) => {
            Ok(None)
        }
        Err(s) => Err(s).context(format!("container {id:?}")),
    }
}

/// `strata port CONTAINER [PORT[/PROTO]]`: `80/tcp -> 0.0.0.0:32768`, as Docker prints it.
pub async fn port(
    ctx: &Ctx,
    channel: Channel,
    id: &str,
    which: Option<&str>,
) -> anyhow::Result<()> {
    let a = attachment(ctx, channel, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("container {id:?} publishes no ports"))?;
    let which = which.map(|w| {
        let (p, proto) = w.split_once('/').unwrap_or((w, "tcp"));
        (p.to_owned(), proto.to_owned())
    });
    let mut any = false;
    for p in &a.ports {
        if let Some((port, proto)) = &which
            && (p.container_port.to_string() != *port || p.protocol != *proto)
        {
            continue;
        }
        any = true;
        let host = format!("{}:{}", p.host_ip, p.host_port);
        if which.is_some() {
            println!("{host}");
        } else {
            println!("{}/{} -> {host}", p.container_port, p.protocol);
        }
    }
    if !any && let Some((port, proto)) = which {
        anyhow::bail!("no public port '{port}/{proto}' published for {id}");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn publish_syntax_as_docker() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (8080, 80, "tcp")
        );
        let p = parse_publish("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.protocol.as_str()),
            ("127.0.0.1", "udp")
        );
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_publish("127.0.0.1::80").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 0));
        for bad in [
            "x:80",
            "80/sctp",
            "70000:80",
            "8000-8010:80",
            "1:2:3:4",
            "0:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
