//! Deployment: the systemd unit verifies, readiness reaches systemd's notify socket only once the
//! socket accepts, the shipped config parses, and bad config is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

const BIN: &str = common::IMAGES_BIN;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn systemd_unit_verifies() {
    let unit = strata_testkit::verify_unit("strata-images", BIN);
    for dep in [
        "strata-content.service",
        "strata-snapshotter.service",
        "strata-tasks.service",
    ] {
        for key in ["After=", "Wants="] {
            assert!(
                unit.lines().any(|l| l.starts_with(key) && l.contains(dep)),
                "no {key}{dep}"
            );
        }
    }
}

#[test]
fn notifies_ready_and_reads_the_shipped_config() {
    let dir = strata_testkit::tempdir();
    // The shipped config with this test's paths.
    let shipped = std::fs::read_to_string(repo().join("deploy/config/images.toml")).unwrap();
    assert!(shipped.contains("gc_grace_seconds = 10"), "{shipped}");
    let sock = dir.path().join("images.sock");
    let config = dir.path().join("images.toml");
    std::fs::write(
        &config,
        shipped
            .replace("/run/strata/images.sock", sock.to_str().unwrap())
            .replace(
                "/var/lib/strata/images",
                dir.path().join("root").to_str().unwrap(),
            )
            .replace("log_format = \"text\"", "log_format = \"json\""),
    )
    .unwrap();
    let child = strata_testkit::start_notified(
        Command::new(BIN).arg("--config").arg(&config),
        dir.path(),
        &sock,
    );
    assert!(dir.path().join("root/metadata.redb").exists());
    strata_testkit::sigterm(&child);
    let logs = strata_testkit::stop_json_logs(child);
    assert!(
        logs.contains("\"grace_seconds\":10") && logs.contains("content.sock"),
        "config keys not honoured: {logs}"
    );
}

#[test]
fn bad_config_is_a_clear_error() {
    strata_testkit::assert_bad_configs(
        BIN,
        &[
            ("address = [", "bad.toml"),
            ("gc_grace_seconds = \"ten\"", "gc_grace_seconds"),
            ("gc_grace_seconds = -1", "gc_grace_seconds"),
            ("snapshotters = \"overlayfs\"", "snapshotters"),
        ],
    );
    strata_testkit::assert_unknown_key_refused(BIN, "gc_grace_second");
}
