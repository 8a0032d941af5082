//! Deployment: the systemd unit verifies, readiness reaches systemd's notify socket only once the
//! socket accepts, and the TOML config is honoured with flags overriding it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;
use strata_testkit::run;

const BIN: &str = env!("CARGO_BIN_EXE_strata-content");

#[test]
fn systemd_unit_verifies() {
    strata_testkit::verify_unit("strata-content", BIN);
}

#[test]
fn notifies_ready_and_reads_config() {
    let dir = strata_testkit::tempdir();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
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
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(&root)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("no READY=1 from the service");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means the socket already accepts.
    UnixStream::connect(&sock).expect("READY=1 sent before the socket accepts");
    assert!(
        root.join("metadata.redb").exists(),
        "--root flag not honoured"
    );
    assert!(!dir.path().join("root-from-config").exists());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
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
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = strata_testkit::tempdir();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "address = [").unwrap();
    let out = run(Command::new(BIN).arg("--config").arg(&config), None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
}
