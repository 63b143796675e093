//! AF_PACKET port: `recvmmsg` (or a TPACKET_V2 or V3 RX ring) and `sendmmsg` on
//! one socket, small frames sent through a TX ring on a second, with
//! PACKET_VNET_HDR (GSO super-frames and partial checksums cross the switch
//! intact), PACKET_IGNORE_OUTGOING (we never see what we sent), the
//! offloaded VLAN tag taken from auxdata or the ring header, and
//! promiscuous membership.
//!
//! The `afpacket` crate offers none of this (no ring, no vnet header, bare
//! RawFd), hence this module; see docs/architecture.md.

use crate::busy::{self, BusySlots, Phase};
pub use crate::sys::Fanout;
use crate::sys::{
    self, MmsgScratch, Ring, RingFrame, SlotRing, Steer, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID, TxRing,
};
use crate::{BATCH, Health, PortError, PortRx, PortTx, RxFrame, SendOutcome, TxFrame, VnetHdr, validate_ifname};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use ub_netlink::{Link, Rtnl};

/// How a port receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxMode {
    /// TPACKET_V3 ring: batches without a syscall per frame; a partly filled
    /// block waits up to `retire_ms` before the reader sees it.
    Ring,
    /// `recvmmsg` with PACKET_AUXDATA: a wake-up per arrival, no block timer;
    /// lower latency and higher TCP throughput than `Ring` (docs/benchmarks.md).
    Mmsg,
    /// TPACKET_V2 ring of 2 KiB slots: a wake-up per arrival like `Mmsg`,
    /// no syscall or skb per small frame; frames too big for a slot (GSO
    /// super-frames) are read whole from the socket. Costs `slots` × 2 KiB
    /// of kernel memory per receive half, held from the start.
    Slots,
    /// `Mmsg`, and `Slots` only while the port is busy: rings are set up
    /// when its frame rate rises and closed (their memory given back) when
    /// it has been quiet for a while (`crate::busy`). The default: `Mmsg`'s
    /// latency and idle memory, `Slots`' CPU per small frame under a flood
    /// (docs/benchmarks.md).
    #[default]
    BusySlots,
}

/// How a port receives: the mode, and the ring geometry when it is a ring
/// (a block must hold a whole 64 KiB GSO super-frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxConfig {
    /// Ring or recvmmsg; the geometry below applies to the ring.
    pub mode: RxMode,
    /// Block size in KiB: a power of two, at least 128.
    pub block_kib: usize,
    /// Number of blocks in the ring.
    pub blocks: usize,
    /// Longest a partly filled block waits before user space sees it, ms.
    pub retire_ms: u32,
    /// Slots of the TPACKET_V2 ring (`RxMode::Slots`, `RxMode::BusySlots`), 2 KiB each.
    pub slots: usize,
    /// `RxMode::BusySlots`: frames per second (the port's halves together)
    /// from which a port takes its rings; it gives them back after
    /// [`QUIET_FOR`](crate::busy::QUIET_FOR) under a fifth of it.
    pub busy_pps: u64,
    /// Receive halves (and reader threads) per port, in a PACKET_FANOUT
    /// group; 1 means a plain socket.
    pub fanout: usize,
    /// How the group spreads frames over the readers.
    pub spread: Fanout,
}

impl Default for RxConfig {
    fn default() -> Self {
        RxConfig {
            mode: RxMode::BusySlots,
            block_kib: 256,
            blocks: 8,
            retire_ms: 1,
            slots: 16_384,
            busy_pps: 20_000,
            fanout: 1,
            spread: Fanout::FlowOrCpu,
        }
    }
}

/// Most receive halves one port may have.
pub const MAX_FANOUT: usize = 64;

impl RxConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.block_kib.is_power_of_two() || !(128..=4096).contains(&self.block_kib) {
            return Err(format!(
                "block size {} KiB must be a power of two from 128 to 4096 (it must hold a 64 KiB GSO frame)",
                self.block_kib
            ));
        }
        if !(2..=1024).contains(&self.blocks) {
            return Err(format!("{} ring blocks: use 2 to 1024", self.blocks));
        }
        if !(64..=65_536).contains(&self.slots) || !self.slots.is_multiple_of(2) {
            return Err(format!("{} RX ring slots: use an even count from 64 to 65536", self.slots));
        }
        if !(1_000..=100_000_000).contains(&self.busy_pps) {
            return Err(format!("busy-slots rate {} frames/s: use 1000 to 100000000", self.busy_pps));
        }
        if !(1..=1000).contains(&self.retire_ms) {
            return Err(format!("block retire timeout {} ms: use 1 to 1000", self.retire_ms));
        }
        if !(1..=MAX_FANOUT).contains(&self.fanout) {
            return Err(format!("{} readers per port: use 1 to {MAX_FANOUT}", self.fanout));
        }
        Ok(())
    }
}

