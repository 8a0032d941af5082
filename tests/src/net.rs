//! A bridge name and a subnet of a test's own: tests run in parallel (threads of one binary,
//! and several binaries), and two networks on one bridge or subnet would break each other.
//! Slot `n` is held with an exclusive lock on a file, which the kernel drops when the holder
//! dies: a crashed test never keeps one.

use std::fs::File;
use std::os::fd::AsFd as _;

/// A bridge and a /24 no other running test holds.
#[derive(Debug)]
pub struct TestNet {
    /// The bridge's name (`sttest<n>`).
    pub bridge: String,
    /// `10.252.<n>.0/24`.
    pub subnet: String,
    /// The slot.
    pub slot: u32,
    _lock: nix::fcntl::Flock<File>,
}

const SLOTS: u32 = 250;

impl TestNet {
    /// Takes a free slot (panics when all are held).
    pub fn take() -> TestNet {
        let dir = std::path::Path::new("/tmp/strata-test-nets");
        std::fs::create_dir_all(dir).unwrap();
        for slot in 0..SLOTS {
            let f = File::create(dir.join(format!("{slot}.lock"))).unwrap();
            if let Ok(lock) =
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                let net = TestNet {
                    bridge: format!("sttest{slot}"),
                    subnet: format!("10.252.{slot}.0/24"),
                    slot,
                    _lock: lock,
                };
                // A bridge a crashed holder left behind is removed first.
                net.delete_bridge();
                return net;
            }
        }
        panic!("all {SLOTS} test network slots are held");
    }

    /// Deletes the bridge and the rules a network service made for it (tagged
    /// `strata-<bridge>`).
    fn delete_bridge(&self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let tag = format!("strata-{}", self.bridge);
        for table in ["filter", "nat"] {
            let Ok(out) = std::process::Command::new("iptables-save")
                .args(["-t", table])
                .output()
            else {
                continue;
            };
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(rule) = line.strip_prefix("-A ") else {
                    continue;
                };
                if !rule.split_whitespace().any(|w| w == tag) {
                    continue;
                }
                let _ = std::process::Command::new("iptables")
                    .args(["-w", "-t", table, "-D"])
                    .args(rule.split_whitespace())
                    .status();
            }
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.delete_bridge();
        let _ = self._lock.as_fd();
    }
}
