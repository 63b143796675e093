//! `recvmmsg` and `sendmmsg`: many frames per syscall, with the auxdata
//! control message on receive and gathered iovecs on send.

use std::io;
use std::mem::{MaybeUninit, align_of, size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Scratch for one `sendmmsg`: headers and iovecs for up to `N` frames,
/// each as vnet header + MACs + up to two tags + rest. Left uninitialised:
/// a send writes the entries of the frames it sends and nothing else (when
/// it was zeroed, a ping's lone frame paid for all 4.6 KiB of it, about 1
/// µs a round trip: docs/benchmarks-history.md).
pub struct MmsgScratch<const N: usize> {
    msgs: [MaybeUninit<libc::mmsghdr>; N],
    iovs: [MaybeUninit<[libc::iovec; 4]>; N],
    hdrs: [MaybeUninit<[u8; 18]>; N],
}

impl<const N: usize> MmsgScratch<N> {
    pub fn new() -> Self {
        MmsgScratch {
            msgs: [const { MaybeUninit::uninit() }; N],
            iovs: [const { MaybeUninit::uninit() }; N],
            hdrs: [const { MaybeUninit::uninit() }; N],
        }
    }
}

/// Sends `frames` on `fd` (each with its vnet header when `vnet`: the
/// header, the MACs, the tags to splice in, the rest, gathered from where
/// they lie) with as few `sendmmsg` calls as it takes. Returns how many
/// were sent and how many the kernel refused.
pub fn send_frames<'f, const N: usize>(
    fd: BorrowedFd<'_>,
    scratch: &mut MmsgScratch<N>,
    mut frames: impl Iterator<Item = &'f crate::TxFrame<'f>>,
    vnet: bool,
) -> (usize, usize) {
    let (mut sent, mut failed) = (0, 0);
    loop {
        let mut n = 0;
        for f in frames.by_ref() {
            let mut h = [0u8; 18];
            if vnet {
                h[..10].copy_from_slice(&f.wire_vnet().to_bytes());
            }
            let (head, (tags, t), tail) = f.parts();
            h[10..10 + t].copy_from_slice(&tags[..t]);
            let h = scratch.hdrs[n].write(h);
            let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
            let mut iov = [empty; 4];
            let mut k = 0;
            if vnet {
                iov[k] = libc::iovec { iov_base: h.as_mut_ptr().cast(), iov_len: 10 };
                k += 1;
            }
            iov[k] = libc::iovec { iov_base: head.as_ptr() as *mut _, iov_len: head.len() };
            k += 1;
            if t > 0 {
                iov[k] = libc::iovec { iov_base: h[10..].as_mut_ptr().cast(), iov_len: t };
                k += 1;
            }
            if !tail.is_empty() {
                iov[k] = libc::iovec { iov_base: tail.as_ptr() as *mut _, iov_len: tail.len() };
                k += 1;
            }
            let iov = scratch.iovs[n].write(iov);
            // SAFETY: msghdr is plain old data; all-zero is valid.
            let mut mh: libc::msghdr = unsafe { zeroed() };
            mh.msg_iov = iov.as_mut_ptr();
            mh.msg_iovlen = k;
            scratch.msgs[n].write(libc::mmsghdr { msg_hdr: mh, msg_len: 0 });
            n += 1;
            if n == N {
                break;
            }
        }
        if n == 0 {
            return (sent, failed);
        }
        let mut i = 0;
        let mut chunk_failed = 0;
        let mut waited = false;
        while i < n {
            // Entries i..n were written above (MaybeUninit<T> has T's layout).
            let msgs = scratch.msgs[i..].as_mut_ptr().cast::<libc::mmsghdr>();
            let count = u32::try_from(n - i).unwrap_or(u32::MAX);
            // SAFETY: msgs[i..n] are initialised above and point to iovecs and bytes
            // (scratch and the caller's frames) that live across the call.
            let r = syscall!(unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs, count, 0) });
            match r {
                Ok(k) => i += super::count(k),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && !waited => {
                    // Socket send buffer full: wait once, briefly, for room.
                    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                    // SAFETY: p is a live pollfd; timeout bounded.
                    let _ = unsafe { libc::poll(&mut p, 1, 10) };
                    waited = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) || e.raw_os_error() == Some(libc::ENOBUFS) => {
                    chunk_failed += n - i;
                    i = n;
                }
                Err(_) => {
                    // This frame was refused (too big, link gone); carry on with the rest.
                    chunk_failed += 1;
                    i += 1;
                }
            }
        }
        sent += n - chunk_failed;
        failed += chunk_failed;
        if n < N {
            return (sent, failed);
        }
    }
}

/// `struct tpacket_auxdata`: what PACKET_AUXDATA attaches to each frame.
#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Room for one auxdata control message.
const CMSG_SPACE: usize = 64;

/// One message's control buffer, aligned like a `cmsghdr` (the kernel and
/// `CMSG_NXTHDR` read headers in place, so the buffer must start aligned).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; CMSG_SPACE]);

const _: () = assert!(align_of::<CmsgBuf>() >= align_of::<libc::cmsghdr>());

/// Anonymous memory straight from mmap: zero pages until written, given
/// back to the kernel on drop. The allocator would hand a freed receive
/// buffer to the next one and zero all of it, making every page resident
/// (ports added and removed grew the daemon by megabytes).
struct AnonMap {
    ptr: *mut u8,
    len: usize,
}

