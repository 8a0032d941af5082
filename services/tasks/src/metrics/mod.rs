//! Task metrics: the statistics of the cgroup a task's init process lives in, read from the
//! cgroup file systems and shaped as containerd's cgroups stats, `io.containerd.cgroups.v1` on
//! hosts with v1 controllers (legacy or hybrid layout) and `io.containerd.cgroups.v2` on
//! unified hosts, which is what containerd answers on such hosts.
//!
//! The cgroup is found from `/proc/<pid>/cgroup` (which cgroup, per hierarchy) and this
//! process's `/proc/self/mountinfo` (where each hierarchy is mounted), so it does not matter
//! which runtime placed the task or under which path. Nothing here knows of gRPC: [`collect`]
//! returns the message and the adapter wraps it in containerd's `Metric`.

mod locate;
mod v1;
mod v2;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use strata_api::io::containerd::cgroups;
use strata_core::filters::Adaptor;

pub use locate::locate;
pub use v1::read_v1;
pub use v2::read_v2;

/// The type URL containerd gives cgroup v1 statistics (no `type.googleapis.com/` prefix).
pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// The type URL containerd gives cgroup v2 statistics.
pub const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The process or its cgroup went away (the task ended while being read).
    #[error("{what} is gone")]
    Gone { what: String },
    #[error(
        "process {pid} is in no cgroup this service can see (no v1 controller or cgroup2 mount)"
    )]
    NoCgroup { pid: u32 },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot parse {text:?}", path.display())]
    Parse { path: PathBuf, text: String },
}

impl From<MetricsError> for strata_core::Error {
    fn from(e: MetricsError) -> Self {
        match e {
            MetricsError::Gone { .. } => Self::not_found(e.to_string()),
            MetricsError::NoCgroup { .. } => Self::failed_precondition(e.to_string()),
            MetricsError::Read { .. } | MetricsError::Parse { .. } => Self::internal(e.to_string()),
        }
    }
}

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

/// Where a process's cgroup is, on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirs {
    /// (controller, directory) for each v1 controller the process was placed in.
    V1(Vec<(String, PathBuf)>),
    /// The process's directory in the unified hierarchy.
    V2(PathBuf),
}

/// Reads the statistics of the cgroup process `pid` is in.
pub fn collect(pid: u32) -> Result<Metrics> {
    let membership =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|_| MetricsError::Gone {
            what: format!("process {pid}"),
        })?;
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    match locate(&membership, &mountinfo).ok_or(MetricsError::NoCgroup { pid })? {
        CgroupDirs::V1(dirs) => read_v1(&dirs).map(|m| Metrics::V1(Box::new(m))),
        CgroupDirs::V2(dir) => read_v2(&dir).map(|m| Metrics::V2(Box::new(m))),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| MetricsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A file that may be absent (a kernel without that counter, swap accounting off).
fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetricsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    text.trim().parse().map_err(|_| MetricsError::Parse {
        path: path.to_owned(),
        text: text.trim().to_owned(),
    })
}

/// A single number; absent files read as 0. `max` (no limit) becomes `unlimited`.
fn number(dir: &Path, file: &str, unlimited: u64) -> Result<u64> {
    let path = dir.join(file);
    match read_opt(&path)? {
        None => Ok(0),
        Some(t) if t.trim() == "max" => Ok(unlimited),
        Some(t) => parse_u64(&path, &t),
    }
}

/// A flat keyed file (`key value` per line); absent files are empty.
fn keyed(dir: &Path, file: &str) -> Result<HashMap<String, u64>> {
    let path = dir.join(file);
    let mut out = HashMap::new();
    for line in read_opt(&path)?.unwrap_or_default().lines() {
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.insert(k.to_owned(), parse_u64(&path, v)?);
        }
    }
    Ok(out)
}

/// Copies keys of a flat keyed file into fields of a message, missing keys as 0.
macro_rules! fill {
    ($msg:expr, $map:expr, { $($field:ident: $key:literal),* $(,)? }) => {
        $( $msg.$field = $map.get($key).copied().unwrap_or(0); )*
    };
}

use fill;

/// The controller directory must exist: a task that ended meanwhile takes it away.
fn require_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(MetricsError::Gone {
            what: format!("cgroup {}", dir.display()),
        })
    }
}

/// The huge page sizes a hugetlb cgroup has files for (`hugetlb.<size><suffix>`), sorted.
fn page_sizes(d: &Path, suffix: &str) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(d).map_err(|source| MetricsError::Read {
        path: d.to_owned(),
        source,
    })?;
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            // v2 also has hugetlb.<size>.rsvd.current: not the page size's own counter.
            (!size.contains('.')).then(|| size.to_owned())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use strata_api::io::containerd::cgroups::v2;

    pub(super) fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

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
