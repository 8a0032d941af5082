//! Content digests (`sha256:<64 lowercase hex>`), the names of every blob.

use crate::errdefs::Error;
use sha2::Digest as _;
use std::fmt;
use std::str::FromStr;

/// A validated sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The one algorithm supported, as digests name it.
    pub const ALGORITHM: &'static str = "sha256";

    /// Parses `sha256:<hex>`; anything else is InvalidArgument naming the input.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: expected <algorithm>:<hex>"
            )));
        };
        if alg != Self::ALGORITHM {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: unsupported algorithm {alg:?} (only sha256)"
            )));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid_argument(format!(
                "invalid digest {s:?}: expected 64 lowercase hex characters"
            )));
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }

    /// The digest of finished hash state.
    pub fn from_hasher(h: sha2::Sha256) -> Self {
        Self {
            hex: hex::encode(h.finalize()),
        }
    }

    /// The digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        Self::from_hasher(sha2::Sha256::new_with_prefix(data))
    }

    /// The hex part, used as the blob's file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Self::ALGORITHM, self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let d = Digest::of(b"hello");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(&s).expect("parse"), d);
        for bad in ["", "sha256", "sha256:abc", "md5:00", &s.to_uppercase()] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
