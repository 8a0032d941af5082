//! Network configuration lists (`*.conflist`) and what each plugin reads on its stdin.

use serde_json::{Map, Value};
use std::path::Path;

use crate::RuntimeConf;
use crate::error::{Error, Result};

/// The most of a configuration list read from a file.
const MAX_CONFIG: u64 = 1 << 20;

/// A network configuration list: a named chain of plugins sharing one CNI version.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network's name.
    pub name: String,
    /// The CNI spec version every plugin is called with.
    pub cni_version: String,
    /// Skip CHECK (`disableCheck`).
    pub disable_check: bool,
    /// Each plugin's configuration, in chain order.
    pub plugins: Vec<Map<String, Value>>,
    /// The list as given (cached with every result).
    pub raw: Value,
}

/// A name usable for a network, an interface or a cache file: letters, digits, `.`, `_`, `-`.
pub(crate) fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A plugin type is a file name in the plugin directories, never a path.
pub(crate) fn check_type(typ: &str) -> Result<()> {
    if is_plain_name(typ) {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "CNI plugin type",
            value: typ.to_owned(),
            message: "must be a plain file name".into(),
        })
    }
}

pub(crate) fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

impl NetworkConfigList {
    /// Parses a list from its JSON text.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkConfigList> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::InvalidConfig {
            source_name: "(bytes)".into(),
            message: format!("not JSON: {e}"),
        })?;
        Self::from_value(v)
    }

    /// Reads and parses the list in file `path` (at most 1 MiB).
    pub fn load(path: &Path) -> Result<NetworkConfigList> {
        use std::io::Read as _;
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG + 1).read_to_end(&mut text))
            .map_err(|e| Error::io("reading", path, e))?;
        let named = |message: String| Error::InvalidConfig {
            source_name: path.display().to_string(),
            message,
        };
        if text.len() as u64 > MAX_CONFIG {
            return Err(named(format!("larger than {MAX_CONFIG} bytes")));
        }
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| named(format!("not JSON: {e}")))?;
        Self::from_value(v).map_err(|e| match e {
            Error::InvalidConfig { message, .. } => named(message),
            other => other,
        })
    }

    /// Checks and takes a parsed list.
    pub fn from_value(raw: Value) -> Result<NetworkConfigList> {
        let bad = |message: String| Error::InvalidConfig {
            source_name: raw["name"].as_str().unwrap_or("(unnamed)").to_owned(),
            message,
        };
        let name = raw["name"]
            .as_str()
            .ok_or_else(|| bad("no \"name\"".into()))?
            .to_owned();
        if !is_plain_name(&name) {
            return Err(bad(format!(
                "name {name:?}: use letters, digits, '.', '_' and '-'"
            )));
        }
        let cni_version = raw["cniVersion"]
            .as_str()
            .ok_or_else(|| bad("no \"cniVersion\"".into()))?
            .to_owned();
        let plugins: Vec<Map<String, Value>> = raw["plugins"]
            .as_array()
            .ok_or_else(|| bad("no \"plugins\" list".into()))?
            .iter()
            .map(|p| {
                p.as_object()
                    .cloned()
                    .ok_or_else(|| bad("a plugin is not an object".into()))
            })
            .collect::<Result<_>>()?;
        if plugins.is_empty() {
            return Err(bad("\"plugins\" is empty".into()));
        }
        for p in &plugins {
            check_type(plugin_type(p)).map_err(|_| {
                bad(format!(
                    "plugin type {:?}: must be a plain file name",
                    plugin_type(p)
                ))
            })?;
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check: raw["disableCheck"].as_bool().unwrap_or(false),
            plugins,
            raw,
        })
    }
}

/// What plugin `plugin` of `net` reads on its stdin: its configuration with the list's name
/// and version, the previous result, and the capability arguments it declared.
pub(crate) fn plugin_input(
    net: &NetworkConfigList,
    plugin: &Map<String, Value>,
    rt: &RuntimeConf,
    prev: Option<&Value>,
) -> Result<Vec<u8>> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(net.name.clone()));
    conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
    match prev {
        Some(p) if !p.is_null() => {
            conf.insert("prevResult".into(), p.clone());
        }
        _ => {
            conf.remove("prevResult");
        }
    }
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let runtime: Map<String, Value> = rt
        .capability_args
        .iter()
        .filter(|(k, _)| {
            declared
                .and_then(|d| d.get(*k))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if runtime.is_empty() {
        conf.remove("runtimeConfig");
    } else {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    serde_json::to_vec(&Value::Object(conf)).map_err(|e| Error::InvalidConfig {
        source_name: net.name.clone(),
        message: e.to_string(),
    })
}
