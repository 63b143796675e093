//! Port backends behind one pair of traits, and the one factory that opens
//! them from a [`PortSpec`].
//!
//! A port is split in two: [`PortRx`], owned by one reader thread (a port
//! has one per reader), and [`PortTx`], shared by every reader that forwards
//! to the port. Frames are borrowed, not copied: an RX frame is a slice of
//! the receive buffers, and a TX frame goes from that slice straight into
//! `sendmmsg`, or into a slot of the port's TX ring.
//!
//! Backends: [`afpacket`] (veth and any Ethernet link), [`tap`]
//! (`/dev/net/tun`), [`host`] (the pods' gateway, a TAP), [`mem`] (no
//! kernel at all: unit tests and benches). [`open`] turns a [`PortSpec`]
//! into an open port and claims its interface exclusively ([`claim`]).

pub mod afpacket;
pub mod claim;
mod error;
mod frame;
mod handover;
pub mod host;
pub mod mem;
mod quiet;
pub use quiet::Quiet;
mod sys;
pub mod tap;
mod vnet;

pub use claim::{CLAIM_DIR, Claim, sweep as sweep_claims};
pub use error::PortError;
pub use frame::{RxFrame, TxFrame, recycle_rx, recycle_tx};
pub use handover::{Inherited, Role};
pub use vnet::VnetHdr;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use ub_proto::{Backend, IfName, PortSpec};

/// Frames moved per syscall, and the most frames one TX call is given.
pub const BATCH: usize = 64;

/// What one `send_batch` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    pub sent: usize,
    pub bytes: u64,
    /// Frames the kernel refused (no buffer space, link gone, …).
    pub failed: usize,
}

/// The epoll set of the reader that waits on a receive half, and the token
/// the half is registered under there. It holds the set open (a duplicate
/// of the reader's descriptor), so a half that keeps one can never add a
/// socket to a set that is closed or whose number was reused.
#[derive(Debug, Clone)]
pub struct Waiter {
    epoll: Arc<OwnedFd>,
    token: u64,
}

impl Waiter {
    /// The set `epoll` (shared by every half the reader registers), token `token`.
    pub fn new(epoll: Arc<OwnedFd>, token: u64) -> Waiter {
        Waiter { epoll, token }
    }

    /// Adds `fd` to the set under the half's token, edge-triggered, as the
    /// reader registers its halves.
    pub fn add(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        use rustix::event::epoll;
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ET;
        Ok(epoll::add(self.epoll.as_fd(), fd, epoll::EventData::new_u64(self.token), flags)?)
    }

    /// Takes `fd` out of the set.
    pub fn remove(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(rustix::event::epoll::delete(self.epoll.as_fd(), fd)?)
    }
}

/// The receive half of a port, owned by one reader thread.
pub trait PortRx: Send {
    /// Replaces `out` with the frames that are ready now (possibly none).
    /// The frames borrow the port: they stay valid until the next call.
    fn recv_batch<'a>(&'a mut self, out: &mut Vec<RxFrame<'a>>) -> io::Result<()>;

    /// A descriptor that becomes readable when frames arrive, to wait on.
    /// `None` means `recv_batch` waits briefly by itself when idle.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// True when the last `recv_batch` emptied the queue: it returned fewer
    /// frames than it could take. The reader then waits on `wait_fd` at once
    /// instead of asking again only to hear "nothing": the descriptor signals
    /// every frame that arrives after that (a socket under edge-triggered
    /// epoll does). `false` when unsure.
    fn drained(&self) -> bool {
        false
    }

    /// Called by the reader every few milliseconds while it runs, and at
    /// least once a second while this returns true: a receive half that
    /// changes how it receives with load (`--rx busy-slots`) looks at its
    /// port's rate here. `now` is the reader's clock.
    fn tick(&mut self, _now: std::time::Instant) -> bool {
        false
    }

    /// The reader that waits on `wait_fd` (registered there under the
    /// waiter's token), or `None` when it lets the half go. A half that
    /// opens a descriptor of its own later (a busy port's ring) adds it to
    /// that reader's set, so its frames wake the reader directly.
    fn waiting_in(&mut self, _reader: Option<Waiter>) {}

    /// Called when the wait descriptor signals an error, and now and then
    /// while the port is down: is the link up, down (it may come back), or
    /// gone for good?
    fn check(&mut self) -> Health {
        Health::Up
    }

    /// Frames the kernel dropped because the reader fell behind.
    fn kernel_drops(&self) -> u64 {
        0
    }

    /// Whether the half still holds a ring its port is giving back (before
    /// a handover): a stopping reader reads it empty first, since a ring's
    /// frames cannot travel to the daemon taking over.
    fn ring_to_empty(&self) -> bool {
        false
    }
}

/// The state of a port's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Down (administratively or no carrier); the port resumes when it is up.
    Down,
    /// The interface no longer exists (e.g. its veth peer's namespace was deleted).
    Gone,
}

