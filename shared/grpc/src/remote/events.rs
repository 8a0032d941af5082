//! The Events API over gRPC: [`Publisher`] and subscriptions, against strata-tasks, the
//! gateway, or containerd.

use crate::convert_containers::{any_to_pb, events};
use crate::metadata::with_namespace;
use crate::status::from_status;
use strata_api::containerd::services::events::v1 as pb;
use strata_api::containerd::services::events::v1::events_client::EventsClient;
use strata_core::Result;
use strata_core::containers::Any;
use strata_core::events::{Envelope, Publisher};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::Channel;

#[derive(Debug, Clone)]
/// A client of the Events API: publishes events and subscribes to them.
pub struct RemoteEvents {
    client: EventsClient<Channel>,
}

impl RemoteEvents {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: EventsClient::new(channel),
        }
    }

    /// Connects (lazily) to a unix socket path or host:port.
    pub fn connect(address: &str) -> Result<Self> {
        Ok(Self::new(crate::client::channel(address)?))
    }

    /// Subscribes with containerd's filters (`namespace`, `topic`, `event.<field>`; any of
    /// `filters` may match). The stream runs until the server ends it or it is dropped; the
    /// subscription is in place once this returns.
    pub async fn subscribe(
        &self,
        filters: &[String],
    ) -> Result<impl Stream<Item = Result<Envelope>> + Send + 'static> {
        let stream = self
            .client
            .clone()
            .subscribe(pb::SubscribeRequest {
                filters: filters.to_vec(),
            })
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(stream.map(|r| r.map(events::from_pb).map_err(from_status)))
    }
}

impl Publisher for RemoteEvents {
    async fn publish(&self, ns: &str, topic: &str, event: Any) -> Result<()> {
        let req = with_namespace(
            ns,
            pb::PublishRequest {
                topic: topic.to_owned(),
                event: Some(any_to_pb(event)),
            },
        )?;
        self.client
            .clone()
            .publish(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn forward(&self, envelope: Envelope) -> Result<()> {
        let req = tonic::Request::new(pb::ForwardRequest {
            envelope: Some(events::to_pb(envelope)),
        });
        self.client
            .clone()
            .forward(req)
            .await
            .map_err(from_status)?;
        Ok(())
    }
}
