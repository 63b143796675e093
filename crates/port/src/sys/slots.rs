//! The TPACKET_V2 receive ring of a busy port: the kernel copies each frame
//! into a 2 KiB slot in its softirq and wakes the reader per frame, as for
//! `recvmmsg`, with no skb queued, no syscall and no copy per frame on the
//! reader's side.
//!
//! A frame too big for a slot (a GSO super-frame, a jumbo frame) gets a
//! slot with its first bytes and `TP_STATUS_COPY`, and the whole frame is
//! queued on the socket (PACKET_COPY_THRESH), in the order of the slots:
//! the reader takes it from there with `recvmmsg`.

use super::v2::{RingFrame, SLOT, TPACKET_V2, V2Ring};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;

/// The longest frame a slot holds whole. `tpacket_rcv` puts a frame's
/// first byte `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)` bytes into its slot
/// (80: the slot's header and the `sockaddr_ll`), plus the vnet header
/// (10), less the 14-byte Ethernet header: 76 bytes in. A longer frame
/// (a GSO super-frame, a jumbo frame) goes whole to the socket as well.
pub const ROOM: usize = SLOT - 76;

/// A TPACKET_V2 RX ring mapped into memory.
#[derive(Debug)]
pub struct SlotRing {
    ring: V2Ring,
}

impl SlotRing {
    /// Makes `fd`, which has no ring, ready for one: TPACKET_V2, and frames
    /// too big for a slot queued whole on the socket.
    pub fn prepare(fd: BorrowedFd<'_>) -> io::Result<()> {
        super::set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2)?;
        super::set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)
    }

    /// Sets up a ring of `slots` slots on `fd`, [prepared](Self::prepare)
    /// and with no ring, and maps it. On a bound socket the kernel takes it
    /// off its interface meanwhile and empties its receive queue.
    pub fn map(fd: BorrowedFd<'_>, slots: usize) -> io::Result<SlotRing> {
        Ok(SlotRing { ring: V2Ring::map(fd, libc::PACKET_RX_RING, slots, true)? })
    }

    /// Whether slot `i` is user space's (the kernel has put a frame in it).
    pub fn is_filled(&self, i: usize) -> bool {
        self.ring.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    pub fn slots(&self) -> usize {
        self.ring.slots()
    }

    /// Slot `i`'s frame, if the kernel has handed the slot to user space.
    /// Offsets the kernel wrote are bounds-checked: a slot whose frame does
    /// not lie inside it comes back with no bytes.
    pub fn frame(&self, i: usize) -> Option<RingFrame<'_>> {
        let status = self.ring.status(i).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the slot is user-owned (status USER, read with Acquire), so the kernel
        // does not write it until it is released, which needs &mut self and so cannot
        // happen while the frame (borrowing &self) lives; it lies inside the mapping.
        let slot: &[u8] = unsafe { std::slice::from_raw_parts(self.ring.slot_ptr(i), SLOT) };
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
        self.ring.status(i).store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}
