//! Label validation, with containerd's limit: a key and its value together at most 4096 bytes.

use crate::errdefs::Error;
use std::collections::HashMap;

const MAX_SIZE: usize = 4096;

/// Checks every label: InvalidArgument for an empty key or a key and value over the limit.
pub fn validate(labels: &HashMap<String, String>) -> Result<(), Error> {
    for (k, v) in labels {
        validate_one(k, v)?;
    }
    Ok(())
}

/// Checks one label, as [`validate`] does.
pub fn validate_one(key: &str, value: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::invalid_argument("label key must not be empty"));
    }
    if key.len() + value.len() > MAX_SIZE {
        let shown: String = key.chars().take(10).collect();
        return Err(Error::invalid_argument(format!(
            "label key and value length ({} bytes) greater than maximum size ({MAX_SIZE} bytes), key: {shown}",
            key.len() + value.len()
        )));
    }
    Ok(())
}

/// Applies one field path of an update to `current`, as containerd does: `labels` replaces them
/// all with `new`; `labels.<key>` sets that key from `new`, or removes it when `new` lacks it.
/// Returns false for any other path, which the caller handles or refuses.
pub fn apply_path(
    current: &mut HashMap<String, String>,
    new: &HashMap<String, String>,
    path: &str,
) -> bool {
    if path == "labels" {
        current.clone_from(new);
        return true;
    }
    let Some(key) = path.strip_prefix("labels.") else {
        return false;
    };
    match new.get(key) {
        Some(v) => {
            current.insert(key.to_owned(), v.clone());
        }
        None => {
            current.remove(key);
        }
    }
    true
}
