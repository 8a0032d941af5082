//! The conformance suites of the resource traits of `strata_core`, written against the traits
//! alone: a service's tests run each case against its local store and its gRPC server, and the
//! gateway's tests run the same cases through its router and hooks (as containerd's
//! `core/content/testsuite` runs against any store). Each case panics on the first rule broken.

pub mod containers;
pub mod content;
pub mod diff;
pub mod images;
pub mod snapshots;

use std::collections::HashMap;

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