/// What was found out about the interface when it was opened.
#[derive(Debug, Clone)]
pub struct Opened {
    pub ifindex: u32,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub admin_up: bool,
    pub oper_up: bool,
}

/// Opens `name` as a switch port. Refuses links that are enslaved to a
/// master (a kernel bridge would loop frames with us).
///
/// With `ring.fanout` > 1 the port has that many receive halves, joined in a
/// PACKET_FANOUT group in CPU mode: a frame goes to the half of the CPU whose
/// softirq received it, so one reader per CPU keeps a sender's frames on its
/// own core, as the kernel bridge does.
pub fn open(name: &str, ring: RxConfig) -> Result<(Vec<AfPacketRx>, AfPacketTx, Opened), PortError> {
    open_link(&lookup(name)?, ring)
}

/// Finds link `name` and checks a switch may attach to it: it exists, has
/// no master, and is not loopback.
pub fn lookup(name: &str) -> Result<Link, PortError> {
    validate_ifname(name)?;
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

/// Opens a link [`lookup`] accepted.
pub fn open_link(link: &Link, ring: RxConfig) -> Result<(Vec<AfPacketRx>, AfPacketTx, Opened), PortError> {
    let name = link.name.as_str();
    ring.validate().map_err(|m| PortError::io("ring", name, io::Error::new(io::ErrorKind::InvalidInput, m)))?;
    let e = |what| move |err| PortError::io(what, name, err);
    let (fd, rx) = rx_socket(name, link.index, &ring)?;
    set_buffer(fd.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF);
    sys::add_promisc(fd.as_fd(), link.index).map_err(e("enabling promiscuous mode"))?;
    let fd = Arc::new(fd);
    let mut readers = vec![AfPacketRx { fd: fd.clone(), rx, name: name.to_string(), ifindex: link.index }];
    // The TX ring's socket is bound here, in the port's namespace; its ring
    // is mapped later, from whichever reader first sends a burst.
    let tx_ring = TxRing::open(link.index).ok().map(|r| {
        set_buffer(r.socket(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF);
        Mutex::new(r)
    });
    let tx = AfPacketTx { fd: fd.clone(), mtu: link.mtu, ring: tx_ring };
    let opened =
        Opened { ifindex: link.index, mtu: link.mtu, mac: link.mac, admin_up: link.admin_up, oper_up: link.oper_up };
    if ring.mode == RxMode::BusySlots {
        return match busy_halves(link, &ring, &mut readers) {
            Ok(()) => Ok((readers, tx, opened)),
            // Before Linux 6.2 a group cannot ignore outgoing frames: one reader on recvmmsg.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) && readers.len() == 1 => Ok((readers, tx, opened)),
            Err(err) => Err(e("setting up the busy-slots fanout group")(err)),
        };
    }
    if ring.fanout > 1 {
        let steer = Steer { members: u32::try_from(ring.fanout).unwrap_or(1), offset: 0 };
        let group = match sys::join_fanout(fd.as_fd(), 0, ring.spread, steer) {
            Ok(g) => g,
            // Before Linux 6.2 a group cannot ignore outgoing frames: one reader, not a wrong switch.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return Ok((readers, tx, opened)),
            Err(err) => return Err(e("creating a PACKET_FANOUT group")(err)),
        };
        for _ in 1..ring.fanout {
            let (fd, rx) = rx_socket(name, link.index, &ring)?;
            sys::join_fanout(fd.as_fd(), group, ring.spread, steer).map_err(e("joining the PACKET_FANOUT group"))?;
            readers.push(AfPacketRx { fd: Arc::new(fd), rx, name: name.to_string(), ifindex: link.index });
        }
    }
    Ok((readers, tx, opened))
}

/// Makes `readers` (its first half already open, on `recvmmsg`) the
/// `ring.fanout` halves of a busy-slots port: a CBPF fanout group even for
/// one half (the rings join it when the port is busy), each half waiting on
/// a wait set of its own. On EINVAL (a kernel before 6.2) `readers` is left
/// with its first half as it was.
fn busy_halves(link: &Link, ring: &RxConfig, readers: &mut Vec<AfPacketRx>) -> io::Result<()> {
    let (name, n) = (link.name.as_str(), ring.fanout);
    let steer = Steer { members: u32::try_from(n).unwrap_or(1), offset: 0 };
    let group = sys::join_fanout(readers[0].fd.as_fd(), 0, ring.spread, steer)?;
    for _ in 1..n {
        let (fd, rx) = rx_socket(name, link.index, ring).map_err(io::Error::other)?;
        sys::join_fanout(fd.as_fd(), group, ring.spread, steer)?;
        readers.push(AfPacketRx { fd: Arc::new(fd), rx, name: name.to_string(), ifindex: link.index });
    }
    let waits = readers.iter().map(|r| busy::wait_set(r.fd.as_fd()).map(Arc::new)).collect::<io::Result<Vec<_>>>()?;
    let shared = Arc::new(BusySlots::new(name, link.index, ring, group, readers[0].fd.clone(), waits.clone())?);
    let halves = std::mem::take(readers).into_iter().zip(waits).enumerate();
    *readers = halves
        .map(|(index, (r, wait))| {
            let rx = match r.rx {
                RxPath::Mmsg { recv, .. } => RxPath::BusySlots(BusyRx {
                    recv,
                    drained: false,
                    wait,
                    shared: shared.clone(),
                    index,
                    frames: busy::Counted::default(),
                    ring: None,
                    socket_done: false,
                    reader: None,
                    socket_in_reader: false,
                    ring_in_reader: false,
                }),
                other => other,
            };
            AfPacketRx { rx, ..r }
        })
        .collect();
    Ok(())
}

/// A packet socket bound to `ifindex` that receives the way `ring` says.
fn rx_socket(name: &str, ifindex: u32, ring: &RxConfig) -> Result<(OwnedFd, RxPath), PortError> {
    let e = |what| move |err| PortError::io(what, name, err);
    let fd = sys::packet_socket().map_err(e("creating a packet socket"))?;
    sys::set_packet_version_v3(fd.as_fd()).map_err(e("selecting TPACKET_V3"))?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).map_err(e("enabling PACKET_VNET_HDR"))?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
        .map_err(e("enabling PACKET_IGNORE_OUTGOING"))?;
    let rx = match ring.mode {
        RxMode::Ring => RxPath::Ring {
            ring: Ring::new(fd.as_fd(), ring.block_kib * 1024, ring.blocks, ring.retire_ms)
                .map_err(e("setting up the RX ring"))?,
            next: 0,
            held: None,
        },
        // A busy-slots half starts on recvmmsg (busy_halves makes it one).
        RxMode::Mmsg | RxMode::BusySlots => {
            let recv = mmsg_receive(fd.as_fd(), name)?;
            RxPath::Mmsg { recv, drained: false }
        }
        RxMode::Slots => {
            // Switches the socket to TPACKET_V2 (no ring is set yet, so it may).
            let ring = SlotRing::new(fd.as_fd(), ring.slots).map_err(e("setting up the RX ring"))?;
            // The frames too big for a slot wait whole on the socket, read with recvmmsg.
            let copies = mmsg_receive(fd.as_fd(), name)?;
            RxPath::Slots { slots: SlotsRx::new(ring), copies }
        }
    };
    sys::bind_packet(fd.as_fd(), ifindex).map_err(e("binding the packet socket"))?;
    Ok((fd, rx))
}

/// Makes `fd` ready for `recvmmsg`: auxdata on, a deep receive queue, and
/// the buffers.
fn mmsg_receive(fd: BorrowedFd<'_>, name: &str) -> Result<sys::MmsgRecv, PortError> {
    let e = |what| move |err| PortError::io(what, name, err);
    sys::set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1).map_err(e("enabling PACKET_AUXDATA"))?;
    deep_queue(fd);
    sys::MmsgRecv::new(MMSG_SLOTS, VnetHdr::LEN + 65_550).map_err(e("mapping receive buffers"))
}

