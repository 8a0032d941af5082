//! Manifests, indexes and image configs as the gateway reads them (`from_slice`, media type
//! detection, platform selection): nothing panics, and what parses serializes to something that
//! parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_registry::manifest::detect_media_type;
use strata_registry::{
    ImageConfig, ImageIndex, ImageManifest, Manifest, Platform, media_types, select,
};

const TYPES: &[&str] = &[
    media_types::OCI_INDEX,
    media_types::DOCKER_MANIFEST_LIST,
    media_types::OCI_MANIFEST,
    media_types::DOCKER_MANIFEST,
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let _ = detect_media_type(bytes);
    let media_type = TYPES[usize::from(selector) % TYPES.len()];
    match Manifest::from_slice(media_type, bytes) {
        Ok(Manifest::Index(index)) => {
            for p in [
                "linux/amd64",
                "linux/arm64/v8",
                "linux/arm/v7",
                "windows/amd64",
            ] {
                if let Ok(platform) = Platform::parse(p) {
                    let _ = select(&index, &platform);
                }
            }
            let _ = select(&index, &Platform::host());
            let again = serde_json::to_vec(&index).expect("serialize index");
            let parsed = ImageIndex::from_slice(&again).expect("reparse index");
            assert_eq!(parsed, index);
        }
        Ok(Manifest::Image(manifest)) => {
            for d in manifest.layers.iter().chain([&manifest.config]) {
                let _ = d.to_core();
                let _ = media_types::is_layer(&d.media_type);
            }
            let again = serde_json::to_vec(&manifest).expect("serialize manifest");
            let parsed = ImageManifest::from_slice(&again).expect("reparse manifest");
            assert_eq!(parsed, manifest);
        }
        Err(e) => {
            let _ = strata_core::Error::from(e);
        }
    }
    if let Ok(config) = ImageConfig::from_slice(bytes) {
        let again = serde_json::to_vec(&config).expect("serialize config");
        let parsed = ImageConfig::from_slice(&again).expect("reparse config");
        assert_eq!(parsed, config);
    }
});
