//! The gateway's own gRPC services, one file each: they convert protobuf to the core's domain
//! types and back. The containerd services of the stack are forwarded by [`crate::router`].

mod convert;
pub mod gateway;
pub mod introspection;
pub mod version;

pub use gateway::GatewayService;
pub use introspection::{Backend, IntrospectionService};
pub use version::{VERSION, VersionService};