/// Gives `fd` the queue a burst waits in while the reader is off the CPU;
/// the default (~200 KiB) holds only a few hundred small frames.
pub(crate) fn deep_queue(fd: BorrowedFd<'_>) {
    set_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, MMSG_RCVBUF);
}

/// Sets a socket buffer to `bytes`: with `force` (beyond the sysctl limit,
/// needs CAP_NET_ADMIN), else with `plain` (capped by the limit); a refusal
/// leaves the default, which still works.
fn set_buffer(fd: BorrowedFd<'_>, force: libc::c_int, plain: libc::c_int, bytes: i32) {
    if sys::set_int_opt(fd, libc::SOL_SOCKET, force, bytes).is_err() {
        let _ = sys::set_int_opt(fd, libc::SOL_SOCKET, plain, bytes);
    }
}

/// Send buffer of a port's sockets, bytes: room for a few GSO super-frames,
/// or a TX ring's worth of small frames, in flight (the default is ~200 KiB).
const SNDBUF: i32 = 4 << 20;

/// Receive queue of a `recvmmsg` socket, bytes (the kernel charges an skb's
/// truesize, about 1 KiB for a small frame).
const MMSG_RCVBUF: i32 = 8 << 20;

/// Most queued frames dropped to bring RX slots and their copies back in
/// step (more than a full receive queue of super-frames holds).
const RESYNC_MAX: usize = 4096;

