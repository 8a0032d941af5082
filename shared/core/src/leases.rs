//! The lease resource: a named hold, per namespace, on content, snapshots, ingests and images, so
//! the garbage collector leaves them alone while a client works (a pull holds a lease until the
//! image exists). A lease may expire: its `containerd.io/gc.expire` label is an RFC 3339 time.
//!
//! Also here: the labels through which the collector sees references between objects
//! ([`gc`]), and the RFC 3339 times those labels carry.

use crate::digest::Digest;
use crate::errdefs::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Labels the garbage collector reads, with containerd's meanings.
pub mod gc {
    /// On content or snapshots: keep this object (and what it references) whatever else holds it.
    pub const ROOT: &str = "containerd.io/gc.root";
    /// On a lease: when it expires (RFC 3339). Expired leases are deleted, then collected.
    pub const EXPIRE: &str = "containerd.io/gc.expire";
    /// On a lease: hold the leased objects only, not what their labels reference.
    pub const FLAT: &str = "containerd.io/gc.flat";
    /// `containerd.io/gc.ref.content[.<anything>|/<anything>]` = digest: references a blob of the
    /// same namespace.
    pub const REF_CONTENT: &str = "containerd.io/gc.ref.content";
    /// `containerd.io/gc.ref.snapshot.<snapshotter>[/<anything>]` = key: references a snapshot.
    pub const REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
    /// `containerd.io/gc.bref.content[.<anything>]` = digest: this object lives as long as that
    /// blob does.
    pub const BREF_CONTENT: &str = "containerd.io/gc.bref.content";
    /// `containerd.io/gc.bref.snapshot.<snapshotter>[/<anything>]` = key.
    pub const BREF_SNAPSHOT: &str = "containerd.io/gc.bref.snapshot.";
    /// `containerd.io/gc.bref.image[.<anything>]` = image name.
    pub const BREF_IMAGE: &str = "containerd.io/gc.bref.image";

