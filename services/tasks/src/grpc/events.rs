//! containerd's Events API over the [`Exchange`].

use super::BoxStream;
use crate::events::Exchange;
use futures_util::stream;
use std::sync::Arc;
use strata_api::containerd::services::events::v1 as epb;
use strata_api::containerd::services::events::v1::events_server::{Events, EventsServer};
use strata_api::containerd::types::Envelope;
use strata_grpc::convert_containers::{any_from_pb, events};
use strata_grpc::metadata::namespace;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

/// Serves the Events API over the exchange.
pub struct EventsService {
    exchange: Arc<Exchange>,
}

impl EventsService {
    pub fn new(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }

    pub fn into_server(self) -> EventsServer<Self> {
        EventsServer::new(self)
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, request: Request<epb::PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&request)?;
        let req = request.into_inner();
        let event = req.event.ok_or_else(|| {
            Status::invalid_argument(format!("publish on topic {:?} needs an event", req.topic))
        })?;
        self.exchange
            .publish(&ns, &req.topic, any_from_pb(event))
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    async fn forward(&self, request: Request<epb::ForwardRequest>) -> Result<Response<()>, Status> {
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("forward request needs an envelope"))?;
        self.exchange
            .forward(events::from_pb(envelope))
            .map_err(to_status)?;
        Ok(Response::new(()))
    }

    type SubscribeStream = BoxStream<Envelope>;

    async fn subscribe(
        &self,
        request: Request<epb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let sub = self
            .exchange
            .subscribe(&request.get_ref().filters)
            .map_err(to_status)?;
        tracing::debug!(filters = ?request.get_ref().filters, "event subscription");
        let stream = stream::unfold(sub, |mut sub| async move {
            let next = sub.next().await?;
            Some((next.map(events::to_pb).map_err(to_status), sub))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
