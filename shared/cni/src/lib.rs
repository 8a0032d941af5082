//! strata's CNI runtime: the caller side of the Container Network Interface (spec 1.0), for the
//! standard plugins (bridge, host-local, portmap, firewall, tuning, loopback) and any conflist
//! an operator installs.
//!
//! - [`NetworkConfigList`]: a network configuration list (`*.conflist`), checked when loaded.
//! - [`Cni`]: runs a list's plugins for one attachment ([`RuntimeConf`]): `ADD` in order, each
//!   given the previous one's result as `prevResult`; `DEL` in reverse order, given the cached
//!   result, idempotent, trying every plugin even when one fails; `CHECK`. Every call has a
//!   timeout and a bounded output. Plugins are found by their `type` in the plugin directories,
//!   and asked once for the versions they support.
//! - The result of every ADD is cached on disk (temp, fsync, rename) with the list it was made
//!   with, so a DEL after a crash of anything (the caller, the container, the host's services)
//!   tears down exactly what was set up, without the list or the namespace.
//! - [`netns`]: persistent network namespaces bind-mounted on a file, which outlive the
//!   processes in them, so teardown never needs a live container.

#![warn(missing_docs)]

mod cache;
mod conf;
mod error;
mod exec;
pub mod netns;

pub use cache::CachedAttachment;
pub use conf::NetworkConfigList;
pub use error::{Error, Result};

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Where Debian's `containernetworking-plugins` and the upstream releases install plugins.
pub const DEFAULT_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// How long one plugin call may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One attachment of a container to a network: what the plugins are told besides the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the path of the network namespace.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface to make inside the namespace (`eth0`).
    pub ifname: String,
    /// `CNI_ARGS`: `K=V` pairs (`IgnoreUnknown=1`, `K8S_POD_NAME=…`).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `dns`, `bandwidth`, …): each plugin gets, in its
    /// `runtimeConfig`, those its configuration declares under `capabilities`.
    pub capability_args: Map<String, Value>,
}

/// A CNI runtime: plugin directories, a result cache and a per-call timeout.
#[derive(Debug)]
pub struct Cni {
    plugin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
    versions: Mutex<HashMap<PathBuf, Vec<String>>>,
}

