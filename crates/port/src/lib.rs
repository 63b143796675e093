//! Port backends behind one pair of traits, and the one factory that opens
//! them from a [`PortSpec`].
//!
//! A port is split in two: [`PortRx`], owned by one reader thread (a port
//! has one per reader), and [`PortTx`], shared by every reader that forwards
//! to the port. Frames are borrowed, not copied: an RX frame is a slice of
//! the receive buffers (`recvmmsg`'s slots, or the mmap'ed ring with `--rx
//! ring`), and a TX frame sent to another AF_PACKET port goes from that
//! slice straight into `sendmmsg`, or, if it fits one, into a slot of the
//! port's TX ring (one copy, cheaper than `sendmmsg`'s per-frame work).
//!
//! Backends: [`afpacket`] (veth and any Ethernet link), [`tap`]
//! (`/dev/net/tun`), [`mem`] (no kernel at all: unit tests and benches).
//! [`open`] turns a [`PortSpec`] into an open port and claims its interface
//! exclusively ([`claim`]).

pub mod afpacket;
mod busy;
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

/// A frame to send: bytes plus the offload metadata, and the tag changes a
/// VLAN-filtering switch makes on the way out. On the wire it is
/// `data[..12]`, then the outer tag, then the inserted tag, then the rest
/// of `data` (from byte 16 when the frame's own tag is stripped).
///
/// 40 bytes, the tag changes packed in one word: the datapath copies a
/// frame into every egress batch, and a copy that reads back a field just
/// written in narrower pieces stalls on store forwarding (measured:
/// docs/benchmarks.md).
#[derive(Debug, Clone, Copy)]
pub struct TxFrame<'a> {
    pub data: &'a [u8],
    pub vnet: Option<VnetHdr>,
    tags: Tags,
}

/// The tag changes of a [`TxFrame`], in one word: the inserted tag's TCI
/// (bits 0-15) and TPID (16-31), the outer 802.1Q tag's TCI (32-47), and
/// flags (48-): inserted tag present, outer tag present, strip the frame's tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tags(u64);

impl Tags {
    const INSERT: u64 = 1 << 48;
    const OUTER: u64 = 1 << 49;
    const STRIP: u64 = 1 << 50;
    const INSERT_MASK: u64 = 0xffff_ffff;
    const OUTER_MASK: u64 = 0xffff << 32;

    /// The bits of an inserted tag (TPID, TCI).
    #[inline]
    fn insert((tpid, tci): (u16, u16)) -> u64 {
        Tags::INSERT | u64::from(tpid) << 16 | u64::from(tci)
    }
}

impl<'a> TxFrame<'a> {
    /// A frame as received: its bytes, offload metadata and offloaded tag.
    #[inline]
    pub fn new(data: &'a [u8], vnet: Option<VnetHdr>, insert_tag: Option<(u16, u16)>) -> TxFrame<'a> {
        let tags = match insert_tag {
            Some(tag) if data.len() >= 12 => Tags(Tags::insert(tag)),
            _ => Tags(0),
        };
        TxFrame { data, vnet, tags }
    }

    /// The tag inserted after the source MAC: (TPID, TCI). The tag the
    /// kernel took off on receive goes back here.
    #[inline]
    pub fn insert_tag(&self) -> Option<(u16, u16)> {
        let t = self.tags.0;
        // The casts take the halves they name.
        #[allow(clippy::cast_possible_truncation)]
        (t & Tags::INSERT != 0).then_some(((t >> 16) as u16, t as u16))
    }

    /// The 802.1Q tag put in front of every other (its TCI): the egress
    /// VLAN's tag for a frame that came in without one.
    #[inline]
    pub fn outer_tag(&self) -> Option<u16> {
        let t = self.tags.0;
        #[allow(clippy::cast_possible_truncation)]
        (t & Tags::OUTER != 0).then_some((t >> 32) as u16)
    }

    /// Whether the 802.1Q tag the frame carries at bytes 12..16 is left out
    /// (set only on a frame of 16 bytes or more: [`TxFrame::with_strip_tag`]).
    #[inline]
    pub fn strip_tag(&self) -> bool {
        self.tags.0 & Tags::STRIP != 0
    }

    /// The tag to insert (none on a frame too short to hold one).
    #[inline]
    pub fn with_insert_tag(mut self, tag: Option<(u16, u16)>) -> TxFrame<'a> {
        self.tags.0 &= !(Tags::INSERT | Tags::INSERT_MASK);
        if let Some(tag) = tag.filter(|_| self.data.len() >= 12) {
            self.tags.0 |= Tags::insert(tag);
        }
        self
    }

