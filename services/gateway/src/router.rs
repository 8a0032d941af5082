//! Routing of containerd's services to the strata service that owns each one: a request for
//! `/containerd.services.content.v1.Content/Write` is forwarded, headers, streams and trailers
//! untouched, to the content service. One address is then enough for any containerd client.

use crate::hooks::{Hooks, Watched};
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use strata_api::service_names;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tower::{Service, ServiceExt as _};

/// A containerd service name, as a type (tonic routes by `NamedService::NAME`).
pub trait ServiceName: Send + Sync + 'static {
    const NAME: &'static str;
}

macro_rules! names {
    ($($ty:ident = $name:path),* $(,)?) => {$(
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl ServiceName for $ty {
            const NAME: &'static str = $name;
        }
    )*};
}

// The names are the generated servers' own (`strata_api::service_names`), so a route can
// only name a service of the contract.
names!(
    Content = service_names::CONTENT,
    Snapshots = service_names::SNAPSHOTS,
    Diff = service_names::DIFF,
    Images = service_names::IMAGES,
    Leases = service_names::LEASES,
    Namespaces = service_names::NAMESPACES,
    GarbageCollector = service_names::GARBAGE_COLLECTOR,
    Containers = service_names::CONTAINERS,
    Events = service_names::EVENTS,
    Tasks = service_names::TASKS,
    Io = service_names::IO,
    Networks = service_names::NETWORKS,
);

/// Forwards every call of service `N` to `channel`.
pub struct Forward<N> {
    channel: Channel,
    hooks: Option<Arc<Hooks>>,
    _name: PhantomData<N>,
}

impl<N> Clone for Forward<N> {
    fn clone(&self) -> Self {
        Self {
            channel: self.channel.clone(),
            hooks: self.hooks.clone(),
            _name: PhantomData,
        }
    }
}

impl<N: ServiceName> Forward<N> {
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            hooks: None,
            _name: PhantomData,
        }
    }

    /// Looks into the requests that create content and snapshots (leases, namespaces).
    pub fn with_hooks(mut self, hooks: Arc<Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }
}

impl<N: ServiceName> NamedService for Forward<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: ServiceName> Service<http::Request<Body>> for Forward<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let channel = self.channel.clone();
        let hooks = self.hooks.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let req = match (hooks, Watched::from_path(&path)) {
                (Some(h), Some(w)) => h.before(w, req).await,
                _ => req,
            };
            match channel.oneshot(req).await {
                Ok(resp) => Ok(resp),
                Err(e) => {
                    tracing::warn!(method = %path, error = %e, "backend unreachable");
                    Ok(tonic::Status::unavailable(format!(
                        "{}: backend service unreachable: {e}",
                        N::NAME
                    ))
                    .into_http())
                }
            }
        })
    }
}
