//! The PACKET_TX_RING small frames are sent through: one `send` hands the
//! kernel a batch, with no `msghdr` per frame. Its own socket (protocol 0,
//! receives nothing), TPACKET_V2 slots of [`SLOT`] bytes, PACKET_VNET_HDR
//! with `hdr_len` = the frame's length so `tpacket_snd` copies the whole
//! frame into the skb's linear part: page fragments into the slot would be
//! copied again by the veth (`skb_orphan_frags`), 9-13% more CPU per 64 B
//! frame (docs/benchmarks-history.md).

use super::v2::{SLOT, TPACKET_V2, V2Ring};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

/// Where a frame's bytes start in a slot: `TPACKET2_HDRLEN -
/// sizeof(struct sockaddr_ll)`, as `tpacket_snd` reads it.
const DATA: usize = 32;
/// The largest frame a slot takes (after the vnet header).
pub const ROOM: usize = SLOT - DATA - crate::VnetHdr::LEN;

/// A send-only packet socket on a port, and the TX ring once mapped.
#[derive(Debug)]
pub struct TxRing {
    fd: OwnedFd,
    /// The ring; none until [`TxRing::map`].
    ring: Option<V2Ring>,
    /// The slot the next frame goes in; the kernel's own head when nothing
    /// is pending (`flush` keeps them together).
    next: usize,
    /// Frames written since the last flush.
    pending: usize,
    /// A `map` failed: the socket stays without a ring.
    gave_up: bool,
}

impl TxRing {
    /// The socket, bound to `ifindex` in the calling thread's network
    /// namespace, with no ring yet (no memory): [`TxRing::map`] adds it.
    pub fn open(ifindex: u32) -> io::Result<TxRing> {
        let fd = super::packet_socket()?;
        super::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2)?;
        super::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        // Protocol 0: the socket sends on the port and receives nothing.
        super::bind_packet_protocol(fd.as_fd(), ifindex, 0)?;
        Ok(TxRing { fd, ring: None, next: 0, pending: 0, gave_up: false })
    }

    /// The socket, for its options.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the ring is mapped.
    pub fn is_mapped(&self) -> bool {
        self.ring.is_some()
    }

    /// Sets up and maps a ring of `slots` slots (even, at least 2). After
    /// one failure (no memory, a kernel without TX rings) it does not try
    /// again.
    pub fn map(&mut self, slots: usize) -> io::Result<()> {
        if self.is_mapped() || self.gave_up {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // Not locked: 256 KiB a port, written by us, read by the kernel only
        // while it sends.
        let r = V2Ring::map(self.fd.as_fd(), libc::PACKET_TX_RING, slots, false);
        self.gave_up = r.is_err();
        self.ring = Some(r?);
        Ok(())
    }

    /// Writes a frame, given as pieces laid end to end after its vnet header,
    /// into the next slot. False (nothing written) when that slot is still
    /// being sent, the frame is larger than [`ROOM`] or the ring is not mapped.
    pub fn put(&mut self, vnet: [u8; 10], pieces: [&[u8]; 3]) -> bool {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let i = self.next;
        // Available: none of the owner bits (a timestamp flag may be set with it).
        let busy = libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING | libc::TP_STATUS_WRONG_FORMAT;
        let Some(ring) = &self.ring else { return false };
        if len > ROOM || ring.status(i).load(Ordering::Acquire) & busy != 0 {
            return false;
        }
        // SAFETY: the slot is available: the kernel neither reads nor writes it until
        // its status says SEND_REQUEST, which we store last (Release). It lies inside
        // the mapping and DATA + 10 + len <= SLOT.
        let slot = unsafe { std::slice::from_raw_parts_mut(ring.slot_ptr(i), SLOT) };
        let mut at = DATA;
        slot[at..at + 10].copy_from_slice(&vnet);
        // hdr_len = the whole frame: the kernel copies all of it (module comment).
        #[allow(clippy::cast_possible_truncation, reason = "len <= ROOM < 2048")]
        slot[at + 2..at + 4].copy_from_slice(&(len as u16).to_le_bytes());
        at += 10;
        for p in pieces {
            slot[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        // tpacket2_hdr: tp_status(4) tp_len(4)
        #[allow(clippy::cast_possible_truncation, reason = "10 + len < 2048")]
        slot[4..8].copy_from_slice(&((10 + len) as u32).to_ne_bytes());
        ring.status(i).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (i + 1) % ring.slots();
        self.pending += 1;
        true
    }

    /// Has the kernel send every frame written since the last flush. Returns
    /// how many it took and how many it refused (link down, no buffer space,
    /// a malformed header): those slots are made available again and the
    /// next frame goes where the kernel will look for it.
    pub fn flush(&mut self) -> (usize, usize) {
        let Some(ring) = &self.ring else { return (0, 0) };
        if self.pending == 0 {
            return (0, 0);
        }
        // SAFETY: a null buffer of length 0 is what a TX ring's send takes; no pointer
        // is dereferenced.
        let _ = syscall!(unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) });
        // The kernel takes frames in order from its head, which was the first
        // pending slot; what it did not take is still SEND_REQUEST (or
        // WRONG_FORMAT, where it stopped).
        let slots = ring.slots();
        let first = (self.next + slots - self.pending) % slots;
        let mut refused = 0;
        for k in 0..self.pending {
            let i = (first + k) % slots;
            let s = ring.status(i).load(Ordering::Acquire);
            if s == libc::TP_STATUS_SEND_REQUEST || s == libc::TP_STATUS_WRONG_FORMAT {
                if refused == 0 {
                    self.next = i;
                }
                ring.status(i).store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
                refused += 1;
            }
        }
        let taken = self.pending - refused;
        self.pending = 0;
        (taken, refused)
    }
}
