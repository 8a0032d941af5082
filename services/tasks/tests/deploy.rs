//! Deployment: the systemd unit verifies and keeps containers' supervisors alive across
//! restarts, readiness reaches systemd's notify socket only once the socket accepts, the shipped
//! config parses, SIGTERM ends open subscriptions, and bad config is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

const BIN: &str = common::TASKS_BIN;

#[test]
fn systemd_unit_verifies() {
    let unit = strata_testkit::verify_unit("strata-tasks", BIN);
    for line in ["Delegate=yes", "KillMode=process"] {
        assert!(unit.lines().any(|l| l == line), "no {line}");
    }
    strata_testkit::assert_unit_after_and_wants(&unit, &["strata-snapshotter.service"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_ready_reads_the_shipped_config_and_stops_with_subscribers() {
    let dir = strata_testkit::tempdir();
    let child = strata_testkit::start_shipped(BIN, "tasks", "tasks", dir.path());
    let config = std::fs::read_to_string(dir.path().join("tasks.toml")).unwrap();
    assert!(config.contains("event_buffer = 1024"), "{config}");
    let sock = dir.path().join("run/tasks.sock");
    let state = dir.path().join("run/tasks");
    assert!(dir.path().join("lib/tasks/metadata.redb").exists());
    assert!(state.is_dir(), "state directory not created");

    // An open subscription does not hold the server up at SIGTERM: its stream ends.
    let events = strata_grpc::remote::RemoteEvents::connect(sock.to_str().unwrap()).unwrap();
    let mut sub = events.subscribe(&[]).await.unwrap();
    strata_testkit::sigterm(&child);
    use tokio_stream::StreamExt as _;
    assert!(sub.next().await.is_none(), "subscription not ended");
    let logs = tokio::task::spawn_blocking(move || strata_testkit::stop_json_logs(child))
        .await
        .unwrap();
    assert!(
        logs.contains("\"event_buffer\":1024") && logs.contains("snapshotter.sock"),
        "config keys not honoured: {logs}"
    );
}

#[test]
fn bad_config_is_a_clear_error() {
    strata_testkit::assert_bad_configs(
        BIN,
        &[
            ("address = [", "bad.toml"),
            ("event_buffer = \"many\"", "event_buffer"),
            ("event_buffer = 0", "event_buffer"),
            ("snapshotter = 1", "snapshotter"),
            ("state = true", "state"),
        ],
    );
    strata_testkit::assert_unknown_key_refused(BIN, "event_bufer");
}
