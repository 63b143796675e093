use crate::{Error, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// What userbridge needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// ifindex of the link's master (a bridge or bond), if enslaved.
    pub master: Option<u32>,
    /// IFF_UP is set.
    pub admin_up: bool,
    /// Operational state is up (or unknown, as for some virtual links).
    pub oper_up: bool,
    /// `veth`, `tun`, `bridge`, … when the kernel says.
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
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

    /// Sets a link administratively up (or down).
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
        msg.header.change_mask = LinkFlags::Up;
        self.request(&format!("setting interface #{index} up={up}"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
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
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        self.request(
            &format!("adding {addr}/{prefix} to interface #{index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
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
        oper_up: false,
        kind: None,
        mac: None,
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Controller(c) if c != 0 => link.master = Some(c),
            LinkAttribute::OperState(s) => link.oper_up = matches!(s, State::Up | State::Unknown),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac = a.try_into().ok(),
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
        let mut out = Vec::new();
        let mut off = 0;
        while off < n {
            let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n]) else { break };
            let len = m.header.length as usize;
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
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
        Ok(out)
    }
}
