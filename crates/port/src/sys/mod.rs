//! Every `unsafe` block of the port crate, one file per kernel object:
//! packet sockets and their options ([`socket`]), the TPACKET_V2 receive
//! ring ([`slots`]), `recvmmsg`/`sendmmsg` ([`mmsg`]), the TX ring
//! ([`txring`]), what the two TPACKET_V2 rings share ([`v2`]) and the tun
//! device ([`tun`]).
//! The rest of the crate is safe code over the small, safe API exported here.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The size of C struct `T`, as the socket calls take it.
#[allow(clippy::cast_possible_truncation, reason = "a C struct's size is far below 4 GiB")]
pub(crate) const fn socklen_of<T>() -> libc::socklen_t {
    size_of::<T>() as libc::socklen_t
}

/// `n`, a count the kernel returned (never negative once `syscall!` has
/// turned -1 into an error), as a `usize`.
pub(crate) fn count<N: TryInto<usize>>(n: N) -> usize {
    n.try_into().unwrap_or(0)
}

/// Runs a libc call, retrying on EINTR; negative results become `io::Error`.
macro_rules! syscall {
    ($e:expr) => {
        loop {
            // The caller's SAFETY comment covers the expression.
            let r = $e;
            if r < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break Err(err);
            }
            break Ok(r);
        }
    };
}

mod mmsg;
mod slots;
mod socket;
mod tun;
mod txring;
mod v2;

pub use mmsg::{MmsgRecv, MmsgScratch, send_frames};
pub use slots::{ROOM as SLOT_ROOM, SlotRing};
pub(crate) use socket::bind_packet_protocol;
pub use socket::{
    AFTER_TC, Fanout, Steer, add_promisc, bind_packet, discard_queued, drop_all, fanout_group, first_queued_len,
    join_fanout, packet_drops, packet_socket, set_packet_version_v3, skip_after_tc, steer_fanout, take_socket_error,
};
pub use tun::{read_nb, tun_open_tap, tun_set_persist, writev};
pub use txring::{ROOM as TX_RING_ROOM, TxRing};
pub use v2::{RingFrame, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID};

pub(crate) fn setsockopt<T>(fd: BorrowedFd<'_>, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the length given.
    syscall!(unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (val as *const T).cast(), socklen_of::<T>()) })
        .map(drop)
}

/// Reads option `opt` into `val`, a plain-old-data value the kernel fills
/// (at most its size).
pub(crate) fn getsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    val: &mut T,
) -> io::Result<()> {
    let mut len = socklen_of::<T>();
    // SAFETY: val points to a live, writable T and len is its size; the kernel writes
    // at most len bytes. T is Copy plain old data at every caller (integers, C structs).
    syscall!(unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, (val as *mut T).cast(), &mut len) }).map(drop)
}

pub fn set_int_opt(fd: BorrowedFd<'_>, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    setsockopt(fd, level, opt, &val)
}
