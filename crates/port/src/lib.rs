//! Port backends behind one pair of traits, and the one factory that opens
//! them from a [`PortSpec`].
//!
//! A port is split in two: [`PortRx`], owned by one reader thread (a port
//! has one per reader), and [`PortTx`], shared by every reader that forwards
//! to the port. Frames are borrowed, not copied: an RX frame is a slice of
//! the receive buffers (`recvmmsg`'s slots, or the mmap'ed ring with `--rx
//! ring`), and a TX frame sent to another AF_PACKET port goes from that
//! slice straight into `sendmmsg`.
//!
//! Backends: [`afpacket`] (veth and any Ethernet link), [`tap`]
//! (`/dev/net/tun`), [`mem`] (no kernel at all: unit tests and benches).
//! [`open`] turns a [`PortSpec`] into an open port and claims its interface
//! exclusively ([`claim`]).

pub mod afpacket;
pub mod claim;
pub mod host;
pub mod mem;
mod spec;
mod sys;
pub mod tap;
mod vnet;

pub use claim::{CLAIM_DIR, Claim};
pub use spec::{Backend, DEFAULT_VLANS, Origin, PortMeta, PortPolicy, PortSpec, PortState, VlanEntry};
pub use vnet::VnetHdr;

use std::path::PathBuf;

use std::io;
use std::os::fd::BorrowedFd;

/// Frames moved per syscall, and the most frames one TX call is given.
pub const BATCH: usize = 64;

/// A received frame, borrowed from the port until the next `recv_batch`.
#[derive(Debug, Clone, Copy)]
pub struct RxFrame<'a> {
    /// The frame from the destination MAC on (offloaded tag not included).
    pub data: &'a [u8],
    /// Offload metadata (GSO, partial checksum) when the port delivers it.
    pub vnet: Option<VnetHdr>,
    /// The 802.1Q/802.1ad tag the kernel removed from the frame, if any:
    /// (TPID, TCI). It must be re-inserted when the frame is forwarded.
    pub offloaded_tag: Option<(u16, u16)>,
    /// The frame's length on the wire; more than `data.len()` if the port
    /// could capture only part of it.
    pub wire_len: u32,
}

/// A frame to send: bytes plus the offload metadata and tag to restore.
#[derive(Debug, Clone, Copy)]
pub struct TxFrame<'a> {
    pub data: &'a [u8],
    pub vnet: Option<VnetHdr>,
    /// Tag to insert after the source MAC: (TPID, TCI).
    pub insert_tag: Option<(u16, u16)>,
}

impl TxFrame<'_> {
    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        self.data.len() + if self.insert_tag.is_some() { 4 } else { 0 }
    }

    /// A copy of the frame as it goes on the wire (the tag spliced in).
    pub fn to_wire_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.wire_len());
        match self.insert_tag {
            Some((tpid, tci)) if self.data.len() >= 12 => {
                v.extend_from_slice(&self.data[..12]);
                v.extend_from_slice(&tpid.to_be_bytes());
                v.extend_from_slice(&tci.to_be_bytes());
                v.extend_from_slice(&self.data[12..]);
            }
            _ => v.extend_from_slice(self.data),
        }
        v
    }
}

/// Empties `v` and hands back its allocation for frames of another lifetime,
/// so a reader can keep one vector across batches without allocating. No
/// frame outlives what it borrows (the vector is empty); the standard library
/// collects `into_iter().map(..)` in place when the layouts match.
pub fn recycle_rx<'b>(mut v: Vec<RxFrame<'_>>) -> Vec<RxFrame<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// [`recycle_rx`] for transmit batches.
pub fn recycle_tx<'b>(mut v: Vec<TxFrame<'_>>) -> Vec<TxFrame<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// What one `send_batch` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    pub sent: usize,
    pub bytes: u64,
    /// Frames the kernel refused (no buffer space, link gone, …).
    pub failed: usize,
}

/// The receive half of a port, owned by one reader thread.
pub trait PortRx: Send {
    /// Replaces `out` with the frames that are ready now (possibly none).
    /// The frames borrow the port: they stay valid until the next call.
    fn recv_batch<'a>(&'a mut self, out: &mut Vec<RxFrame<'a>>) -> io::Result<()>;

    /// A descriptor that becomes readable when frames arrive, to wait on.
    /// `None` means `recv_batch` waits briefly by itself when idle.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

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
}

