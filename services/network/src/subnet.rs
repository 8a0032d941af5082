//! IPv4 subnets: parsing, overlap, and choosing one no other network or host route uses.

use std::fmt;
use std::net::Ipv4Addr;

use strata_core::{Error, Result};

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; host bits must be zero; /8 to /30.
    pub fn parse(s: &str) -> Result<Cidr> {
        let bad = |why: &str| Error::invalid_argument(format!("subnet {s:?}: {why}"));
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected a.b.c.d/n"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be between 8 and 30"));
        }
        let c = Cidr { addr, prefix };
        if u32::from(addr) & !c.mask() != 0 {
            return Err(bad("host bits are set"));
        }
        Ok(c)
    }

    fn mask(self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Whether the two networks share an address.
    pub fn overlaps(self, other: Cidr) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The first host address: the gateway, by convention.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Subnets other tools take by default: Docker (172.17/16), Podman (10.88/16), nerdctl
/// (10.4.0/24).
pub const OTHER_TOOLS: &[&str] = &["172.17.0.0/16", "10.88.0.0/16", "10.4.0.0/24"];

/// The host's IPv4 routes (`/proc/net/route`, the main table), default route excluded.
pub fn host_routes() -> Vec<Cidr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // Little-endian in the file.
            let (dest, mask) = (dest.swap_bytes(), mask.swap_bytes());
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            (prefix > 0).then(|| Cidr {
                addr: Ipv4Addr::from(dest & mask),
                prefix,
            })
        })
        .collect()
}

/// The first /`prefix` of the candidate ranges that overlaps none of `taken`, the host's
/// routes, or the other tools' defaults.
pub fn choose(taken: &[Cidr], prefix: u8) -> Result<Cidr> {
    let mut avoid: Vec<Cidr> = taken.to_vec();
    avoid.extend(host_routes());
    avoid.extend(OTHER_TOOLS.iter().filter_map(|s| Cidr::parse(s).ok()));
    // 10.213.0.0/16 upwards, then 172.30/16 and 172.31/16.
    let step = 1u32 << (32 - u32::from(prefix));
    for (start, end) in [
        ([10, 213, 0, 0], [10, 250, 255, 255]),
        ([172, 30, 0, 0], [172, 31, 255, 255]),
    ] {
        let (start, end) = (
            u32::from(Ipv4Addr::from(start)),
            u32::from(Ipv4Addr::from(end)),
        );
        let mut a = start;
        while a < end {
            let c = Cidr {
                addr: Ipv4Addr::from(a),
                prefix,
            };
            if !avoid.iter().any(|t| t.overlaps(c)) {
                return Ok(c);
            }
            a = a.saturating_add(step);
        }
    }
    Err(Error::failed_precondition(format!(
        "no free /{prefix} subnet left: give one with --subnet"
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_overlap_and_choose() {
        let a = Cidr::parse("10.213.0.0/16").unwrap();
        assert!(a.overlaps(Cidr::parse("10.213.5.0/24").unwrap()));
        assert!(!a.overlaps(Cidr::parse("10.214.0.0/24").unwrap()));
        assert_eq!(a.gateway().to_string(), "10.213.0.1");
        for bad in [
            "10.0.0.1/24",
            "10.0.0.0",
            "x/24",
            "10.0.0.0/31",
            "10.0.0.0/4",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let first = choose(&[], 24).unwrap();
        let second = choose(&[first], 24).unwrap();
        assert_ne!(first, second);
        assert!(!first.overlaps(second));
        for r in host_routes() {
            assert!(!r.overlaps(first), "{r} {first}");
        }
    }
}
