//! Request headers containerd clients send: `containerd-namespace` on every namespaced call and
//! `containerd-lease` where a lease applies.

use strata_core::identifiers;
use tonic::{Request, Status};

/// The header naming a request's namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The header naming the lease a request's new resources are held by.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The validated namespace of a request; FailedPrecondition when missing, as containerd answers.
pub fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let Some(value) = req.metadata().get(NAMESPACE_HEADER) else {
        return Err(Status::failed_precondition(
            "namespace is required: set the containerd-namespace header",
        ));
    };
    let ns = value
        .to_str()
        .map_err(|_| Status::invalid_argument("containerd-namespace header is not valid ASCII"))?;
    identifiers::validate_namespace(ns).map_err(crate::to_status)?;
    Ok(ns.to_owned())
}

/// The lease a request runs under, if any.
pub fn lease<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Adds the namespace header to an outgoing request.
pub fn with_namespace<T>(ns: &str, msg: T) -> Result<Request<T>, strata_core::Error> {
    let mut req = Request::new(msg);
    let value = ns.parse().map_err(|_| {
        strata_core::Error::invalid_argument(format!("namespace {ns:?} is not a valid header"))
    })?;
    req.metadata_mut().insert(NAMESPACE_HEADER, value);
    Ok(req)
}

/// Marks a call strata makes on its own behalf (the collector deleting what nothing holds, the
/// gateway recording a namespace on its first use): the storage services publish no event for
/// it, as containerd publishes none for what its metadata store does by itself.
pub const NO_EVENTS_HEADER: &str = "strata-no-events";

/// Whether the service should publish the event of this request (see [`NO_EVENTS_HEADER`]).
pub fn events_wanted<T>(req: &Request<T>) -> bool {
    req.metadata().get(NO_EVENTS_HEADER).is_none()
}

/// Marks an outgoing request with [`NO_EVENTS_HEADER`].
pub fn without_events<T>(req: &mut Request<T>) {
    req.metadata_mut().insert(
        NO_EVENTS_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
}
