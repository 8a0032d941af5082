//! Typed TOML configuration: every service declares its own keys as a struct and loads its file
//! with [`load`], which rejects an unknown key or a value of the wrong type with an error naming
//! the key and the file.
//!
//! A service's struct derives `Deserialize` with `#[serde(default, deny_unknown_fields)]` and
//! holds only its own keys; the keys every service takes (`address`, `root`, `log_format`:
//! [`CommonConfig`]) sit beside them at the top level of the same file, and [`load`] splits them
//! off. (serde's `flatten` would put both in one struct, but it turns `deny_unknown_fields` into
//! a bare message without the valid keys and loses the key of a wrong value.)
//!
//! ```toml
//! address = "/run/strata/images.sock"   # common
//! gc_grace_seconds = 10                 # the service's own
//! ```

use serde::Deserialize;
use serde::de::{DeserializeOwned, Visitor};
use std::path::{Path, PathBuf};

/// Keys every config file may hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommonConfig {
    /// Unix socket path, or host:port for TCP.
    pub address: Option<String>,
    /// Directory for persistent state.
    pub root: Option<PathBuf>,
    /// Log format.
    pub log_format: Option<crate::server::LogFormat>,
}

/// A service with no keys of its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoKeys {}

/// One config file: the common keys and the service's own.
#[derive(Debug, Clone, Default)]
pub struct Config<T> {
    /// The keys every service takes.
    pub common: CommonConfig,
    /// The service's own keys.
    pub service: T,
}

/// Why a config file was refused; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// What reading it failed with.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("parsing config {path}: {source}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// What the TOML parser reported.
        source: toml::de::Error,
    },
    /// A key that neither the common keys nor the service's own include.
    #[error("config {path}: unknown key {key:?} (valid keys: {})", valid.join(", "))]
    UnknownKey {
        /// The config file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// The keys the file may hold, common ones first.
        valid: Vec<&'static str>,
    },
    /// A key whose value has the wrong type or is out of range.
    #[error("config {path}: key {key:?}: {message}")]
    Value {
        /// The config file.
        path: PathBuf,
        /// The key at fault.
        key: String,
        /// What serde reported about its value.
        message: String,
    },
    /// Keys valid one by one that do not deserialize together.
    #[error("config {path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What serde reported.
        message: String,
    },
}

/// Reads and checks the config file at `path`: the common keys, and `T`'s (a struct with
/// `#[serde(default, deny_unknown_fields)]`, whose keys are all optional).
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<Config<T>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// As [`load`], from the file's text.
pub fn parse<T: DeserializeOwned + Default>(
    path: &Path,
    text: &str,
) -> Result<Config<T>, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|source| ConfigError::Syntax {
        path: path.to_owned(),
        source,
    })?;
    let common_keys = keys::<CommonConfig>().unwrap_or_default();
    let own_keys = keys::<T>();
    let (mut common, mut own) = (toml::Table::new(), toml::Table::new());
    for (key, value) in table {
        if common_keys.contains(&key.as_str()) {
            common.insert(key, value);
        } else if own_keys.is_none_or(|k| k.contains(&key.as_str())) {
            own.insert(key, value);
        } else {
            let valid = common_keys
                .iter()
                .chain(own_keys.unwrap_or_default())
                .copied()
                .collect();
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
                valid,
            });
        }
    }
    Ok(Config {
        common: typed(path, common)?,
        service: typed(path, own)?,
    })
}

/// Deserializes `table` into `T`; an error names the key it is about, found by reading each key
/// alone (every key being optional).
fn typed<T: DeserializeOwned>(path: &Path, table: toml::Table) -> Result<T, ConfigError> {
    for (key, value) in &table {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = T::deserialize(alone) {
            return Err(ConfigError::Value {
                path: path.to_owned(),
                key: key.clone(),
                message: e.message().to_owned(),
            });
        }
    }
    T::deserialize(table).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

/// The field names of a struct deriving `Deserialize` (None for anything else, such as a struct
/// with a flattened field): its derive hands them to `deserialize_struct`, which this records.
pub fn keys<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug, thiserror::Error)]
#[error("field probe")]
struct ProbeError;

impl serde::de::Error for ProbeError {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Self
    }
}

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(ProbeError)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeError> {
        *self.0 = Some(fields);
        Err(ProbeError)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Images {
        content: Option<String>,
        gc_grace_seconds: Option<u64>,
        snapshotters: Option<Vec<String>>,
        event_buffer: Option<std::num::NonZeroUsize>,
    }

    fn err(text: &str) -> String {
        parse::<Images>(Path::new("/etc/strata/images.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_common_and_own_keys() {
        let c = parse::<Images>(
            Path::new("x.toml"),
            "address = \"/a.sock\"\nlog_format = \"json\"\ngc_grace_seconds = 3\n\
             snapshotters = [\"native\"]\n",
        )
        .unwrap();
        assert_eq!(c.common.address.as_deref(), Some("/a.sock"));
        assert_eq!(c.common.log_format, Some(crate::server::LogFormat::Json));
        assert_eq!(c.service.gc_grace_seconds, Some(3));
        assert_eq!(c.service.snapshotters, Some(vec!["native".to_owned()]));
        assert!(c.service.content.is_none() && c.common.root.is_none());
        let empty = parse::<NoKeys>(Path::new("x.toml"), "root = \"/r\"").unwrap();
        assert_eq!(empty.common.root, Some(PathBuf::from("/r")));
    }

    #[test]
    fn unknown_key_is_named_with_the_valid_ones() {
        assert_eq!(
            err("gc_grace_second = 10"),
            "config /etc/strata/images.toml: unknown key \"gc_grace_second\" (valid keys: \
             address, root, log_format, content, gc_grace_seconds, snapshotters, event_buffer)"
        );
        assert!(err("[gc]\ngrace = 1").contains("unknown key \"gc\""));
        let e = parse::<NoKeys>(Path::new("c.toml"), "content = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key \"content\" (valid keys: address, root, log_format)"));
    }

    #[test]
    fn wrong_values_name_their_key() {
        for (text, key) in [
            ("gc_grace_seconds = \"ten\"", "gc_grace_seconds"),
            ("gc_grace_seconds = -1", "gc_grace_seconds"),
            ("snapshotters = \"overlayfs\"", "snapshotters"),
            ("snapshotters = [1]", "snapshotters"),
            ("event_buffer = 0", "event_buffer"),
            ("address = 3", "address"),
            ("log_format = \"xml\"", "log_format"),
        ] {
            let e = err(&format!("content = \"c\"\n{text}\n"));
            assert!(
                e.starts_with(&format!("config /etc/strata/images.toml: key \"{key}\": ")),
                "{text}: {e}"
            );
        }
        assert!(err("address = [").starts_with("parsing config /etc/strata/images.toml: "));
    }

    #[test]
    fn field_names_of_a_struct() {
        assert_eq!(
            keys::<CommonConfig>(),
            Some(&["address", "root", "log_format"][..])
        );
        assert_eq!(keys::<NoKeys>(), Some(&[][..]));
        assert_eq!(keys::<toml::Table>(), None);
    }
}
