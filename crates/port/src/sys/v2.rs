//! What the two TPACKET_V2 rings share, the TX ring ([`super::TxRing`])
//! and the RX slots ([`super::SlotRing`]): slots of [`SLOT`] bytes, two to
//! a page, each starting with the `tp_status` word that says whether the
//! kernel or user space owns it.

use super::setsockopt;
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::AtomicU32;

pub(super) const TPACKET_V2: libc::c_int = 1;
/// Bytes per slot.
pub const SLOT: usize = 2048;

/// A TPACKET_V2 ring set up on a socket and mapped into memory.
#[derive(Debug)]
pub(super) struct V2Ring {
    base: *mut u8,
    slots: usize,
}

// SAFETY: the mapping is owned by the V2Ring; its slots are only touched through
// the ring's owner (&self / &mut self).
unsafe impl Send for V2Ring {}

impl V2Ring {
    /// Sets up a ring of `slots` slots (even, at least 2) as `which`
    /// (`PACKET_RX_RING` or `PACKET_TX_RING`) on `fd`, whose `PACKET_VERSION`
    /// is already TPACKET_V2, and maps it. `try_lock`: map it
    /// `MAP_LOCKED` if the system lets us, so the kernel's writes into a
    /// large receive ring never meet a page that is swapped out.
    pub(super) fn map(fd: BorrowedFd<'_>, which: libc::c_int, slots: usize, try_lock: bool) -> io::Result<V2Ring> {
        if slots < 2 || !slots.is_multiple_of(2) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        setsockopt(fd, libc::SOL_PACKET, which, &request(slots)?)?;
        let base = map_ring(fd, slots * SLOT, try_lock)?;
        Ok(V2Ring { base, slots })
    }

    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    /// Slot `i`'s `tp_status`.
    pub(super) fn status(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.slots);
        // SAFETY: slot i lies inside the mapping; tp_status is the u32 at its start,
        // aligned because slots are 2048-byte aligned; the kernel changes it
        // concurrently, which is what the atomic is for.
        unsafe { AtomicU32::from_ptr(self.base.wrapping_add(i * SLOT).cast::<u32>()) }
    }

    /// Where slot `i` starts: [`SLOT`] bytes inside the mapping. Who may read
    /// or write them is for the caller to know from the slot's status.
    pub(super) fn slot_ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.slots);
        self.base.wrapping_add(i * SLOT)
    }
}

impl Drop for V2Ring {
    fn drop(&mut self) {
        // SAFETY: base/slots describe the mapping made in map(); no borrow outlives self.
        unsafe { libc::munmap(self.base.cast(), self.slots * SLOT) };
    }
}

/// The geometry of a ring of `slots` slots of [`SLOT`] bytes, two to a page:
/// single pages, which the kernel always finds.
fn request(slots: usize) -> io::Result<libc::tpacket_req> {
    let u32_of = |v: usize| u32::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    // SAFETY: tpacket_req is plain old data; all-zero is valid.
    let mut req: libc::tpacket_req = unsafe { zeroed() };
    req.tp_block_size = 4096;
    req.tp_block_nr = u32_of(slots * SLOT / 4096)?;
    req.tp_frame_size = u32_of(SLOT)?;
    req.tp_frame_nr = u32_of(slots)?;
    Ok(req)
}

/// One received frame in a slot of the RX ring ([`super::SlotRing`]).
#[derive(Debug, Clone, Copy)]
pub struct RingFrame<'a> {
    pub vnet: Option<&'a [u8; 10]>,
    /// What the ring holds of the frame: all of it unless [`Self::copied`].
    pub data: &'a [u8],
    pub wire_len: u32,
    pub status: u32,
    pub vlan_tci: u16,
    pub vlan_tpid: u16,
}

impl RingFrame<'_> {
    /// The slot holds only the start of the frame; the whole frame waits
    /// on the socket (PACKET_COPY_THRESH).
    pub fn copied(&self) -> bool {
        self.status & libc::TP_STATUS_COPY != 0
    }
}

pub const TP_STATUS_VLAN_VALID: u32 = libc::TP_STATUS_VLAN_VALID;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// Maps the `len` bytes of the ring(s) set up on `fd`; with `try_lock`,
/// locked in memory when RLIMIT_MEMLOCK allows (the ring works unlocked too).
pub(super) fn map_ring(fd: BorrowedFd<'_>, len: usize, try_lock: bool) -> io::Result<*mut u8> {
    let locked = [libc::MAP_SHARED | libc::MAP_LOCKED, libc::MAP_SHARED];
    for &flags in if try_lock { &locked[..] } else { &locked[1..] } {
        // SAFETY: mapping a fresh region of the length the ring was set up with; the
        // kernel validates the fd and length.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd.as_raw_fd(), 0)
        };
        if p != libc::MAP_FAILED {
            return Ok(p.cast());
        }
    }
    Err(io::Error::last_os_error())
}
