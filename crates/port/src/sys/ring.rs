//! The TPACKET_V3 receive ring, mapped into memory.

use super::setsockopt;
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// A TPACKET_V3 RX ring mapped into memory.
#[derive(Debug)]
pub struct Ring {
    base: *mut u8,
    len: usize,
    block_size: usize,
    block_nr: usize,
}

// SAFETY: the mapping is owned by the Ring and only touched through &self / &mut self.
unsafe impl Send for Ring {}

/// One received frame in a user-owned block (V3) or slot (V2,
/// [`super::SlotRing`]).
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
    /// A V2 slot holds only the start of the frame; the whole frame waits
    /// on the socket (PACKET_COPY_THRESH). Never set in a V3 block.
    pub fn copied(&self) -> bool {
        self.status & libc::TP_STATUS_COPY != 0
    }
}

pub const TP_STATUS_VLAN_VALID: u32 = libc::TP_STATUS_VLAN_VALID;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

impl Ring {
    /// Sets up a ring of `block_nr` blocks of `block_size` bytes on `fd`
    /// and maps it. `retire_ms` bounds how long a partly filled block waits.
    pub fn new(fd: BorrowedFd<'_>, block_size: usize, block_nr: usize, retire_ms: u32) -> io::Result<Ring> {
        let frame_size = 2048usize;
        // SAFETY: tpacket_req3 is plain old data; all-zero is valid.
        let mut req: libc::tpacket_req3 = unsafe { zeroed() };
        let u32_of = |v: usize| u32::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        req.tp_block_size = u32_of(block_size)?;
        req.tp_block_nr = u32_of(block_nr)?;
        req.tp_frame_size = u32_of(frame_size)?;
        req.tp_frame_nr = u32_of(block_size / frame_size * block_nr)?;
        req.tp_retire_blk_tov = retire_ms;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let len = block_size * block_nr;
        let p = map_ring(fd, len, true)?;
        Ok(Ring { base: p, len, block_size, block_nr })
    }

    pub fn block_nr(&self) -> usize {
        self.block_nr
    }

    fn status_word(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.block_nr);
        // SAFETY: block i lies inside the mapping; block_status is the u32 at offset 8
        // of tpacket_block_desc (version, offset_to_priv, then hdr.bh1.block_status),
        // 4-byte aligned because blocks are page aligned; the kernel updates it concurrently,
        // which is what the atomic is for.
        unsafe { AtomicU32::from_ptr(self.base.wrapping_add(i * self.block_size + 8).cast::<u32>()) }
    }

    /// True if block `i` has been handed to user space.
    pub fn block_ready(&self, i: usize) -> bool {
        self.status_word(i).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The frames of user-owned block `i`, appended to `out`. Offsets the
    /// kernel wrote are bounds-checked; a frame that does not fit is skipped.
    pub fn block_frames<'a>(&'a self, i: usize, mut out: impl FnMut(RingFrame<'a>)) {
        debug_assert!(self.block_ready(i));
        // SAFETY: the block is user-owned (status USER, read with Acquire), so the kernel
        // does not write it until we release it, which needs &mut self and so cannot
        // happen while the frames (borrowing &'a self) live; it lies inside the mapping.
        let block: &'a [u8] =
            unsafe { std::slice::from_raw_parts(self.base.wrapping_add(i * self.block_size), self.block_size) };
        let rd32 = |off: usize| -> Option<u32> {
            block.get(off..off + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let rd16 = |off: usize| -> Option<u16> { block.get(off..off + 2).map(|b| u16::from_ne_bytes([b[0], b[1]])) };
        // tpacket_block_desc: version(4) offset_to_priv(4) block_status(4) num_pkts(4) offset_to_first_pkt(4)
        let (Some(num), Some(first)) = (rd32(12), rd32(16)) else { return };
        let mut off = first as usize;
        for _ in 0..num {
            // tpacket3_hdr: next_offset(4) sec(4) nsec(4) snaplen(4) len(4) status(4) mac(2) net(2)
            //               hv1{rxhash(4) vlan_tci(4) vlan_tpid(2) pad(2)} pad[8]
            let (Some(next), Some(snap), Some(len), Some(status), Some(mac), Some(tci), Some(tpid)) = (
                rd32(off),
                rd32(off + 12),
                rd32(off + 16),
                rd32(off + 20),
                rd16(off + 24),
                rd32(off + 32),
                rd16(off + 36),
            ) else {
                return;
            };
            let start = off + mac as usize;
            if let Some(data) = block.get(start..start + snap as usize) {
                let vnet = block.get(start.wrapping_sub(10)..start).and_then(|v| v.try_into().ok());
                out(RingFrame {
                    vnet,
                    data,
                    wire_len: len,
                    status,
                    vlan_tci: u16::try_from(tci & 0xffff).unwrap_or_default(),
                    vlan_tpid: tpid,
                });
            }
            if next == 0 {
                return;
            }
            off += next as usize;
        }
    }

    /// Hands block `i` back to the kernel.
    pub fn release(&mut self, i: usize) {
        self.status_word(i).store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

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

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len describe the mapping made in new(); no borrow outlives self.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
