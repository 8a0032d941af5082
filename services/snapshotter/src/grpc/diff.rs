//! `containerd.services.diff.v1.Diff` over the [`Differ`](crate::diff::Differ).

use std::sync::Arc;
use strata_grpc::convert::mounts;
use strata_grpc::metadata::namespace;
use strata_grpc::to_status;
use tonic::{Request, Response, Status};

/// Serves `containerd.services.diff.v1.Diff` over a [`Differ`].
pub struct DiffService<C> {
    differ: Arc<crate::diff::Differ<C>>,
}

impl<C: strata_core::content::ContentStore + Clone> DiffService<C> {
    pub fn new(differ: Arc<crate::diff::Differ<C>>) -> Self {
        Self { differ }
    }

    pub fn into_server(
        self,
    ) -> strata_api::containerd::services::diff::v1::diff_server::DiffServer<Self> {
        strata_api::containerd::services::diff::v1::diff_server::DiffServer::new(self)
    }
}

#[tonic::async_trait]
impl<C: strata_core::content::ContentStore + Clone>
    strata_api::containerd::services::diff::v1::diff_server::Diff for DiffService<C>
{
    async fn apply(
        &self,
        request: Request<strata_api::containerd::services::diff::v1::ApplyRequest>,
    ) -> Result<Response<strata_api::containerd::services::diff::v1::ApplyResponse>, Status> {
        use strata_grpc::convert::descriptors;
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("apply request needs a diff descriptor"))?;
        let desc = descriptors::from_pb(desc).map_err(to_status)?;
        let mounts = mounts::all_from_pb(r.mounts);
        let applied = self
            .differ
            .apply(&ns, &desc, &mounts, r.sync_fs)
            .await
            .map_err(to_status)?;
        Ok(Response::new(
            strata_api::containerd::services::diff::v1::ApplyResponse {
                applied: Some(descriptors::to_pb(applied)),
            },
        ))
    }

    async fn diff(
        &self,
        request: Request<strata_api::containerd::services::diff::v1::DiffRequest>,
    ) -> Result<Response<strata_api::containerd::services::diff::v1::DiffResponse>, Status> {
        use strata_grpc::convert::descriptors;
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let desc = self
            .differ
            .diff(
                &ns,
                &mounts::all_from_pb(r.left),
                &mounts::all_from_pb(r.right),
                &r.media_type,
                &r.r#ref,
                r.labels,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(
            strata_api::containerd::services::diff::v1::DiffResponse {
                diff: Some(descriptors::to_pb(desc)),
            },
        ))
    }
}
