//! Task metrics: the statistics of the cgroup a task's init process lives in, read from the
//! cgroup file systems and shaped as containerd's cgroups stats, `io.containerd.cgroups.v1` on
//! hosts with v1 controllers (legacy or hybrid layout) and `io.containerd.cgroups.v2` on
//! unified hosts, which is what containerd answers on such hosts.
//!
//! The cgroup is found from `/proc/<pid>/cgroup` (which cgroup, per hierarchy) and this
//! process's `/proc/self/mountinfo` (where each hierarchy is mounted), so it does not matter
//! which runtime placed the task or under which path; finding and reading it is
//! `strata-cgroup`'s ([`strata_cgroup::locate_pid`], [`strata_cgroup::stats`]). Nothing here
//! knows of gRPC: [`collect`] returns the message and the adapter wraps it in containerd's
//! `Metric`.

use strata_api::io::containerd::cgroups;
use strata_cgroup::Cgroup;
use strata_cgroup::stats::{read_v1, read_v2};
use strata_core::filters::Adaptor;

/// Why a task's statistics could not be read: `Gone` when the task ended meanwhile.
pub use strata_cgroup::Error as MetricsError;

/// The type URL containerd gives cgroup v1 statistics (no `type.googleapis.com/` prefix).
pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// The type URL containerd gives cgroup v2 statistics.
pub const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// A task's statistics, in the cgroup version of the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    V1(Box<cgroups::v1::Metrics>),
    V2(Box<cgroups::v2::Metrics>),
}

impl Metrics {
    pub fn type_url(&self) -> &'static str {
        match self {
            Self::V1(_) => V1_TYPE_URL,
            Self::V2(_) => V2_TYPE_URL,
        }
    }

    /// The statistics as `Metric.data` carries them.
    pub fn to_any(&self) -> prost_types::Any {
        let value = match self {
            Self::V1(m) => prost::Message::encode_to_vec(m.as_ref()),
            Self::V2(m) => prost::Message::encode_to_vec(m.as_ref()),
        };
        prost_types::Any {
            type_url: self.type_url().to_owned(),
            value,
        }
    }
}

/// The fields a Metrics request's filters can name: `id` and `namespace`.
pub struct TaskFields<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
}

impl Adaptor for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "id" => Some(self.id.to_owned()),
            [f] if f == "namespace" => Some(self.namespace.to_owned()),
            _ => None,
        }
    }
}

/// Reads the statistics of the cgroup process `pid` is in.
pub fn collect(pid: u32) -> Result<Metrics> {
    match strata_cgroup::locate_pid(pid)? {
        Cgroup::V1(dirs) => read_v1(&dirs).map(|m| Metrics::V1(Box::new(m))),
        Cgroup::V2(dir) => read_v2(&dir).map(|m| Metrics::V2(Box::new(m))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use strata_api::io::containerd::cgroups::v2;

    #[test]
    fn the_any_carries_containerd_type_urls() {
        let any = Metrics::V1(Box::default()).to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v2::Metrics {
            pids: Some(v2::PidsStat {
                current: 1,
                limit: 2,
            }),
            ..Default::default()
        };
        let any = Metrics::V2(Box::new(m.clone())).to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(
            <v2::Metrics as prost::Message>::decode(any.value.as_slice()).unwrap(),
            m
        );
    }

    #[test]
    fn filters_see_id_and_namespace() {
        let f = strata_core::filters::Filter::parse_all(&["id==web"]).unwrap();
        assert!(f.matches(&TaskFields {
            namespace: "default",
            id: "web"
        }));
        assert!(!f.matches(&TaskFields {
            namespace: "default",
            id: "db"
        }));
    }
}