impl Cni {
    /// A runtime finding plugins in `plugin_dirs` (in order) and caching results in
    /// `cache_dir`.
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Cni {
        Cni {
            plugin_dirs,
            cache_dir,
            timeout: DEFAULT_TIMEOUT,
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The same runtime with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Cni {
        self.timeout = timeout;
        self
    }

    /// The directory of cached results.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Attaches `rt` to network `net`: ADD through every plugin in order. The final result is
    /// cached and returned. When a plugin fails, what the earlier ones did is torn down (DEL
    /// through the whole list) before the error is returned: nothing is left half set up.
    pub async fn add(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<Value> {
        cache::check_key(&net.name, rt)?;
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let step = self
                .invoke(net, plugin, "ADD", rt, prev.as_ref())
                .await
                .and_then(|out| {
                    out.ok_or_else(|| Error::BadResult {
                        plugin: conf::plugin_type(plugin).to_owned(),
                        message: "ADD printed no result".into(),
                    })
                });
            match step {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    if let Err(undo) = self.del_with(net, rt, prev.as_ref()).await {
                        tracing::warn!(
                            network = %net.name, container = %rt.container_id,
                            "tearing down a failed attachment: {undo}"
                        );
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let cached = CachedAttachment {
            network: net.name.clone(),
            container_id: rt.container_id.clone(),
            ifname: rt.ifname.clone(),
            netns: rt.netns.clone(),
            args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            config: net.raw.clone(),
            result: result.clone(),
        };
        if let Err(e) = cached.write(&self.cache_dir) {
            // An attachment whose result cannot be kept could not be torn down after a crash.
            let _ = self.del_with(net, rt, Some(&result)).await;
            return Err(e);
        }
        Ok(result)
    }

    /// Checks `rt`'s attachment to `net` (CHECK through every plugin, given the cached
    /// result). A network without a cached result for `rt` is NotAttached.
    pub async fn check(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        let cached = CachedAttachment::read(&self.cache_dir, &net.name, rt)?.ok_or_else(|| {
            Error::NotAttached {
                network: net.name.clone(),
                container: rt.container_id.clone(),
            }
        })?;
        if net.disable_check {
            return Ok(());
        }
        for plugin in &net.plugins {
            self.invoke(net, plugin, "CHECK", rt, Some(&cached.result))
                .await?;
        }
        Ok(())
    }

    /// Detaches `rt` from network `network`: DEL through every plugin in reverse order, with
    /// the list and the result cached at ADD (or `net` when nothing was cached). Idempotent: a
    /// second DEL, or a DEL of what was never added, succeeds. Every plugin is asked even when
    /// an earlier one fails; the first failure is returned and the cache kept for a retry.
    pub async fn del(
        &self,
        network: &str,
        net: Option<&NetworkConfigList>,
        rt: &RuntimeConf,
    ) -> Result<()> {
        cache::check_key(network, rt)?;
        let cached = CachedAttachment::read(&self.cache_dir, network, rt)?;
        let (list, prev) = match &cached {
            Some(c) => (
                NetworkConfigList::from_value(c.config.clone())?,
                Some(&c.result),
            ),
            None => match net {
                Some(n) => (n.clone(), None),
                None => return Ok(()),
            },
        };
        // The attachment as it was made: same arguments, same capability arguments.
        let rt = match &cached {
            Some(c) => RuntimeConf {
                container_id: rt.container_id.clone(),
                netns: rt.netns.clone(),
                ifname: rt.ifname.clone(),
                args: c.args.clone(),
                capability_args: c.capability_args.clone(),
            },
            None => rt.clone(),
        };
        self.del_with(&list, &rt, prev).await?;
        cache::remove(&self.cache_dir, network, &rt)
    }

    /// Every attachment with a cached result (what a reconciliation walks).
    pub fn attachments(&self) -> Result<Vec<CachedAttachment>> {
        cache::list(&self.cache_dir)
    }

    async fn del_with(
        &self,
        net: &NetworkConfigList,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<()> {
        let mut first = None;
        for plugin in net.plugins.iter().rev() {
            if let Err(e) = self.invoke(net, plugin, "DEL", rt, prev).await {
                tracing::warn!(network = %net.name, container = %rt.container_id, "{e}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The versions of the CNI spec the plugin of type `typ` supports.
    pub async fn plugin_versions(&self, typ: &str) -> Result<Vec<String>> {
        let path = self.find(typ)?;
        self.versions_of(typ, &path).await
    }

    async fn versions_of(&self, typ: &str, path: &Path) -> Result<Vec<String>> {
        if let Some(v) = self.lock_versions().get(path) {
            return Ok(v.clone());
        }
        let out = exec::run(
            path,
            typ,
            "VERSION",
            &exec::env("VERSION", &RuntimeConf::default(), &self.plugin_dirs),
            br#"{"cniVersion":"1.0.0"}"#,
            self.timeout,
        )
        .await?
        .unwrap_or(Value::Null);
        let versions: Vec<String> = out["supportedVersions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        self.lock_versions()
            .insert(path.to_owned(), versions.clone());
        Ok(versions)
    }

    fn lock_versions(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Vec<String>>> {
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn find(&self, typ: &str) -> Result<PathBuf> {
        conf::check_type(typ)?;
        self.plugin_dirs
            .iter()
            .map(|d| d.join(typ))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::PluginNotFound {
                plugin: typ.to_owned(),
                dirs: self.plugin_dirs.clone(),
            })
    }

    async fn invoke(
        &self,
        net: &NetworkConfigList,
        plugin: &Map<String, Value>,
        command: &str,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<Option<Value>> {
        let typ = conf::plugin_type(plugin);
        let path = self.find(typ)?;
        let supported = self.versions_of(typ, &path).await?;
        if !supported.contains(&net.cni_version) {
            return Err(Error::IncompatibleVersion {
                plugin: typ.to_owned(),
                version: net.cni_version.clone(),
                supported,
            });
        }
        let stdin = conf::plugin_input(net, plugin, rt, prev)?;
        exec::run(
            &path,
            typ,
            command,
            &exec::env(command, rt, &self.plugin_dirs),
            &stdin,
            self.timeout,
        )
        .await
    }
}