impl AnonMap {
    fn new(len: usize) -> io::Result<AnonMap> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(AnonMap { ptr: p.cast(), len })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is mapped readable for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe the mapping made in new(); no borrow outlives self.
        unsafe { libc::munmap(self.ptr.cast(), self.len.max(1)) };
    }
}

/// Buffers and headers for one `recvmmsg` of up to `slots` frames.
pub struct MmsgRecv {
    bufs: AnonMap,
    slot: usize,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    cmsgs: Box<[CmsgBuf]>,
}

// SAFETY: the raw pointers in msgs/iovs point into bufs/cmsgs, owned by the same value.
unsafe impl Send for MmsgRecv {}

impl std::fmt::Debug for MmsgRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgRecv").field("slots", &self.msgs.len()).field("slot", &self.slot).finish()
    }
}

/// One frame `recvmmsg` delivered: bytes (vnet header first), its length on
/// the wire, and the auxdata status/VLAN fields.
#[derive(Debug, Clone, Copy)]
pub struct MmsgFrame<'a> {
    pub data: &'a [u8],
    /// The frame's length (without the vnet header), when auxdata said.
    pub wire_len: Option<u32>,
    pub status: u32,
    pub vlan_tci: u16,
    pub vlan_tpid: u16,
}

impl MmsgRecv {
    pub fn new(slots: usize, slot: usize) -> io::Result<MmsgRecv> {
        let mut r = MmsgRecv {
            bufs: AnonMap::new(slots * slot)?,
            slot,
            // SAFETY: mmsghdr is plain old data; all-zero is valid.
            msgs: (0..slots).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..slots).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect(),
            cmsgs: vec![CmsgBuf([0; CMSG_SPACE]); slots].into_boxed_slice(),
        };
        let base = r.bufs.ptr;
        for i in 0..slots {
            r.iovs[i] = libc::iovec { iov_base: base.wrapping_add(i * slot).cast(), iov_len: slot };
        }
        for i in 0..slots {
            let iov = &mut r.iovs[i] as *mut libc::iovec;
            let h = &mut r.msgs[i].msg_hdr;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_control = r.cmsgs[i].0.as_mut_ptr().cast();
            h.msg_controllen = CMSG_SPACE;
        }
        Ok(r)
    }

    /// Receives what is ready (non-blocking) and calls `f` for each frame.
    /// Returns how many were received; 0 when none was ready.
    pub fn recv<'a>(&'a mut self, fd: BorrowedFd<'_>, f: impl FnMut(MmsgFrame<'a>)) -> io::Result<usize> {
        self.recv_up_to(fd, self.msgs.len(), f)
    }

    /// As [`MmsgRecv::recv`], at most `max` frames (and at most the slots).
    pub fn recv_up_to<'a>(
        &'a mut self,
        fd: BorrowedFd<'_>,
        max: usize,
        mut f: impl FnMut(MmsgFrame<'a>),
    ) -> io::Result<usize> {
        let max = max.min(self.msgs.len());
        for m in self.msgs[..max].iter_mut() {
            m.msg_hdr.msg_controllen = CMSG_SPACE;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        let n = u32::try_from(max).unwrap_or(u32::MAX);
        let msgs = self.msgs.as_mut_ptr();
        // SAFETY: every mmsghdr points to an iovec and control buffer owned by self,
        // sized as declared; the kernel writes at most those lengths.
        let r = syscall!(unsafe { libc::recvmmsg(fd.as_raw_fd(), msgs, n, libc::MSG_DONTWAIT, std::ptr::null_mut()) });
        let got = match r {
            Ok(k) => super::count(k),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let bufs: &'a [u8] = self.bufs.as_slice();
        for (i, m) in self.msgs[..got].iter().enumerate() {
            let len = (m.msg_len as usize).min(self.slot);
            let data = &bufs[i * self.slot..i * self.slot + len];
            let mut frame = MmsgFrame { data, wire_len: None, status: 0, vlan_tci: 0, vlan_tpid: 0 };
            let h = &m.msg_hdr;
            // SAFETY: the kernel filled msg_control with msg_controllen bytes of
            // well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them.
            let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
            while !c.is_null() {
                // SAFETY: c points to a cmsghdr inside the control buffer (checked by the macros).
                let hdr: libc::cmsghdr = unsafe { std::ptr::read_unaligned(c) };
                let (level, ty, clen) = (hdr.cmsg_level, hdr.cmsg_type, hdr.cmsg_len);
                // SAFETY: as above; the data of a cmsghdr follows it.
                let data_len = clen.saturating_sub(unsafe { libc::CMSG_LEN(0) } as usize);
                if level == libc::SOL_PACKET && ty == libc::PACKET_AUXDATA && data_len >= size_of::<TpacketAuxdata>() {
                    // SAFETY: c is a cmsghdr within the control buffer; its data follows it.
                    let p = unsafe { libc::CMSG_DATA(c) };
                    // SAFETY: the cmsg carries a tpacket_auxdata (length checked above); read unaligned.
                    let aux: TpacketAuxdata = unsafe { std::ptr::read_unaligned(p.cast()) };
                    frame.wire_len = Some(aux.tp_len);
                    frame.status = aux.tp_status;
                    frame.vlan_tci = aux.tp_vlan_tci;
                    frame.vlan_tpid = aux.tp_vlan_tpid;
                }
                // SAFETY: h and c are the header and a cmsg within its buffer.
                c = unsafe { libc::CMSG_NXTHDR(h, c) };
            }
            f(frame);
        }
        Ok(got)
    }
}
