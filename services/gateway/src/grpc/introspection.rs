//! containerd's Introspection service, answered by the gateway for the whole stack: strata's
//! services appear as containerd plugins, each with its real status (the health of the service
//! behind it).

use std::path::Path;
use strata_api::containerd::services::introspection::v1 as pb;
use strata_api::containerd::services::introspection::v1::introspection_server::{
    Introspection, IntrospectionServer,
};
use strata_api::containerd::types::Platform;
use strata_api::google::rpc::Status as RpcStatus;
use strata_core::filters::{Adaptor, Filter};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;

#[derive(Clone)]
pub struct Backend {
    /// The service's name in messages: "content", "snapshotter", "images", "tasks".
    pub name: &'static str,
    pub channel: Channel,
}

/// (type, id, backend index or None for the gateway itself, requires)
const PLUGINS: &[(&str, &str, Option<usize>, &[&str])] = &[
    ("io.containerd.content.v1", "content", Some(0), &[]),
    ("io.containerd.snapshotter.v1", "overlayfs", Some(1), &[]),
    ("io.containerd.snapshotter.v1", "native", Some(1), &[]),
    (
        "io.containerd.differ.v1",
        "walking",
        Some(1),
        &["io.containerd.content.v1"],
    ),
    (
        "io.containerd.metadata.v1",
        "bolt",
        Some(2),
        &["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
    ),
    (
        "io.containerd.gc.v1",
        "scheduler",
        Some(2),
        &["io.containerd.metadata.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "content",
        Some(0),
        &["io.containerd.content.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "snapshots",
        Some(1),
        &["io.containerd.snapshotter.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "diff",
        Some(1),
        &["io.containerd.differ.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "images",
        Some(2),
        &["io.containerd.metadata.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "leases",
        Some(2),
        &["io.containerd.metadata.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "namespaces",
        Some(2),
        &["io.containerd.metadata.v1"],
    ),
    (
        "io.containerd.runtime.v2",
        "task",
        Some(3),
        &["io.containerd.metadata.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "containers",
        Some(3),
        &["io.containerd.metadata.v1"],
    ),
    (
        "io.containerd.grpc.v1",
        "tasks",
        Some(3),
        &["io.containerd.runtime.v2"],
    ),
    ("io.containerd.grpc.v1", "events", Some(3), &[]),
    ("io.containerd.grpc.v1", "introspection", None, &[]),
    ("io.containerd.grpc.v1", "version", None, &[]),
    ("io.containerd.grpc.v1", "healthcheck", None, &[]),
];

pub struct IntrospectionService {
    backends: Vec<Backend>,
    uuid: String,
}

struct PluginView<'a>(&'a pb::Plugin);

impl Adaptor for PluginView<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "type" => Some(self.0.r#type.clone()),
            [f] if f == "id" => Some(self.0.id.clone()),
            [f] if f == "capabilities" => Some(self.0.capabilities.join(",")),
            _ => None,
        }
    }
}

/// A stable identity for this installation, kept in the gateway's root.
fn load_uuid(root: &Path) -> std::io::Result<String> {
    let path = root.join("uuid");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let mut b = [0u8; 16];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &uuid)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(uuid)
}

impl IntrospectionService {
    pub fn new(backends: Vec<Backend>, root: &Path) -> std::io::Result<Self> {
        Ok(Self {
            backends,
            uuid: load_uuid(root)?,
        })
    }

    pub fn into_server(self) -> IntrospectionServer<Self> {
        IntrospectionServer::new(self)
    }

    /// Why a backend cannot serve, or None when its health check answers SERVING.
    async fn health(&self, i: usize) -> Option<String> {
        let b = self.backends.get(i)?;
        let req = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        match HealthClient::new(b.channel.clone()).check(req).await {
            Ok(r) if r.get_ref().status == 1 => None,
            Ok(r) => Some(format!(
                "{} service is not serving (status {})",
                b.name,
                r.get_ref().status
            )),
            Err(e) => Some(format!("{} service unreachable: {}", b.name, e.message())),
        }
    }

    async fn plugins(&self) -> Vec<pb::Plugin> {
        let mut health = Vec::new();
        for i in 0..self.backends.len() {
            health.push(self.health(i).await);
        }
        let (os, arch) = (
            "linux",
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            },
        );
        PLUGINS
            .iter()
            .map(|(kind, id, backend, requires)| {
                let err = backend.and_then(|i| health.get(i).cloned().flatten());
                let platforms = if kind.ends_with("snapshotter.v1") || kind.ends_with("differ.v1") {
                    vec![Platform {
                        os: os.to_owned(),
                        architecture: arch.to_owned(),
                        ..Default::default()
                    }]
                } else {
                    Vec::new()
                };
                pb::Plugin {
                    r#type: (*kind).to_owned(),
                    id: (*id).to_owned(),
                    requires: requires.iter().map(|s| (*s).to_owned()).collect(),
                    platforms,
                    exports: Default::default(),
                    capabilities: Vec::new(),
                    init_err: err.map(|message| RpcStatus {
                        code: tonic::Code::Unavailable as i32,
                        message,
                        details: Vec::new(),
                    }),
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        request: Request<pb::PluginsRequest>,
    ) -> Result<Response<pb::PluginsResponse>, Status> {
        let filter =
            Filter::parse_all(&request.get_ref().filters).map_err(strata_grpc::to_status)?;
        let plugins = self
            .plugins()
            .await
            .into_iter()
            .filter(|p| filter.matches(&PluginView(p)))
            .collect();
        Ok(Response::new(pb::PluginsResponse { plugins }))
    }

    async fn server(&self, _request: Request<()>) -> Result<Response<pb::ServerResponse>, Status> {
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|l| {
                let s = l.to_string_lossy().into_owned();
                s.trim_start_matches("pid:[")
                    .trim_end_matches(']')
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Ok(Response::new(pb::ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns,
            deprecations: Vec::new(),
        }))
    }

    async fn plugin_info(
        &self,
        request: Request<pb::PluginInfoRequest>,
    ) -> Result<Response<pb::PluginInfoResponse>, Status> {
        let r = request.into_inner();
        let plugin = self
            .plugins()
            .await
            .into_iter()
            .find(|p| p.r#type == r.r#type && p.id == r.id)
            .ok_or_else(|| Status::not_found(format!("plugin {}.{}: not found", r.r#type, r.id)))?;
        Ok(Response::new(pb::PluginInfoResponse {
            plugin: Some(plugin),
            extra: None,
        }))
    }
}
