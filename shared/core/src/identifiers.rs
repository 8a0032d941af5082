//! Validation of namespace names and other identifiers, with containerd's rules: ASCII letters
//! and digits, separated by single `.`, `_` or `-`, at most 76 characters.

use crate::errdefs::Error;

const MAX_LENGTH: usize = 76;

/// Checks an identifier (a namespace name, a container id, a lease id).
pub fn validate(what: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid_argument(format!("{what} must not be empty")));
    }
    if id.len() > MAX_LENGTH {
        return Err(Error::invalid_argument(format!(
            "{what} {id:?} is longer than {MAX_LENGTH} characters"
        )));
    }
    let bytes = id.as_bytes();
    let mut prev_sep = true; // the first character may not be a separator
    for &b in bytes {
        let sep = matches!(b, b'.' | b'_' | b'-');
        if !(b.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return Err(Error::invalid_argument(format!(
                "{what} {id:?} must match [A-Za-z0-9]+([._-][A-Za-z0-9]+)*"
            )));
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(Error::invalid_argument(format!(
            "{what} {id:?} must not end with a separator"
        )));
    }
    Ok(())
}

/// Checks a namespace name.
pub fn validate_namespace(ns: &str) -> Result<(), Error> {
    validate("namespace", ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_names() {
        for ok in ["default", "k8s.io", "a-b_c.d", "x1", "moby"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        let long = "a".repeat(77);
        for bad in ["", "-a", "a-", "a..b", "a/b", "ä", " a", long.as_str()] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }
}
