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
    apply_map_path(current, new, "labels", path)
}

/// [`apply_path`] for any map field of a record (`annotations`, a container's `extensions`):
/// `field` replaces the whole map with `new`; `field.<key>` sets that key from `new`, or removes
/// it when `new` lacks it. Returns false for any other path.
pub fn apply_map_path<V: Clone>(
    current: &mut HashMap<String, V>,
    new: &HashMap<String, V>,
    field: &str,
    path: &str,
) -> bool {
    let Some(rest) = path.strip_prefix(field) else {
        return false;
    };
    if rest.is_empty() {
        current.clone_from(new);
        return true;
    }
    let Some(key) = rest.strip_prefix('.') else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_key_path_sets_that_key_and_leaves_the_others() {
        let mut current = map(&[("a", "1"), ("b", "2")]);
        let new = map(&[("a", "9"), ("c", "3")]);
        assert!(apply_path(&mut current, &new, "labels.a"));
        assert_eq!(current, map(&[("a", "9"), ("b", "2")]));
    }

    #[test]
    fn a_key_path_absent_from_the_new_labels_removes_it() {
        let mut current = map(&[("a", "1"), ("b", "2")]);
        assert!(apply_path(&mut current, &map(&[]), "labels.a"));
        assert_eq!(current, map(&[("b", "2")]));
        // Removing a key that is not there is no error.
        assert!(apply_path(&mut current, &map(&[]), "labels.zz"));
        assert_eq!(current, map(&[("b", "2")]));
    }

    #[test]
    fn a_key_may_hold_dots() {
        let mut current = map(&[]);
        let new = map(&[("containerd.io/gc.ref.content.0", "sha256:x")]);
        assert!(apply_path(
            &mut current,
            &new,
            "labels.containerd.io/gc.ref.content.0"
        ));
        assert_eq!(current, new);
    }

    #[test]
    fn the_whole_field_replaces_every_label() {
        let mut current = map(&[("a", "1"), ("b", "2")]);
        let new = map(&[("c", "3")]);
        assert!(apply_path(&mut current, &new, "labels"));
        assert_eq!(current, new);
    }

    #[test]
    fn other_paths_are_left_to_the_caller() {
        let mut current = map(&[("a", "1")]);
        let new = map(&[("a", "2")]);
        for path in [
            "target",
            "labelsx",
            "labelsx.a",
            "label.a",
            "",
            "annotations.a",
        ] {
            assert!(!apply_path(&mut current, &new, path), "{path:?}");
        }
        assert_eq!(current, map(&[("a", "1")]));
    }

    #[test]
    fn any_map_field_follows_the_same_rule() {
        let mut current: HashMap<String, u8> = HashMap::from([("x".to_owned(), 1)]);
        let new = HashMap::from([("y".to_owned(), 2)]);
        assert!(apply_map_path(
            &mut current,
            &new,
            "extensions",
            "extensions.y"
        ));
        assert!(apply_map_path(
            &mut current,
            &new,
            "extensions",
            "extensions.x"
        ));
        assert_eq!(current, HashMap::from([("y".to_owned(), 2)]));
        assert!(!apply_map_path(
            &mut current,
            &new,
            "extensions",
            "labels.y"
        ));
    }

    #[test]
    fn validate_refuses_an_empty_key_and_oversized_labels() {
        assert!(validate(&map(&[("a", "1")])).is_ok());
        let err = validate(&map(&[("", "1")])).expect_err("refused");
        assert_eq!(err.kind(), crate::Kind::InvalidArgument);
        let at_limit = "v".repeat(MAX_SIZE - 3);
        assert!(validate_one("key", &at_limit).is_ok());
        let err = validate_one("key", &format!("{at_limit}v")).expect_err("refused");
        assert_eq!(err.kind(), crate::Kind::InvalidArgument);
        assert!(
            err.to_string()
                .contains("greater than maximum size (4096 bytes)")
        );
    }
}
