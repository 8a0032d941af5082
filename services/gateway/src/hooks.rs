//! What containerd does inside one process and strata must do across services, done where every
//! request passes: the gateway.
//!
//! - **Leases.** A containerd client writes under a lease by sending the `containerd-lease`
//!   header; containerd's metadata store then ties each ingest, blob and snapshot to the lease so
//!   the collector leaves them alone until the lease ends. Here content and snapshots live in
//!   other services than leases, so the gateway reads the requests that create such things and
//!   adds them to the lease (Leases.AddResource on the images service) before forwarding.
//! - **Namespaces.** Using a namespace creates it, as in containerd: the first write through the
//!   gateway in a namespace records it with the images service, so `ctr namespaces ls` sees it.

use bytes::{Buf, Bytes, BytesMut};
use http_body::Frame;
use prost::Message as _;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use strata_api::containerd::services::content::v1 as cpb;
use strata_api::containerd::services::leases::v1 as lpb;
use strata_api::containerd::services::leases::v1::leases_client::LeasesClient;
use strata_api::containerd::services::namespaces::v1 as npb;
use strata_api::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use strata_api::containerd::services::snapshots::v1 as spb;
use strata_api::service_names::{CONTAINERS, CONTENT, NAMESPACES, SNAPSHOTS};
use strata_grpc::metadata::{LEASE_HEADER, NAMESPACE_HEADER, with_namespace};
use tonic::body::Body;
use tonic::transport::Channel;

/// Requests the gateway looks into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    ContentWrite,
    SnapshotsPrepare,
    SnapshotsView,
    SnapshotsCommit,
    NamespacesDelete,
    ContainersCreate,
}

impl Watched {
    /// The watched request a gRPC path (`/<service>/<method>`) names, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        Some(match (service, method) {
            (CONTENT, "Write") => Self::ContentWrite,
            (SNAPSHOTS, "Prepare") => Self::SnapshotsPrepare,
            (SNAPSHOTS, "View") => Self::SnapshotsView,
            (SNAPSHOTS, "Commit") => Self::SnapshotsCommit,
            (NAMESPACES, "Delete") => Self::NamespacesDelete,
            (CONTAINERS, "Create") => Self::ContainersCreate,
            _ => return None,
        })
    }
}

pub struct Hooks {
    leases: LeasesClient<Channel>,
    namespaces: NamespacesClient<Channel>,
    /// Namespaces known to exist (recorded by this gateway).
    known: Mutex<HashSet<String>>,
    default_snapshotter: String,
}

fn header(req: &http::Request<Body>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Splits complete gRPC messages (1-byte flag, 4-byte length, payload) off a buffer.
fn next_message(buf: &mut BytesMut) -> Option<Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let compressed = buf[0] != 0;
    buf.advance(5);
    let msg = buf.split_to(len).freeze();
    // Compressed messages are passed on untouched and not looked into.
    (!compressed).then_some(msg)
}

impl Hooks {
    pub fn new(images: Channel, default_snapshotter: &str) -> Self {
        Self {
            leases: LeasesClient::new(images.clone()),
            namespaces: NamespacesClient::new(images),
            known: Mutex::new(HashSet::new()),
            default_snapshotter: default_snapshotter.to_owned(),
        }
    }

    async fn add(&self, ns: &str, lease: &str, kind: &str, id: &str) {
        let Ok(req) = with_namespace(
            ns,
            lpb::AddResourceRequest {
                id: lease.to_owned(),
                resource: Some(lpb::Resource {
                    id: id.to_owned(),
                    r#type: kind.to_owned(),
                }),
            },
        ) else {
            return;
        };
        if let Err(e) = self.leases.clone().add_resource(req).await {
            tracing::warn!(lease, kind, id, error = %e.message(), "could not add a resource to the lease");
        }
    }