    /// A reference found in one label.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum LabelRef<'a> {
        /// The labelled object holds this blob (a digest).
        Content(&'a str),
        /// The labelled object holds this snapshot.
        Snapshot {
            /// The snapshotter holding it.
            snapshotter: &'a str,
            /// The snapshot's key.
            key: &'a str,
        },
        /// A back reference: the labelled object lives while this blob does.
        BackContent(&'a str),
        /// A back reference: the labelled object lives while this snapshot does.
        BackSnapshot {
            /// The snapshotter holding it.
            snapshotter: &'a str,
            /// The snapshot's key.
            key: &'a str,
        },
        /// A back reference: the labelled object lives while this image (a name) does.
        BackImage(&'a str),
    }

    /// `key` is `prefix` itself or `prefix` followed by `.` or `/` and a name.
    fn named(key: &str, prefix: &str) -> bool {
        match key.strip_prefix(prefix) {
            Some("") => true,
            Some(rest) => rest.starts_with('.') || rest.starts_with('/'),
            None => false,
        }
    }

    /// The snapshotter named after `prefix`, cut at the first `/`.
    fn snapshotter<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
        let rest = key.strip_prefix(prefix)?;
        let name = rest.split('/').next().unwrap_or(rest);
        (!name.is_empty()).then_some(name)
    }

    /// What the label `key` = `value` references, if it is a reference label.
    pub fn parse<'a>(key: &'a str, value: &'a str) -> Option<LabelRef<'a>> {
        if value.is_empty() {
            return None;
        }
        if named(key, REF_CONTENT) {
            Some(LabelRef::Content(value))
        } else if let Some(sn) = snapshotter(key, REF_SNAPSHOT) {
            Some(LabelRef::Snapshot {
                snapshotter: sn,
                key: value,
            })
        } else if named(key, BREF_CONTENT) {
            Some(LabelRef::BackContent(value))
        } else if let Some(sn) = snapshotter(key, BREF_SNAPSHOT) {
            Some(LabelRef::BackSnapshot {
                snapshotter: sn,
                key: value,
            })
        } else if named(key, BREF_IMAGE) {
            Some(LabelRef::BackImage(value))
        } else {
            None
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reference_labels() {
            let d = "sha256:00";
            assert_eq!(
                parse("containerd.io/gc.ref.content", d),
                Some(LabelRef::Content(d))
            );
            assert_eq!(
                parse("containerd.io/gc.ref.content.l.0", d),
                Some(LabelRef::Content(d))
            );
            assert_eq!(
                parse("containerd.io/gc.ref.content/m", d),
                Some(LabelRef::Content(d))
            );
            assert_eq!(parse("containerd.io/gc.ref.contentx", d), None);
            assert_eq!(
                parse("containerd.io/gc.ref.snapshot.overlayfs", "k"),
                Some(LabelRef::Snapshot {
                    snapshotter: "overlayfs",
                    key: "k"
                })
            );
            assert_eq!(
                parse("containerd.io/gc.ref.snapshot.native/extra", "k"),
                Some(LabelRef::Snapshot {
                    snapshotter: "native",
                    key: "k"
                })
            );
            assert_eq!(parse("containerd.io/gc.ref.snapshot.", "k"), None);
            assert_eq!(parse("containerd.io/gc.ref.content", ""), None);
            assert_eq!(
                parse("containerd.io/gc.bref.image", "img"),
                Some(LabelRef::BackImage("img"))
            );
            assert_eq!(parse("containerd.io/gc.root", "x"), None);
        }
    }
}

/// A lease as one namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name, unique in its namespace.
    pub id: String,
    /// When the lease was created.
    pub created_at: SystemTime,
    /// Labels; `containerd.io/gc.expire` sets when the lease expires.
    pub labels: HashMap<String, String>,
}

impl Lease {
    /// When the lease expires: `None` when it never does; an error when the label is not an
    /// RFC 3339 time.
    pub fn expires_at(&self) -> Result<Option<SystemTime>> {
        expiry(&self.id, &self.labels)
    }
}

/// The expiry the labels of lease `id` set, if any.
pub fn expiry(id: &str, labels: &HashMap<String, String>) -> Result<Option<SystemTime>> {
    match labels.get(gc::EXPIRE) {
        None => Ok(None),
        Some(v) => parse_rfc3339(v)
            .map(Some)
            .map_err(|e| e.context(format!("lease {id:?}: label {}", gc::EXPIRE))),
    }
}

impl crate::filters::Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "id" => Some(self.id.clone()),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
                self.labels.get(&rest.join(".")).cloned()
            }
            _ => None,
        }
    }
}

/// A resource a lease holds, as on the wire: `content` (id = digest), `snapshots/<snapshotter>`
/// (id = key), `ingests` (id = ref) or `images` (id = name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// What names the resource in its type: a digest, a key, a ref or an image name.
    pub id: String,
    /// The resource's type, as on the wire (`content`, `snapshots/<snapshotter>`, …).
    pub kind: String,
}

/// A [`Resource`] understood.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Leased {
    /// A blob.
    Content(Digest),
    /// A snapshot.
    Snapshot {
        /// The snapshotter holding it.
        snapshotter: String,
        /// The snapshot's key.
        key: String,
    },
    /// An ingest, by ref.
    Ingest(String),
    /// An image, by name.
    Image(String),
}

