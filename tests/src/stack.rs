//! The whole strata stack (content, snapshotter, tasks, images, gateway) from the built service
//! binaries, on sockets in a temporary directory: what a client sees at `/run/strata/strata.sock`.

use crate::net::TestNet;
use crate::{Service, sibling_bin, tempdir, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Stack {
    // Dropped in this order: the gateway first, the content service last.
    pub gateway: Service,
    /// The network service, in a stack started with [`Stack::start_with_network`].
    pub network: Option<Service>,
    pub images: Service,
    pub tasks: Service,
    pub snapshotter: Service,
    pub content: Service,
    /// The bridge and subnet of the stack's default network.
    pub testnet: Option<TestNet>,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the five services in a new temporary directory. The collector's grace period is
    /// 0, so a synchronous removal reclaims what it frees before answering.
    pub fn start() -> Self {
        Self::start_in(tempdir())
    }

    /// As [`Stack::start`], in `dir` (sockets, roots and logs go there). The gateway has no
    /// network service: containers get a private loopback (`--net none`) unless they ask for
    /// the host's.
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_in_with(dir, false, 0)
    }

    /// As [`Stack::start`], with a network service (`strata-network`) whose default network
    /// has a bridge and a subnet of the stack's own: containers get the default bridge network,
    /// as in a real installation.
    pub fn start_with_network() -> Self {
        Self::start_in_with(tempdir(), true, 0)
    }

    /// As [`Stack::start`], the collector keeping unreferenced objects for `grace_seconds`
    /// (the images service's default is 10): for tests that check what a young object still
    /// holds, such as the conformance suites.
    pub fn start_with_gc_grace(grace_seconds: u64) -> Self {
        Self::start_in_with(tempdir(), false, grace_seconds)
    }

    fn start_in_with(dir: tempfile::TempDir, with_network: bool, grace_seconds: u64) -> Self {
        let d = dir.path();
        // The storage services publish their events to the tasks service's exchange (started
        // after them: delivery is best effort and connects when it is there).
        let events = d.join("tasks.sock").display().to_string();
        let content = Service::start(
            sibling_bin("strata-content"),
            d,
            "content",
            &["--events", &events],
        );
        let c = content.address();
        let snapshotter = Service::start(
            sibling_bin("strata-snapshotter"),
            d,
            "snapshotter",
            &["--content", &c, "--events", &events],
        );
        let s = snapshotter.address();
        let state = d.join("tasks-state").display().to_string();
        let tasks = Service::start(
            sibling_bin("strata-tasks"),
            d,
            "tasks",
            &["--snapshotter", &s, "--state", &state],
        );
        let t = tasks.address();
        assert_eq!(
            t, events,
            "the tasks socket the storage services publish to"
        );
        let images = start_images(d, grace_seconds, &c, &s, &t);
        let i = images.address();
        let testnet = with_network.then(TestNet::take);
        let network = testnet.as_ref().map(|net| start_network(d, net, &t));
        let n = network
            .as_ref()
            .map_or_else(|| "none".to_owned(), Service::address);
        let gateway = Service::start(
            sibling_bin("strata-gateway"),
            d,
            "gateway",
            &[
                "--content",
                &c,
                "--snapshotter",
                &s,
                "--images",
                &i,
                "--tasks",
                &t,
                "--network",
                &n,
            ],
        );
        Self {
            gateway,
            network,
            testnet,
            images,
            tasks,
            snapshotter,
            content,
            dir,
        }
    }

    /// The gateway's socket: the one address a client needs.
    pub fn socket(&self) -> &Path {
        &self.gateway.socket
    }

    /// The temporary directory holding the stack's sockets, roots and logs.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every service's log, for a failure message.
    pub fn logs(&self) -> String {
        [
            &self.content,
            &self.snapshotter,
            &self.images,
            &self.tasks,
            &self.gateway,
        ]
        .into_iter()
        .chain(self.network.as_ref())
        .map(|s| format!("--- {} ---\n{}", s.name, s.log_text()))
        .collect()
    }

    /// The `strata` CLI, pointed at the gateway.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(sibling_bin("strata"));
        c.arg("--address").arg(self.socket());
        c
    }

    /// containerd's `ctr`, pointed at the gateway.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(ctr_path());
        c.arg("--address").arg(self.socket());
        c
    }
}

/// The images service, its collector keeping unreferenced objects for `grace_seconds`, on the
/// content (`c`), snapshotter (`s`) and tasks (`t`) services' sockets.
fn start_images(d: &Path, grace_seconds: u64, c: &str, s: &str, t: &str) -> Service {
    let images_config = d.join("images.toml");
    std::fs::write(
        &images_config,
        format!("gc_grace_seconds = {grace_seconds}\n"),
    )
    .unwrap();
    let images_config = images_config.display().to_string();
    Service::start(
        sibling_bin("strata-images"),
        d,
        "images",
        &[
            "--content",
            c,
            "--snapshotter",
            s,
            "--tasks",
            t,
            "--events",
            t,
            "--config",
            &images_config,
        ],
    )
}

/// The network service, its default network on `net`'s bridge and subnet.
fn start_network(d: &Path, net: &TestNet, t: &str) -> Service {
    let netns = d.join("netns").display().to_string();
    let conf = d.join("cni-net.d").display().to_string();
    Service::start(
        sibling_bin("strata-network"),
        d,
        "network",
        &[
            "--conf-dir",
            &conf,
            "--netns-dir",
            &netns,
            "--default-bridge",
            &net.bridge,
            "--default-subnet",
            &net.subnet,
            "--tasks",
            t,
        ],
    )
}

impl Stack {
    /// Removes (killing them first) the containers of the default namespace, when the
    /// services answer.
    fn remove_containers(&self) {
        let Ok(out) = self.cli().args(["ps", "-a", "-q"]).output() else {
            return;
        };
        if !out.status.success() {
            return;
        }
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = self
                .cli()
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Stack {
    /// A network service's attachments would outlive the stack (namespaces bound in its
    /// directory, veths, firewall rules): once the services are down, every one is torn down.
    fn drop(&mut self) {
        // Containers a test left go with their stack: their supervisors, processes and root
        // mounts would outlive the services otherwise.
        self.remove_containers();
        if let Some(n) = &mut self.network {
            self.gateway.kill9();
            n.kill9();
            let out = n.run_once(&["--detach-all"]);
            if !out.status.success() {
                eprintln!(
                    "strata-network --detach-all failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            // User networks' bridges (and their routes) go too: a later test may take the
            // same subnet.
            let networks = self.dir.path().join("network/networks");
            for entry in std::fs::read_dir(networks).into_iter().flatten().flatten() {
                let Ok(text) = std::fs::read(entry.path()) else {
                    continue;
                };
                let record: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
                if record["default"] == false
                    && let Some(bridge) = record["bridge"].as_str()
                {
                    let _ = Command::new("ip")
                        .args(["link", "del", bridge])
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
    }
}

/// containerd's own client (Debian's package containerd).
pub fn ctr_path() -> PathBuf {
    tool("ctr", "containerd")
}
