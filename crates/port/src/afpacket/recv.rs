//! Reading frames: a `recvmmsg` batch, and the slots of a busy port's RX
//! ring, whose frames too big for a slot wait whole on its socket.

use super::socket::MMSG_SLOTS;
use crate::sys::{self, RingFrame, SlotRing, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID};
use crate::{BATCH, RxFrame, VnetHdr};
use std::io;
use std::os::fd::BorrowedFd;

/// Most queued frames dropped to bring RX slots and their copies back in
/// step (more than a full receive queue of super-frames holds).
const RESYNC_MAX: usize = 4096;

/// Reading a TPACKET_V2 RX ring: `held` slots before `next` are the last
/// batch's, released at the next call; `drained`: the last batch stopped
/// at a slot the kernel had not filled.
#[derive(Debug)]
pub(super) struct SlotsRx {
    ring: SlotRing,
    next: usize,
    held: usize,
    pub(super) drained: bool,
}

/// Whether `whole`, a frame read from the socket, is the one whose start
/// slot `f` holds: same length, same first bytes (headers with their
/// sequence numbers and IP ids, so two frames of a stream differ).
fn is_copy_of(whole: &[u8], f: &RingFrame<'_>) -> bool {
    let head = &f.data[..f.data.len().min(128)];
    whole.len() == f.wire_len as usize && whole.starts_with(head)
}

/// The frame a slot describes, its bytes `data` after the vnet header
/// `vnet`: the slot's own, or, for a frame too big for its slot, the whole
/// frame read from the socket.
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
pub(super) fn mmsg_batch<'a>(
    recv: &'a mut sys::MmsgRecv,
    fd: BorrowedFd<'_>,
    out: &mut Vec<RxFrame<'a>>,
) -> io::Result<usize> {
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
    pub(super) fn new(ring: SlotRing) -> SlotsRx {
        SlotsRx { ring, next: 0, held: 0, drained: false }
    }

    /// Hands the last batch's slots back to the kernel.
    pub(super) fn release_held(&mut self) {
        let n = self.ring.slots();
        for k in 0..self.held {
            self.ring.release((self.next + n - self.held + k) % n);
        }
        self.held = 0;
    }

    /// Whether a frame waits in the next slot.
    pub(super) fn has_frame(&self) -> bool {
        self.ring.is_filled(self.next)
    }

    /// Reads the filled slots from `next` on (at most a batch) into `out`,
    /// each frame too big for its slot read whole from `fd` with `copies`;
    /// returns whether it stopped at a slot the kernel had not filled.
    pub(super) fn recv<'a>(
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
