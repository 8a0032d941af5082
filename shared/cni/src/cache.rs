//! Results of ADD kept on disk, one file per attachment (`<network>-<container>-<ifname>`),
//! written whole or not at all (temp, fsync, rename, fsync the directory).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::RuntimeConf;
use crate::conf::is_plain_name;
use crate::error::{Error, Result};

/// The most of a cache file read.
const MAX_CACHE: u64 = 4 << 20;

/// An attachment as ADD made it: enough to tear it down with nothing else at hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    /// The network's name.
    pub network: String,
    /// The container.
    pub container_id: String,
    /// The interface inside the namespace.
    pub ifname: String,
    /// The namespace's path.
    pub netns: PathBuf,
    /// `CNI_ARGS` as given.
    #[serde(default)]
    pub args: Vec<(String, String)>,
    /// Capability arguments as given.
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    /// The configuration list it was made with.
    pub config: Value,
    /// The final result of ADD.
    pub result: Value,
}

/// Container IDs, interface and network names go into file names: plain names only.
pub(crate) fn check_key(network: &str, rt: &RuntimeConf) -> Result<()> {
    for (what, value) in [
        ("network name", network),
        ("container ID", rt.container_id.as_str()),
        ("interface name", rt.ifname.as_str()),
    ] {
        if !is_plain_name(value) {
            return Err(Error::InvalidArgument {
                what,
                value: value.to_owned(),
                message: "use letters, digits, '.', '_' and '-'".into(),
            });
        }
    }
    if rt.ifname.len() > 15 {
        return Err(Error::InvalidArgument {
            what: "interface name",
            value: rt.ifname.clone(),
            message: "longer than 15 characters".into(),
        });
    }
    Ok(())
}

fn file(dir: &Path, network: &str, container: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{network}-{container}-{ifname}"))
}

impl CachedAttachment {
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let path = file(dir, &self.network, &self.container_id, &self.ifname);
        let tmp = dir.join(format!(
            ".{}-{}-{}.tmp",
            self.network, self.container_id, self.ifname
        ));
        let json = serde_json::to_vec(self).map_err(|e| Error::BadResult {
            plugin: String::new(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming", &path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("syncing", dir, e))
    }

    pub(crate) fn read(dir: &Path, network: &str, rt: &RuntimeConf) -> Result<Option<Self>> {
        read_file(&file(dir, network, &rt.container_id, &rt.ifname))
    }
}

fn read_file(path: &Path) -> Result<Option<CachedAttachment>> {
    use std::io::Read as _;
    let mut text = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => f
            .take(MAX_CACHE)
            .read_to_end(&mut text)
            .map_err(|e| Error::io("reading", path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::InvalidConfig {
            source_name: path.display().to_string(),
            message: format!("cached result: {e}"),
        })
}

pub(crate) fn remove(dir: &Path, network: &str, rt: &RuntimeConf) -> Result<()> {
    let path = file(dir, network, &rt.container_id, &rt.ifname);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", &path, e)),
    }
}

pub(crate) fn list(dir: &Path) -> Result<Vec<CachedAttachment>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            // A write cut short: never a committed result.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match read_file(&path) {
            Ok(Some(a)) => out.push(a),
            Ok(None) => {}
            Err(e) => tracing::warn!("skipping {}: {e}", path.display()),
        }
    }
    out.sort_by(|a, b| (&a.network, &a.container_id).cmp(&(&b.network, &b.container_id)));
    Ok(out)
}
