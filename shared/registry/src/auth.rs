//! Credentials (explicit or from a Docker `config.json`) and `WWW-Authenticate` challenges.

use crate::error::{RegistryError, Result};
use crate::reference::{DEFAULT_API_HOST, DEFAULT_DOMAIN};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// A user name and password (or personal access token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl Credentials {
    /// Credentials from a user name and a password (or token).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization` header value for HTTP basic authentication.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(raw))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The directory Docker reads `config.json` from: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn default_docker_config_dir() -> Option<PathBuf> {
    docker_config_dir_from(|k| std::env::var_os(k))
}

/// [`default_docker_config_dir`] with the environment passed in.
pub fn docker_config_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker"))
}

/// The parts of a Docker `config.json` this client uses.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    path: PathBuf,
    auths: HashMap<String, AuthEntry>,
    helpers: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
}

impl DockerConfig {
    /// Reads `<dir>/config.json`; a missing file is `Ok(None)`.
    pub fn load_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("config.json");
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::DockerConfig {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Parses the contents of a `config.json` found at `path` (named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| RegistryError::DockerConfig {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let mut helpers: Vec<String> = raw
            .cred_helpers
            .unwrap_or_default()
            .into_keys()
            .map(|k| normalize_auth_key(&k))
            .collect();
        if raw.creds_store.is_some_and(|s| !s.is_empty()) {
            helpers.push("*".to_owned());
        }
        Ok(Self {
            path: path.to_owned(),
            auths: raw
                .auths
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (normalize_auth_key(&k), v))
                .collect(),
            helpers,
        })
    }

    /// The credentials stored for `registry` (a reference's domain, such as `docker.io` or
    /// `host:5000`). Credential helpers and identity tokens are not supported; they are
    /// skipped with a debug log.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let key = normalize_auth_key(registry);
        let Some(entry) = self.auths.get(&key) else {
            if self.helpers.iter().any(|h| h == "*" || *h == key) {
                tracing::debug!(
                    registry,
                    path = %self.path.display(),
                    "credential helpers are not supported; pulling anonymously"
                );
            }
            return Ok(None);
        };
        let bad = |reason: String| RegistryError::DockerConfig {
            path: self.path.display().to_string(),
            reason: format!("auths {registry:?}: {reason}"),
        };
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("auth is not base64: {e}")))?;
            let text =
                String::from_utf8(decoded).map_err(|_| bad("auth is not UTF-8".to_owned()))?;
            let Some((user, pass)) = text.split_once(':') else {
                return Err(bad("auth is not \"user:password\"".to_owned()));
            };
            return Ok(Some(Credentials::new(user, pass)));
        }
        match (&entry.username, &entry.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials::new(u, p))),
            _ => {
                if entry.identity_token.is_some() {
                    tracing::debug!(registry, "identity tokens are not supported");
                }
                Ok(None)
            }
        }
    }
}

/// Docker config keys may be URLs (`https://index.docker.io/v1/`) or bare hosts; reduce them
/// to the reference domain form.
fn normalize_auth_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k).to_lowercase();
    match host.as_str() {
        "index.docker.io" | DEFAULT_API_HOST => DEFAULT_DOMAIN.to_owned(),
        _ => host,
    }
}

/// One challenge of a `WWW-Authenticate` header: a scheme (lower-cased) and its parameters
/// (names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The authentication scheme, lower-cased (`bearer`, `basic`).
    pub scheme: String,
    /// The challenge's parameters (`realm`, `service`, `scope`, …), names lower-cased.
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges:
/// `Bearer realm="https://a/token",service="reg",scope="repository:x:pull", Basic realm="r"`.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ws_commas();
        let Some(word) = p.token() else { break };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // A parameter of the current challenge.
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: word.to_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if matches!(b, b' ' | b'\t' | b',' | b'=' | b'"') {
                break;
            }
            self.i += 1;
        }
        if self.i == start {
            // Skip a stray character so the loop always advances.
            if self.peek().is_some() {
                self.i += 1;
                return self.token();
            }
            return None;
        }
        Some(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");

        let c =
            parse_challenges(r#"Basic realm="a \"q\", b", Bearer realm=x , error=invalid_token"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], r#"a "q", b"#);
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].params["realm"], "x");
        assert_eq!(c[1].params["error"], "invalid_token");

        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
        // Garbage does not loop forever.
        let _ = parse_challenges(r#"=,"=""=,,"#);
    }

    #[test]
    fn docker_config_auths() {
        let json = br#"{
          "auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNzOndpdGg6Y29sb25z"},
            "127.0.0.1:5000": {"username": "u2", "password": "p2"},
            "http://other.example:8080/v2/": {"auth": "YTpi"},
            "broken.example": {"auth": "!!!"},
            "token.example": {"identitytoken": "xyz"}
          },
          "credHelpers": {"helped.example": "ecr-login"}
        }"#;
        let path = Path::new("/tmp/x/config.json");
        let cfg = DockerConfig::parse(path, json).expect("parse");
        let hub = cfg.credentials("docker.io").expect("ok").expect("some");
        assert_eq!(hub, Credentials::new("user", "pass:with:colons"));
        let local = cfg
            .credentials("127.0.0.1:5000")
            .expect("ok")
            .expect("some");
        assert_eq!(local, Credentials::new("u2", "p2"));
        let other = cfg
            .credentials("other.example:8080")
            .expect("ok")
            .expect("some");
        assert_eq!(other, Credentials::new("a", "b"));
        assert_eq!(cfg.credentials("nothing.example").expect("ok"), None);
        assert_eq!(cfg.credentials("token.example").expect("ok"), None);
        assert_eq!(cfg.credentials("helped.example").expect("ok"), None);
        let err = cfg.credentials("broken.example").expect_err("bad base64");
        let msg = err.to_string();
        assert!(
            msg.contains("/tmp/x/config.json") && msg.contains("broken.example"),
            "{msg}"
        );
        assert!(
            !format!("{hub:?}").contains("with:colons"),
            "password is redacted"
        );

        let err = DockerConfig::parse(path, b"{not json").expect_err("bad json");
        assert!(err.to_string().contains("/tmp/x/config.json"), "{err}");
    }

    #[test]
    fn config_dir_from_env() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            docker_config_dir_from(env(&[("DOCKER_CONFIG", "/d"), ("HOME", "/h")])),
            Some(PathBuf::from("/d"))
        );
        assert_eq!(
            docker_config_dir_from(env(&[("DOCKER_CONFIG", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.docker"))
        );
        assert_eq!(docker_config_dir_from(env(&[])), None);
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            DockerConfig::load_dir(dir.path())
                .expect("missing is ok")
                .is_none()
        );
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            Credentials::new("user", "pass").basic_header(),
            "Basic dXNlcjpwYXNz"
        );
    }
}
