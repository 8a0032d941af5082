//! A container's network, through the network service: attached when the container is
//! created (so a taken host port is refused then, and the spec can name the namespace to
//! join), detached when it is removed.

use crate::run::RunOptions;
use serde_json::{Value, json};
use strata_api::strata::network::v1 as npb;
use strata_core::{Error, Kind, Result};
use strata_grpc::from_status;
use strata_grpc::metadata::with_namespace;
use strata_registry::ContainerConfig;

use crate::Backends;

/// The label naming a container's network.
pub const LABEL_NETWORK: &str = "strata.network";
/// The label of a container that publishes ports.
pub const LABEL_PUBLISHES: &str = "strata.network.publishes";

/// The network a request asks for: `None` for none of the network service's (host, none,
/// private, or no network service at all).
pub fn wanted(b: &Backends, req: &RunOptions) -> Result<Option<String>> {
    match req.network.as_str() {
        n if n == "host" || n == "none" || n == "private" || n.starts_with("container:") => {
            if !req.ports.is_empty() || req.publish_all {
                return Err(Error::invalid_argument(format!(
                    "publishing ports needs a network; --net {} has none to publish on",
                    req.network
                )));
            }
            Ok(None)
        }
        "" if b.network.is_none() => {
            if !req.ports.is_empty() || req.publish_all {
                return Err(Error::failed_precondition(
                    "publishing ports needs the network service (strata-network), which this \
                     gateway is not given"
                        .to_owned(),
                ));
            }
            Ok(None)
        }
        name if b.network.is_none() => Err(Error::failed_precondition(format!(
            "network {name:?}: this gateway has no network service (strata-network)"
        ))),
        name => Ok(Some(name.to_owned())),
    }
}

/// The ports of the request, and with `publish_all` every port the image exposes
/// (`80/tcp`), each on a free host port.
fn ports(req: &RunOptions, image: &ContainerConfig) -> Result<Vec<npb::PortMapping>> {
    let mut out: Vec<npb::PortMapping> = req
        .ports
        .iter()
        .map(|p| npb::PortMapping {
            host_ip: p.host_ip.clone(),
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: p.protocol.clone(),
        })
        .collect();
    if req.publish_all {
        for spec in image.exposed_ports.iter().flat_map(|m| m.keys()) {
            let (port, proto) = spec.split_once('/').unwrap_or((spec.as_str(), "tcp"));
            let port: u32 = port.parse().map_err(|_| {
                Error::failed_precondition(format!(
                    "the image exposes {spec:?}, which is not a port"
                ))
            })?;
            if !out
                .iter()
                .any(|p| p.container_port == port && p.protocol == proto)
            {
                out.push(npb::PortMapping {
                    host_ip: String::new(),
                    host_port: 0,
                    container_port: port,
                    protocol: proto.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// Attaches container `id` to `network`.
pub async fn attach(
    b: &Backends,
    ns: &str,
    id: &str,
    network: &str,
    req: &RunOptions,
    image: &ContainerConfig,
    hostname: &str,
) -> Result<npb::Attachment> {
    let Some(client) = &b.network else {
        return Err(Error::failed_precondition(
            "no network service (strata-network)".to_owned(),
        ));
    };
    let request = npb::AttachRequest {
        container_id: id.to_owned(),
        network: network.to_owned(),
        ports: ports(req, image)?,
        hostname: hostname.to_owned(),
        aliases: req.network_aliases.clone(),
        dns: req.dns.clone(),
        dns_search: req.dns_search.clone(),
        dns_options: req.dns_options.clone(),
        extra_hosts: req.extra_hosts.clone(),
    };
    client
        .clone()
        .attach(with_namespace(ns, request)?)
        .await
        .map(tonic::Response::into_inner)
        .map_err(from_status)
}

/// Detaches container `id` (nothing attached is fine; no network service, nothing to do).
pub async fn detach(b: &Backends, ns: &str, id: &str) -> Result<()> {
    let Some(client) = &b.network else {
        return Ok(());
    };
    detach_with(client.clone(), ns, id).await
}

/// Detaches container `id` in the background: at once, then tried again (1 s doubling to
/// 30 s, for an hour) while the network service is away. For what a removal could not finish,
/// and for `--rm` containers that publish no port: nothing waits on their teardown (a new
/// container of the same name waits for it in the network service).
pub fn detach_later(b: &Backends, ns: &str, id: &str) {
    let Some(client) = b.network.clone() else {
        return;
    };
    let (ns, id) = (ns.to_owned(), id.to_owned());
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_secs(1);
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(pause).await;
            }
            first = false;
            match detach_with(client.clone(), &ns, &id).await {
                Ok(()) => return,
                Err(e) if std::time::Instant::now() > give_up => {
                    tracing::error!(container = %id, error = %e, "giving up detaching the network");
                    return;
                }
                Err(_) => pause = (pause * 2).min(std::time::Duration::from_secs(30)),
            }
        }
    });
}

async fn detach_with(
    mut client: strata_api::strata::network::v1::networks_client::NetworksClient<
        tonic::transport::Channel,
    >,
    ns: &str,
    id: &str,
) -> Result<()> {
    let r = client
        .detach(with_namespace(
            ns,
            npb::DetachRequest {
                container_id: id.to_owned(),
            },
        )?)
        .await;
    match r.map_err(from_status) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == Kind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `--net container:TARGET`: the container joins the network namespace of container `target`
/// of the same namespace (and gets its /etc files): the namespace the network service keeps
/// for it, or, without one, that of its running task.
pub async fn join_container(b: &Backends, ns: &str, target: &str, spec: &mut Value) -> Result<()> {
    if let Some(client) = &b.network {
        let got = client
            .clone()
            .get_attachment(with_namespace(
                ns,
                npb::GetAttachmentRequest {
                    container_id: target.to_owned(),
                },
            )?)
            .await
            .map_err(from_status);
        match got {
            Ok(a) => {
                apply(spec, &a.into_inner());
                return Ok(());
            }
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let task = crate::run::running_pid(b, ns, target).await?;
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|n| n["type"] != "network");
        namespaces.push(json!({"type": "network", "path": format!("/proc/{task}/ns/net")}));
    }
    Ok(())
}

/// The container joins the attachment's namespace and gets its files (read-write, as with
/// Docker: a container may edit its own /etc/hosts).
pub fn apply(spec: &mut Value, a: &npb::Attachment) {
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|n| n["type"] != "network");
        namespaces.push(json!({"type": "network", "path": a.netns_path}));
    }
    let mut mounts: Vec<Value> = spec["mounts"].as_array().cloned().unwrap_or_default();
    for (dest, src) in [
        ("/etc/hosts", &a.hosts_path),
        ("/etc/hostname", &a.hostname_path),
        ("/etc/resolv.conf", &a.resolv_conf_path),
    ] {
        mounts.retain(|m| m["destination"] != dest);
        mounts.push(json!({
            "destination": dest, "type": "bind", "source": src,
            "options": ["rbind", "rprivate", "rw"],
        }));
    }
    spec["mounts"] = json!(mounts);
}
