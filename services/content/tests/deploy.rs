//! Deployment: the systemd unit verifies, readiness reaches systemd's notify socket only once the
//! socket accepts, and the TOML config is honoured with flags overriding it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_strata-content");

#[test]
fn systemd_unit_verifies() {
    strata_testkit::verify_unit("strata-content", BIN);
}

#[test]
fn notifies_ready_and_reads_config() {
    let dir = strata_testkit::tempdir();
    let sock = dir.path().join("from-config.sock");
    let root = dir.path().join("root-from-flag");
    let config = dir.path().join("content.toml");
    std::fs::write(
        &config,
        format!(
            "address = \"{}\"\nroot = \"{}\"\nlog_format = \"json\"\n",
            sock.display(),
            dir.path().join("root-from-config").display()
        ),
    )
    .unwrap();
    let child = strata_testkit::start_notified(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&root),
        dir.path(),
        &sock,
    );
    assert!(
        root.join("metadata.redb").exists(),
        "--root flag not honoured"
    );
    assert!(!dir.path().join("root-from-config").exists());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
    strata_testkit::sigterm(&child);
    strata_testkit::stop_json_logs(child);
}

#[test]
fn shipped_config_loads_and_an_unknown_key_is_refused() {
    strata_testkit::assert_shipped_config_loads(BIN, "content", "content");
    strata_testkit::assert_unknown_key_refused(BIN, "adress");
}

#[test]
fn bad_config_is_a_clear_error() {
    strata_testkit::assert_bad_configs(BIN, &[("address = [", "bad.toml")]);
}
