//! What a workflow observed on one side, as ordered (key, value) pairs, and the comparison of
//! strata's observations with containerd's.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Observations in the order they were made; keys are unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Obs {
    entries: Vec<(String, String)>,
}

impl Obs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `value` under `key`; a key recorded twice is a bug in the workflow.
    pub fn note(&mut self, key: impl Into<String>, value: impl ToString) {
        let key = key.into();
        assert!(
            self.get(&key).is_none(),
            "observation {key:?} recorded twice"
        );
        self.entries.push((key, value.to_string()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Replaces the value of a recorded key (for documented differences); panics when absent,
    /// so a documented difference cannot outlive the observation it adjusts.
    pub fn set(&mut self, key: &str, value: impl ToString) {
        let entry = self
            .entries
            .iter_mut()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no observation {key:?} to adjust"));
        entry.1 = value.to_string();
    }

    /// Asserts a value on one side (strata's own checks, made with or without containerd).
    pub fn expect(&self, key: &str, want: &str) {
        match self.get(key) {
            Some(v) if v == want => {}
            other => panic!("{key}: expected {want:?}, got {other:?}\nall observations:\n{self}"),
        }
    }

    /// The value of a key that must have been recorded.
    pub fn value(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no observation {key:?}:\n{self}"))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
}

impl std::fmt::Display for Obs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.entries {
            writeln!(f, "  {k} = {v:?}")?;
        }
        Ok(())
    }
}

/// Every difference between `strata` and `expected` (containerd's observations, with the
/// documented differences applied), one per line; empty when they agree.
pub fn differences(strata: &Obs, expected: &Obs) -> String {
    let mut out = String::new();
    for (k, want) in &expected.entries {
        match strata.get(k) {
            Some(got) if got == want => {}
            Some(got) => {
                let _ = writeln!(
                    out,
                    "  {k}:\n    strata:     {got:?}\n    containerd: {want:?}"
                );
            }
            None => {
                let _ = writeln!(out, "  {k}: observed on containerd only ({want:?})");
            }
        }
    }
    for (k, got) in &strata.entries {
        if expected.get(k).is_none() {
            let _ = writeln!(out, "  {k}: observed on strata only ({got:?})");
        }
    }
    out
}

/// The document listing strata's deliberate differences from containerd.
pub fn compatibility_doc() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/compatibility.md")
}

/// Asserts that a difference is documented: docs/compatibility.md has a `### ` heading naming
/// `` `id` ``. Every adjustment of containerd's observations goes through here.
pub fn documented(id: &str) {
    let path = compatibility_doc();
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let tag = format!("`{id}`");
    assert!(
        doc.lines()
            .any(|l| l.starts_with("### ") && l.contains(&tag)),
        "difference {id} is not documented in {} (a `### ` heading naming `{id}`)",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_key() {
        let mut a = Obs::new();
        a.note("x", 1);
        a.note("y", "same");
        a.note("only-strata", true);
        let mut b = Obs::new();
        b.note("x", 2);
        b.note("y", "same");
        b.note("only-containerd", false);
        let d = differences(&a, &b);
        assert!(
            d.contains("x:") && d.contains("\"1\"") && d.contains("\"2\""),
            "{d}"
        );
        assert!(!d.contains("y:"), "{d}");
        assert!(d.contains("only-strata: observed on strata only"), "{d}");
        assert!(
            d.contains("only-containerd: observed on containerd only"),
            "{d}"
        );
        b.set("x", 1);
        b.entries.retain(|(k, _)| k != "only-containerd");
        b.note("only-strata", true);
        assert_eq!(differences(&a, &b), "");
    }

    #[test]
    #[should_panic(expected = "recorded twice")]
    fn a_key_is_recorded_once() {
        let mut a = Obs::new();
        a.note("x", 1);
        a.note("x", 2);
    }

    #[test]
    #[should_panic(expected = "not documented")]
    fn an_undocumented_difference_fails() {
        documented("no-such-difference");
    }
}
