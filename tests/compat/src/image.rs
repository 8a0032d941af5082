//! The image both sides pull: busybox-static as a base layer and a second layer that adds a
//! file, replaces one and deletes one (a whiteout), pushed to the test registry.

use sha2::Digest as _;
use std::path::Path;
use strata_testkit::registry::{Entry, Registry, busybox_layer, host_arch, layer, oci_image};

/// What the top layer puts in the image, as read inside a container.
pub const HELLO_PATH: &str = "/compat/hello";
pub const HELLO: &str = "hello from the compatibility suite\n";
/// The base layer's /etc/os-release, replaced by the top layer.
pub const OS_RELEASE: &str = "NAME=strata-compat\nID=compat\n";
/// A busybox applet the top layer deletes.
pub const WHITED_OUT: &str = "/bin/head";

pub struct TestImage {
    /// `127.0.0.1:<port>/compat/<name>:1`
    pub reference: String,
    pub manifest: String,
    pub config: String,
    /// Compressed layer blobs, bottom first.
    pub layers: Vec<String>,
    /// Chain IDs of the unpacked layers, bottom first: the committed snapshots' keys.
    pub chain: Vec<String>,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The chain IDs of a list of diff IDs.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => sha256(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

impl TestImage {
    /// Builds the image in `dir/<name>-layout` and pushes it as `compat/<name>:1`.
    pub fn push(registry: &Registry, dir: &Path, name: &str) -> Self {
        let top = layer(&[
            Entry::Dir("compat".into()),
            Entry::File("compat/hello".into(), HELLO.as_bytes().to_vec(), 0o644),
            Entry::File(
                "etc/os-release".into(),
                OS_RELEASE.as_bytes().to_vec(),
                0o644,
            ),
            Entry::Whiteout("bin/head".into()),
            // Mount points the runtimes would otherwise create in the container's own layer.
            Entry::Dir("proc".into()),
            Entry::Dir("sys".into()),
            Entry::Dir("dev".into()),
        ]);
        let layers = vec![busybox_layer(), top];
        let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
        let layer_digests = layers.iter().map(|(b, _)| sha256(b)).collect();
        let layout = dir.join(format!("{name}-layout"));
        std::fs::create_dir_all(&layout).unwrap();
        let manifest = oci_image(&layout, &layers, host_arch());
        let blob = |digest: &str| {
            let hex = digest.trim_start_matches("sha256:");
            std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
        };
        let m: serde_json::Value = serde_json::from_slice(&blob(&manifest)).unwrap();
        let config = m["config"]["digest"].as_str().unwrap().to_owned();
        let reference = registry.push(&layout, &format!("compat/{name}:1"));
        Self {
            reference,
            manifest,
            config,
            layers: layer_digests,
            chain: chain_ids(&diff_ids),
        }
    }

    /// Every blob of the image: manifest, config, layers.
    pub fn blobs(&self) -> Vec<String> {
        let mut all = vec![self.manifest.clone(), self.config.clone()];
        all.extend(self.layers.iter().cloned());
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_two_layers() {
        let a = "sha256:aa".to_owned();
        let b = "sha256:bb".to_owned();
        let chain = chain_ids(&[a.clone(), b]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256(b"sha256:aa sha256:bb"));
    }
}