impl Resource {
    /// A resource of type `kind` named `id`, not checked (see [`Resource::parse`]).
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
        }
    }

    /// Checks the type and id: InvalidArgument for a malformed one, NotImplemented for an unknown
    /// type, as containerd answers. Content ids are normalised digests.
    pub fn parse(&self) -> Result<Leased> {
        let (kind, id) = (self.kind.as_str(), self.id.as_str());
        if id.is_empty() {
            return Err(Error::invalid_argument(format!(
                "resource of type {kind:?} needs an id"
            )));
        }
        let mut parts = kind.split('/');
        let first = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        match (first, rest.as_slice()) {
            ("content", []) => Digest::parse(id).map(Leased::Content).map_err(|e| {
                Error::invalid_argument(format!("invalid content resource id {id:?}: {e}"))
            }),
            ("ingests", []) => Ok(Leased::Ingest(id.to_owned())),
            ("images", []) => Ok(Leased::Image(id.to_owned())),
            ("snapshots", [sn]) if !sn.is_empty() => Ok(Leased::Snapshot {
                snapshotter: (*sn).to_owned(),
                key: id.to_owned(),
            }),
            ("content" | "ingests" | "images" | "snapshots", _) => {
                Err(Error::invalid_argument(format!(
                    "invalid resource type {kind:?} (expected content, ingests, images or \
                     snapshots/<snapshotter>)"
                )))
            }
            _ => Err(Error::new(
                crate::Kind::NotImplemented,
                format!("resource type {kind:?} not supported"),
            )),
        }
    }
}

impl Leased {
    /// The resource as on the wire.
    pub fn to_resource(&self) -> Resource {
        match self {
            Leased::Content(d) => Resource::new("content", d.to_string()),
            Leased::Snapshot { snapshotter, key } => {
                Resource::new(format!("snapshots/{snapshotter}"), key.clone())
            }
            Leased::Ingest(r) => Resource::new("ingests", r.clone()),
            Leased::Image(n) => Resource::new("images", n.clone()),
        }
    }
}

/// Longest lease id accepted, in bytes.
pub const MAX_ID_LENGTH: usize = 256;

/// Checks a lease id: non-empty, at most [`MAX_ID_LENGTH`] bytes, printable. (containerd's clients
/// generate ids such as `1700000000-aB_-`, so the stricter identifier rules do not apply.)
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid_argument("lease id must not be empty"));
    }
    if id.len() > MAX_ID_LENGTH {
        let shown: String = id.chars().take(40).collect();
        return Err(Error::invalid_argument(format!(
            "lease id {shown:?}… is longer than {MAX_ID_LENGTH} bytes"
        )));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid_argument(format!(
            "lease id {id:?} must not contain spaces or control characters"
        )));
    }
    Ok(())
}

