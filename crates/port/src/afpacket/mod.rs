//! AF_PACKET port: `recvmmsg` (RX slots while busy), `sendmmsg` and a TX
//! ring, the vnet header, PACKET_IGNORE_OUTGOING, auxdata VLAN tags. The
//! `afpacket` crate offers none of it (docs/architecture.md).
//!
//! - `config`: how ports receive (`RxConfig`)
//! - `socket`: the packet sockets and their buffers
//! - `recv`: reading a `recvmmsg` batch and a ring's slots
//! - `busy`: RX slots while a port is busy, and when (`busy::policy`)
//! - `wait`: where a half's sockets wait for the reader
//! - `shaped`: receiving after tc ingress while the interface has a qdisc there
//! - `tx`: the transmit half

mod busy;
mod config;
mod recv;
mod shaped;
mod socket;
mod tx;
mod wait;

pub use busy::{QUIET_FOR, start_ring_closer};
pub use config::{BadRxConfig, Fanout, RxConfig, RxMode};
pub use socket::MMSG_SLOTS;
pub use tx::AfPacketTx;

use crate::sys::{self, MmsgRecv, Steer, TxRing};
use crate::{Health, Inherited, PortError, PortRx, Role, RxFrame, Waiter};
use busy::BusyRx;
use shaped::{Shaper, Shaping};
use socket::{SNDBUF, rx_socket, set_buffer};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use ub_netlink::{Link, Rtnl};

/// What was found out about the interface when it was opened.
#[derive(Debug, Clone)]
pub struct Opened {
    pub ifindex: u32,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub admin_up: bool,
    pub oper_up: bool,
}

/// Opens `name` as a switch port (see [`lookup`] and [`open_link`]).
pub fn open(name: &str, rx: RxConfig) -> Result<(Vec<AfPacketRx>, AfPacketTx, Opened), PortError> {
    open_link(&lookup(name)?, rx)
}

/// Finds link `name` and checks a switch may attach to it: it exists, has
/// no master (a kernel bridge would loop frames with us), and is not
/// loopback.
pub fn lookup(name: &str) -> Result<Link, PortError> {
    let mut nl = Rtnl::open()?;
    let link = nl.link_by_name(name)?.ok_or_else(|| PortError::NoSuchInterface(name.to_string()))?;
    if let Some(m) = link.master {
        let master = nl.link_by_index(m)?.map_or_else(|| format!("ifindex {m}"), |l| l.name);
        return Err(PortError::HasMaster { name: name.to_string(), master });
    }
    if link.index == 1 || link.name == "lo" {
        return Err(PortError::NotEthernet { name: name.to_string(), kind: "loopback".into() });
    }
    Ok(link)
}

/// Opens a link [`lookup`] accepted, with `rx.readers` receive halves in a
/// PACKET_FANOUT group whose program picks the member by flow or by CPU
/// (`rx.fanout`): one reader per CPU keeps a sender's frames on its own
/// core, as the kernel bridge does. On a kernel that cannot make a group
/// ignore outgoing frames (before 6.2) the port gets one half.
pub fn open_link(link: &Link, rx: RxConfig) -> Result<(Vec<AfPacketRx>, AfPacketTx, Opened), PortError> {
    open_link_with(link, rx, &Inherited::default())
}

