//! Deployment: the systemd unit verifies, readiness reaches systemd's notify socket only once the
//! socket accepts, the shipped config parses, and bad config is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use strata_testkit::run;

const BIN: &str = common::IMAGES_BIN;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn systemd_unit_verifies() {
    let unit = strata_testkit::verify_unit("strata-images", BIN);
    for dep in ["strata-content.service", "strata-snapshotter.service"] {
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
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
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
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("no READY=1 from the service");
    assert_eq!(&buf[..n], b"READY=1\n");
    UnixStream::connect(&sock).expect("READY=1 sent before the socket accepts");
    assert!(dir.path().join("root/metadata.redb").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stderr);
    let first = logs.lines().next().unwrap_or_default();
    assert!(
        first.starts_with('{'),
        "log_format = json not honoured: {first}"
    );
    assert!(
        logs.contains("\"grace_seconds\":10") && logs.contains("content.sock"),
        "config keys not honoured: {logs}"
    );
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = strata_testkit::tempdir();
    for (text, needle) in [
        ("address = [", "bad.toml"),
        ("gc_grace_seconds = \"ten\"", "gc_grace_seconds"),
        ("gc_grace_seconds = -1", "gc_grace_seconds"),
        ("snapshotters = \"overlayfs\"", "snapshotters"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let out = run(
            Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .arg("--address")
                .arg(dir.path().join("x.sock"))
                .arg("--root")
                .arg(dir.path().join("root")),
            None,
        );
        assert!(!out.status.success(), "{text} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
}
