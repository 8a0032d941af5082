//! The seccomp profile of a container: strata's default (Docker's effect) for its
//! capabilities, or a profile in Docker's JSON format given with `--security-opt seccomp=`.
//! Either is compiled here once, so a profile the runtime could not enforce is refused when
//! the container is created, not when it starts.

use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde_json::Value;
use strata_core::{Error, Result};

fn capabilities(caps: &[String]) -> Vec<Capability> {
    caps.iter()
        .filter_map(|c| serde_json::from_value(Value::String(c.clone())).ok())
        .collect()
}

fn checked(profile: &LinuxSeccomp, what: &str) -> Result<Option<Value>> {
    strata_seccomp::compile(profile).map_err(|e| {
        if e.is_invalid_profile() {
            Error::invalid_argument(format!("{what}: {e}"))
        } else {
            Error::internal(format!("{what}: {e}"))
        }
    })?;
    serde_json::to_value(profile)
        .map(Some)
        .map_err(|e| Error::internal(format!("{what}: {e}")))
}

/// The default profile for a container holding `caps` (strata's own, compiled by its tests:
/// not compiled again for every container).
pub fn default(caps: &[String]) -> Result<Option<Value>> {
    let profile = strata_seccomp::default_profile(&capabilities(caps));
    serde_json::to_value(&profile)
        .map(Some)
        .map_err(|e| Error::internal(format!("the default seccomp profile: {e}")))
}

/// A profile in Docker's JSON format, resolved for `caps`.
pub fn custom(json: &[u8], caps: &[String]) -> Result<Option<Value>> {
    let profile = strata_seccomp::docker_profile(json, &capabilities(caps))
        .map_err(|e| Error::invalid_argument(format!("seccomp profile: {e}")))?;
    checked(&profile, "seccomp profile")
}
