//! The one record storage hands to execution: how to mount a snapshot.

/// A mount as containerd describes it: `mount -t <kind> -o <options> <source> <target>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// File system type: `overlay`, `bind`, `tmpfs`, …
    pub kind: String,
    /// What is mounted: a directory for `bind` and `overlay`, a device, or a name.
    pub source: String,
    /// Sub-path under the mount root; empty for the root itself.
    pub target: String,
    /// Mount flags (`ro`, `rbind`, …) and file-system options (`lowerdir=…`), as `-o` takes them.
    pub options: Vec<String>,
}

impl Mount {
    /// The value of a `key=value` option, if present.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }

    /// Whether a flag option (`ro`, `rbind`, …) is present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.options.iter().any(|o| o == flag)
    }
}
