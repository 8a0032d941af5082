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

#[test]
fn shipped_config_loads_and_an_unknown_key_is_refused() {
    let bin = env!("CARGO_BIN_EXE_strata-gateway");
    let logs = strata_testkit::assert_shipped_config_loads(bin, "gateway", "strata");
    assert!(
        logs.contains("tasks.sock"),
        "config keys not honoured: {logs}"
    );
    strata_testkit::assert_unknown_key_refused(bin, "insecure_registry");
    strata_testkit::assert_bad_configs(
        bin,
        &[("insecure_registries = \"a\"", "key \"insecure_registries\"")],
    );
}
