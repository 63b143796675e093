//! Packet sockets: creation, binding, options, promiscuous membership, fanout.

use super::{getsockopt, set_int_opt, setsockopt};
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const TPACKET_V3: libc::c_int = 2;
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "ETH_P_ALL is 0x0003")]
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "AF_PACKET is 17")]
const AF_PACKET: u16 = libc::AF_PACKET as u16;
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "PACKET_MR_PROMISC is 1")]
const PACKET_MR_PROMISC: u16 = libc::PACKET_MR_PROMISC as u16;

/// An ifindex as the kernel's `int` fields take it.
fn ifindex_int(ifindex: u32) -> io::Result<i32> {
    i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A new AF_PACKET raw socket (close-on-exec, non-blocking) that receives
/// nothing until bound.
pub fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall, no pointers.
    let fd = syscall!(unsafe {
        libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
    })?;
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_packet_version_v3(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V3)
}

/// Reads and clears the socket's pending error (SO_ERROR).
pub fn take_socket_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let mut v: libc::c_int = 0;
    getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut v)?;
    Ok((v != 0).then(|| io::Error::from_raw_os_error(v)))
}

/// Frames dropped by the kernel since the last call (PACKET_STATISTICS).
pub fn packet_drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tpacket_stats_v3 is plain old data; all-zero is valid.
    let mut st: libc::tpacket_stats_v3 = unsafe { zeroed() };
    getsockopt(fd, libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut st)?;
    Ok(st.tp_drops)
}

/// Binds the socket to `ifindex` for all protocols.
pub fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = ETH_P_ALL_BE;
    sll.sll_ifindex = ifindex_int(ifindex)?;
    // SAFETY: sll is a live sockaddr_ll and the length matches it.
    syscall!(unsafe {
        libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), super::socklen_of::<libc::sockaddr_ll>())
    })
    .map(drop)
}

/// Puts the interface into promiscuous mode for as long as the socket lives.
pub fn add_promisc(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: packet_mreq is plain old data; all-zero is valid.
    let mut mr: libc::packet_mreq = unsafe { zeroed() };
    mr.mr_ifindex = ifindex_int(ifindex)?;
    mr.mr_type = PACKET_MR_PROMISC;
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)
}

/// PACKET_FANOUT mode: a frame goes to the socket of the CPU it arrived on.
const PACKET_FANOUT_CPU: u32 = 2;
/// PACKET_FANOUT flag: the kernel picks a group id no one else uses.
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
/// PACKET_FANOUT flag (Linux 6.2): the group ignores outgoing frames. A
/// group has its own packet hook, so its members' PACKET_IGNORE_OUTGOING no
/// longer applies; without this flag the group would receive what the host
/// sends on the interface.
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// Joins `fd` (bound to its interface) to fanout group `group` in CPU mode,
/// ignoring outgoing frames; `group` 0 asks the kernel for a new unique id,
/// which is returned. EINVAL on kernels before 6.2.
pub fn join_fanout_cpu(fd: BorrowedFd<'_>, group: u16) -> io::Result<u16> {
    let flags = PACKET_FANOUT_FLAG_IGNORE_OUTGOING | if group == 0 { PACKET_FANOUT_FLAG_UNIQUEID } else { 0 };
    let arg: u32 = u32::from(group) | ((PACKET_FANOUT_CPU | flags) << 16);
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
    let mut v: u32 = 0;
    getsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &mut v)?;
    Ok((v & 0xffff) as u16)
}
