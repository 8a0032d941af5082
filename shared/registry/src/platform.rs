//! Platforms (`os/arch[/variant]`) and choosing an index entry for one, with containerd's
//! normalization and matching order.

use crate::error::{RegistryError, Result};
use crate::manifest::{Descriptor, ImageIndex};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An OCI platform as it appears in an image index entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Platform {
    /// The CPU architecture, in Go's `GOARCH` names (`amd64`, `arm64`, …).
    pub architecture: String,
    /// The operating system, in Go's `GOOS` names (`linux`, `windows`, …).
    pub os: String,
    /// `os.version`: the operating system version the image needs (Windows); empty when
    /// absent.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// `os.features`: operating system features the image needs (`win32k` on Windows); empty
    /// when absent.
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "crate::manifest::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    /// The CPU variant (`v7` for arm, `v8` for arm64, `v2`..`v4` for amd64); empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// `features`: CPU features, reserved by the OCI spec; empty when absent.
    #[serde(
        default,
        deserialize_with = "crate::manifest::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub features: Vec<String>,
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// A platform with only OS, architecture and variant set, taken as given (not normalized).
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.to_owned(),
            ..Self::default()
        }
    }

    /// Parses a specifier `<os>|<arch>|<os>/<arch>[/<variant>]`, normalizing names
    /// (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`, `macos` → `darwin`).
    /// A lone OS takes the host's architecture; a lone architecture takes `linux`.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: String| RegistryError::InvalidPlatform {
            input: input.to_owned(),
            reason,
        };
        let parts: Vec<&str> = input.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(
                "expected <os>|<arch>|<os>/<arch>[/<variant>]".into(),
            ));
        }
        let valid_chars = |p: &str| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if let Some(bad) = parts.iter().find(|p| !valid_chars(p)) {
            return Err(invalid(format!("invalid component {bad:?}")));
        }
        match parts.as_slice() {
            [one] => {
                let os = normalize_os(one);
                if KNOWN_OS.contains(&os.as_str()) {
                    let host = Self::host();
                    return Ok(Self { os, ..host });
                }
                let (arch, variant) = normalize_arch(one, "");
                if KNOWN_ARCH.contains(&arch.as_str()) {
                    return Ok(Self::new("linux", &arch, &variant));
                }
                Err(invalid(format!(
                    "unknown operating system or architecture {one:?}"
                )))
            }
            [os, arch] => {
                let (arch, variant) = normalize_arch(arch, "");
                Ok(Self::new(&normalize_os(os), &arch, &variant))
            }
            [os, arch, variant] => {
                let (arch, mut norm_variant) = normalize_arch(arch, variant);
                // As containerd does: an explicit arm64 variant stays visible.
                if arch == "arm64" && norm_variant.is_empty() {
                    "v8".clone_into(&mut norm_variant);
                }
                Ok(Self::new(&normalize_os(os), &arch, &norm_variant))
            }
            _ => Err(invalid("expected at most three '/'-separated parts".into())),
        }
    }

    /// The platform of this machine: `linux` and the GOARCH-style architecture; `arm64` is
    /// `v8`, 32-bit `arm` is `v7`, and on x86-64 the variant is the microarchitecture level the
    /// CPU supports (`v2`..`v4`; empty for the baseline), so that [`select`] accepts images
    /// built for a level this CPU can run and none that it cannot.
    pub fn host() -> Self {
        let (arch, variant) = host_arch();
        Self::new("linux", arch, &variant)
    }

    /// A copy with names normalized the way matching compares them (`arm64/v8` → `arm64`,
    /// `amd64/v1` → `amd64`, `arm` → `arm/v7`).
    pub fn normalized(&self) -> Self {
        let (architecture, variant) = normalize_arch(&self.architecture, &self.variant);
        Self {
            os: normalize_os(&self.os),
            architecture,
            variant,
            ..self.clone()
        }
    }

    /// True when an image for `candidate` runs on `self` (see [`select`]).
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.rank(candidate).is_some()
    }

    /// The position of `candidate` in this platform's preference order; lower is better.
    fn rank(&self, candidate: &Platform) -> Option<usize> {
        let want = self.normalized();
        let have = candidate.normalized();
        if want.os != have.os {
            return None;
        }
        preference_vector(&want.architecture, &want.variant)
            .iter()
            .position(|(a, v)| {
                let (a, v) = normalize_arch(a, v);
                a == have.architecture && v == have.variant
            })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Picks the index entry for `platform`: OS and architecture must be equal after
/// normalization; the variant is chosen in containerd's order, with two refinements:
///
/// - an exact variant is preferred; `arm64` without a variant is `arm64/v8`;
/// - for `amd64` at level `vN` (see [`Platform::host`]) any `amd64/v1..vN` entry is accepted,
///   preferring the exact level, then the baseline (no variant / `v1`), then the highest lower
///   level; `386` is the last resort, as is 32-bit `arm` for `arm64`.
///
/// Entries without a platform never match. Among equally good entries the first wins.
pub fn select<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    index
        .manifests
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let p = d.platform.as_ref()?;
            platform.rank(p).map(|r| (r, i, d))
        })
        .min_by_key(|(r, i, _)| (*r, *i))
        .map(|(_, _, d)| d)
}

