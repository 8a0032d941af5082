//! What `run`, `create` and `exec` are asked for, as the gateway's core takes it: `docker
//! run`'s and `docker exec`'s options. The gRPC adapter converts `strata.gateway.v1` requests
//! into these (`grpc/convert.rs`); a builder step makes them directly.

use std::collections::HashMap;

/// A container to create: its image, its process and how it is confined and connected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// Image name or ID prefix; it must be present (the CLI pulls first).
    pub image: String,
    /// Container ID; empty for a generated one.
    pub name: String,
    /// Replaces the image's CMD when not empty.
    pub args: Vec<String>,
    /// Replaces the image's ENTRYPOINT when not empty.
    pub entrypoint: Vec<String>,
    /// `KEY=VALUE`, added to (or replacing) the image's.
    pub env: Vec<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open for attach (`-i`).
    pub stdin: bool,
    /// `user[:group]`, by name or number; empty for the image's.
    pub user: String,
    /// The working directory; empty for the image's.
    pub workdir: String,
    /// Empty for the first 12 characters of the ID.
    pub hostname: String,
    /// Memory limit in bytes; 0 for none.
    pub memory: i64,
    /// CPU limit in CPUs (quota over a 100 ms period); 0 for none.
    pub cpus: f64,
    /// Maximum number of processes; 0 for none.
    pub pids_limit: i64,
    /// Host paths bind-mounted.
    pub volumes: Vec<Volume>,
    /// "" for the default network, a network's name, "none" or "private" (own namespace,
    /// loopback only), "host", or "container:NAME".
    pub network: String,
    /// A read-only root file system.
    pub read_only: bool,
    /// builtin, runc, crun or a path; empty for the tasks service's default.
    pub runtime: String,
    /// Remove the container once its task exits (`--rm`).
    pub auto_remove: bool,
    /// The container's labels.
    pub labels: HashMap<String, String>,
    /// The snapshotter of its root; empty for the gateway's default.
    pub snapshotter: String,
    /// Capabilities added to the default set (`--cap-add`).
    pub cap_add: Vec<String>,
    /// Capabilities dropped from the default set (`--cap-drop`), before the adds.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// Host devices given to the container (`--device`).
    pub devices: Vec<Device>,
    /// Namespaced kernel parameters (`--sysctl`).
    pub sysctls: HashMap<String, String>,
    /// Supplementary groups by name or number (`--group-add`).
    pub group_add: Vec<String>,
    /// tmpfs mounts (`--tmpfs`).
    pub tmpfs: Vec<Tmpfs>,
    /// Resource limits (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    /// Docker's security options (`seccomp=…`, `no-new-privileges`, `systempaths=…`).
    pub security_opt: Vec<String>,
    /// Ports to publish (`-p`).
    pub ports: Vec<PortMapping>,
    /// Publish every port the image exposes, each on a free host port (`-P`).
    pub publish_all: bool,
    /// Nameservers replacing the host's (`--dns`).
    pub dns: Vec<String>,
    /// Search domains replacing the host's (`--dns-search`).
    pub dns_search: Vec<String>,
    /// resolv.conf options replacing the host's (`--dns-option`).
    pub dns_options: Vec<String>,
    /// Extra /etc/hosts lines, `NAME:IP` (`--add-host`).
    pub extra_hosts: Vec<String>,
    /// More names the container answers to on a user network (`--network-alias`).
    pub network_aliases: Vec<String>,
}

/// A host path bind-mounted into the container (`-v SOURCE:DESTINATION[:ro]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// The host path.
    pub source: String,
    /// Where it appears in the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A host device given to the container (`--device HOST[:CONTAINER[:PERMISSIONS]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// The device (or a directory of devices) on the host.
    pub host_path: String,
    /// Where it appears in the container; empty for the host path.
    pub container_path: String,
    /// Any of r, w, m; empty for rwm.
    pub permissions: String,
}

/// A tmpfs mount (`--tmpfs DEST[:OPTIONS]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tmpfs {
    /// Where it is mounted.
    pub destination: String,
    /// Mount options, comma-separated (`size=64m,mode=1777,noexec`).
    pub options: String,
}

/// A resource limit (`--ulimit NAME=SOFT[:HARD]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ulimit {
    /// nofile, nproc, core, … (RLIMIT_ without the prefix, any case).
    pub name: String,
    /// The soft limit.
    pub soft: i64,
    /// The hard limit.
    pub hard: i64,
}

/// A published port (`-p [IP:]HOST:CONTAINER[/PROTO]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMapping {
    /// Empty for every address of the host.
    pub host_ip: String,
    /// 0 for a free port.
    pub host_port: u32,
    /// The container's port.
    pub container_port: u32,
    /// "tcp" (default) or "udp".
    pub protocol: String,
}

/// A process to run in a running container (`docker exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The container.
    pub container_id: String,
    /// The command.
    pub args: Vec<String>,
    /// `KEY=VALUE`, added to (or replacing) the container's.
    pub env: Vec<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open for attach.
    pub stdin: bool,
    /// `user[:group]`; empty for the container's.
    pub user: String,
    /// The working directory; empty for the container's.
    pub workdir: String,
    /// The process's ID; empty for a generated one.
    pub exec_id: String,
    /// Nobody will attach: the process is deleted as soon as it exits.
    pub detach: bool,
}
