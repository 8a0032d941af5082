//! The files a container gets for its network: `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf`, kept on the host and bind-mounted into the container (as Docker does).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

use strata_core::{Error, Result};

/// The most of the host's resolv.conf read.
const MAX_RESOLV: u64 = 64 << 10;

/// One name on the network: an address and the names it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The address.
    pub ip: String,
    /// Its names.
    pub names: Vec<String>,
}

/// `/etc/hosts`: localhost lines, the container's own address and names, extra entries
/// (`--add-host`), and the other containers of a user network.
pub fn hosts(own: &HostEntry, extra: &[HostEntry], peers: &[HostEntry]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for e in extra.iter().chain(std::iter::once(own)).chain(peers) {
        if !e.names.is_empty() {
            s.push_str(&format!("{}\t{}\n", e.ip, e.names.join(" ")));
        }
    }
    s
}

/// The nameservers, search domains and options of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolv {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// `search` domains.
    pub search: Vec<String>,
    /// `options`.
    pub options: Vec<String>,
}

impl Resolv {
    /// Parses a resolv.conf.
    pub fn parse(text: &str) -> Resolv {
        let mut r = Resolv::default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some("nameserver") => r.nameservers.extend(f.next().map(str::to_owned)),
                Some("search" | "domain") => r.search = f.map(str::to_owned).collect(),
                Some("options") => r.options.extend(f.map(str::to_owned)),
                _ => {}
            }
        }
        r
    }

    /// The host's: `/etc/resolv.conf`, or systemd-resolved's upstream list when the host's
    /// file names only its local stub (127.0.0.53 answers nothing inside a container).
    pub fn host() -> Resolv {
        let read = |p: &str| -> Option<Resolv> {
            use std::io::Read as _;
            let mut s = String::new();
            std::fs::File::open(p)
                .and_then(|f| f.take(MAX_RESOLV).read_to_string(&mut s))
                .ok()?;
            Some(Resolv::parse(&s))
        };
        let etc = read("/etc/resolv.conf").unwrap_or_default();
        let all_loopback =
            !etc.nameservers.is_empty() && etc.nameservers.iter().all(|n| is_loopback(n));
        if all_loopback && let Some(r) = read("/run/systemd/resolve/resolv.conf") {
            return r;
        }
        etc
    }

    /// What a container on a bridge gets: loopback nameservers (the host's, unreachable from
    /// the container) removed; no public server is made up when none is left.
    pub fn for_container(mut self) -> Resolv {
        self.nameservers.retain(|n| !is_loopback(n));
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.search.is_empty() {
            s.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        for n in &self.nameservers {
            s.push_str(&format!("nameserver {n}\n"));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

fn is_loopback(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Checks a `--dns` server, `--add-host` address or host name given by a user.
pub fn check_ip(what: &str, s: &str) -> Result<()> {
    s.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| Error::invalid_argument(format!("{what} {s:?}: not an IP address")))
}

/// A host name or alias: letters, digits, '-', '.', '_', at most 253 characters.
pub fn check_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "{what} {s:?}: use letters, digits, '-', '.' and '_'"
        )))
    }
}

/// Writes `text` to `path`: a new file by temp and rename; an existing one in place, since a
/// container may have it bind-mounted (a rename would leave the container the old file). Not
/// synced: the files are made again from the attachment's record, which is.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let io =
        |what: &str, e: std::io::Error| Error::internal(format!("{what} {}: {e}", path.display()));
    if path.exists() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io("opening", e))?;
        return f.write_all(text.as_bytes()).map_err(|e| io("writing", e));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io("creating", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming", e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resolv_drops_loopback_servers_and_keeps_the_rest() {
        let r = Resolv::parse("nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch a.example b\noptions ndots:2 edns0\n")
            .for_container();
        assert_eq!(r.nameservers, ["10.0.0.2"]);
        assert_eq!(
            r.render(),
            "search a.example b\nnameserver 10.0.0.2\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn hosts_has_localhost_own_extra_and_peers() {
        let own = HostEntry {
            ip: "10.213.0.2".into(),
            names: vec!["web".into(), "www".into()],
        };
        let extra = [HostEntry {
            ip: "192.0.2.9".into(),
            names: vec!["db.example".into()],
        }];
        let h = hosts(&own, &extra, &[]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("10.213.0.2\tweb www\n"));
        assert!(h.contains("192.0.2.9\tdb.example\n"));
        assert!(check_name("alias", "a b").is_err());
        assert!(check_ip("dns", "1.2.3").is_err());
    }
}
