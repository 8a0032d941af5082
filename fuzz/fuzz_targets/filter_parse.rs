//! containerd filters (`strata_core::filters`): parsing any set of filter strings (one a line)
//! never panics, and a parsed filter can be matched against an object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::filters::{Adaptor, Filter};

struct Image;

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some("docker.io/library/busybox:latest".to_owned()),
            Some("target") if path.get(1).map(String::as_str) == Some("digest") => {
                Some(format!("sha256:{}", "a".repeat(64)))
            }
            Some("labels") => path.get(1).map(|k| format!("value of {k}")),
            _ => None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let filters: Vec<&str> = input.split('\n').collect();
    match Filter::parse_all(&filters) {
        Ok(f) => {
            let _ = f.matches(&Image);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