/// Frames per `recvmmsg` (each slot holds a vnet header and a 64 KiB frame;
/// pages are touched only as frames need them).
pub const MMSG_SLOTS: usize = 32;

#[derive(Debug)]
enum RxPath {
    Ring {
        ring: Ring,
        next: usize,
        held: Option<usize>,
    },
    /// `drained`: the last `recvmmsg` returned fewer frames than slots.
    Mmsg {
        recv: sys::MmsgRecv,
        drained: bool,
    },
    /// `copies` reads the frames too big for a slot.
    Slots {
        slots: SlotsRx,
        copies: sys::MmsgRecv,
    },
    BusySlots(BusyRx),
}

/// Reading a TPACKET_V2 RX ring: `held` slots before `next` are the last
/// batch's, released at the next call; `drained`: the last batch stopped
/// at a slot the kernel had not filled.
#[derive(Debug)]
struct SlotsRx {
    ring: SlotRing,
    next: usize,
    held: usize,
    drained: bool,
}

/// A busy-slots half (`crate::busy`): its socket read with `recv`, and
/// while the port is busy its ring, on a socket of its own. The reader
/// registers `wait`, where the ring thread puts a new ring's socket; the
/// half moves its socket, and its ring's once it takes it, from there into
/// the reader's epoll (`waiting_in`). `frames`: received in all, for the port's
/// rate; `socket_done`: since it took its ring, the socket was found empty
/// after the port [settled](BusySlots::settled) on the rings, so only the
/// ring is read.
#[derive(Debug)]
struct BusyRx {
    recv: sys::MmsgRecv,
    drained: bool,
    wait: Arc<OwnedFd>,
    shared: Arc<BusySlots>,
    index: usize,
    frames: busy::Counted,
    ring: Option<(OwnedFd, SlotsRx)>,
    socket_done: bool,
    /// The epoll descriptor and token of the reader waiting on `wait`.
    reader: Option<(RawFd, u64)>,
    /// The half's socket is in `reader`'s epoll (else in `wait`).
    socket_in_reader: bool,
    /// The ring's socket is in `reader`'s epoll (else in `wait`).
    ring_in_reader: bool,
}

/// Receive half: walks the ring block by block, or `recvmmsg`s.
#[derive(Debug)]
pub struct AfPacketRx {
    fd: Arc<OwnedFd>,
    rx: RxPath,
    name: String,
    ifindex: u32,
}

/// Whether `whole`, a frame read from the socket, is the one whose start
/// slot `f` holds: same length, same first bytes (headers with their
/// sequence numbers and IP ids, so two frames of a stream differ).
fn is_copy_of(whole: &[u8], f: &RingFrame<'_>) -> bool {
    let head = &f.data[..f.data.len().min(128)];
    whole.len() == f.wire_len as usize && whole.starts_with(head)
}

/// The frame a V3 block entry or a V2 slot describes, its bytes `data`
/// after the vnet header `vnet`: the ring's own, or, for a frame too big
/// for its slot, the whole frame read from the socket.
fn ring_rx_frame<'a>(f: &RingFrame<'a>, vnet: Option<&'a [u8; 10]>, data: &'a [u8]) -> RxFrame<'a> {
    RxFrame {
        data,
        vnet: vnet.map(VnetHdr::from_bytes),
        offloaded_tag: offloaded_tag(f.status, f.vlan_tci, f.vlan_tpid),
        wire_len: f.wire_len,
    }
}

