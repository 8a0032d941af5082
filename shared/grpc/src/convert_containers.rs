//! Conversions between protobuf messages and the `strata-core` container and event types.

use crate::convert::{system_time, timestamp};
use strata_core::containers::Any;

/// `google.protobuf.Any` → [`Any`], bytes kept as sent.
pub fn any_from_pb(a: prost_types::Any) -> Any {
    Any {
        type_url: a.type_url,
        value: a.value,
    }
}

/// [`Any`] → `google.protobuf.Any`, bytes kept as they are.
pub fn any_to_pb(a: Any) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url,
        value: a.value,
    }
}

pub mod containers {
    //! `containerd.services.containers.v1.Container` ⇄ [`strata_core::containers::Container`].
    use super::{any_from_pb, any_to_pb, system_time, timestamp};
    use strata_api::containerd::services::containers::v1 as pb;
    use strata_core::containers::{Container, Runtime};

    /// A container record as the Containers API sends it.
    pub fn to_pb(c: Container) -> pb::Container {
        pb::Container {
            id: c.id,
            labels: c.labels,
            image: c.image,
            runtime: Some(pb::container::Runtime {
                name: c.runtime.name,
                options: c.runtime.options.map(any_to_pb),
            }),
            spec: c.spec.map(any_to_pb),
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            created_at: Some(timestamp(c.created_at)),
            updated_at: Some(timestamp(c.updated_at)),
            extensions: c
                .extensions
                .into_iter()
                .map(|(k, v)| (k, any_to_pb(v)))
                .collect(),
            sandbox: c.sandbox,
        }
    }

    /// A container record from the Containers API; a missing runtime is one with no name.
    pub fn from_pb(c: pb::Container) -> Container {
        let runtime = c.runtime.unwrap_or_default();
        Container {
            id: c.id,
            labels: c.labels,
            image: c.image,
            runtime: Runtime {
                name: runtime.name,
                options: runtime.options.map(any_from_pb),
            },
            spec: c.spec.map(any_from_pb),
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            created_at: system_time(c.created_at),
            updated_at: system_time(c.updated_at),
            extensions: c
                .extensions
                .into_iter()
                .map(|(k, v)| (k, any_from_pb(v)))
                .collect(),
            sandbox: c.sandbox,
        }
    }
}

pub mod events {
    //! `containerd.types.Envelope` ⇄ [`strata_core::events::Envelope`].
    use super::{any_from_pb, any_to_pb, system_time, timestamp};
    use strata_api::containerd::types as pb;
    use strata_core::events::Envelope;

    /// An event as containerd's envelope.
    pub fn to_pb(e: Envelope) -> pb::Envelope {
        pb::Envelope {
            timestamp: Some(timestamp(e.timestamp)),
            namespace: e.namespace,
            topic: e.topic,
            event: e.event.map(any_to_pb),
        }
    }

    /// A missing timestamp becomes the epoch, which forwarding refuses.
    pub fn from_pb(e: pb::Envelope) -> Envelope {
        Envelope {
            timestamp: system_time(e.timestamp),
            namespace: e.namespace,
            topic: e.topic,
            event: e.event.map(any_from_pb),
        }
    }
}
