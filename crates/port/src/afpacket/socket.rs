//! The packet sockets of an AF_PACKET port: a receive half's socket (vnet
//! headers, outgoing frames ignored, auxdata for the offloaded VLAN tag, a
//! deep queue), a busy port's ring socket, and their buffers.

use crate::sys::{self, MmsgRecv, SlotRing};
use crate::{PortError, VnetHdr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Send buffer of a port's sockets, bytes: room for a few GSO super-frames,
/// or a TX ring's worth of small frames, in flight (the default is ~200 KiB).
pub(super) const SNDBUF: i32 = 4 << 20;

/// Receive queue of a `recvmmsg` socket, bytes (the kernel charges an skb's
/// truesize, about 1 KiB for a small frame): the default (~200 KiB) holds
/// only a few hundred small frames while the reader is off its CPU.
const RCVBUF: i32 = 8 << 20;

/// Frames per `recvmmsg` (each slot holds a vnet header and a 64 KiB frame;
/// pages are touched only as frames need them).
pub const MMSG_SLOTS: usize = 32;

/// A packet socket bound to `ifindex` that receives with `recvmmsg`.
pub(super) fn rx_socket(name: &str, ifindex: u32) -> Result<(OwnedFd, MmsgRecv), PortError> {
    let (fd, recv) = unbound_rx_socket(name)?;
    sys::bind_packet(fd.as_fd(), ifindex).map_err(|err| PortError::io("binding the packet socket", name, err))?;
    Ok((fd, recv))
}

/// A socket for [`rx_socket`], not bound yet: it receives nothing.
pub(super) fn unbound_rx_socket(name: &str) -> Result<(OwnedFd, MmsgRecv), PortError> {
    let e = |what| move |err| PortError::io(what, name, err);
    let fd = sys::packet_socket().map_err(e("creating a packet socket"))?;
    sys::set_packet_version_v3(fd.as_fd()).map_err(e("selecting TPACKET_V3"))?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).map_err(e("enabling PACKET_VNET_HDR"))?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
        .map_err(e("enabling PACKET_IGNORE_OUTGOING"))?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, 1).map_err(e("enabling PACKET_AUXDATA"))?;
    deep_queue(fd.as_fd());
    let recv = rx_buffers().map_err(e("mapping receive buffers"))?;
    Ok((fd, recv))
}

/// The `recvmmsg` buffers of one receive socket: [`MMSG_SLOTS`] slots, each
/// a vnet header and a 64 KiB frame.
pub(super) fn rx_buffers() -> io::Result<MmsgRecv> {
    MmsgRecv::new(MMSG_SLOTS, VnetHdr::LEN + 65_550)
}

/// A packet socket, not yet bound, ready for an RX ring: vnet headers,
/// auxdata and a deep queue for the frames too big for a slot.
pub(super) fn ring_socket() -> io::Result<OwnedFd> {
    let fd = sys::packet_socket()?;
    SlotRing::prepare(fd.as_fd())?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
    deep_queue(fd.as_fd());
    Ok(fd)
}

/// Gives `fd` the queue a burst waits in while the reader is off the CPU.
fn deep_queue(fd: BorrowedFd<'_>) {
    set_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RCVBUF);
}

/// Sets a socket buffer to `bytes`: with `force` (beyond the sysctl limit,
/// needs CAP_NET_ADMIN), else with `plain` (capped by the limit); a refusal
/// leaves the default, which still works.
pub(super) fn set_buffer(fd: BorrowedFd<'_>, force: libc::c_int, plain: libc::c_int, bytes: i32) {
    if sys::set_int_opt(fd, libc::SOL_SOCKET, force, bytes).is_err() {
        let _ = sys::set_int_opt(fd, libc::SOL_SOCKET, plain, bytes);
    }
}