/// [`open_link`], on the receive sockets a daemon before this one handed
/// over for the link if there are any (`inherit`): bound, promiscuous and
/// in their fanout group already, with what waits in them.
pub fn open_link_with(
    link: &Link,
    rx: RxConfig,
    inherit: &Inherited,
) -> Result<(Vec<AfPacketRx>, AfPacketTx, Opened), PortError> {
    let name = link.name.as_str();
    rx.validate()
        .map_err(|m| PortError::io("receive settings", name, io::Error::new(io::ErrorKind::InvalidInput, m)))?;
    let e = |what| move |err| PortError::io(what, name, err);
    let inherited = inherit.take(name, Role::Rx);
    let (socks, group) = if inherited.is_empty() {
        new_sockets(link, &rx)?
    } else {
        let mut socks = Vec::with_capacity(inherited.len());
        for fd in inherited {
            let recv = socket::rx_buffers().map_err(e("mapping receive buffers"))?;
            socks.push((Arc::new(fd), recv));
        }
        let group = sys::fanout_group(socks[0].0.as_fd()).map_err(e("reading the PACKET_FANOUT group"))?;
        (socks, group)
    };
    let first = socks[0].0.clone();
    set_buffer(first.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF);
    // The TX ring's socket is bound here, in the port's namespace; its ring
    // is mapped later, from whichever reader first sends a burst.
    let ring = TxRing::open(link.index).ok().map(|r| {
        set_buffer(r.socket(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF);
        Mutex::new(r)
    });
    let opened =
        Opened { ifindex: link.index, mtu: link.mtu, mac: link.mac, admin_up: link.admin_up, oper_up: link.oper_up };
    let shaping = Shaping::new(socks.iter().map(|(fd, _)| fd.clone()).collect());
    let half =
        |fd: Arc<OwnedFd>, path| AfPacketRx { fd, path, name: name.to_string(), ifindex: link.index, shaper: None };
    let mut busy = None;
    let mut halves: Vec<AfPacketRx> = match group {
        Some(group) if rx.mode == RxMode::BusySlots => busy::halves(name, link.index, &rx, group, socks, &shaping)
            .map_err(e("setting up the busy-slots halves"))?
            .into_iter()
            .map(|(fd, b)| {
                busy.get_or_insert_with(|| b.slots());
                half(fd, RxPath::Busy(b))
            })
            .collect(),
        _ => socks.into_iter().map(|(fd, recv)| half(fd, RxPath::Mmsg { recv, drained: false })).collect(),
    };
    if let Some(h) = halves.first_mut() {
        let after_tc = inherit.take(name, Role::AfterTc);
        let shaper = Shaper::new(shaping.clone(), name, link.index, after_tc);
        h.shaper = Some(shaper.map_err(e("following the tc ingress qdisc"))?);
    }
    let tx = AfPacketTx { fd: first, mtu: link.mtu, ring, shaping, busy };
    Ok((halves, tx, opened))
}

/// A new port's receive sockets: the first bound and promiscuous, and, for
/// more than one half or busy-slots, a new fanout group of them all.
#[allow(clippy::type_complexity)]
fn new_sockets(link: &Link, rx: &RxConfig) -> Result<(Vec<(Arc<OwnedFd>, MmsgRecv)>, Option<u16>), PortError> {
    let name = link.name.as_str();
    let e = |what| move |err| PortError::io(what, name, err);
    let (first, recv) = rx_socket(name, link.index)?;
    sys::add_promisc(first.as_fd(), link.index).map_err(e("enabling promiscuous mode"))?;
    let mut socks = vec![(Arc::new(first), recv)];
    // A busy-slots port is a group even with one half: its rings join it when it is busy.
    let group = if rx.readers > 1 || rx.mode == RxMode::BusySlots {
        match join_group(link, rx, &mut socks) {
            Ok(g) => Some(g),
            // Before Linux 6.2 a group cannot ignore outgoing frames: one half on recvmmsg.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) && socks.len() == 1 => None,
            Err(err) => return Err(e("setting up the PACKET_FANOUT group")(err)),
        }
    } else {
        None
    };
    Ok((socks, group))
}

/// Makes the first socket of `socks` a new fanout group and joins
/// `rx.readers - 1` more to it, in order: member `i` is half `i`.
fn join_group(link: &Link, rx: &RxConfig, socks: &mut Vec<(Arc<OwnedFd>, MmsgRecv)>) -> io::Result<u16> {
    let steer = Steer { members: u32::try_from(rx.readers).unwrap_or(1), offset: 0 };
    let group = sys::join_fanout(socks[0].0.as_fd(), 0, rx.fanout, steer)?;
    for _ in 1..rx.readers {
        let (fd, recv) = rx_socket(&link.name, link.index).map_err(io::Error::other)?;
        sys::join_fanout(fd.as_fd(), group, rx.fanout, steer)?;
        socks.push((Arc::new(fd), recv));
    }
    Ok(group)
}

/// How a half receives.
#[derive(Debug)]
enum RxPath {
    /// `drained`: the last `recvmmsg` returned fewer frames than slots.
    Mmsg {
        recv: MmsgRecv,
        drained: bool,
    },
    Busy(BusyRx),
}

/// A receive half: its socket (a member of the port's fanout group) and
/// how it reads it; half 0 also follows the interface's tc ingress
/// (`shaper`).
#[derive(Debug)]
pub struct AfPacketRx {
    fd: Arc<OwnedFd>,
    path: RxPath,
    name: String,
    ifindex: u32,
    shaper: Option<Shaper>,
}

/// One batch of the half's own socket (or ring); true if it emptied it.
fn own_batch<'a>(path: &'a mut RxPath, fd: BorrowedFd<'_>, out: &mut Vec<RxFrame<'a>>) -> io::Result<bool> {
    match path {
        RxPath::Busy(b) => b.recv(fd, out),
        RxPath::Mmsg { recv, drained } => {
            *drained = false;
            *drained = recv::mmsg_batch(recv, fd, out)? < MMSG_SLOTS;
            Ok(*drained)
        }
    }
}

