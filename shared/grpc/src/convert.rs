//! Conversions between protobuf messages and `strata-core` domain types.

use prost_types::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_api::containerd::services::content::v1 as pb;
use strata_core::content::{Info, Status};
use strata_core::{Digest, Error};

/// A time as a protobuf `Timestamp`; a time before the epoch becomes the epoch.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf `Timestamp` as a time; a missing one, or negative fields, read as the epoch.
pub fn system_time(t: Option<Timestamp>) -> SystemTime {
    let Some(t) = t else { return UNIX_EPOCH };
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// A size from the wire; negative sizes are refused, naming the field.
pub fn size(what: &str, v: i64) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::invalid_argument(format!("{what} {v} is negative")))
}

/// A size as the wire's `int64`, saturating at `i64::MAX`.
pub fn wire_size(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An optional digest: empty means none.
pub fn opt_digest(s: &str) -> Result<Option<Digest>, Error> {
    if s.is_empty() {
        Ok(None)
    } else {
        Digest::parse(s).map(Some)
    }
}

/// A blob's info as the Content API sends it.
pub fn info_to_pb(info: Info) -> pb::Info {
    pb::Info {
        digest: info.digest.to_string(),
        size: wire_size(info.size),
        created_at: Some(timestamp(info.created_at)),
        updated_at: Some(timestamp(info.updated_at)),
        labels: info.labels,
    }
}

/// A blob's info from the Content API; a bad digest or a negative size is refused.
pub fn info_from_pb(info: pb::Info) -> Result<Info, Error> {
    Ok(Info {
        digest: Digest::parse(&info.digest)?,
        size: size("size", info.size)?,
        created_at: system_time(info.created_at),
        updated_at: system_time(info.updated_at),
        labels: info.labels,
    })
}

/// An ingest's status as the Content API sends it (no expected digest: empty).
pub fn status_to_pb(st: Status) -> pb::Status {
    pb::Status {
        started_at: Some(timestamp(st.started_at)),
        updated_at: Some(timestamp(st.updated_at)),
        r#ref: st.reference,
        offset: wire_size(st.offset),
        total: wire_size(st.total),
        expected: st.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

/// An ingest's status from the Content API; a bad digest or a negative offset or total is
/// refused.
pub fn status_from_pb(st: pb::Status) -> Result<Status, Error> {
    Ok(Status {
        reference: st.r#ref,
        offset: size("offset", st.offset)?,
        total: size("total", st.total)?,
        expected: opt_digest(&st.expected)?,
        started_at: system_time(st.started_at),
        updated_at: system_time(st.updated_at),
    })
}

pub mod mounts {
    //! `containerd.types.Mount` ⇄ [`strata_core::mount::Mount`].
    use strata_api::containerd::types as pb;
    use strata_core::mount::Mount;

    /// A mount as containerd sends it.
    pub fn to_pb(m: Mount) -> pb::Mount {
        pb::Mount {
            r#type: m.kind,
            source: m.source,
            target: m.target,
            options: m.options,
        }
    }

    /// A mount from containerd's message.
    pub fn from_pb(m: pb::Mount) -> Mount {
        Mount {
            kind: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        }
    }

    /// [`to_pb`] for each mount.
    pub fn all_to_pb(ms: Vec<Mount>) -> Vec<pb::Mount> {
        ms.into_iter().map(to_pb).collect()
    }

    /// [`from_pb`] for each mount.
    pub fn all_from_pb(ms: Vec<pb::Mount>) -> Vec<Mount> {
        ms.into_iter().map(from_pb).collect()
    }
}

pub mod snapshots {
    //! Snapshot info and kinds.
    use super::{system_time, timestamp};
    use strata_api::containerd::services::snapshots::v1 as pb;
    use strata_core::Error;
    use strata_core::snapshots::{Info, Kind};

    /// A snapshot kind as the Snapshots API's enum.
    pub fn kind_to_pb(k: Kind) -> pb::Kind {
        match k {
            Kind::View => pb::Kind::View,
            Kind::Active => pb::Kind::Active,
            Kind::Committed => pb::Kind::Committed,
        }
    }

    /// A snapshot kind from the Snapshots API's enum value; `UNKNOWN` (0) or a value out of
    /// range is refused.
    pub fn kind_from_pb(v: i32) -> Result<Kind, Error> {
        match pb::Kind::try_from(v) {
            Ok(pb::Kind::View) => Ok(Kind::View),
            Ok(pb::Kind::Active) => Ok(Kind::Active),
            Ok(pb::Kind::Committed) => Ok(Kind::Committed),
            _ => Err(Error::invalid_argument(format!(
                "unknown snapshot kind {v}"
            ))),
        }
    }

    /// A snapshot's info as the Snapshots API sends it.
    pub fn info_to_pb(i: Info) -> pb::Info {
        pb::Info {
            name: i.name,
            parent: i.parent,
            kind: kind_to_pb(i.kind).into(),
            created_at: Some(timestamp(i.created_at)),
            updated_at: Some(timestamp(i.updated_at)),
            labels: i.labels,
        }
    }

    /// For updates the kind is irrelevant: an unknown kind is taken as active.
    pub fn info_from_pb(i: pb::Info) -> Info {
        Info {
            name: i.name,
            parent: i.parent,
            kind: kind_from_pb(i.kind).unwrap_or(Kind::Active),
            created_at: system_time(i.created_at),
            updated_at: system_time(i.updated_at),
            labels: i.labels,
        }
    }
}

pub mod descriptors {
    //! `containerd.types.Descriptor` ⇄ [`strata_core::descriptor::Descriptor`].
    use strata_api::containerd::types as pb;
    use strata_core::descriptor::Descriptor;
    use strata_core::{Digest, Error};

    /// A descriptor as containerd sends it.
    pub fn to_pb(d: Descriptor) -> pb::Descriptor {
        pb::Descriptor {
            media_type: d.media_type,
            digest: d.digest.to_string(),
            size: super::wire_size(d.size),
            annotations: d.annotations,
        }
    }

    /// A descriptor from containerd's message; a bad digest or a negative size is refused.
    pub fn from_pb(d: pb::Descriptor) -> Result<Descriptor, Error> {
        Ok(Descriptor {
            digest: Digest::parse(&d.digest)?,
            size: super::size("descriptor size", d.size)?,
            media_type: d.media_type,
            annotations: d.annotations,
        })
    }
}