fn normalize_os(os: &str) -> String {
    let os = os.to_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

/// containerd's architecture normalization.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

/// The ordered list of (arch, variant) an image may have to run on `arch/variant`
/// (both normalized).
fn preference_vector(arch: &str, variant: &str) -> Vec<(String, String)> {
    let mut out = vec![(arch.to_owned(), variant.to_owned())];
    let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    match arch {
        "amd64" => {
            let top = level(variant).unwrap_or(1);
            if top > 1 {
                out.push(("amd64".into(), String::new()));
                for l in (2..top).rev() {
                    out.push(("amd64".into(), format!("v{l}")));
                }
            }
            out.push(("386".into(), String::new()));
        }
        "arm" => {
            if let Some(top) = level(variant) {
                for l in (5..top).rev() {
                    out.push(("arm".into(), format!("v{l}")));
                }
            }
        }
        "arm64" => {
            let v = if variant.is_empty() { "v8" } else { variant };
            let (major, minor) = match v.strip_prefix('v').map(|s| s.split_once('.')) {
                Some(Some((ma, mi))) => (ma.parse::<u32>().ok(), mi.parse::<u32>().ok()),
                Some(None) => (v[1..].parse::<u32>().ok(), Some(0)),
                None => (None, None),
            };
            if let (Some(mut major), Some(mut minor)) = (major, minor)
                && major >= 8
            {
                if major == 9 {
                    for m in (0..minor).rev() {
                        out.push(("arm64".into(), arm64_variant(9, m)));
                    }
                    // v9.x is compatible with v8.(x+5), up to v8.9.
                    minor = (minor + 5).min(9);
                    major = 8;
                    out.push(("arm64".into(), format!("v8.{minor}")));
                }
                if major == 8 {
                    for m in (0..minor).rev() {
                        out.push(("arm64".into(), arm64_variant(8, m)));
                    }
                }
            }
            for l in (5..=8).rev() {
                out.push(("arm".into(), format!("v{l}")));
            }
        }
        _ => {}
    }
    out
}

fn arm64_variant(major: u32, minor: u32) -> String {
    if minor == 0 {
        format!("v{major}")
    } else {
        format!("v{major}.{minor}")
    }
}

fn host_arch() -> (&'static str, String) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", amd64_level()),
        "x86" => ("386", String::new()),
        "aarch64" => ("arm64", "v8".into()),
        "arm" => ("arm", "v7".into()),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", String::new()),
        "powerpc64" => ("ppc64", String::new()),
        "powerpc" => ("ppc", String::new()),
        "riscv64" => ("riscv64", String::new()),
        "s390x" => ("s390x", String::new()),
        "loongarch64" => ("loong64", String::new()),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", String::new()),
        "mips64" => ("mips64", String::new()),
        "mips" if cfg!(target_endian = "little") => ("mipsle", String::new()),
        "mips" => ("mips", String::new()),
        "sparc64" => ("sparc64", String::new()),
        "wasm32" => ("wasm", String::new()),
        other => (other, String::new()),
    }
}

