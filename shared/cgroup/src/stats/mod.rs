//! A cgroup's statistics, read from the cgroup file systems and shaped as containerd's cgroups
//! stats (`io.containerd.cgroups.v1` from v1 controllers, `io.containerd.cgroups.v2` from a
//! unified directory), as containerd's own cgroups library returns them.

mod v1;
mod v2;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Error, Result};

pub use v1::read_v1;
pub use v2::read_v2;

/// A file that may be absent (a kernel without that counter, swap accounting off).
fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::io("reading", path, source)),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    text.trim().parse().map_err(|_| Error::Parse {
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
        Err(Error::Gone {
            what: format!("cgroup {}", dir.display()),
        })
    }
}

/// The huge page sizes a hugetlb cgroup has files for (`hugetlb.<size><suffix>`), sorted.
fn page_sizes(d: &Path, suffix: &str) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(d).map_err(|source| Error::io("reading", d, source))?;
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

    use std::path::Path;

    pub(super) fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
}