/// Opening or running a port failed. Each message names the interface and,
/// where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no interface named '{0}' in this network namespace (check `ip link`, or run the daemon with --netns)")]
    NoSuchInterface(String),
    #[error("'{0}' is not a valid interface name (1-15 bytes, no '/', ':' or whitespace)")]
    BadName(String),
    #[error(
        "interface '{name}' already has a master ({master}): detach it first with `ip link set {name} nomaster`, or frames would loop"
    )]
    HasMaster { name: String, master: String },
    #[error("interface '{name}' is a {kind}, not an Ethernet port userbridge can attach to")]
    NotEthernet { name: String, kind: String },
    #[error(
        "interface '{name}' is already a port of another userbridge ({holder}): detach it there (`userbridge port del {name}`) or stop that daemon"
    )]
    Claimed { name: String, holder: String },
    #[error(
        "interface '{name}' already exists (a {kind}): the host port is a new interface of the daemon's own; delete it (`ip link del {name}`) or choose another name"
    )]
    Exists { name: String, kind: String },
    #[error("a {backend} port cannot be opened here: {why}")]
    Unsupported { backend: &'static str, why: &'static str },
    #[error("{what} on '{name}': {source}{hint}")]
    Io { what: &'static str, name: String, source: io::Error, hint: &'static str },
    #[error("{0}")]
    Netlink(#[from] ub_netlink::Error),
}

impl PortError {
    pub(crate) fn io(what: &'static str, name: &str, source: io::Error) -> PortError {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_RAW and CAP_NET_ADMIN: run as root)",
            Some(libc::ENOMEM) => " (ring too large: lower --ring-blocks or --block-kib)",
            _ => "",
        };
        PortError::Io { what, name: name.to_string(), source, hint }
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

/// Checks an interface name the way the kernel does (`dev_valid_name`).
pub fn validate_ifname(name: &str) -> Result<(), PortError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok { Ok(()) } else { Err(PortError::BadName(name.to_string())) }
}

/// How [`open`] opens ports.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How AF_PACKET ports receive, and how many readers each gets.
    pub rx: afpacket::RxConfig,
    /// Where claims are taken ([`CLAIM_DIR`] unless a test says otherwise).
    pub claim_dir: PathBuf,
    /// Who is claiming, as a refused second claimant is told.
    pub holder: String,
    /// How to make a host port (the daemon's `--host-port`).
    pub host: Option<host::HostOptions>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            rx: afpacket::RxConfig::default(),
            claim_dir: CLAIM_DIR.into(),
            holder: format!("pid {}", std::process::id()),
            host: None,
        }
    }
}

/// A port opened from its spec, not yet forwarding.
#[derive(Debug)]
pub struct OpenedPort {
    /// The interface's name (the kernel's, for a TAP).
    pub name: String,
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

/// Opens the port `spec` describes and claims its interface: an AF_PACKET
/// port on an existing link (refused if it has a master or another
/// userbridge holds it), or a new TAP.
pub fn open(spec: &PortSpec, o: &OpenOptions) -> Result<OpenedPort, PortError> {
    validate_ifname(&spec.name)?;
    match spec.backend {
        Backend::Afpacket => {
            let link = afpacket::lookup(&spec.name)?;
            let claim = Claim::take(&o.claim_dir, &link.name, link.index, &o.holder)?;
            let (rx, tx, info) = afpacket::open_link(&link, o.rx)?;
            Ok(OpenedPort {
                name: link.name,
                backend: Backend::Afpacket,
                rx: rx.into_iter().map(|r| Box::new(r) as Box<dyn PortRx>).collect(),
                tx: Box::new(tx),
                up: info.admin_up && info.oper_up,
                ifindex: info.ifindex,
                mac: info.mac,
                claim,
            })
        }
        Backend::Tap => {
            let (rx, tx, t) = tap::open(&spec.name)?;
            let claim = Claim::take(&o.claim_dir, &t.name, t.ifindex, &o.holder)?;
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
            })
        }
        Backend::Host => match &o.host {
            Some(h) => host::open(&spec.name, h, &o.claim_dir, &o.holder),
            None => Err(PortError::Unsupported {
                backend: "host",
                why: "a host port is the daemon's own (run --host-port)",
            }),
        },
        Backend::Mem => Err(PortError::Unsupported { backend: "mem", why: "in-memory ports are made by tests" }),
    }
}
