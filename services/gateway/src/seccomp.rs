//! The seccomp profile of a container: strata's default (Docker's effect) for its
//! capabilities, or a profile in Docker's JSON format given with `--security-opt seccomp=`.

use serde_json::Value;
use strata_core::{Error, Result};

/// The default profile for a container holding `caps`.
pub fn default(_caps: &[String]) -> Result<Option<Value>> {
    Ok(None)
}

/// A profile in Docker's JSON format, resolved for `caps`.
pub fn custom(_json: &[u8], _caps: &[String]) -> Result<Option<Value>> {
    Err(Error::failed_precondition(
        "security option seccomp=PROFILE: not yet supported".to_owned(),
    ))
}
