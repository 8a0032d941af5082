//! containerd's Version service, answered by the gateway for the whole stack.

use strata_api::containerd::services::version::v1 as vpb;
use strata_api::containerd::services::version::v1::version_server::{Version, VersionServer};
use tonic::{Request, Response, Status};

/// The version strata reports where containerd's is asked for.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct VersionService;

impl VersionService {
    pub fn into_server(self) -> VersionServer<Self> {
        VersionServer::new(self)
    }
}

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(
        &self,
        _request: Request<()>,
    ) -> Result<Response<vpb::VersionResponse>, Status> {
        Ok(Response::new(vpb::VersionResponse {
            version: format!("strata {VERSION}"),
            revision: option_env!("STRATA_REVISION").unwrap_or("").to_owned(),
        }))
    }
}