fn offloaded_tag(status: u32, tci: u16, tpid: u16) -> Option<(u16, u16)> {
    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 { tpid } else { 0x8100 };
    (status & TP_STATUS_VLAN_VALID != 0).then_some((tpid, tci))
}

/// Reads one `recvmmsg` batch of `fd` into `out`; returns how many frames
/// it took (fewer than [`MMSG_SLOTS`]: the socket is empty).
fn mmsg_batch<'a>(recv: &'a mut sys::MmsgRecv, fd: BorrowedFd<'_>, out: &mut Vec<RxFrame<'a>>) -> io::Result<usize> {
    recv.recv(fd, |f| {
        if let Some((v, data)) = f.data.split_first_chunk::<{ VnetHdr::LEN }>() {
            out.push(RxFrame {
                data,
                vnet: Some(VnetHdr::from_bytes(v)),
                offloaded_tag: offloaded_tag(f.status, f.vlan_tci, f.vlan_tpid),
                wire_len: f.wire_len.unwrap_or(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            });
        }
    })
}

impl SlotsRx {
    fn new(ring: SlotRing) -> SlotsRx {
        SlotsRx { ring, next: 0, held: 0, drained: false }
    }

    /// Hands the last batch's slots back to the kernel.
    fn release_held(&mut self) {
        let n = self.ring.slots();
        for k in 0..self.held {
            self.ring.release((self.next + n - self.held + k) % n);
        }
        self.held = 0;
    }

    /// Whether a frame waits in the next slot.
    fn has_frame(&self) -> bool {
        self.ring.is_filled(self.next)
    }

    /// Reads the filled slots from `next` on (at most a batch) into `out`,
    /// each frame too big for its slot read whole from `fd` with `copies`;
    /// returns whether it stopped at a slot the kernel had not filled.
    fn recv<'a>(
        &'a mut self,
        fd: BorrowedFd<'_>,
        copies: &'a mut sys::MmsgRecv,
        out: &mut Vec<RxFrame<'a>>,
    ) -> io::Result<bool> {
        self.release_held();
        let SlotsRx { ring, next, held, drained } = self;
        let n = ring.slots();
        let ring: &'a SlotRing = ring;
        let mut frames = [None; BATCH];
        let (mut got, mut copied, mut empty) = (0, 0, false);
        while got < BATCH {
            let Some(f) = ring.frame((*next + got) % n) else {
                empty = true;
                break;
            };
            if f.copied() && copied == MMSG_SLOTS {
                break; // one recvmmsg takes this many whole frames: the rest next time
            }
            copied += usize::from(f.copied());
            frames[got] = Some(f);
            got += 1;
        }
        (*held, *next, *drained) = (got, (*next + got) % n, empty);
        // The whole frames of the slots marked as copies, in the slots' order.
        let mut whole: [&'a [u8]; MMSG_SLOTS] = [&[]; MMSG_SLOTS];
        let mut w = 0;
        if copied > 0 {
            // A pending socket error (ENETDOWN) would fail this recvmmsg and
            // leave the copies queued, to be matched with later slots.
            let _ = sys::take_socket_error(fd);
            copies.recv_up_to(fd, copied, |f| {
                whole[w] = f.data;
                w += 1;
            })?;
        }
        let mut whole = whole[..w].iter();
        let mut astray = false;
        for f in frames.iter().take(got).flatten() {
            let copy = if f.copied() { whole.next() } else { None };
            let (vnet, data) = match copy.map(|d| d.split_first_chunk::<{ VnetHdr::LEN }>()) {
                Some(Some((v, d))) if is_copy_of(d, f) => (Some(v), d),
                // Not this slot's frame: the queue and the ring have gone out of step.
                Some(_) => {
                    astray = true;
                    (f.vnet, f.data)
                }
                // No copy was queued (the socket's queue was full), or none read:
                // what the slot has, which the datapath drops as truncated.
                None => (f.vnet, f.data),
            };
            out.push(ring_rx_frame(f, vnet, data));
        }
        if astray {
            // Whatever waits now belongs to slots already read: drop it, so the
            // next slots meet their own copies (theirs come after it). The
            // reader logs the error; the frames above are forwarded first.
            let n = sys::discard_queued(fd, RESYNC_MAX);
            return Err(io::Error::other(format!(
                "RX slots and the frames queued for them were out of step: {n} queued frames dropped"
            )));
        }
        Ok(empty)
    }
}

/// Moves `fd` from the wait set `wait` into `reader`'s epoll under its
/// token (added there first, so no frame goes unsignalled); true if it is
/// there now. With no reader, or if the reader's epoll refuses it, it
/// stays in the wait set, which wakes the reader too.
fn into_reader(wait: &OwnedFd, reader: Option<(RawFd, u64)>, fd: BorrowedFd<'_>) -> bool {
    let Some((ep, token)) = reader else { return false };
    let moved = sys::epoll_ctl_raw(ep, fd, Some(token)).is_ok();
    if moved {
        let _ = busy::wait_set_remove(wait.as_fd(), fd);
    }
    moved
}

/// Moves `fd` back from `reader`'s epoll into the wait set `wait` (added
/// there first).
fn out_of_reader(wait: &OwnedFd, reader: Option<(RawFd, u64)>, fd: BorrowedFd<'_>) {
    let _ = busy::wait_set_add(wait.as_fd(), fd);
    if let Some((ep, _)) = reader {
        let _ = sys::epoll_ctl_raw(ep, fd, None);
    }
}

impl BusyRx {
    /// Takes the ring set up for this half when the port has gone busy, or
    /// closes it once the port is quiet and the ring read empty.
    fn settle(&mut self) {
        match (&mut self.ring, self.shared.phase()) {
            (None, Phase::Slots) => {
                self.ring = self.shared.take(self.index).map(|r| (r.fd, SlotsRx::new(r.ring)));
                self.socket_done = false;
                // Set up in the wait set (so a frame wakes the reader at once); into the
                // reader's own epoll now: one wake-up per frame, not two.
                self.ring_to_reader();
            }
            (Some((_, slots)), Phase::Sockets) => {
                slots.release_held();
                if !slots.has_frame() {
                    // Closes the ring's socket and unmaps the ring: once both are gone the
                    // socket leaves the group and the wait set, and the kernel frees the ring.
                    self.ring = None;
                    self.ring_in_reader = false;
                    self.shared.freed();
                }
            }
            _ => {}
        }
    }

    /// Moves the ring's socket from the wait set into the reader's epoll,
    /// if there are both a ring and a reader. On failure it stays in the
    /// wait set, which wakes the reader too.
    fn ring_to_reader(&mut self) {
        if let (Some((fd, _)), false) = (&self.ring, self.ring_in_reader) {
            self.ring_in_reader = into_reader(&self.wait, self.reader, fd.as_fd());
        }
    }

    /// The reader waiting on this half changes: the half's socket and its
    /// ring's, where they are in the old reader's epoll, go back into the
    /// wait set first (which the next reader registers), then into the new
    /// reader's epoll. There a frame wakes the reader directly: through the
    /// wait set, a second epoll level, it cost 2-4% more CPU per frame.
    fn waiting_in(&mut self, sock: BorrowedFd<'_>, reader: Option<(RawFd, u64)>) {
        if std::mem::take(&mut self.socket_in_reader) {
            out_of_reader(&self.wait, self.reader, sock);
        }
        if let (Some((fd, _)), true) = (&self.ring, std::mem::take(&mut self.ring_in_reader)) {
            out_of_reader(&self.wait, self.reader, fd.as_fd());
        }
        self.reader = reader;
        self.socket_in_reader = into_reader(&self.wait, self.reader, sock);
        self.ring_to_reader();
    }

    /// One batch: from the socket, or from the ring. Frames before the
    /// switch to the ring are on the socket, those after it in the ring; the
    /// other way round when the port goes quiet.
    fn recv<'a>(&'a mut self, sock: BorrowedFd<'_>, out: &mut Vec<RxFrame<'a>>) -> io::Result<()> {
        self.settle();
        let phase = self.shared.phase();
        let BusyRx { recv, drained, ring, frames, shared, index, socket_done, .. } = self;
        let has_ring = ring.is_some();
        // Busy: the socket until it is empty, then the ring (once settled, the
        // ring alone: no syscall per batch). Going quiet: the ring, then the socket.
        let ring_first = match ring {
            None => false,
            Some(_) if phase == Phase::Slots && *socket_done => true,
            Some(_) if phase == Phase::Slots => {
                let empty = sys::first_queued_len(sock)? == 0;
                *socket_done = empty && shared.settled(Instant::now());
                empty
            }
            Some((_, slots)) => slots.has_frame(),
        };
        match ring.as_mut().filter(|_| ring_first) {
            Some((fd, slots)) => {
                *drained = false;
                // Going quiet, the socket may have frames that came after these.
                *drained = slots.recv(fd.as_fd(), recv, out)? && phase == Phase::Slots;
            }
            None => {
                *drained = false;
                let got = mmsg_batch(recv, sock, out)?;
                // Going busy, the ring may have frames that came after these.
                *drained = got < MMSG_SLOTS && !(phase == Phase::Slots && has_ring);
            }
        }
        let fit = out.iter().filter(|f| f.wire_len as usize <= sys::SLOT_ROOM).count() as u64;
        frames.fit += fit;
        frames.big += out.len() as u64 - fit;
        shared.count(*index, *frames);
        Ok(())
    }

    /// Looks at the port's rate (the step it calls for is taken here), and
    /// takes or closes this half's ring; true while the port has rings.
    fn tick(&mut self, now: Instant) -> bool {
        self.shared.look(now);
        self.settle();
        self.ring.is_some() || self.shared.phase() != Phase::Sockets
    }
}