impl PortRx for AfPacketRx {
    fn recv_batch<'a>(&'a mut self, out: &mut Vec<RxFrame<'a>>) -> io::Result<()> {
        out.clear();
        let AfPacketRx { fd, path, shaper, .. } = self;
        match shaper {
            Some(s) if s.active() => s.recv(out, |out| own_batch(path, fd.as_fd(), out)),
            _ => own_batch(path, fd.as_fd(), out).map(drop),
        }
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.path {
            RxPath::Busy(b) => Some(b.wait_fd()),
            RxPath::Mmsg { .. } => Some(self.fd.as_fd()),
        }
    }

    fn drained(&self) -> bool {
        match (&self.shaper, &self.path) {
            (Some(s), _) if s.active() => s.drained(),
            (_, RxPath::Mmsg { drained, .. }) => *drained,
            (_, RxPath::Busy(b)) => b.drained,
        }
    }

    fn ring_to_empty(&self) -> bool {
        matches!(&self.path, RxPath::Busy(b) if b.ring_to_empty())
    }

    fn tick(&mut self, now: Instant) -> bool {
        let ticking = match &mut self.path {
            RxPath::Busy(b) => b.tick(now),
            RxPath::Mmsg { .. } => false,
        };
        if let Some(s) = &mut self.shaper {
            s.tick();
        }
        ticking
    }

    fn waiting_in(&mut self, reader: Option<Waiter>) {
        if let Some(s) = &mut self.shaper {
            s.waiting_in(reader.clone());
        }
        if let RxPath::Busy(b) = &mut self.path {
            b.waiting_in(self.fd.as_fd(), reader);
        }
    }

    fn check(&mut self) -> Health {
        // Clears the pending error (ENETDOWN) so the wait descriptor quietens.
        let _ = sys::take_socket_error(self.fd.as_fd());
        if let Some(s) = &self.shaper {
            s.take_errors();
        }
        if let RxPath::Busy(b) = &self.path
            && let Some(fd) = b.ring_fd()
        {
            let _ = sys::take_socket_error(fd);
        }
        // The kernel re-arms a packet socket when its link comes back up.
        crate::link_health(self.ifindex, &self.name)
    }

    fn kernel_drops(&self) -> u64 {
        let ring = match &self.path {
            RxPath::Busy(b) => b.ring_drops(),
            RxPath::Mmsg { .. } => 0,
        };
        let shaped = self.shaper.as_ref().map_or(0, Shaper::kernel_drops);
        sys::packet_drops(self.fd.as_fd()).map_or(0, u64::from) + ring + shaped
    }
}
