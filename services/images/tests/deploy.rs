//! Deployment: the systemd unit verifies, readiness reaches systemd's notify socket only once the
//! socket accepts, the shipped config parses, and bad config is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

const BIN: &str = common::IMAGES_BIN;

#[test]
fn systemd_unit_verifies() {
    let unit = strata_testkit::verify_unit("strata-images", BIN);
    strata_testkit::assert_unit_after_and_wants(
        &unit,
        &[
            "strata-content.service",
            "strata-snapshotter.service",
            "strata-tasks.service",
        ],
    );
}

#[test]
fn notifies_ready_and_reads_the_shipped_config() {
    let dir = strata_testkit::tempdir();
    // The shipped config with this test's paths.
    let child = strata_testkit::start_shipped(BIN, "images", "images", dir.path());
    let config = std::fs::read_to_string(dir.path().join("images.toml")).unwrap();
    assert!(config.contains("gc_grace_seconds = 10"), "{config}");
    assert!(dir.path().join("lib/images/metadata.redb").exists());
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
