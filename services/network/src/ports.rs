//! Published host ports are reserved by holding a socket bound to them (as Docker, Podman and
//! nerdctl do): a port already in use is refused when the container is created, with a clear
//! error, and nothing else can take it while the container has it. Only IPv4 is reserved and
//! published: nothing listens on `[::]`.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};
use strata_core::{Error, Result};

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// The host address: 0.0.0.0 for all.
    pub host_ip: Ipv4Addr,
    /// The host port (chosen when 0 was asked for).
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl Port {
    /// Checks a request: a protocol strata publishes, an IPv4 host address, ports in range.
    pub fn checked(
        host_ip: &str,
        host_port: u32,
        container_port: u32,
        protocol: &str,
    ) -> Result<Port> {
        let protocol = match protocol {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            other => {
                return Err(Error::invalid_argument(format!(
                    "port {container_port}/{other}: the protocol must be tcp or udp"
                )));
            }
        };
        let host_ip: Ipv4Addr = if host_ip.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            host_ip.parse().map_err(|_| {
                Error::invalid_argument(format!(
                    "host address {host_ip:?}: strata publishes ports on IPv4 addresses only"
                ))
            })?
        };
        let port = |what: &str, p: u32, zero_ok: bool| -> Result<u16> {
            match u16::try_from(p) {
                Ok(0) if !zero_ok => Err(Error::invalid_argument(format!(
                    "{what} 0: give a port between 1 and 65535"
                ))),
                Ok(p) => Ok(p),
                Err(_) => Err(Error::invalid_argument(format!(
                    "{what} {p}: out of range (1-65535)"
                ))),
            }
        };
        Ok(Port {
            host_ip,
            host_port: port("host port", host_port, true)?,
            container_port: port("container port", container_port, false)?,
            protocol: protocol.to_owned(),
        })
    }

    /// `8080/tcp`, as errors and `strata port` say it.
    pub fn host_label(&self) -> String {
        format!("{}/{}", self.host_port, self.protocol)
    }
}

/// A socket holding a published port.
#[derive(Debug)]
pub enum Held {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A bound UDP socket.
    Udp(UdpSocket),
}

/// Binds `port` (a free one when its host port is 0): the socket held and the port as bound.
pub fn reserve(port: &Port) -> Result<(Held, Port)> {
    let addr = SocketAddrV4::new(port.host_ip, port.host_port);
    let taken = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::already_exists(format!(
                "port {} is already allocated{}",
                port.host_label(),
                if port.host_ip.is_unspecified() {
                    String::new()
                } else {
                    format!(" on {}", port.host_ip)
                }
            ))
        } else {
            Error::invalid_argument(format!("publishing {addr}/{}: {e}", port.protocol))
        }
    };
    let (held, bound) = if port.protocol == "udp" {
        let s = UdpSocket::bind(addr).map_err(taken)?;
        let a = s.local_addr().map_err(taken)?;
        (Held::Udp(s), a.port())
    } else {
        let s = TcpListener::bind(addr).map_err(taken)?;
        let a = s.local_addr().map_err(taken)?;
        (Held::Tcp(s), a.port())
    };
    Ok((
        held,
        Port {
            host_port: bound,
            ..port.clone()
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_refused_by_name() {
        let (held, bound) = reserve(&Port::checked("127.0.0.1", 0, 80, "tcp").unwrap()).unwrap();
        assert_ne!(bound.host_port, 0);
        let again = Port::checked("127.0.0.1", u32::from(bound.host_port), 80, "").unwrap();
        let e = reserve(&again).unwrap_err();
        assert_eq!(e.kind(), strata_core::Kind::AlreadyExists);
        assert_eq!(
            e.to_string(),
            format!(
                "port {}/tcp is already allocated on 127.0.0.1",
                bound.host_port
            )
        );
        drop(held);
        reserve(&again).unwrap();
        assert!(Port::checked("::1", 80, 80, "tcp").is_err());
        assert!(Port::checked("", 70000, 80, "tcp").is_err());
        assert!(Port::checked("", 80, 80, "sctp").is_err());
    }
}
