//! Conversions between protobuf messages and the `strata-core` image, lease and namespace types.

pub mod images {
    //! `containerd.services.images.v1.Image` ⇄ [`strata_core::images::Image`].
    use crate::convert::{descriptors, system_time, timestamp};
    use strata_api::containerd::services::images::v1 as pb;
    use strata_core::descriptor::Descriptor;
    use strata_core::images::Image;
    use strata_core::{Digest, Error};

    /// An image record as the Images API sends it.
    pub fn to_pb(i: Image) -> pb::Image {
        pb::Image {
            name: i.name,
            labels: i.labels,
            target: Some(descriptors::to_pb(i.target)),
            created_at: Some(timestamp(i.created_at)),
            updated_at: Some(timestamp(i.updated_at)),
        }
    }

    /// A complete image: the target must be there and valid.
    pub fn from_pb(i: pb::Image) -> Result<Image, Error> {
        let target = i.target.ok_or_else(|| {
            Error::invalid_argument(format!("image {:?}: a target is required", i.name))
        })?;
        let target = descriptors::from_pb(target)
            .map_err(|e| e.context(format!("image {:?}: target", i.name)))?;
        Ok(Image {
            name: i.name,
            labels: i.labels,
            target,
            created_at: system_time(i.created_at),
            updated_at: system_time(i.updated_at),
        })
    }

    /// An image sent with an update mask. When the mask does not name `target` (an update of
    /// labels or annotations only), clients may send an incomplete target: only its annotations
    /// are kept, beside a placeholder digest the store never reads.
    pub fn from_pb_for_update(i: pb::Image, fieldpaths: &[String]) -> Result<Image, Error> {
        let needs_target = fieldpaths.is_empty() || fieldpaths.iter().any(|p| p == "target");
        if needs_target {
            return from_pb(i);
        }
        let target = match i.target {
            Some(t) => Descriptor {
                digest: Digest::parse(&t.digest).unwrap_or_else(|_| Digest::of(b"")),
                size: u64::try_from(t.size).unwrap_or(0),
                media_type: t.media_type,
                annotations: t.annotations,
            },
            None => Descriptor {
                digest: Digest::of(b""),
                size: 0,
                media_type: String::new(),
                annotations: Default::default(),
            },
        };
        Ok(Image {
            name: i.name,
            labels: i.labels,
            target,
            created_at: system_time(i.created_at),
            updated_at: system_time(i.updated_at),
        })
    }
}

pub mod leases {
    //! `containerd.services.leases.v1` leases and resources.
    use crate::convert::{system_time, timestamp};
    use strata_api::containerd::services::leases::v1 as pb;
    use strata_core::leases::{Lease, Resource};

    /// A lease as the Leases API sends it.
    pub fn to_pb(l: Lease) -> pb::Lease {
        pb::Lease {
            id: l.id,
            created_at: Some(timestamp(l.created_at)),
            labels: l.labels,
        }
    }

    /// A lease from the Leases API.
    pub fn from_pb(l: pb::Lease) -> Lease {
        Lease {
            id: l.id,
            created_at: system_time(l.created_at),
            labels: l.labels,
        }
    }

    /// A resource held by a lease, as the Leases API sends it.
    pub fn resource_to_pb(r: Resource) -> pb::Resource {
        pb::Resource {
            id: r.id,
            r#type: r.kind,
        }
    }

    /// A resource held by a lease, from the Leases API.
    pub fn resource_from_pb(r: pb::Resource) -> Resource {
        Resource {
            id: r.id,
            kind: r.r#type,
        }
    }
}

pub mod namespaces {
    //! `containerd.services.namespaces.v1.Namespace` ⇄ [`strata_core::namespaces::Namespace`].
    use strata_api::containerd::services::namespaces::v1 as pb;
    use strata_core::namespaces::Namespace;

    /// A namespace as the Namespaces API sends it.
    pub fn to_pb(n: Namespace) -> pb::Namespace {
        pb::Namespace {
            name: n.name,
            labels: n.labels,
        }
    }

    /// A namespace from the Namespaces API.
    pub fn from_pb(n: pb::Namespace) -> Namespace {
        Namespace {
            name: n.name,
            labels: n.labels,
        }
    }
}