    /// The outer 802.1Q tag's TCI (none on a frame too short to hold one).
    #[inline]
    pub fn with_outer_tag(mut self, tci: Option<u16>) -> TxFrame<'a> {
        self.tags.0 &= !(Tags::OUTER | Tags::OUTER_MASK);
        if let Some(tci) = tci.filter(|_| self.data.len() >= 12) {
            self.tags.0 |= Tags::OUTER | u64::from(tci) << 32;
        }
        self
    }

    /// Strips the frame's own tag (a frame shorter than 16 bytes has none).
    #[inline]
    pub fn with_strip_tag(mut self, strip: bool) -> TxFrame<'a> {
        self.tags.0 =
            if strip && self.data.len() >= 16 { self.tags.0 | Tags::STRIP } else { self.tags.0 & !Tags::STRIP };
        self
    }

    /// Whether it leaves with any tag spliced in.
    #[inline]
    pub fn adds_tags(&self) -> bool {
        self.tags.0 & (Tags::INSERT | Tags::OUTER) != 0
    }

    /// Bytes this frame occupies on the wire (tags are set only on frames
    /// long enough to hold them).
    #[inline]
    pub fn wire_len(&self) -> usize {
        let t = self.tags.0;
        // The common case, one well-predicted test: no tag changes.
        if t == 0 {
            return self.data.len();
        }
        // 4 for each of the inserted and outer tags, minus 4 for a stripped one.
        let four = |bit: u32| usize::from(u8::from(t >> bit & 1 != 0)) << 2;
        self.data.len() + four(48) + four(49) - four(50)
    }

    /// The frame as three pieces: the bytes up to the tags, the tags to
    /// splice in (up to two, `.1` bytes of `.0`), and the rest.
    #[inline]
    pub fn parts(&self) -> (&'a [u8], ([u8; 8], usize), &'a [u8]) {
        let mut tags = [0u8; 8];
        let mut n = 0;
        let outer = self.outer_tag().map(|tci| (ub_wire::ETHERTYPE_8021Q, tci));
        for (tpid, tci) in [outer, self.insert_tag()].into_iter().flatten() {
            tags[n..n + 2].copy_from_slice(&tpid.to_be_bytes());
            tags[n + 2..n + 4].copy_from_slice(&tci.to_be_bytes());
            n += 4;
        }
        let d = self.data;
        let skip = if self.strip_tag() { 16 } else { 12 };
        if n == 0 && skip == 12 || d.len() < 12 {
            return (d, (tags, 0), &[]);
        }
        (&d[..12], (tags, n), &d[skip..])
    }

    /// The vnet header as it must read on the wire: its offsets moved by
    /// the tags added and removed.
    #[inline]
    pub fn wire_vnet(&self) -> VnetHdr {
        let v = self.vnet.unwrap_or_default();
        let added = usize::from(self.insert_tag().is_some()) + usize::from(self.outer_tag().is_some());
        let removed = usize::from(self.strip_tag());
        match added.cmp(&removed) {
            std::cmp::Ordering::Equal => v,
            std::cmp::Ordering::Greater => (removed..added).fold(v, |v, _| v.shifted_by_tag()),
            std::cmp::Ordering::Less => v.unshifted_by_tag(),
        }
    }

    /// A copy of the frame as it goes on the wire (tags spliced in or out).
    pub fn to_wire_vec(&self) -> Vec<u8> {
        let (head, (tags, n), tail) = self.parts();
        let mut v = Vec::with_capacity(head.len() + n + tail.len());
        v.extend_from_slice(head);
        v.extend_from_slice(&tags[..n]);
        v.extend_from_slice(tail);
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

    /// The epoll descriptor of the reader that waits on `wait_fd`, and the
    /// event data (its token) it registered it with; `None` when that reader
    /// lets go. A half that opens a descriptor of its own later (a busy
    /// port's ring) adds it there, so its frames wake the reader directly.
    /// The reader keeps the descriptor open until it calls this with `None`.
    fn waiting_in(&mut self, _reader: Option<(std::os::fd::RawFd, u64)>) {}

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
        let hint = match errno(&source) {
            Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_RAW and CAP_NET_ADMIN: run as root)",
            Some(libc::ENOMEM) => " (ring too large: lower --ring-blocks or --block-kib)",
            Some(libc::EMFILE) => {
                " (the daemon's open-files limit is reached: a port holds about two descriptors per reader; \
                 raise the hard limit, LimitNOFILE= under systemd, or lower --readers)"
            }
            Some(libc::ENFILE) => " (the system's open-files limit is reached: fs.file-max)",
            _ => "",
        };
        PortError::Io { what, name: name.to_string(), source, hint }
    }
}