impl PortRx for AfPacketRx {
    fn recv_batch<'a>(&'a mut self, out: &mut Vec<RxFrame<'a>>) -> io::Result<()> {
        out.clear();
        match &mut self.rx {
            RxPath::Ring { ring, next, held } => {
                if let Some(i) = held.take() {
                    ring.release(i);
                    *next = (i + 1) % ring.block_nr();
                }
                let i = *next;
                if !ring.block_ready(i) {
                    return Ok(());
                }
                *held = Some(i);
                ring.block_frames(i, |f| out.push(ring_rx_frame(&f, f.vnet, f.data)));
            }
            RxPath::Slots { slots, copies } => {
                slots.recv(self.fd.as_fd(), copies, out)?;
            }
            RxPath::BusySlots(b) => b.recv(self.fd.as_fd(), out)?,
            RxPath::Mmsg { recv, drained } => {
                *drained = false;
                *drained = mmsg_batch(recv, self.fd.as_fd(), out)? < MMSG_SLOTS;
            }
        }
        Ok(())
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.rx {
            RxPath::BusySlots(b) => Some(b.wait.as_fd()),
            _ => Some(self.fd.as_fd()),
        }
    }

    fn drained(&self) -> bool {
        match &self.rx {
            RxPath::Mmsg { drained, .. } => *drained,
            RxPath::Slots { slots, .. } => slots.drained,
            RxPath::BusySlots(b) => b.drained,
            RxPath::Ring { .. } => false,
        }
    }

    fn tick(&mut self, now: Instant) -> bool {
        match &mut self.rx {
            RxPath::BusySlots(b) => b.tick(now),
            _ => false,
        }
    }

    fn waiting_in(&mut self, reader: Option<(RawFd, u64)>) {
        if let RxPath::BusySlots(b) = &mut self.rx {
            b.waiting_in(self.fd.as_fd(), reader);
        }
    }

    fn check(&mut self) -> Health {
        // Clears the pending error (ENETDOWN) so the wait descriptor quietens.
        let _ = sys::take_socket_error(self.fd.as_fd());
        if let RxPath::BusySlots(BusyRx { ring: Some((fd, _)), .. }) = &self.rx {
            let _ = sys::take_socket_error(fd.as_fd());
        }
        // The kernel re-arms a packet socket when its link comes back up.
        crate::link_health(self.ifindex, &self.name)
    }

    fn kernel_drops(&self) -> u64 {
        let ring = match &self.rx {
            RxPath::BusySlots(BusyRx { ring: Some((fd, _)), .. }) => sys::packet_drops(fd.as_fd()).map_or(0, u64::from),
            _ => 0,
        };
        sys::packet_drops(self.fd.as_fd()).map_or(0, u64::from) + ring
    }
}