/// Leases and the resources they hold, per namespace.
pub trait LeaseStore: Send + Sync + 'static {
    /// Creates lease `id`, or one with a generated id when `id` is empty. AlreadyExists when taken;
    /// InvalidArgument when a `containerd.io/gc.expire` label is not an RFC 3339 time.
    fn create(
        &self,
        ns: &str,
        id: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<Lease>> + Send;
    /// NotFound when absent. With `sync`, garbage collection runs before the answer.
    fn delete(&self, ns: &str, id: &str, sync: bool) -> impl Future<Output = Result<()>> + Send;
    /// Leases matching any of `filters` (fields `id`, `labels.<key>`), by id.
    fn list(&self, ns: &str, filters: &[String])
    -> impl Future<Output = Result<Vec<Lease>>> + Send;
    /// Holds `resource` (which need not exist yet). NotFound when the lease is absent.
    fn add_resource(
        &self,
        ns: &str,
        id: &str,
        resource: Resource,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Releases `resource`; releasing what is not held is no error. NotFound when the lease is
    /// absent.
    fn delete_resource(
        &self,
        ns: &str,
        id: &str,
        resource: Resource,
    ) -> impl Future<Output = Result<()>> + Send;
    /// NotFound when the lease is absent.
    fn list_resources(
        &self,
        ns: &str,
        id: &str,
    ) -> impl Future<Output = Result<Vec<Resource>>> + Send;
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Parses an RFC 3339 time (`2006-01-02T15:04:05Z`, `…05.999+07:00`), as Go's `time.RFC3339`
/// layout accepts it. Times before 1970 are refused.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime> {
    let bad = |why: &str| Error::invalid_argument(format!("{s:?} is not an RFC 3339 time: {why}"));
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64> {
        let part = b.get(from..from + len).ok_or_else(|| bad("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad("expected digits"));
        }
        Ok(part
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, want: &[u8]| -> Result<()> {
        match b.get(at) {
            Some(c) if want.contains(c) => Ok(()),
            _ => Err(bad("unexpected separator")),
        }
    };
    let year = num(0, 4)?;
    sep(4, b"-")?;
    let month = num(5, 2)?;
    sep(7, b"-")?;
    let day = num(8, 2)?;
    sep(10, b"Tt")?;
    let hour = num(11, 2)?;
    sep(13, b":")?;
    let minute = num(14, 2)?;
    sep(16, b":")?;
    let second = num(17, 2)?;
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let digits = &s[start..at];
        if digits.is_empty() {
            return Err(bad("empty fraction of a second"));
        }
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded
            .parse()
            .map_err(|_| bad("bad fraction of a second"))?;
    }
    let offset = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(c @ (b'+' | b'-')) if at + 6 == b.len() => {
            let h = num(at + 1, 2)?;
            sep(at + 3, b":")?;
            let m = num(at + 4, 2)?;
            if h > 23 || m > 59 {
                return Err(bad("offset out of range"));
            }
            let o = h * 3600 + m * 60;
            if *c == b'+' { o } else { -o }
        }
        _ => return Err(bad("expected Z or a ±hh:mm offset at the end")),
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[usize::try_from(month - 1).unwrap_or(0)]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad("field out of range"));
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).map_err(|_| bad("before 1970"))?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Formats a time as RFC 3339 in UTC, to the second (`2006-01-02T15:04:05Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = i64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
        .unwrap_or(i64::MAX / 2);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2024-02-29T23:59:58Z").expect("parse");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs(),
            1_709_251_198
        );
        assert_eq!(format_rfc3339(t), "2024-02-29T23:59:58Z");
        let with_offset = parse_rfc3339("2024-03-01T01:59:58.5+02:00").expect("parse");
        assert_eq!(
            with_offset.duration_since(t).expect("later"),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z").expect("epoch"),
            UNIX_EPOCH
        );
        let now = SystemTime::now();
        let back = parse_rfc3339(&format_rfc3339(now)).expect("parse");
        assert!(now.duration_since(back).expect("not later") < Duration::from_secs(1));
    }

    #[test]
    fn rfc3339_refusals_name_the_input() {
        for bad in [
            "",
            "tomorrow",
            "2024-02-30T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0200",
            "1969-12-31T23:59:59Z",
            "2024-01-01T00:00:00.Z",
        ] {
            let err = parse_rfc3339(bad).expect_err(bad);
            assert!(err.message().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn resources() {
        let d = Digest::of(b"x");
        assert_eq!(
            Resource::new("content", d.to_string())
                .parse()
                .expect("content"),
            Leased::Content(d.clone())
        );
        assert_eq!(
            Resource::new("snapshots/overlayfs", "k")
                .parse()
                .expect("snapshot"),
            Leased::Snapshot {
                snapshotter: "overlayfs".into(),
                key: "k".into()
            }
        );
        let err = Resource::new("content", "nope")
            .parse()
            .expect_err("bad digest");
        assert!(err.is(crate::Kind::InvalidArgument) && err.message().contains("nope"));
        let err = Resource::new("snapshots", "k")
            .parse()
            .expect_err("no snapshotter");
        assert!(err.is(crate::Kind::InvalidArgument) && err.message().contains("snapshots"));
        let err = Resource::new("volumes", "v").parse().expect_err("unknown");
        assert!(err.is(crate::Kind::NotImplemented) && err.message().contains("volumes"));
        for l in [
            Leased::Content(d),
            Leased::Ingest("r".into()),
            Leased::Image("i".into()),
        ] {
            assert_eq!(l.to_resource().parse().expect("round trip"), l);
        }
    }
}
