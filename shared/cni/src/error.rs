//! What can go wrong running CNI plugins.

use std::path::PathBuf;

/// Errors of the CNI runtime. Each names the network, plugin or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration list that cannot be used.
    #[error("network configuration {source_name}: {message}")]
    InvalidConfig {
        /// The file or network name.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// No plugin of that type in any plugin directory.
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// Where it was looked for.
        dirs: Vec<PathBuf>,
    },
    /// The plugin does not speak the list's CNI version.
    #[error("CNI plugin {plugin:?} does not support version {version} (it supports {supported:?})")]
    IncompatibleVersion {
        /// The plugin type.
        plugin: String,
        /// The list's `cniVersion`.
        version: String,
        /// What the plugin said it supports.
        supported: Vec<String>,
    },
    /// The plugin failed and said why (the CNI error object).
    #[error("CNI plugin {plugin:?} {command} failed: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// ADD, DEL, CHECK or VERSION.
        command: String,
        /// The CNI error code (0 when the plugin printed none).
        code: u32,
        /// The message.
        msg: String,
        /// Details, if any.
        details: String,
    },
    /// The plugin ran longer than allowed and was killed.
    #[error("CNI plugin {plugin:?} {command} did not finish within {seconds} s")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// ADD, DEL, CHECK or VERSION.
        command: String,
        /// The limit.
        seconds: u64,
    },
    /// The plugin printed something that is not a result.
    #[error("CNI plugin {plugin:?}: bad result: {message}")]
    BadResult {
        /// The plugin type.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// CHECK of something never added.
    #[error("container {container:?} is not attached to network {network:?}")]
    NotAttached {
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
    /// A bad container ID, interface name or network name.
    #[error("{what} {value:?}: {message}")]
    InvalidArgument {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is refused.
        message: String,
    },
    /// A file or system call failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