/// Transmit half. Frames a TX ring slot holds (not GSO super-frames) go
/// through the port's [`TxRing`]: written into slots, one `send` a batch.
/// The rest, and a batch sent while another reader is using the ring, go
/// with one `sendmmsg`, gathered straight from the ingress port's memory.
#[derive(Debug)]
pub struct AfPacketTx {
    fd: Arc<OwnedFd>,
    mtu: u32,
    /// `None` when the send socket could not be made (`sendmmsg` only).
    ring: Option<Mutex<TxRing>>,
}

/// Slots in a port's TX ring (256 KiB; a batch is at most [`BATCH`] frames,
/// and a slot is free again as soon as the kernel has sent its frame).
const TX_RING_SLOTS: usize = 128;

/// The ring is mapped on the port's first batch of at least this many
/// frames: a port that only ever sends a few at a time (ARP, a ping) never
/// spends memory on one.
const TX_RING_AFTER: usize = 8;

/// Whether a frame goes through the TX ring: it fits a slot and is not a
/// GSO super-frame (those stay gathered, never copied whole).
fn ring_takes(f: &TxFrame<'_>) -> bool {
    f.wire_len() <= sys::TX_RING_ROOM && !f.vnet.is_some_and(|v| v.is_gso())
}

impl AfPacketTx {
    fn sendmmsg<'f>(&self, frames: &'f [TxFrame<'f>]) -> (usize, usize) {
        let mut scratch = MmsgScratch::<BATCH>::new();
        sys::send_frames(self.fd.as_fd(), &mut scratch, frames.iter(), true)
    }

