//! The crate's error type and its mapping onto [`strata_core::Kind`].

use strata_core::{Digest, Kind};

/// Everything that can go wrong talking to a registry. Each message names the input it is about
/// (the reference, URL, digest or file).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A reference string that is not a valid image name.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A platform specifier such as `linux/arm64/v8` that cannot be parsed.
    #[error("invalid platform {input:?}: {reason}")]
    InvalidPlatform {
        /// The specifier as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The registry answered 404 or an `*_UNKNOWN` error code.
    #[error("{what}: not found{}", detail_suffix(detail))]
    NotFound {
        /// The operation it happened in, naming its reference or digest.
        what: String,
        /// What the registry said: its error codes and messages, or the start of the error
        /// body; may be empty.
        detail: String,
    },

    /// The registry refused the request after authentication was tried (401/403).
    #[error("{what}: unauthorized ({status}){}", detail_suffix(detail))]
    Unauthorized {
        /// The operation it happened in, naming its reference or digest.
        what: String,
        /// The HTTP status, 401 or 403.
        status: u16,
        /// What the registry said (or that there were no credentials for it); may be empty.
        detail: String,
    },

    /// Any other unexpected HTTP status.
    #[error("{what}: unexpected status {status}{}", detail_suffix(detail))]
    Status {
        /// The operation it happened in, naming its reference or digest.
        what: String,
        /// The HTTP status.
        status: u16,
        /// What the registry said: its error codes and messages, or the start of the error
        /// body; may be empty.
        detail: String,
    },

    /// Retries were exhausted on a retryable status (5xx, 429).
    #[error(
        "{what}: status {status} after {attempts} attempts{}",
        detail_suffix(detail)
    )]
    Exhausted {
        /// The operation it happened in, naming its reference or digest.
        what: String,
        /// The status of the last try.
        status: u16,
        /// How many tries were made.
        attempts: u32,
        /// What the registry said on the last try; may be empty.
        detail: String,
    },

    /// The server could not be reached (connect error, timeout, reset) after retries.
    #[error("{what}: connection failed after {attempts} attempts: {source}")]
    Connect {
        /// The operation it happened in, naming its reference or digest.
        what: String,
        /// The URL of the last try.
        url: String,
        /// How many tries were made.
        attempts: u32,
        /// The error of the last try.
        #[source]
        source: reqwest::Error,
    },

    /// Reading a response body failed part way.
    #[error("{what}: reading response body: {source}")]
    Body {
        /// Whose body was being read, naming its reference or digest.
        what: String,
        /// The read error.
        #[source]
        source: reqwest::Error,
    },

    /// Content did not hash to the digest it was fetched or announced under.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The manifest or blob checked.
        what: String,
        /// The digest the content was fetched or announced under.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },

    /// Content had a different size than announced.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob checked.
        what: String,
        /// The size expected, in bytes.
        expected: u64,
        /// The number of bytes received.
        actual: u64,
    },

    /// A body (manifest, index, config, token answer) larger than the client accepts; reading
    /// stopped at the limit.
    #[error("{what}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The body refused, naming its reference or digest.
        what: String,
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },

    /// The registry sent (or announced) more bytes of a blob than its descriptor declares;
    /// reading stopped at the declared size.
    #[error("{what}: the registry sent more than the declared {declared} bytes")]
    BeyondDeclaredSize {
        /// The blob and its repository.
        what: String,
        /// The size the blob's descriptor declares, in bytes.
        declared: u64,
    },

    /// A range request past the end of a blob (416).
    #[error("{what}: offset {offset} is not satisfiable{}", detail_suffix(detail))]
    RangeNotSatisfiable {
        /// The blob and its repository.
        what: String,
        /// The byte offset the range started at.
        offset: u64,
        /// What the registry said; may be empty.
        detail: String,
    },

    /// The server answered something that breaks the protocol (bad header, bad JSON, bad
    /// redirect, a token response without a token).
    #[error("{what}: {reason}")]
    Protocol {
        /// The operation (or its token request), naming its reference or digest.
        what: String,
        /// What the server did wrong.
        reason: String,
    },

    /// A manifest, index or config that does not parse.
    #[error("{what}: invalid {kind}: {reason}")]
    InvalidManifest {
        /// The document, named by kind and the digest of its bytes.
        what: String,
        /// Which kind of document: `manifest`, `index` or `image config`.
        kind: &'static str,
        /// The parse error, or the unsupported media type.
        reason: String,
    },

    /// A Docker config file (`config.json`) that cannot be read or parsed.
    #[error("docker config {path:?}: {reason}")]
    DockerConfig {
        /// The path of the file.
        path: String,
        /// Why it cannot be used: the read or parse error, or a malformed `auths` entry.
        reason: String,
    },

    /// The bytes of a blob to push could not be read from where they are kept.
    #[error("{what}: {source}")]
    Source {
        /// The blob being pushed.
        what: String,
        /// The error from the blob's source.
        #[source]
        source: strata_core::Error,
    },

    /// Building the HTTP client failed (TLS backend initialisation).
    #[error("building http client: {0}")]
    Client(#[source] reqwest::Error),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl RegistryError {
    /// The containerd error category of this error.
    pub fn kind(&self) -> Kind {
        match self {
            Self::InvalidReference { .. } | Self::InvalidPlatform { .. } => Kind::InvalidArgument,
            Self::NotFound { .. } => Kind::NotFound,
            Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::BeyondDeclaredSize { .. } => Kind::FailedPrecondition,
            Self::Connect { .. } | Self::Exhausted { .. } | Self::Body { .. } => Kind::Unavailable,
            Self::RangeNotSatisfiable { .. } => Kind::OutOfRange,
            Self::Source { source, .. } => source.kind(),
            Self::Unauthorized { .. }
            | Self::Status { .. }
            | Self::TooLarge { .. }
            | Self::Protocol { .. }
            | Self::InvalidManifest { .. }
            | Self::DockerConfig { .. }
            | Self::Client(_) => Kind::Internal,
        }
    }
}

impl From<RegistryError> for strata_core::Error {
    fn from(e: RegistryError) -> Self {
        // The message keeps the whole source chain: reqwest's own Display omits the cause.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        strata_core::Error::new(e.kind(), message)
    }
}

/// A `Result` whose error defaults to [`RegistryError`].
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
