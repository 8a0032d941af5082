//! Image references with Docker's normalization: `busybox` is
//! `docker.io/library/busybox:latest`.
//!
//! Grammar (as in the distribution project's `reference` package):
//! `[domain/]path[:tag][@digest]`, where the first `/`-separated part is a domain only when it
//! contains `.` or `:`, is `localhost`, or has an upper-case letter.

use crate::error::{RegistryError, Result};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use strata_core::Digest;

/// The domain that short names resolve to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The host that serves the registry API for [`DEFAULT_DOMAIN`].
pub const DEFAULT_API_HOST: &str = "registry-1.docker.io";
/// The namespace of single-component names on [`DEFAULT_DOMAIN`].
const OFFICIAL_NAMESPACE: &str = "library";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// A normalized image reference. Constructed only by [`Reference::parse`] (or derived from a
/// parsed one), so every value is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes a reference. `repo@sha256:…` keeps no tag; a bare name gets
    /// `latest`.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| RegistryError::InvalidReference {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(invalid("empty reference"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).map_err(|e| invalid(e.message()))?;
                (n, Some(digest))
            }
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(&name_tag[at + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| invalid(&r))?;
        }
        if name.is_empty() {
            return Err(invalid("missing repository name"));
        }
        let (mut domain, mut path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.to_lowercase() != first =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
        };
        if domain == LEGACY_DEFAULT_DOMAIN {
            DEFAULT_DOMAIN.clone_into(&mut domain);
        }
        if domain == DEFAULT_DOMAIN && !path.contains('/') {
            path = format!("{OFFICIAL_NAMESPACE}/{path}");
        }
        validate_domain(&domain).map_err(|r| invalid(&r))?;
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        validate_path(&path).map_err(|r| invalid(&r))?;
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(&format!(
                "repository name must not be longer than {NAME_TOTAL_LENGTH_MAX} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry: domain,
            repository: path,
            tag,
            digest,
        })
    }

    /// The registry domain as named in the reference, normalized (`docker.io`, `host:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host\[:port\] that serves the registry API: `registry-1.docker.io` for `docker.io`,
    /// otherwise the domain itself.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_DOMAIN {
            DEFAULT_API_HOST
        } else {
            &self.registry
        }
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any: `latest` when the input named neither tag nor digest, none when it named
    /// only a digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest the reference is pinned to, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to put after `/manifests/`: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same name pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same name with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self> {
        validate_tag(tag).map_err(|reason| RegistryError::InvalidReference {
            input: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The token scope for pulling from this repository.
    pub fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    /// The token scope for pushing to this repository (a push reads too: `HEAD` of blobs).
    pub fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repository)
    }

    /// True when the registry is on a loopback address (`localhost`, `127.0.0.0/8`, `[::1]`),
    /// where plain HTTP is used, as Docker does.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a port.
