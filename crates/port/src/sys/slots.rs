//! The TPACKET_V2 receive ring (`--rx slots`): the kernel copies each frame
//! into a 2 KiB slot in its softirq and wakes the reader per frame, as for
//! `recvmmsg`, with no skb queued, no syscall and no copy per frame on the
//! reader's side. (TPACKET_V3's blocks, [`super::Ring`], hand frames over a
//! block at a time, so a lone frame waits for the block timer.)
//!
//! A frame too big for a slot (a GSO super-frame, a jumbo frame) gets a
//! slot with its first bytes and `TP_STATUS_COPY`, and the whole frame is
//! queued on the socket (PACKET_COPY_THRESH), in the order of the slots:
//! the reader takes it from there with `recvmmsg`.

use super::ring::RingFrame;
use super::setsockopt;
use super::txring::{SLOT, TPACKET_V2, v2_request};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// A TPACKET_V2 RX ring mapped into memory.
#[derive(Debug)]
pub struct SlotRing {
    base: *mut u8,
    slots: usize,
}

// SAFETY: the mapping is owned by the SlotRing and only touched through &self / &mut self.
unsafe impl Send for SlotRing {}

impl SlotRing {
    /// Selects TPACKET_V2 on `fd` (not yet bound, so no frame is missed),
    /// sets up a ring of `slots` slots (even, at least 2) and maps it.
    /// Frames that do not fit a slot are queued whole on the socket.
    pub fn new(fd: BorrowedFd<'_>, slots: usize) -> io::Result<SlotRing> {
        if slots < 2 || !slots.is_multiple_of(2) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        super::set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2)?;
        super::set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &v2_request(slots)?)?;
        let base = super::ring::map_ring(fd, slots * SLOT)?;
        Ok(SlotRing { base, slots })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.slots);
        // SAFETY: slot i lies inside the mapping; tp_status is the u32 at its start,
        // aligned because slots are 2048-byte aligned; the kernel changes it
        // concurrently, which is what the atomic is for.
        unsafe { AtomicU32::from_ptr(self.base.wrapping_add(i * SLOT).cast::<u32>()) }
    }

    /// Slot `i`'s frame, if the kernel has handed the slot to user space.
    /// Offsets the kernel wrote are bounds-checked: a slot whose frame does
    /// not lie inside it comes back with no bytes.
    pub fn frame(&self, i: usize) -> Option<RingFrame<'_>> {
        let status = self.status(i).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the slot is user-owned (status USER, read with Acquire), so the kernel
        // does not write it until it is released, which needs &mut self and so cannot
        // happen while the frame (borrowing &self) lives; it lies inside the mapping.
        let slot: &[u8] = unsafe { std::slice::from_raw_parts(self.base.wrapping_add(i * SLOT), SLOT) };
        let rd32 = |off: usize| u32::from_ne_bytes([slot[off], slot[off + 1], slot[off + 2], slot[off + 3]]);
        let rd16 = |off: usize| u16::from_ne_bytes([slot[off], slot[off + 1]]);
        // tpacket2_hdr: status(4) len(4) snaplen(4) mac(2) net(2) sec(4) nsec(4) vlan_tci(2) vlan_tpid(2) pad(4)
        let (len, snap, mac) = (rd32(4), rd32(8) as usize, usize::from(rd16(12)));
        let data = slot.get(mac..mac.saturating_add(snap)).unwrap_or_default();
        let vnet = slot.get(mac.wrapping_sub(10)..mac).and_then(|v| v.try_into().ok());
        Some(RingFrame { vnet, data, wire_len: len, status, vlan_tci: rd16(24), vlan_tpid: rd16(26) })
    }

    /// Hands slot `i` back to the kernel.
    pub fn release(&mut self, i: usize) {
        self.status(i).store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for SlotRing {
    fn drop(&mut self) {
        // SAFETY: base/slots describe the mapping made in new(); no borrow outlives self.
        unsafe { libc::munmap(self.base.cast(), self.slots * SLOT) };
    }
}