/// The errno behind `e`, also where it wraps a netlink error (a port
/// opened from another thread's namespace). A wrapped [`PortError`] has
/// its hint in its own message already: none.
fn errno(e: &io::Error) -> Option<i32> {
    if let Some(n) = e.raw_os_error() {
        return Some(n);
    }
    let inner = e.get_ref()?;
    if let Some(n) = inner.downcast_ref::<ub_netlink::Error>() {
        return n.raw_os_error();
    }
    inner.downcast_ref::<io::Error>().and_then(errno)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with an 802.1Q tag at bytes 12..16 (VID 5), then IPv4.
    fn tagged() -> Vec<u8> {
        let mut f = vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00];
        f.extend_from_slice(&[0xaa; 46]);
        f
    }

    #[test]
    fn running_out_of_descriptors_says_which_limit_even_when_wrapped() {
        let emfile = || io::Error::from_raw_os_error(libc::EMFILE);
        for source in [emfile(), io::Error::other(emfile())] {
            let m = PortError::io("opening", "p1", source).to_string();
            assert!(m.contains("open-files limit is reached") && m.contains("LimitNOFILE"), "{m}");
        }
        let m = PortError::io("opening", "p1", io::Error::from_raw_os_error(libc::ENFILE)).to_string();
        assert!(m.contains("fs.file-max"), "{m}");
    }

    #[test]
    fn tags_are_spliced_in_and_out_on_the_wire() {
        let t = tagged();
        let plain = TxFrame::new(&t, None, None);
        assert_eq!(plain.to_wire_vec(), t);
        assert_eq!(plain.wire_len(), t.len());
        // Stripped: the tag's four bytes are gone.
        let s = plain.with_strip_tag(true);
        let w = s.to_wire_vec();
        assert_eq!(w.len(), t.len() - 4);
        assert_eq!((&w[..12], &w[12..14]), (&t[..12], &[0x08, 0x00][..]));
        assert_eq!(s.wire_len(), w.len());
        // Re-tagged (strip + insert): VID 5 becomes VID 7 in place.
        let r = plain.with_strip_tag(true).with_insert_tag(Some((0x8100, 7)));
        assert_eq!(&r.to_wire_vec()[12..18], &[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        // Untagged frame, offloaded 802.1ad tag back inside an 802.1Q one.
        let u: Vec<u8> = [&t[..12], &t[16..]].concat();
        let q = TxFrame::new(&u, None, Some((0x88a8, 3))).with_outer_tag(Some(10));
        assert_eq!(&q.to_wire_vec()[12..22], &[0x81, 0x00, 0x00, 0x0a, 0x88, 0xa8, 0x00, 0x03, 0x08, 0x00]);
        assert_eq!(q.wire_len(), u.len() + 8);
    }

    #[test]
    fn the_vnet_header_follows_the_tags() {
        let t = tagged();
        let v = VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, csum_start: 38, hdr_len: 70, ..VnetHdr::default() };
        let f = TxFrame::new(&t, Some(v), None);
        assert_eq!(f.wire_vnet(), v);
        let s = f.with_strip_tag(true);
        assert_eq!((s.wire_vnet().csum_start, s.wire_vnet().hdr_len), (34, 66));
        let two = f.with_outer_tag(Some(1)).with_insert_tag(Some((0x88a8, 2)));
        assert_eq!(two.wire_vnet().csum_start, 46);
        let swap = f.with_strip_tag(true).with_insert_tag(Some((0x8100, 2)));
        assert_eq!(swap.wire_vnet(), v);
        assert_eq!(swap.insert_tag(), Some((0x8100, 2)));
        assert_eq!((swap.outer_tag(), swap.strip_tag()), (None, true));
        assert_eq!(std::mem::size_of::<TxFrame<'_>>(), 40, "see the type's doc");
    }
}
