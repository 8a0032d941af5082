//! The gateway's systemd unit verifies and orders itself after the services it composes.
#![allow(clippy::unwrap_used)]

#[test]
fn systemd_unit_verifies() {
    let unit = strata_testkit::verify_unit("strata-gateway", env!("CARGO_BIN_EXE_strata-gateway"));
    let after = unit.lines().find(|l| l.starts_with("After=")).unwrap();
    for dep in ["strata-content", "strata-snapshotter", "strata-images"] {
        assert!(after.contains(dep), "gateway must start after {dep}");
    }
}