/// The x86-64 microarchitecture level of the running CPU as a variant: `""` (v1), `v2`, `v3`
/// or `v4`.
#[cfg(target_arch = "x86_64")]
fn amd64_level() -> String {
    use std::arch::is_x86_feature_detected as has;
    let v2 = has!("cmpxchg16b")
        && has!("popcnt")
        && has!("sse3")
        && has!("ssse3")
        && has!("sse4.1")
        && has!("sse4.2");
    let v3 = v2
        && has!("avx")
        && has!("avx2")
        && has!("bmi1")
        && has!("bmi2")
        && has!("f16c")
        && has!("fma")
        && has!("lzcnt")
        && has!("movbe")
        && has!("xsave");
    let v4 = v3
        && has!("avx512f")
        && has!("avx512bw")
        && has!("avx512cd")
        && has!("avx512dq")
        && has!("avx512vl");
    match (v2, v3, v4) {
        (_, _, true) => "v4".into(),
        (_, true, _) => "v3".into(),
        (true, _, _) => "v2".into(),
        _ => String::new(),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn amd64_level() -> String {
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImageIndex, media_types};
    use strata_core::Digest;

    fn index(platforms: &[&str]) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            artifact_type: None,
            manifests: platforms
                .iter()
                .map(|p| Descriptor {
                    media_type: media_types::OCI_MANIFEST.into(),
                    digest: Digest::of(p.as_bytes()),
                    size: 1,
                    urls: vec![],
                    annotations: Default::default(),
                    platform: Some(raw(p)),
                    artifact_type: None,
                })
                .collect(),
            subject: None,
            annotations: Default::default(),
        }
    }

    /// A platform exactly as written, without parse's normalization.
    fn raw(s: &str) -> Platform {
        let parts: Vec<&str> = s.split('/').collect();
        Platform::new(parts[0], parts[1], parts.get(2).copied().unwrap_or(""))
    }

    fn pick(platforms: &[&str], target: &str) -> Option<String> {
        let idx = index(platforms);
        select(&idx, &raw(target)).map(|d| {
            let i = idx
                .manifests
                .iter()
                .position(|m| m.digest == d.digest)
                .expect("position");
            platforms[i].to_owned()
        })
    }

    #[test]
    fn parse_and_display() {
        let cases = [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("Linux/AMD64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm/6", "linux/arm/v6"),
            ("macos/arm64", "darwin/arm64"),
            ("windows/amd64", "windows/amd64"),
            ("arm64", "linux/arm64"),
            ("i386", "linux/386"),
        ];
        for (input, want) in cases {
            let p = Platform::parse(input).expect(input);
            assert_eq!(p.to_string(), want, "{input}");
        }
        let p = Platform::parse("linux").expect("linux");
        assert_eq!(p.architecture, Platform::host().architecture);
        for bad in [
            "",
            "linux/",
            "/amd64",
            "a/b/c/d",
            "nonsense",
            "linux/am d64",
        ] {
            let err = Platform::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn host_is_linux_goarch() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(KNOWN_ARCH.contains(&h.architecture.as_str()), "{h}");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.architecture, "amd64");
            assert!(["", "v2", "v3", "v4"].contains(&h.variant.as_str()), "{h}");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(h.to_string(), "linux/arm64/v8");
        }
        // The host always runs baseline images of its own architecture.
        let base = Platform::new("linux", &h.architecture, "");
        assert!(h.matches(&base) || h.architecture == "arm", "{h}");
    }

    #[test]
    fn selection_rules() {
        let two = ["linux/amd64", "linux/arm64"];
        assert_eq!(pick(&two, "linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(pick(&two, "linux/arm64/v8").as_deref(), Some("linux/arm64"));
        assert_eq!(pick(&two, "linux/arm64").as_deref(), Some("linux/arm64"));
        assert_eq!(pick(&two, "windows/amd64"), None);
        assert_eq!(pick(&two, "linux/s390x"), None);

        // arm64: empty variant is v8, both ways; exact preferred.
        assert_eq!(
            pick(&["linux/arm64/v8"], "linux/arm64").as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(
            pick(&["linux/arm/v7", "linux/arm64/v8"], "linux/arm64").as_deref(),
            Some("linux/arm64/v8")
        );
        // arm64 falls back to 32-bit arm, highest variant first.
        assert_eq!(
            pick(&["linux/arm/v6", "linux/arm/v7"], "linux/arm64/v8").as_deref(),
            Some("linux/arm/v7")
        );
        // arm/v7 runs v6 and v5 but not v8.
        assert_eq!(
            pick(&["linux/arm/v8", "linux/arm/v5"], "linux/arm/v7").as_deref(),
            Some("linux/arm/v5")
        );
        assert_eq!(
            pick(&["linux/arm64/v8.2"], "linux/arm64/v8").as_deref(),
            None,
            "v8.2 needs more than v8"
        );
        assert_eq!(
            pick(&["linux/arm64/v8.2", "linux/arm64"], "linux/arm64/v9.0").as_deref(),
            Some("linux/arm64/v8.2")
        );

        // amd64 levels: exact, then baseline, then lower levels; never higher.
        let levels = [
            "linux/amd64/v2",
            "linux/amd64",
            "linux/amd64/v3",
            "linux/amd64/v4",
        ];
        assert_eq!(
            pick(&levels, "linux/amd64/v3").as_deref(),
            Some("linux/amd64/v3")
        );
        assert_eq!(pick(&levels, "linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(
            pick(&["linux/amd64/v2", "linux/amd64/v1"], "linux/amd64/v4").as_deref(),
            Some("linux/amd64/v1")
        );
        assert_eq!(
            pick(&["linux/amd64/v2", "linux/amd64/v3"], "linux/amd64/v4").as_deref(),
            Some("linux/amd64/v3")
        );
        assert_eq!(pick(&["linux/amd64/v3"], "linux/amd64/v2"), None);
        assert_eq!(
            pick(&["linux/386", "linux/arm64"], "linux/amd64").as_deref(),
            Some("linux/386")
        );
        // Normalized names on either side.
        assert_eq!(
            pick(&["Linux/x86_64"], "linux/amd64").as_deref(),
            Some("Linux/x86_64")
        );
        // First of equals wins; entries without a platform never match.
        let mut idx = index(&["linux/amd64", "linux/amd64"]);
        idx.manifests[0].platform = None;
        let chosen = select(&idx, &raw("linux/amd64")).expect("select");
        assert_eq!(chosen.digest, idx.manifests[1].digest);
    }
}
