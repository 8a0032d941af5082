//! Events: envelopes (a namespace, a topic, a time and an [`Any`] payload) published by the
//! services and delivered to subscribers, with containerd's rules for topics and envelopes.

use crate::containers::Any;
use crate::errdefs::{Error, Result};
use crate::identifiers;
use std::future::Future;
use std::time::SystemTime;

/// One event as delivered to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// When the event was published.
    pub timestamp: SystemTime,
    /// The namespace it happened in.
    pub namespace: String,
    /// What happened, as a path (`/containers/create`).
    pub topic: String,
    /// The event's message.
    pub event: Option<Any>,
}

/// Type URLs of the events strata publishes, as containerd encodes them (the protobuf message's
/// full name, without a host prefix).
pub mod types {
    /// The payload type of a container's creation.
    pub const CONTAINER_CREATE: &str = "containerd.events.ContainerCreate";
    /// The payload type of a container's update.
    pub const CONTAINER_UPDATE: &str = "containerd.events.ContainerUpdate";
    /// The payload type of a container's deletion.
    pub const CONTAINER_DELETE: &str = "containerd.events.ContainerDelete";
    /// The payload type of a blob's deletion.
    pub const CONTENT_DELETE: &str = "containerd.events.ContentDelete";
    /// The payload type of an active snapshot's preparation.
    pub const SNAPSHOT_PREPARE: &str = "containerd.events.SnapshotPrepare";
    /// The payload type of a snapshot's commit.
    pub const SNAPSHOT_COMMIT: &str = "containerd.events.SnapshotCommit";
    /// The payload type of a snapshot's removal.
    pub const SNAPSHOT_REMOVE: &str = "containerd.events.SnapshotRemove";
    // containerd declares the image events in its Images API's package.
    /// The payload type of an image's creation.
    pub const IMAGE_CREATE: &str = "containerd.services.images.v1.ImageCreate";
    /// The payload type of an image's update.
    pub const IMAGE_UPDATE: &str = "containerd.services.images.v1.ImageUpdate";
    /// The payload type of an image's deletion.
    pub const IMAGE_DELETE: &str = "containerd.services.images.v1.ImageDelete";
    /// The payload type of a namespace's creation.
    pub const NAMESPACE_CREATE: &str = "containerd.events.NamespaceCreate";
    /// The payload type of a namespace's update.
    pub const NAMESPACE_UPDATE: &str = "containerd.events.NamespaceUpdate";
    /// The payload type of a namespace's deletion.
    pub const NAMESPACE_DELETE: &str = "containerd.events.NamespaceDelete";
}

/// Topics strata publishes.
pub mod topics {
    /// The topic of a container's creation.
    pub const CONTAINER_CREATE: &str = "/containers/create";
    /// The topic of a container's update.
    pub const CONTAINER_UPDATE: &str = "/containers/update";
    /// The topic of a container's deletion.
    pub const CONTAINER_DELETE: &str = "/containers/delete";
    /// The topic of a blob's deletion.
    pub const CONTENT_DELETE: &str = "/content/delete";
    /// The topic of an active snapshot's preparation.
    pub const SNAPSHOT_PREPARE: &str = "/snapshot/prepare";
    /// The topic of a snapshot's commit.
    pub const SNAPSHOT_COMMIT: &str = "/snapshot/commit";
    /// The topic of a snapshot's removal.
    pub const SNAPSHOT_REMOVE: &str = "/snapshot/remove";
    /// The topic of an image's creation.
    pub const IMAGE_CREATE: &str = "/images/create";
    /// The topic of an image's update.
    pub const IMAGE_UPDATE: &str = "/images/update";
    /// The topic of an image's deletion.
    pub const IMAGE_DELETE: &str = "/images/delete";
    /// The topic of a namespace's creation.
    pub const NAMESPACE_CREATE: &str = "/namespaces/create";
    /// The topic of a namespace's update.
    pub const NAMESPACE_UPDATE: &str = "/namespaces/update";
    /// The topic of a namespace's deletion.
    pub const NAMESPACE_DELETE: &str = "/namespaces/delete";
}

/// Checks a topic as containerd does: it starts with `/` and every `/`-separated component is
/// an identifier (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`).
pub fn validate_topic(topic: &str) -> Result<()> {
    let bad = |why: String| Error::invalid_argument(format!("event topic {topic:?}: {why}"));
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(bad(if topic.is_empty() {
            "must not be empty".into()
        } else {
            "must start with '/'".into()
        }));
    };
    if rest.is_empty() {
        return Err(bad("must have at least one component".into()));
    }
    for component in rest.split('/') {
        identifiers::validate("component", component).map_err(|e| bad(e.message().to_owned()))?;
    }
    Ok(())
}

/// Checks a forwarded envelope: a valid namespace and topic, and a timestamp.
pub fn validate_envelope(env: &Envelope) -> Result<()> {
    identifiers::validate_namespace(&env.namespace)
        .map_err(|e| e.context(format!("event envelope on topic {:?}", env.topic)))?;
    validate_topic(&env.topic)?;
    if env.timestamp == SystemTime::UNIX_EPOCH {
        return Err(Error::invalid_argument(format!(
            "event envelope on topic {:?}: timestamp must be set on a forwarded event",
            env.topic
        )));
    }
    Ok(())
}

/// Filters on envelopes see `namespace` and `topic`; `event.*` needs the payload decoded, which
/// the service that knows the event types adds on top.
impl crate::filters::Adaptor for Envelope {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "namespace" => Some(self.namespace.clone()).filter(|s| !s.is_empty()),
            [f] if f == "topic" => Some(self.topic.clone()).filter(|s| !s.is_empty()),
            _ => None,
        }
    }
}

/// Where events go: the in-process exchange of a service, or the Events API across a socket.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `event` on `topic` in `ns`, stamped now. InvalidArgument for a bad topic or
    /// namespace.
    fn publish(&self, ns: &str, topic: &str, event: Any)
    -> impl Future<Output = Result<()>> + Send;
    /// Delivers an envelope made elsewhere as it is (after [`validate_envelope`]).
    fn forward(&self, envelope: Envelope) -> impl Future<Output = Result<()>> + Send;
}

/// Where a service that does not own the exchange posts what it did (the storage services:
/// content, snapshots, images, namespaces). Best effort and never waiting: a post returns at
/// once whatever becomes of the event, so no request is slowed down or failed by the exchange
/// being away; an event that cannot be delivered is dropped (and logged).
pub trait EventSink: Send + Sync + 'static {
    /// Posts `event` on `topic` in namespace `ns`, stamped now.
    fn post(&self, ns: &str, topic: &str, event: Any);
}

/// Drops every event: a service deployed without an exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn post(&self, _: &str, _: &str, _: Any) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        for ok in ["/containers/create", "/tasks/exit", "/a", "/x-1/y_2/z.3"] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/", "containers", "/a//b", "/a/", "/a b", "/ä", "/-a"] {
            let err = validate_topic(bad).expect_err(bad);
            assert!(err.message().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
