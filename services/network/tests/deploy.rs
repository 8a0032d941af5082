//! Deployment: the systemd unit verifies and is ordered after the tasks service, the shipped
//! config loads (readiness reaches systemd's notify socket once the socket accepts), and bad
//! config is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use strata_testkit::run;

const BIN: &str = env!("CARGO_BIN_EXE_strata-network");

#[test]
fn systemd_unit_verifies() {
    let unit = strata_testkit::verify_unit("strata-network", BIN);
    strata_testkit::assert_unit_after_and_wants(&unit, &["strata-tasks.service"]);
    let gateway = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/strata-gateway.service"
    ))
    .unwrap();
    assert!(gateway.contains("strata-network.service"), "{gateway}");
}

#[test]
fn shipped_config_loads_and_an_unknown_key_is_refused() {
    let logs = strata_testkit::assert_shipped_config_loads(BIN, "network", "network");
    assert!(logs.contains("network service open"), "{logs}");
    strata_testkit::assert_unknown_key_refused(BIN, "default_brige");
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = strata_testkit::tempdir();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "default_subnet = \"10.0.0.1/24\"\n").unwrap();
    let out = run(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--address")
            .arg(dir.path().join("n.sock"))
            .args(["--tasks", "none"]),
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("subnet \"10.0.0.1/24\": host bits are set"),
        "{err}"
    );
}
