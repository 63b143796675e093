//! The transmit half of an AF_PACKET port: small frames through a TX ring,
//! the rest (GSO super-frames, and a batch sent while another reader holds
//! the ring) with `sendmmsg`, gathered from the ingress port's buffers.

use crate::sys::{self, MmsgScratch, TxRing};
use crate::{BATCH, PortTx, SendOutcome, TxFrame};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Transmit half. Frames a TX ring slot holds (not GSO super-frames) go
/// through the port's [`TxRing`]: written into slots, one `send` a batch.
/// The rest, and a batch sent while another reader is using the ring, go
/// with one `sendmmsg`, gathered straight from the ingress port's memory.
#[derive(Debug)]
pub struct AfPacketTx {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) mtu: u32,
    /// `None` when the send socket could not be made (`sendmmsg` only).
    pub(super) ring: Option<Mutex<TxRing>>,
    /// The port's receive sockets (each half's, and those read after tc
    /// ingress), handed over with it.
    pub(super) shaping: Arc<super::shaped::Shaping>,
    /// A busy-slots port's rings, given back before it is handed over.
    pub(super) busy: Option<Arc<super::busy::BusySlots>>,
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

    fn prepare_handover(&self) {
        if let Some(b) = &self.busy {
            b.hand_back();
        }
    }

    fn cancel_handover(&self) {
        if let Some(b) = &self.busy {
            b.keep();
        }
    }

    fn handover_fds(&self) -> std::io::Result<Vec<(crate::Role, OwnedFd)>> {
        self.shaping.handover_fds()
    }
}
