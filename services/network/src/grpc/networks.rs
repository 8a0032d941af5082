//! `strata.network.v1.Networks` over the [`Manager`].

use std::sync::Arc;
use strata_api::strata::network::v1 as pb;
use strata_api::strata::network::v1::networks_server::{Networks, NetworksServer};
use strata_grpc::metadata::namespace;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

use crate::manager::{AttachSpec, Manager};
use crate::ports::Port;
use crate::records::{AttachmentRecord, NetworkRecord};

/// Serves the Networks API.
pub struct NetworkService {
    m: Arc<Manager>,
}

impl NetworkService {
    /// Serves `m`.
    pub fn new(m: Arc<Manager>) -> Self {
        Self { m }
    }

    /// The tonic server.
    pub fn into_server(self) -> NetworksServer<Self> {
        NetworksServer::new(self)
    }
}

fn network_pb(n: NetworkRecord, containers: Vec<String>) -> pb::Network {
    pb::Network {
        name: n.name,
        driver: n.driver,
        subnet: n.subnet,
        gateway: n.gateway,
        bridge: n.bridge,
        names: n.names,
        labels: n.labels.into_iter().collect(),
        created_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(n.created_at).unwrap_or(0),
            nanos: 0,
        }),
        containers,
        default: n.default,
    }
}

fn port_pb(p: &Port) -> pb::PortMapping {
    pb::PortMapping {
        host_ip: p.host_ip.to_string(),
        host_port: u32::from(p.host_port),
        container_port: u32::from(p.container_port),
        protocol: p.protocol.clone(),
    }
}

fn attachment_pb(a: AttachmentRecord) -> pb::Attachment {
    pb::Attachment {
        ports: a.ports.iter().map(port_pb).collect(),
        links: a
            .links
            .iter()
            .map(|l| pb::Link {
                network: l.network.clone(),
                interface: l.ifname.clone(),
                address: l.address.clone(),
                gateway: l.gateway.clone(),
                mac_address: l.mac.clone(),
                aliases: l.aliases.clone(),
            })
            .collect(),
        container_id: a.container_id,
        network: a.network,
        netns_path: a.netns.display().to_string(),
        address: a.address,
        gateway: a.gateway,
        mac_address: a.mac,
        hosts_path: a.dir.join("hosts").display().to_string(),
        hostname_path: a.dir.join("hostname").display().to_string(),
        resolv_conf_path: a.dir.join("resolv.conf").display().to_string(),
        hostname: a.hostname,
        aliases: a.aliases,
    }
}

#[tonic::async_trait]
impl Networks for NetworkService {
    async fn create(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = request.into_inner();
        let n = self
            .m
            .create_network(&r.name, &r.subnet, r.labels.into_iter().collect())
            .await
            .map_err(to_status)?;
        Ok(Response::new(network_pb(n, Vec::new())))
    }

    async fn get(
        &self,
        request: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let name = &request.get_ref().name;
        let n = self.m.network(name).await.map_err(to_status)?;
        let on = self.m.attached_to(&n.name).await;
        Ok(Response::new(network_pb(n, on)))
    }

    async fn list(
        &self,
        _request: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = self
            .m
            .networks()
            .await
            .into_iter()
            .map(|(n, on)| network_pb(n, on))
            .collect();
        Ok(Response::new(pb::ListNetworksResponse { networks }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<()>, Status> {
        self.m
            .remove_network(&request.get_ref().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn attach(
        &self,
        request: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::Attachment>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let ports = r
            .ports
            .iter()
            .map(|p| Port::checked(&p.host_ip, p.host_port, p.container_port, &p.protocol))
            .collect::<strata_core::Result<Vec<_>>>()
            .map_err(to_status)?;
        let spec = AttachSpec {
            network: r.network,
            ports,
            hostname: r.hostname,
            aliases: r.aliases,
            dns: r.dns,
            dns_search: r.dns_search,
            dns_options: r.dns_options,
            extra_hosts: r.extra_hosts,
        };
        let a = self
            .m
            .attach(&ns, &r.container_id, &spec)
            .await
            .map_err(to_status)?;
        Ok(Response::new(attachment_pb(a)))
    }

    async fn detach(&self, request: Request<pb::DetachRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        self.m
            .detach(&ns, &request.get_ref().container_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn connect_network(
        &self,
        request: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::Attachment>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let a = self
            .m
            .connect(&ns, &r.container_id, &r.network, &r.aliases)
            .await
            .map_err(to_status)?;
        Ok(Response::new(attachment_pb(a)))
    }

    async fn disconnect_network(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        self.m
            .disconnect(&ns, &r.container_id, &r.network)
            .await
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::Attachment>, Status> {
        let ns = namespace(&request)?;
        let a = self
            .m
            .attachment(&ns, &request.get_ref().container_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(attachment_pb(a)))
    }

    async fn list_attachments(
        &self,
        request: Request<pb::ListAttachmentsRequest>,
    ) -> Result<Response<pb::ListAttachmentsResponse>, Status> {
        let ns = namespace(&request)?;
        let attachments = self
            .m
            .attachments()
            .await
            .into_iter()
            .filter(|a| a.namespace == ns)
            .map(attachment_pb)
            .collect();
        Ok(Response::new(pb::ListAttachmentsResponse { attachments }))
    }
}
