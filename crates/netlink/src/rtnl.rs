use crate::{Error, Result};
use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// What userbridge needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// ifindex of the link's master (a bridge or bond), if enslaved.
    pub master: Option<u32>,
    /// IFF_UP is set.
    pub admin_up: bool,
    /// Promiscuous: set by hand (IFF_PROMISC) or asked for by a packet
    /// socket (tcpdump raises IFLA_PROMISCUITY, not the flag).
    pub promisc: bool,
    /// Operational state is up (or unknown, as for some virtual links).
    pub oper_up: bool,
    /// `veth`, `tun`, `bridge`, … when the kernel says.
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// The link's alias (`ip link set NAME alias TEXT`), if it has one.
    pub alias: Option<String>,
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    /// The output link's index.
    pub dev: Option<u32>,
}

/// A route-netlink socket, bound to the namespace of the thread that opened it.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("opening a route netlink socket", e))?;
        sock.bind_auto().map_err(|e| Error::io("binding a route netlink socket", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| Error::io("connecting a route netlink socket", e))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    fn request(&mut self, what: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| Error::io(what, e))?;
        let mut out = Vec::new();
        let mut rbuf = vec![0u8; 1 << 16];
        loop {
            let n = self.sock.recv(&mut &mut rbuf[..], 0).map_err(|e| Error::io(what, e))?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[off..n])
                    .map_err(|e| Error::Decode { what: what.into(), detail: e.to_string() })?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(Error::Decode { what: what.into(), detail: "zero-length message".into() });
                }
                off += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) => {
                            return Err(Error::Kernel {
                                what: what.into(),
                                source: std::io::Error::from_raw_os_error(-code.get()),
                            });
                        }
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => {
                        out.push(inner);
                        if m.header.flags & netlink_packet_core::NLM_F_MULTIPART == 0 && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Looks a link up by name; `Ok(None)` if there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(&format!("looking up interface {name}"), RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(v) => Ok(v.into_iter().find_map(to_link)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether this namespace has link `name` with MAC `mac`: the very
    /// interface another process described (a daemon's host port), not just
    /// one of the same name.
    pub fn has_link(&mut self, name: &str, mac: [u8; 6]) -> Result<bool> {
        Ok(self.link_by_name(name)?.and_then(|l| l.mac) == Some(mac))
    }

    /// Looks a link up by index; `Ok(None)` if there is no such link.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(&format!("looking up interface #{index}"), RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(v) => Ok(v.into_iter().find_map(to_link)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let v = self.request("listing interfaces", RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(v.into_iter().filter_map(to_link).collect())
    }

    /// Creates a veth pair `name` (here) — `peer` (in `peer_ns`, or here).
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_ns: Option<BorrowedFd<'_>>) -> Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        if let Some(fd) = peer_ns {
            peer_msg.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            &format!("creating veth pair {name}/{peer}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates a kernel bridge `name` (STP off, as `ip link add NAME type bridge`).
    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(
            &format!("creating bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Enslaves link `index` to bridge `master`, with hairpin mode `hairpin`
    /// (frames may leave by the port they came in on).
    pub fn enslave(&mut self, index: u32, master: u32, hairpin: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(master));
        self.request(&format!("enslaving interface #{index}"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(hairpin)])),
        ]));
        // Port (slave) data is applied by RTM_NEWLINK on an existing link, not RTM_SETLINK.
        self.request(&format!("setting hairpin on interface #{index}"), RouteNetlinkMessage::NewLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Sets a link administratively up (or down).
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
        msg.header.change_mask = LinkFlags::Up;
        self.request(&format!("setting interface #{index} up={up}"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Sets or clears IFF_PROMISC (`ip link set X promisc on|off`).
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = if on { LinkFlags::Promisc } else { LinkFlags::empty() };
        msg.header.change_mask = LinkFlags::Promisc;
        self.request(&format!("setting interface #{index} promisc={on}"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Sets a link's MAC address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(&format!("setting the MAC of interface #{index}"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Deletes a link (a veth's peer goes with it).
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(&format!("deleting interface #{index}"), RouteNetlinkMessage::DelLink(msg), NLM_F_ACK).map(drop)
    }

    /// Adds an IPv4 address `addr/prefix` to a link.
    pub fn add_addr_v4(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let net = IpNet::new(IpAddr::V4(addr), prefix)
            .map_err(|e| Error::io(format!("{addr}/{prefix}"), std::io::Error::other(e.to_string())))?;
        self.add_addr(index, net)
    }

    fn addr_msg(index: u32, net: IpNet) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = if net.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        if net.addr().is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(net.addr()));
        }
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        msg
    }

    /// Adds address `net` (IPv4 or IPv6, `addr/prefix`) to a link.
    pub fn add_addr(&mut self, index: u32, net: IpNet) -> Result<()> {
        self.request(
            &format!("adding {net} to interface #{index}"),
            RouteNetlinkMessage::NewAddress(Self::addr_msg(index, net)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Adds address `net` that this process owns to a link: an IPv6 one
    /// without duplicate address detection (`nodad`), so it is usable at
    /// once, as a gateway must be the moment its network exists.
    pub fn add_addr_owned(&mut self, index: u32, net: IpNet) -> Result<()> {
        let mut msg = Self::addr_msg(index, net);
        if net.addr().is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            &format!("adding {net} to interface #{index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes address `net` from a link.
    pub fn del_addr(&mut self, index: u32, net: IpNet) -> Result<()> {
        self.request(
            &format!("removing {net} from interface #{index}"),
            RouteNetlinkMessage::DelAddress(Self::addr_msg(index, net)),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// The addresses of a link (`addr/prefix`), IPv4 and IPv6, link-local included.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<IpNet>> {
        let v = self.request(
            &format!("listing the addresses of interface #{index}"),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(v.into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let ip = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })?;
                    IpNet::new(ip, a.header.prefix_len).ok()
                }
                _ => None,
            })
            .collect())
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(
            &format!("setting the MTU of interface #{index} to {mtu}"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Sets a link's alias (IFLA_IFALIAS), as `ip link set NAME alias TEXT`.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.request(&format!("setting the alias of interface #{index}"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Renames a link (it must be down).
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.request(&format!("renaming interface #{index} to {name}"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Moves a link into the network namespace `ns`.
    pub fn move_to_netns(&mut self, index: u32, ns: BorrowedFd<'_>) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        self.request(
            &format!("moving interface #{index} to another namespace"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    fn route_msg(dst: IpNet, gw: Option<IpAddr>, dev: Option<u32>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if gw.is_some() { RouteScope::Universe } else { RouteScope::Link };
        if dst.prefix_len() != 0 {
            msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst.network())));
        }
        if let Some(gw) = gw {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(dev) = dev {
            msg.attributes.push(RouteAttribute::Oif(dev));
        }
        msg
    }

    /// Adds a route to `dst`, via `gw` and/or out of link `dev`.
    pub fn add_route(&mut self, dst: IpNet, gw: Option<IpAddr>, dev: Option<u32>) -> Result<()> {
        let via = gw.map_or_else(String::new, |g| format!(" via {g}"));
        self.request(
            &format!("adding a route to {dst}{via}"),
            RouteNetlinkMessage::NewRoute(Self::route_msg(dst, gw, dev)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The kind of link `index`'s ingress qdisc (`ingress`, `clsact`), or
    /// `None` when it has none: then no tc filter sees what it receives.
    pub fn ingress_qdisc(&mut self, index: u32) -> Result<Option<String>> {
        let mut msg = TcMessage::default();
        msg.header.index = i32::try_from(index).map_err(|_| Error::Decode {
            what: "reading an ingress qdisc".into(),
            detail: format!("ifindex {index} out of range"),
        })?;
        msg.header.parent = TcHandle::INGRESS;
        // The kernel answers a qdisc get as a notification: only to an echo
        // request, and then with an ack after it.
        let get = RouteNetlinkMessage::GetQueueDiscipline(msg);
        let v = match self.request("reading an ingress qdisc", get, NLM_F_ECHO | NLM_F_ACK) {
            Ok(v) => v,
            // No ingress queue yet (never had one), or the link is gone.
            Err(Error::Kernel { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let kind = v.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) if q.header.parent == TcHandle::INGRESS => {
                q.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })
            }
            _ => None,
        });
        // Once deleted, an ingress queue keeps the `noop` placeholder.
        Ok(kind.filter(|k| k != "noop" && k != "noqueue"))
    }

    /// The routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let v = self.request("listing routes", RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
            for m in v {
                let RouteNetlinkMessage::NewRoute(r) = m else { continue };
                if r.header.table != RouteHeader::RT_TABLE_MAIN {
                    continue;
                }
                let (mut dst, mut gw, mut oif) = (None, None, None);
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
                        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
                        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(IpAddr::V4(*ip)),
                        RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gw = Some(IpAddr::V6(*ip)),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                let zero = if family == AddressFamily::Inet {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                };
                if let Ok(dst) = IpNet::new(dst.unwrap_or(zero), r.header.destination_prefix_length) {
                    out.push(Route { dst, gw, dev: oif });
                }
            }
        }
        Ok(out)
    }
}

fn to_link(m: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(msg) = m else { return None };
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        master: None,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        promisc: msg.header.flags.contains(LinkFlags::Promisc),
        oper_up: false,
        kind: None,
        mac: None,
        alias: None,
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Promiscuity(n) => link.promisc |= n > 0,
            LinkAttribute::Controller(c) if c != 0 => link.master = Some(c),
            LinkAttribute::OperState(s) => link.oper_up = matches!(s, State::Up | State::Unknown),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac = a.try_into().ok(),
            LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// A link changed: what `LinkWatcher::wait` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Created or changed (up/down, carrier, MTU, master…): its state now.
    Changed(Link),
    /// Deleted.
    Removed { index: u32, name: String },
}

/// Subscribes to link notifications (RTNLGRP_LINK) in the calling thread's
/// namespace.
#[derive(Debug)]
pub struct LinkWatcher {
    sock: Socket,
    buf: Vec<u8>,
}

impl LinkWatcher {
    /// `poll_every` bounds how long `wait` blocks, so its caller can check
    /// for shutdown.
    pub fn open(poll_every: std::time::Duration) -> Result<LinkWatcher> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("opening a route netlink socket", e))?;
        sock.bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32))
            .map_err(|e| Error::io("subscribing to link notifications", e))?;
        crate::sys::set_recv_timeout(std::os::fd::AsFd::as_fd(&sock), poll_every)
            .map_err(|e| Error::io("setting a receive timeout", e))?;
        Ok(LinkWatcher { sock, buf: vec![0u8; 1 << 16] })
    }

    /// The link events of the next notification; empty on timeout.
    pub fn wait(&mut self) -> Result<Vec<LinkEvent>> {
        let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(Error::io("reading link notifications", e)),
        };
        Ok(link_events(&self.buf[..n]))
    }
}

/// The link events in one datagram of notifications. A message that does
/// not parse is skipped by the length its header gives, so one odd message
/// does not take the rest of the datagram with it.
pub fn link_events(buf: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(msg)) => {
                    let index = msg.header.index;
                    let name = to_link(RouteNetlinkMessage::NewLink(msg)).map(|l| l.name).unwrap_or_default();
                    out.push(LinkEvent::Removed { index, name });
                }
                NetlinkPayload::InnerMessage(inner @ RouteNetlinkMessage::NewLink(_)) => {
                    out.extend(to_link(inner).map(LinkEvent::Changed));
                }
                _ => {}
            }
        }
        off += (len + 3) & !3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkMessage;

    fn new_link(index: u32, name: &str) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::IfName(name.into()));
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
        msg.finalize();
        let mut buf = vec![0; msg.header.length as usize];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn a_message_that_does_not_parse_leaves_the_rest_of_its_datagram() {
        // RTM_NEWLINK (16) of 20 bytes: too short for its ifinfomsg.
        let mut bad = 20u32.to_ne_bytes().to_vec();
        bad.extend_from_slice(&16u16.to_ne_bytes());
        bad.extend_from_slice(&[0; 14]);
        let datagram = [new_link(3, "veth3"), bad, new_link(4, "veth4")].concat();
        let names: Vec<String> = link_events(&datagram)
            .into_iter()
            .map(|e| match e {
                LinkEvent::Changed(l) => l.name,
                LinkEvent::Removed { name, .. } => name,
            })
            .collect();
        assert_eq!(names, ["veth3", "veth4"]);
        assert!(link_events(&[1, 2, 3]).is_empty(), "a datagram shorter than a header");
    }
}
