//! The gateway's systemd unit verifies and orders itself after the services it composes.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use strata_testkit::{run, tool};

#[test]
fn systemd_unit_verifies() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = strata_testkit::tempdir();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/strata-gateway.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify"));
    for dep in ["strata-content", "strata-snapshotter", "strata-images"] {
        let after = unit.lines().find(|l| l.starts_with("After=")).unwrap();
        assert!(after.contains(dep), "gateway must start after {dep}");
    }
    let unit = unit.replace(
        "/usr/local/bin/strata-gateway",
        env!("CARGO_BIN_EXE_strata-gateway"),
    );
    let path = dir.path().join("strata-gateway.service");
    std::fs::write(&path, unit).unwrap();
    let out = run(Command::new(analyze).arg("verify").arg(&path), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("strata-gateway.service"))
        .collect();
    assert!(out.status.success() && complaints.is_empty(), "{stderr}");
}