pub fn is_loopback_host(domain: &str) -> bool {
    let host = host_without_port(domain);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
fn host_without_port(domain: &str) -> &str {
    if domain.starts_with('[') {
        return match domain.find(']') {
            Some(end) => &domain[..=end],
            None => domain,
        };
    }
    match domain.rsplit_once(':') {
        Some((h, _)) => h,
        None => domain,
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let mut chars = tag.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest || tag.len() > TAG_LENGTH_MAX {
        return Err(format!(
            "invalid tag {tag:?}: expected [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ));
    }
    Ok(())
}

fn validate_domain(domain: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| Err(format!("invalid domain {domain:?}: {why}"));
    let (host, port) = if domain.starts_with('[') {
        let Some(end) = domain.find(']') else {
            return bad("unterminated IPv6 address");
        };
        let port = match &domain[end + 1..] {
            "" => None,
            rest => match rest.strip_prefix(':') {
                Some(p) => Some(p),
                None => return bad("expected ':' after IPv6 address"),
            },
        };
        if domain[1..end].parse::<Ipv6Addr>().is_err() {
            return bad("invalid IPv6 address");
        }
        (None, port)
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("port must be a number");
    }
    if let Some(host) = host {
        if host.is_empty() {
            return bad("empty host");
        }
        for part in host.split('.') {
            let ok = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-');
            if !ok {
                return bad("host components are letters, digits and inner '-'");
            }
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn validate_path(path: &str) -> std::result::Result<(), String> {
    for component in path.split('/') {
        if !valid_component(component) {
            return Err(format!(
                "invalid path component {component:?}: expected lowercase letters and digits \
                 separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    /// input, display, registry, repository, tag
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    );

    #[test]
    fn normalization_table() {
        let cases: &[Case] = &[
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "docker.io",
                "library/busybox",
                Some("latest"),
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
            ),
            (
                "user/repo",
                "docker.io/user/repo:latest",
                "docker.io",
                "user/repo",
                Some("latest"),
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "docker.io",
                "library/busybox",
                Some("latest"),
            ),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
                "docker.io",
                "library/busybox",
                Some("latest"),
            ),
            (
                "host:5000/repo:tag",
                "host:5000/repo:tag",
                "host:5000",
                "repo",
                Some("tag"),
            ),
            (
                "localhost/repo",
                "localhost/repo:latest",
                "localhost",
                "repo",
                Some("latest"),
            ),
            (
                "localhost:5000/a/b/c",
                "localhost:5000/a/b/c:latest",
                "localhost:5000",
                "a/b/c",
                Some("latest"),
            ),
            (
                "127.0.0.1:5000/x-y__z.w",
                "127.0.0.1:5000/x-y__z.w:latest",
                "127.0.0.1:5000",
                "x-y__z.w",
                Some("latest"),
            ),
            (
                "[::1]:5000/repo",
                "[::1]:5000/repo:latest",
                "[::1]:5000",
                "repo",
                Some("latest"),
            ),
            (
                "ghcr.io/org/app:v1.2.3",
                "ghcr.io/org/app:v1.2.3",
                "ghcr.io",
                "org/app",
                Some("v1.2.3"),
            ),
        ];
        for (input, display, registry, repository, tag) in cases {
            let r = Reference::parse(input).expect(input);
            assert_eq!(r.to_string(), *display, "{input}");
            assert_eq!(r.registry(), *registry, "{input}");
            assert_eq!(r.repository(), *repository, "{input}");
            assert_eq!(r.tag(), *tag, "{input}");
            assert_eq!(r.digest(), None, "{input}");
            // Normalized output parses back to itself.
            assert_eq!(Reference::parse(display).expect(display), r, "{display}");
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("repo@{D}")).expect("parse");
        assert_eq!(r.to_string(), format!("docker.io/library/repo@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(ToString::to_string).as_deref(), Some(D));
        assert_eq!(r.manifest_reference(), D);

        let r = Reference::parse(&format!("repo:tag@{D}")).expect("parse");
        assert_eq!(r.to_string(), format!("docker.io/library/repo:tag@{D}"));
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.manifest_reference(), D, "digest wins over tag");

        let r = Reference::parse(&format!("localhost:5000/repo@{D}")).expect("parse");
        assert_eq!(r.registry(), "localhost:5000");
    }

    #[test]
    fn api_host_and_loopback() {
        let r = Reference::parse("busybox").expect("parse");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_loopback());
        for l in [
            "localhost/a",
            "localhost:1/a",
            "127.0.0.1:5000/a",
            "127.1.2.3/a",
            "[::1]:80/a",
            "[::1]/a",
        ] {
            let r = Reference::parse(l).expect(l);
            assert!(r.is_loopback(), "{l}");
            assert_eq!(r.api_host(), r.registry());
        }
        for n in ["10.0.0.1:5000/a", "example.com/a", "[::2]/a", "128.0.0.1/a"] {
            assert!(!Reference::parse(n).expect(n).is_loopback(), "{n}");
        }
    }

    #[test]
    fn errors_name_the_input() {
        for bad in [
            "",
            "UPPER",
            "repo:",
            "repo:-bad",
            "repo@sha256:abc",
            "repo@md5:00",
            "a//b",
            "a/-b",
            "a/b-",
            "a..b",
            "host:port/repo",
            "[::1/repo",
            ":tag",
            "-host.io/repo",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert!(
                err.to_string().contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
            assert_eq!(
                strata_core::Error::from(err).kind(),
                strata_core::Kind::InvalidArgument
            );
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(Reference::parse(&long).is_err());
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
    }

    #[test]
    fn with_digest_and_tag() {
        let r = Reference::parse("busybox:1").expect("parse");
        let d = Digest::parse(D).expect("digest");
        let p = r.with_digest(d.clone());
        assert_eq!(p.digest(), Some(&d));
        assert_eq!(p.tag(), Some("1"));
        let t = p.with_tag("2").expect("tag");
        assert_eq!(t.to_string(), "docker.io/library/busybox:2");
        assert!(r.with_tag("bad tag").is_err());
        assert_eq!(r.pull_scope(), "repository:library/busybox:pull");
        assert_eq!(r.push_scope(), "repository:library/busybox:pull,push");
    }
}