/// The transmit half of a port, shared by all readers.
pub trait PortTx: Send + Sync {
    fn send_batch(&self, frames: &[TxFrame<'_>]) -> SendOutcome;
    /// Largest L3 payload (the interface MTU).
    fn mtu(&self) -> u32;

    /// Before a handover (`run --takeover`): gives back what cannot travel
    /// (a busy port's RX rings, whose read position is this process's):
    /// frames go to the sockets, and the readers read the rings empty as
    /// they stop ([`PortRx::ring_to_empty`]).
    fn prepare_handover(&self) {}

    /// The handover did not happen: the port may take its rings again.
    fn cancel_handover(&self) {}

    /// Duplicates of the descriptors that carry the port's frames, for the
    /// daemon that takes over (the claim is the daemon's to add).
    fn handover_fds(&self) -> io::Result<Vec<(Role, std::os::fd::OwnedFd)>> {
        Ok(Vec::new())
    }
}

/// The state of link `ifindex`, which must still be called `name`: the port
/// is gone for good when the ifindex no longer names its link.
pub fn link_health(ifindex: u32, name: &str) -> Health {
    match ub_netlink::Rtnl::open().and_then(|mut nl| nl.link_by_index(ifindex)) {
        Ok(Some(l)) if l.name == name => {
            if l.admin_up && l.oper_up {
                Health::Up
            } else {
                Health::Down
            }
        }
        Ok(_) => Health::Gone,
        // Cannot tell (netlink unavailable): keep the port, report it down.
        Err(_) => Health::Down,
    }
}

/// How [`open`] opens ports.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How AF_PACKET ports receive, and how many receive halves each gets.
    pub rx: afpacket::RxConfig,
    /// Where claims are taken ([`CLAIM_DIR`] unless a test says otherwise).
    pub claim_dir: PathBuf,
    /// Who is claiming, as a refused second claimant is told.
    pub holder: String,
    /// How to make a host port (the daemon's `--host-port`).
    pub host: Option<host::HostOptions>,
    /// Descriptors handed over by the daemon before this one: a port opens
    /// on its own, if there, instead of making new ones.
    pub inherit: Arc<Inherited>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            rx: afpacket::RxConfig::default(),
            claim_dir: CLAIM_DIR.into(),
            holder: format!("pid {}", std::process::id()),
            host: None,
            inherit: Arc::default(),
        }
    }
}

/// A port opened from its spec, not yet forwarding.
#[derive(Debug)]
pub struct OpenedPort {
    /// The interface's name (the kernel's, for a TAP).
    pub name: IfName,
    pub backend: Backend,
    /// One receive half per reader thread.
    pub rx: Vec<Box<dyn PortRx>>,
    pub tx: Box<dyn PortTx>,
    /// The link is up (administratively and operationally).
    pub up: bool,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    /// Held for the port's life: dropping it lets another daemon claim the interface.
    pub claim: Claim,
    /// Held for the port's life: a veth's or uplink's interface out of the
    /// node's IP stack (no ARP answers, no forwarding, no IPv6), as a bridge
    /// port is. `None` for a TAP, whose interface is the station.
    pub quiet: Option<quiet::Quiet>,
    /// This open made the interface (a TAP, a new host port), rather than
    /// found it (a veth, a host port a daemon made before).
    pub made: bool,
}

impl std::fmt::Debug for dyn PortRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortRx")
    }
}

impl std::fmt::Debug for dyn PortTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortTx")
    }
}

/// The name the kernel gave an interface, which it only gives valid ones.
pub(crate) fn kernel_name(name: String) -> Result<IfName, PortError> {
    IfName::new(&name).map_err(|_| PortError::NoSuchInterface(name))
}

/// Opens the port `spec` describes and claims its interface: an AF_PACKET
/// port on an existing link (refused if it has a master or another
/// userbridge holds it), or a new TAP.
pub fn open(spec: &PortSpec, o: &OpenOptions) -> Result<OpenedPort, PortError> {
    let boxed = |rx: Vec<_>| rx.into_iter().map(|r| Box::new(r) as Box<dyn PortRx>).collect();
    match spec.backend {
        Backend::Afpacket => {
            let link = afpacket::lookup(&spec.name)?;
            let claim = claim_of(o, &link.name, link.index)?;
            let (rx, tx, info) = afpacket::open_link_with(&link, o.rx, &o.inherit)?;
            let quiet = Some(match o.inherit.take_quiet(&link.name) {
                Some(changed) => quiet::Quiet::inherit(changed),
                None => quiet::Quiet::apply(&link.name),
            });
            Ok(OpenedPort {
                name: kernel_name(link.name)?,
                backend: Backend::Afpacket,
                rx: boxed(rx),
                tx: Box::new(tx),
                up: info.admin_up && info.oper_up,
                ifindex: info.ifindex,
                mac: info.mac,
                claim,
                quiet,
                made: false,
            })
        }
        Backend::Tap => {
            let (rx, tx, t) = tap::open_queues(&spec.name, 1, false, o.inherit.take(&spec.name, Role::Tap))?;
            let claim = claim_of(o, &t.name, t.ifindex)?;
            Ok(OpenedPort {
                name: t.name,
                backend: Backend::Tap,
                rx: rx.into_iter().map(|r| Box::new(r) as Box<dyn PortRx>).collect(),
                tx: Box::new(tx),
                // A new TAP is down until whoever uses it brings it up.
                up: false,
                ifindex: t.ifindex,
                mac: t.mac,
                claim,
                // A TAP's interface is the station (a VM, the node's stack),
                // not the wire: its IP stack is the point.
                quiet: None,
                made: true,
            })
        }
        Backend::Host => match &o.host {
            Some(h) => host::open(&spec.name, h, o),
            None => Err(PortError::Unsupported {
                backend: "host",
                why: "a host port is the daemon's own (run --host-port)",
            }),
        },
        Backend::Mem => Err(PortError::Unsupported { backend: "mem", why: "in-memory ports are made by tests" }),
    }
}

/// Claims interface `name`: with the claim handed over for it, if there is
/// one (the same locked file), else afresh.
fn claim_of(o: &OpenOptions, name: &str, ifindex: u32) -> Result<Claim, PortError> {
    if let Some(fd) = o.inherit.take(name, Role::Claim).pop() {
        return Claim::adopt(fd, &o.claim_dir, name, ifindex, &o.holder);
    }
    loop {
        match Claim::take(&o.claim_dir, name, ifindex, &o.holder) {
            Err(PortError::Claimed { .. })
                if o.inherit.claims_free_by().is_some_and(|t| std::time::Instant::now() < t) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}
