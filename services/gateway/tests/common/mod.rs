//! The world most gateway tests run in: a real registry holding a busybox image, the whole
//! stack on temporary sockets, the image pulled.
#![allow(dead_code)]

use std::process::Output;
use std::time::{Duration, Instant};
use strata_testkit::registry::{
    Entry, Layer, Registry, busybox_layer, busybox_layer_with, host_arch, oci_image,
};
use strata_testkit::stack::Stack;
use strata_testkit::{ok, run};

pub struct World {
    pub stack: Stack,
    pub registry: Registry,
    pub image: String,
}

pub fn world() -> World {
    world_of(Stack::start(), vec![busybox_layer()], "busybox:1")
}

/// `stack` with an image of `layers` (bottom first) pushed as `name` and pulled.
pub fn world_of(stack: Stack, layers: Vec<Layer>, name: &str) -> World {
    let registry = Registry::start(stack.path());
    let layout = stack.path().join("layout");
    oci_image(&layout, &layers, host_arch());
    let image = registry.push(&layout, name);
    ok(stack.cli().args(["pull", "-q", &image]), None);
    World {
        stack,
        registry,
        image,
    }
}

impl World {
    pub fn cli(&self, args: &[&str]) -> Output {
        run(self.stack.cli().args(args), None)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.stack.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn snapshots(&self) -> String {
        ok(self.stack.ctr().args(["snapshots", "ls"]), None)
    }

    /// Polls (no timing assertion: it only bounds a hang) until `f` holds.
    pub fn eventually(&self, what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what} never happened\n{}",
                self.stack.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A busybox base with the applets builds use and accounts for `--chown` and USER (the
/// build tests' base image).
pub fn build_base_layer() -> Layer {
    busybox_layer_with(
        &[
            "sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "mkdir", "touch", "chmod",
            "chown", "ln", "rm", "wc", "stat", "printf", "tr", "grep", "env", "pwd", "mv", "cp",
            "tar", "gzip", "head", "seq", "sed",
        ],
        vec![
            Entry::File(
                "etc/passwd".into(),
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n".to_vec(),
                0o644,
            ),
            Entry::File(
                "etc/group".into(),
                b"root:x:0:\napp:x:1000:\nstaff:x:50:\n".to_vec(),
                0o644,
            ),
        ],
    )
}
