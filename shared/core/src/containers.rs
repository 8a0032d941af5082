//! The container resource: the metadata of a container (image, runtime, OCI spec, snapshot), per
//! namespace, as containerd's Containers API keeps it. One trait, a local implementation in
//! `strata-tasks` and a remote one (a gRPC client) in `strata-grpc`; one conformance suite runs
//! against both.
//!
//! A container record is only metadata: it runs nothing. The Tasks API starts processes in it.

use crate::errdefs::{Error, Result};
use crate::{identifiers, labels};
use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

/// Container label: its task's root file system is mounted with overlayfs's `volatile` option,
/// which drops every sync of the writable layer (the container's own fsyncs, and the sync of
/// the whole upper file system that unmounting otherwise does). The layer then does not
/// survive a host crash: the gateway sets it for containers removed when they exit
/// (`strata run --rm`, as Podman does for `--rm`); any client that accepts that may set it.
pub const LABEL_VOLATILE_ROOTFS: &str = "io.strata.rootfs.volatile";

/// A protobuf `Any` kept as sent: type URL and encoded bytes, never decoded by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Any {
    /// Names the message type of `value`.
    pub type_url: String,
    /// The encoded message.
    pub value: Vec<u8>,
}

/// The runtime a container runs under, with its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    /// For example `io.containerd.runc.v2`; required.
    pub name: String,
    /// The runtime's options, passed on as sent.
    pub options: Option<Any>,
}

/// A container as one namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// An identifier (see [`identifiers::validate`]).
    pub id: String,
    /// Labels (see [`labels::validate`]).
    pub labels: HashMap<String, String>,
    /// The image reference the container was made from; not checked.
    pub image: String,
    /// Immutable once created.
    pub runtime: Runtime,
    /// The OCI runtime spec, required, kept byte for byte with its type URL.
    pub spec: Option<Any>,
    /// Immutable once created.
    pub snapshotter: String,
    /// The key of the container's root file system snapshot in `snapshotter`.
    pub snapshot_key: String,
    /// Set by the store at creation; kept across updates.
    pub created_at: SystemTime,
    /// Set by the store at every update.
    pub updated_at: SystemTime,
    /// Clients' own data, by name, kept as sent.
    pub extensions: HashMap<String, Any>,
    /// The sandbox the container belongs to, if any.
    pub sandbox: String,
}

impl Container {
    /// A container with only its id and runtime set.
    pub fn new(id: impl Into<String>, runtime: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            labels: HashMap::new(),
            image: String::new(),
            runtime: Runtime {
                name: runtime.into(),
                options: None,
            },
            spec: None,
            snapshotter: String::new(),
            snapshot_key: String::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            extensions: HashMap::new(),
            sandbox: String::new(),
        }
    }
}

impl crate::filters::Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        let nonempty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        match path {
            [f] if f == "id" => nonempty(&self.id),
            [f] if f == "image" => nonempty(&self.image),
            [f] if f == "snapshotter" => nonempty(&self.snapshotter),
            [f] if f == "snapshot_key" || f == "snapshotkey" => nonempty(&self.snapshot_key),
            [f] if f == "sandbox" => nonempty(&self.sandbox),
            [f, g] if f == "runtime" && g == "name" => nonempty(&self.runtime.name),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
                self.labels.get(&rest.join(".")).cloned()
            }
            _ => None,
        }
    }
}

/// Checks what containerd checks before storing a container: the id, labels, extension keys,
/// a runtime name, a spec, and a snapshotter whenever a snapshot key is given.
pub fn validate(c: &Container) -> Result<()> {
    identifiers::validate("container id", &c.id)?;
    let id = &c.id;
    labels::validate(&c.labels).map_err(|e| e.context(format!("container {id:?}")))?;
    if c.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: extension keys must not be empty"
        )));
    }
    if c.runtime.name.is_empty() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: runtime name must be set"
        )));
    }
    if c.spec.is_none() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: spec must be set"
        )));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::invalid_argument(format!(
            "container {id:?}: snapshotter must be set when snapshot key {:?} is",
            c.snapshot_key
        )));
    }
    Ok(())
}

/// Containers per namespace.
pub trait ContainerStore: Send + Sync + 'static {
    /// NotFound naming the container when absent.
    fn get(&self, ns: &str, id: &str) -> impl Future<Output = Result<Container>> + Send;
    /// Containers matching any of `filters` (fields `id`, `image`, `runtime.name`,
    /// `snapshotter`, `snapshot_key`, `sandbox`, `labels.<key>`), by id.
    fn list(
        &self,
        ns: &str,
        filters: &[String],
    ) -> impl Future<Output = Result<Vec<Container>>> + Send;
    /// AlreadyExists when the id is taken; InvalidArgument when [`validate`] fails. The store
    /// sets both timestamps; labels with empty values are dropped.
    fn create(
        &self,
        ns: &str,
        container: Container,
    ) -> impl Future<Output = Result<Container>> + Send;
    /// Without field paths `labels`, `spec`, `extensions`, `image` and `snapshotkey` are
    /// replaced (and the runtime name and snapshotter must be unchanged); with them only the
    /// named ones change: `labels`, `labels.<key>`, `image`, `spec`, `snapshotkey` (also
    /// `snapshot_key`), `extensions`, `extensions.<key>`. A key absent from the container sent
    /// is removed. Any other path (`runtime` among them) is InvalidArgument. Returns the stored
    /// container.
    fn update(
        &self,
        ns: &str,
        container: Container,
        fieldpaths: &[String],
    ) -> impl Future<Output = Result<Container>> + Send;
    /// NotFound when absent.
    fn delete(&self, ns: &str, id: &str) -> impl Future<Output = Result<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use crate::filters::Filter;

    fn container() -> Container {
        let mut c = Container::new("web-1", "io.containerd.runc.v2");
        c.spec = Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: b"{}".to_vec(),
        });
        c
    }

    #[test]
    fn validation_names_the_container() {
        assert!(validate(&container()).is_ok());
        let mut c = container();
        c.runtime.name.clear();
        let err = validate(&c).expect_err("invalid");
        assert_eq!(err.kind(), Kind::InvalidArgument);
        assert!(err.message().contains("\"web-1\""), "{err}");
        let mut c = container();
        c.spec = None;
        assert!(
            validate(&c)
                .expect_err("invalid")
                .message()
                .contains("spec")
        );
        let mut c = container();
        c.snapshot_key = "k".into();
        assert!(
            validate(&c)
                .expect_err("invalid")
                .message()
                .contains("snapshotter")
        );
        let mut c = container();
        c.id = "a/b".into();
        assert!(
            validate(&c)
                .expect_err("invalid")
                .message()
                .contains("\"a/b\"")
        );
    }

    #[test]
    fn filters_see_containerd_fields() {
        let mut c = container();
        c.image = "docker.io/library/busybox:latest".into();
        c.snapshotter = "overlayfs".into();
        c.snapshot_key = "web-1-snap".into();
        c.labels.insert("app".into(), "web".into());
        for (f, want) in [
            ("id==web-1", true),
            ("runtime.name==io.containerd.runc.v2", true),
            ("image~=busybox", true),
            ("snapshotter==overlayfs", true),
            ("snapshot_key==web-1-snap", true),
            ("labels.app==web", true),
            ("labels.app==db", false),
            ("sandbox", false),
        ] {
            let filter = Filter::parse_all(&[f]).expect("filter");
            assert_eq!(filter.matches(&c), want, "{f}");
        }
    }
}
