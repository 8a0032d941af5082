//! What the service keeps on disk: one JSON file per network and per attachment, written whole
//! or not at all (temp, fsync, rename, fsync the directory).

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::ports::Port;
use strata_core::{Error, Result};

/// The most of a record file read.
const MAX_RECORD: u64 = 4 << 20;

/// A network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Its name.
    pub name: String,
    /// `bridge` (made by strata).
    pub driver: String,
    /// Its IPv4 subnet.
    pub subnet: String,
    /// The bridge's address.
    pub gateway: String,
    /// The Linux bridge.
    pub bridge: String,
    /// Containers resolve each other by name on it.
    pub names: bool,
    /// The default network.
    pub default: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// The CNI configuration list.
    pub config: Value,
}

/// A container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// The container's namespace.
    pub namespace: String,
    /// The container.
    pub container_id: String,
    /// The network.
    pub network: String,
    /// The ID the plugins know the attachment by (unique on the host).
    pub cni_id: String,
    /// The persistent network namespace.
    pub netns: PathBuf,
    /// CIDR.
    pub address: String,
    /// The gateway.
    pub gateway: String,
    /// The interface's MAC address.
    pub mac: String,
    /// Published ports, as bound.
    pub ports: Vec<Port>,
    /// Host name.
    pub hostname: String,
    /// Aliases on a user network.
    pub aliases: Vec<String>,
    /// `--add-host` entries: (name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// The directory of its files.
    pub dir: PathBuf,
    /// When it was made, in seconds since the epoch.
    #[serde(default)]
    pub attached_at: u64,
    /// Its resolv.conf.
    #[serde(default)]
    pub resolv: String,
    /// More networks it was connected to (`strata network connect`), each an interface of
    /// its own in the same namespace.
    #[serde(default)]
    pub links: Vec<Link>,
}

/// A container's interface on a network it was connected to after its first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The network.
    pub network: String,
    /// The interface in the container's namespace (`eth1`, …).
    pub ifname: String,
    /// CIDR.
    pub address: String,
    /// The gateway.
    pub gateway: String,
    /// The interface's MAC address.
    pub mac: String,
    /// Its names on that network.
    pub aliases: Vec<String>,
}

impl AttachmentRecord {
    /// `namespace/container`.
    pub fn key(&self) -> String {
        key(&self.namespace, &self.container_id)
    }

    /// The address without its prefix length.
    pub fn ip(&self) -> &str {
        self.address.split('/').next().unwrap_or("")
    }

    /// Every network it is on: (network, address without prefix, aliases), its first network
    /// first.
    pub fn memberships(&self) -> Vec<(&str, &str, &[String])> {
        std::iter::once((self.network.as_str(), self.ip(), self.aliases.as_slice()))
            .chain(self.links.iter().map(|l| {
                (
                    l.network.as_str(),
                    l.address.split('/').next().unwrap_or(""),
                    l.aliases.as_slice(),
                )
            }))
            .collect()
    }

    /// Whether it is on `network`.
    pub fn is_on(&self, network: &str) -> bool {
        self.network == network || self.links.iter().any(|l| l.network == network)
    }
}

/// `namespace/container`.
pub fn key(ns: &str, id: &str) -> String {
    format!("{ns}/{id}")
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display()))
}

/// Writes `value` as JSON to `path` atomically.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::internal(format!("{}: no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::internal(format!("encoding {}: {e}", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming", path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

/// Removes a record; an absent one is fine.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path, e)),
    }
}

/// Every record in `dir` and its subdirectories (one level), skipping temporary files.
pub fn load_all<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    let mut depth = 0;
    while let Some(d) = dirs.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("listing", &d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io("listing", &d, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if path.is_dir() {
                if depth == 0 {
                    dirs.push(path);
                }
                continue;
            }
            let mut text = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(MAX_RECORD).read_to_end(&mut text))
                .map_err(|e| io("reading", &path, e))?;
            match serde_json::from_slice(&text) {
                Ok(v) => out.push(v),
                Err(e) => tracing::error!("record {} cannot be read: {e}", path.display()),
            }
        }
        depth += 1;
    }
    Ok(out)
}
