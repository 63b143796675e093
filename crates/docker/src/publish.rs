//! Published ports held for their containers: a socket bound on each host
//! port (as Docker's bridge driver holds one without its userland proxy),
//! so no other process, and no second container, takes a port the DNAT
//! rules send elsewhere. Port 0 (`-P`, `-p CTR`) is a port the kernel
//! picks from its ephemeral range.

use crate::api::PortBinding;
use crate::state::{Published, Store};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

/// The state, and the ports held for it: what each call changes, under
/// the driver's lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) held: Reservations,
}

/// A host port held: the socket is the reservation.
#[derive(Debug)]
enum Held {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Every published port of every endpoint, by endpoint.
#[derive(Debug, Default)]
pub struct Reservations {
    held: BTreeMap<String, Vec<(Published, Held)>>,
}

/// Why a port cannot be published; Docker shows it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("Bind for {ip}:{port} failed: port is already allocated")]
    Allocated { ip: Ipv4Addr, port: u16 },
    #[error("publishing on {0:?}: the userbridge driver publishes on IPv4 addresses of the node only")]
    NotIpv4(String),
    #[error("publishing {0}: only tcp and udp ports can be published")]
    Proto(u8),
    #[error("binding {ip}:{port}: {source}")]
    Bind { ip: Ipv4Addr, port: u16, source: std::io::Error },
}

fn bind(proto: u8, ip: Ipv4Addr, port: u16) -> Result<(Held, u16), PublishError> {
    let addr = SocketAddrV4::new(ip, port);
    let err = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            PublishError::Allocated { ip, port }
        } else {
            PublishError::Bind { ip, port, source: e }
        }
    };
    let held = match proto {
        6 => Held::Tcp(TcpListener::bind(addr).map_err(err)?),
        17 => Held::Udp(UdpSocket::bind(addr).map_err(err)?),
        other => return Err(PublishError::Proto(other)),
    };
    let got = match &held {
        Held::Tcp(l) => l.local_addr(),
        Held::Udp(u) => u.local_addr(),
    }
    .map_err(|source| PublishError::Bind { ip, port, source })?
    .port();
    Ok((held, got))
}

impl Reservations {
    /// Holds `bindings` for `endpoint` (all or none), picking the host ports
    /// Docker left to the driver; returns what is published.
    pub fn hold(&mut self, endpoint: &str, bindings: &[PortBinding]) -> Result<Vec<Published>, PublishError> {
        let mut got: Vec<(Published, Held)> = Vec::new();
        for b in bindings {
            let ip: Ipv4Addr = match b.host_ip.as_str() {
                "" | "0.0.0.0" => Ipv4Addr::UNSPECIFIED,
                other => other.parse().map_err(|_| PublishError::NotIpv4(other.to_string()))?,
            };
            let end = b.host_port_end.max(b.host_port);
            let mut last = None;
            let mut held = None;
            for port in b.host_port..=end {
                match bind(b.proto, ip, port) {
                    Ok(h) => {
                        held = Some(h);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let Some((h, port)) = held else {
                return Err(last.unwrap_or(PublishError::Allocated { ip, port: b.host_port }));
            };
            let host_ip = (!ip.is_unspecified()).then_some(ip);
            got.push((Published { proto: b.proto, host_ip, host_port: port, port: b.port }, h));
        }
        let published = got.iter().map(|(p, _)| *p).collect();
        self.held.insert(endpoint.to_string(), got);
        Ok(published)
    }

    /// Holds again what `endpoint` published before a restart of the driver.
    pub fn restore(&mut self, endpoint: &str, published: &[Published]) -> Result<(), PublishError> {
        let mut got = Vec::new();
        for p in published {
            let (h, _) = bind(p.proto, p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port)?;
            got.push((*p, h));
        }
        self.held.insert(endpoint.to_string(), got);
        Ok(())
    }

    /// The endpoint that holds host port `port` (any protocol, any address).
    pub fn holder(&self, port: u16) -> Option<&str> {
        self.held.iter().find(|(_, ps)| ps.iter().any(|(p, _)| p.host_port == port)).map(|(e, _)| e.as_str())
    }

    /// Lets `endpoint`'s ports go.
    pub fn release(&mut self, endpoint: &str) {
        self.held.remove(endpoint);
    }
}

/// The bindings as EndpointOperInfo answers them: what is published, with
/// the host ports the driver picked.
pub fn bindings(published: &[Published]) -> Vec<PortBinding> {
    published
        .iter()
        .map(|p| PortBinding {
            proto: p.proto,
            ip: String::new(),
            port: p.port,
            host_ip: p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host_port: p.host_port,
            host_port_end: p.host_port,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(proto: u8, host_ip: &str, host_port: u16, end: u16) -> PortBinding {
        PortBinding { proto, ip: String::new(), port: 80, host_ip: host_ip.into(), host_port, host_port_end: end }
    }

    #[test]
    fn a_port_is_held_once_and_zero_is_picked() {
        let mut r = Reservations::default();
        let got = r.hold("e1", &[binding(6, "127.0.0.1", 0, 0), binding(17, "127.0.0.1", 0, 0)]).unwrap();
        assert!(got.iter().all(|p| p.host_port != 0), "{got:?}");
        let port = got[0].host_port;
        let e = r.hold("e2", &[binding(6, "127.0.0.1", port, port)]).unwrap_err().to_string();
        assert_eq!(e, format!("Bind for 127.0.0.1:{port} failed: port is already allocated"));
        // A range takes its first free port.
        let got2 = r.hold("e2", &[binding(6, "127.0.0.1", port, port.saturating_add(20))]).unwrap();
        assert_ne!(got2[0].host_port, port);
        r.release("e1");
        assert!(r.hold("e3", &[binding(6, "127.0.0.1", port, port)]).is_ok(), "released: free again");
        assert!(matches!(r.hold("e4", &[binding(6, "::1", 0, 0)]), Err(PublishError::NotIpv4(_))));
    }
}