    async fn ensure_namespace(&self, ns: &str) {
        if self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(ns)
        {
            return;
        }
        let mut req = tonic::Request::new(npb::CreateNamespaceRequest {
            namespace: Some(npb::Namespace {
                name: ns.to_owned(),
                labels: Default::default(),
            }),
        });
        // Implicit, as containerd's metadata store creates a namespace: no event.
        strata_grpc::metadata::without_events(&mut req);
        match self.namespaces.clone().create(req).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => {
                tracing::warn!(namespace = ns, error = %s.message(), "could not record the namespace");
                return;
            }
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ns.to_owned());
    }

    /// Looks into `req` as `watched` says, then hands back the request to forward.
    pub async fn before(
        self: &Arc<Self>,
        watched: Watched,
        req: http::Request<Body>,
    ) -> http::Request<Body> {
        let ns = header(&req, NAMESPACE_HEADER);
        if watched == Watched::NamespacesDelete {
            // Let a later use record it again.
            self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return req;
        }
        let Some(ns) = ns else { return req };
        self.ensure_namespace(&ns).await;
        if watched == Watched::ContainersCreate {
            return req;
        }
        let Some(lease) = header(&req, LEASE_HEADER) else {
            return req;
        };
        match watched {
            Watched::ContentWrite => {
                let (parts, body) = req.into_parts();
                let body = Body::new(WatchWrites {
                    inner: body,
                    buf: BytesMut::new(),
                    hooks: self.clone(),
                    ns,
                    lease,
                    seen: HashSet::new(),
                });
                http::Request::from_parts(parts, body)
            }
            Watched::SnapshotsPrepare | Watched::SnapshotsView | Watched::SnapshotsCommit => {
                use http_body_util::BodyExt as _;
                let (parts, body) = req.into_parts();
                let bytes = match body.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                let mut buf = BytesMut::from(&bytes[..]);
                if let Some(msg) = next_message(&mut buf) {
                    let (sn, key) = match watched {
                        Watched::SnapshotsPrepare => spb::PrepareSnapshotRequest::decode(msg)
                            .map(|r| (r.snapshotter, r.key))
                            .unwrap_or_default(),
                        Watched::SnapshotsView => spb::ViewSnapshotRequest::decode(msg)
                            .map(|r| (r.snapshotter, r.key))
                            .unwrap_or_default(),
                        _ => spb::CommitSnapshotRequest::decode(msg)
                            .map(|r| (r.snapshotter, r.name))
                            .unwrap_or_default(),
                    };
                    if !key.is_empty() {
                        let sn = if sn.is_empty() {
                            self.default_snapshotter.clone()
                        } else {
                            sn
                        };
                        self.add(&ns, &lease, &format!("snapshots/{sn}"), &key)
                            .await;
                    }
                }
                http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)))
            }
            Watched::NamespacesDelete | Watched::ContainersCreate => req,
        }
    }
}

/// A Content.Write request stream, passed through untouched, whose messages name the ingest ref
/// and the expected digest: each is added to the lease as it goes by.
struct WatchWrites {
    inner: Body,
    buf: BytesMut,
    hooks: Arc<Hooks>,
    ns: String,
    lease: String,
    /// Resources already added by this stream.
    seen: HashSet<(&'static str, String)>,
}

impl http_body::Body for WatchWrites {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let this = &mut *self;
            this.buf.extend_from_slice(data);
            while let Some(msg) = next_message(&mut this.buf) {
                let Ok(w) = cpb::WriteContentRequest::decode(msg) else {
                    continue;
                };
                let mut adds = Vec::new();
                if !w.r#ref.is_empty() {
                    adds.push(("ingests", w.r#ref));
                }
                if !w.expected.is_empty() {
                    adds.push(("content", w.expected));
                }
                for (kind, id) in adds {
                    if !this.seen.insert((kind, id.clone())) {
                        continue;
                    }
                    let (hooks, ns, lease) =
                        (this.hooks.clone(), this.ns.clone(), this.lease.clone());
                    // Objects younger than the collector's grace period are never taken, so
                    // adding the resource alongside the write is safe.
                    tokio::spawn(async move { hooks.add(&ns, &lease, kind, &id).await });
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Watched;

    #[test]
    fn watched_paths() {
        for (path, want) in [
            (
                "/containerd.services.content.v1.Content/Write",
                Watched::ContentWrite,
            ),
            (
                "/containerd.services.snapshots.v1.Snapshots/Prepare",
                Watched::SnapshotsPrepare,
            ),
            (
                "/containerd.services.snapshots.v1.Snapshots/View",
                Watched::SnapshotsView,
            ),
            (
                "/containerd.services.snapshots.v1.Snapshots/Commit",
                Watched::SnapshotsCommit,
            ),
            (
                "/containerd.services.namespaces.v1.Namespaces/Delete",
                Watched::NamespacesDelete,
            ),
            (
                "/containerd.services.containers.v1.Containers/Create",
                Watched::ContainersCreate,
            ),
        ] {
            assert_eq!(Watched::from_path(path), Some(want), "{path}");
        }
        for path in [
            "/containerd.services.content.v1.Content/Read",
            "/containerd.services.images.v1.Images/Create",
            "containerd.services.content.v1.Content/Write",
            "/containerd.services.content.v1.Content/Write/x",
            "/containerd.services.content.v1.Content",
            "",
        ] {
            assert_eq!(Watched::from_path(path), None, "{path}");
        }
    }
}