    /// Sends `frames` in order: each run the ring takes through it (flushed
    /// before what follows), the others with `sendmmsg`.
    fn send_with_ring(&self, ring: &mut TxRing, frames: &[TxFrame<'_>]) -> (usize, usize) {
        let (mut sent, mut failed) = (0, 0);
        let mut i = 0;
        while i < frames.len() {
            let mut full = false;
            while let Some(f) = frames.get(i).filter(|f| ring_takes(f)) {
                let (head, (tags, n), tail) = f.parts();
                let (vnet, pieces) = (f.wire_vnet().to_bytes(), [head, &tags[..n], tail]);
                if !ring.put(vnet, pieces) {
                    // The next slot is still being sent: send what is written, try once more.
                    let (s, e) = ring.flush();
                    (sent, failed) = (sent + s, failed + e);
                    if !ring.put(vnet, pieces) {
                        full = true;
                        break;
                    }
                }
                i += 1;
            }
            let (s, e) = ring.flush();
            (sent, failed) = (sent + s, failed + e);
            // Then, in order, what the ring does not take (or all the rest, when it is full).
            let end = if full {
                frames.len()
            } else {
                (i..frames.len()).find(|&k| ring_takes(&frames[k])).unwrap_or(frames.len())
            };
            if end > i {
                let (s, e) = self.sendmmsg(&frames[i..end]);
                (sent, failed) = (sent + s, failed + e);
                i = end;
            }
        }
        (sent, failed)
    }
}

impl PortTx for AfPacketTx {
    fn send_batch(&self, frames: &[TxFrame<'_>]) -> SendOutcome {
        // Another reader sending on this port keeps the ring: this batch does not wait.
        let mut ring = self.ring.as_ref().and_then(|m| m.try_lock().ok());
        if let Some(r) = ring.as_deref_mut()
            && !r.is_mapped()
            && frames.len() >= TX_RING_AFTER
        {
            // A ring that cannot be mapped (memory) leaves `sendmmsg`, for good.
            let _ = r.map(TX_RING_SLOTS);
        }
        let (sent, failed) = match ring.as_deref_mut().filter(|r| r.is_mapped()) {
            Some(r) => self.send_with_ring(r, frames),
            None => self.sendmmsg(frames),
        };
        // Exact when nothing failed; on a partial failure, the first `sent` frames.
        let bytes = frames.iter().take(sent).map(|f| f.wire_len() as u64).sum();
        SendOutcome { sent, bytes, failed }
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(data: &[u8], wire_len: u32) -> RingFrame<'_> {
        RingFrame { vnet: None, data, wire_len, status: libc::TP_STATUS_COPY, vlan_tci: 0, vlan_tpid: 0 }
    }

    #[test]
    fn a_copy_matches_only_its_own_slot() {
        // Two segments of one stream: same headers but the sequence number.
        let frame =
            |seq: u8| -> Vec<u8> { (0..3000usize).map(|i| if i == 40 { seq } else { i.to_le_bytes()[0] }).collect() };
        let (a, b) = (frame(1), frame(2));
        assert!(is_copy_of(&a, &slot(&a[..1972], 3000)));
        assert!(!is_copy_of(&b, &slot(&a[..1972], 3000)), "another frame's copy, same length");
        assert!(!is_copy_of(&a[..2999], &slot(&a[..1972], 3000)), "a copy of another length");
        assert!(is_copy_of(&a[..64], &slot(&a[..64], 64)), "a slot shorter than the compared head");
    }
}
