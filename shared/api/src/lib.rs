//! strata's wire contract: containerd's v1 gRPC API (same packages, services, methods and field
//! numbers, written from the published contract) and strata's own `strata.gateway.v1`.
//!
//! Modules mirror the protobuf packages: `containerd::services::content::v1`, and so on.

#![forbid(unsafe_code)]
// Exempt from `missing_docs`: almost all of this crate is prost and tonic code generated from
// `proto/`, documented only where the .proto files comment (nearly a thousand items are not).
// The items written here are documented all the same.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/strata_api.rs"));

/// Encoded `FileDescriptorSet` of every file in `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Full names of the gRPC services in `proto/`, one list: each is the `NAME` tonic's generated
/// server routes by (`tonic::server::NamedService`). Services register these for health and
/// reflection; the gateway routes by them and introspection lists them.
pub mod service_names {
    use crate::containerd::services as c;
    use crate::strata as s;
    use tonic::server::NamedService;

    /// The `NamedService::NAME` of a generated server type (whose handler type does not matter).
    macro_rules! name {
        ($($seg:ident)::+) => {
            <$($seg)::+<()> as NamedService>::NAME
        };
    }

    /// containerd's Content service.
    pub const CONTENT: &str = name!(c::content::v1::content_server::ContentServer);
    /// containerd's Snapshots service.
    pub const SNAPSHOTS: &str = name!(c::snapshots::v1::snapshots_server::SnapshotsServer);
    /// containerd's Diff service.
    pub const DIFF: &str = name!(c::diff::v1::diff_server::DiffServer);
    /// containerd's Images service.
    pub const IMAGES: &str = name!(c::images::v1::images_server::ImagesServer);
    /// containerd's Leases service.
    pub const LEASES: &str = name!(c::leases::v1::leases_server::LeasesServer);
    /// containerd's Namespaces service.
    pub const NAMESPACES: &str = name!(c::namespaces::v1::namespaces_server::NamespacesServer);
    /// containerd's Containers service.
    pub const CONTAINERS: &str = name!(c::containers::v1::containers_server::ContainersServer);
    /// containerd's Events service.
    pub const EVENTS: &str = name!(c::events::v1::events_server::EventsServer);
    /// containerd's Tasks service.
    pub const TASKS: &str = name!(c::tasks::v1::tasks_server::TasksServer);
    /// containerd's Introspection service.
    pub const INTROSPECTION: &str =
        name!(c::introspection::v1::introspection_server::IntrospectionServer);
    /// containerd's Version service.
    pub const VERSION: &str = name!(c::version::v1::version_server::VersionServer);
    /// strata's Gateway service (served by strata-gateway).
    pub const GATEWAY: &str = name!(s::gateway::v1::gateway_server::GatewayServer);
    /// strata's GarbageCollector service (served by strata-images).
    pub const GARBAGE_COLLECTOR: &str =
        name!(s::images::v1::garbage_collector_server::GarbageCollectorServer);
    /// strata's Networks service (served by strata-network).
    pub const NETWORKS: &str = name!(s::network::v1::networks_server::NetworksServer);
    /// strata's Io service (the output processes wrote; served by strata-tasks).
    pub const IO: &str = name!(s::tasks::v1::io_server::IoServer);

    /// Every service in `proto/`.
    pub const ALL: &[&str] = &[
        CONTENT,
        SNAPSHOTS,
        DIFF,
        IMAGES,
        LEASES,
        NAMESPACES,
        CONTAINERS,
        EVENTS,
        TASKS,
        INTROSPECTION,
        VERSION,
        GATEWAY,
        GARBAGE_COLLECTOR,
        NETWORKS,
        IO,
    ];
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    /// The list names every service of `proto/`, each once.
    #[test]
    fn service_names_are_every_service_of_the_contract() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let mut contract: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        contract.sort();
        let mut listed: Vec<String> = super::service_names::ALL
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, contract);
    }
}
