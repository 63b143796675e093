//! Every `unsafe` block of the port crate: packet sockets, the TPACKET_V3
//! ring, `sendmmsg`, and the tun ioctls. The rest of the crate is safe code
//! over the small, safe API exported here.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, size_of_val, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs a libc call, retrying on EINTR; negative results become `io::Error`.
macro_rules! syscall {
    ($e:expr) => {
        loop {
            // The caller's SAFETY comment covers the expression.
            let r = $e;
            if r < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break Err(err);
            }
            break Ok(r);
        }
    };
}

const TPACKET_V3: libc::c_int = 2;
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

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

fn setsockopt<T>(fd: BorrowedFd<'_>, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the length given.
    syscall!(unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, opt, (val as *const T).cast(), size_of::<T>() as libc::socklen_t)
    })
    .map(drop)
}

/// Reads option `opt` into `val`, a plain-old-data value the kernel fills
/// (at most its size).
fn getsockopt<T: Copy>(fd: BorrowedFd<'_>, level: libc::c_int, opt: libc::c_int, val: &mut T) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: val points to a live, writable T and len is its size; the kernel writes
    // at most len bytes. T is Copy plain old data at every caller (integers, C structs).
    syscall!(unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, (val as *mut T).cast(), &mut len) }).map(drop)
}

pub fn set_int_opt(fd: BorrowedFd<'_>, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    setsockopt(fd, level, opt, &val)
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
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL_BE;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a live sockaddr_ll and the length matches it.
    syscall!(unsafe {
        libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), size_of_val(&sll) as libc::socklen_t)
    })
    .map(drop)
}

/// Puts the interface into promiscuous mode for as long as the socket lives.
pub fn add_promisc(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: packet_mreq is plain old data; all-zero is valid.
    let mut mr: libc::packet_mreq = unsafe { zeroed() };
    mr.mr_ifindex = ifindex as i32;
    mr.mr_type = libc::PACKET_MR_PROMISC as u16;
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

/// One received frame inside a user-owned block.
#[derive(Debug, Clone, Copy)]
pub struct RingFrame<'a> {
    pub vnet: Option<&'a [u8; 10]>,
    pub data: &'a [u8],
    pub wire_len: u32,
    pub status: u32,
    pub vlan_tci: u16,
    pub vlan_tpid: u16,
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
        req.tp_block_size = block_size as u32;
        req.tp_block_nr = block_nr as u32;
        req.tp_frame_size = frame_size as u32;
        req.tp_frame_nr = (block_size / frame_size * block_nr) as u32;
        req.tp_retire_blk_tov = retire_ms;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let len = block_size * block_nr;
        // SAFETY: mapping a fresh region of the length the ring was set up with; the
        // kernel validates the fd and length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                fd.as_raw_fd(),
                0,
            )
        };
        let p = if p == libc::MAP_FAILED {
            // MAP_LOCKED can fail under RLIMIT_MEMLOCK; the ring works unlocked too.
            // SAFETY: as above, without MAP_LOCKED.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            p
        } else {
            p
        };
        Ok(Ring { base: p.cast(), len, block_size, block_nr })
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
                out(RingFrame { vnet, data, wire_len: len, status, vlan_tci: tci as u16, vlan_tpid: tpid });
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

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len describe the mapping made in new(); no borrow outlives self.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Scratch for one `sendmmsg`: headers and iovecs for up to `N` frames,
/// each as vnet header + MACs + optional tag + rest.
pub struct MmsgScratch<const N: usize> {
    msgs: [libc::mmsghdr; N],
    iovs: [[libc::iovec; 4]; N],
    hdrs: [[u8; 14]; N],
}

impl<const N: usize> MmsgScratch<N> {
    pub fn new() -> Self {
        // SAFETY: all fields are plain old data for which all-zero is valid.
        unsafe { zeroed() }
    }
}

/// Sends `frames` (each: optional 10-byte vnet header, frame bytes, optional
/// tag to insert after byte 12) on `fd` with as few `sendmmsg` calls as it
/// takes. Returns how many were sent and how many the kernel refused.
pub fn send_frames<'f, const N: usize>(
    fd: BorrowedFd<'_>,
    scratch: &mut MmsgScratch<N>,
    mut frames: impl Iterator<Item = (Option<[u8; 10]>, &'f [u8], Option<[u8; 4]>)>,
) -> (usize, usize) {
    let (mut sent, mut failed) = (0, 0);
    loop {
        let mut n = 0;
        for (vnet, data, tag) in frames.by_ref() {
            let h = &mut scratch.hdrs[n];
            let iov = &mut scratch.iovs[n];
            let mut k = 0;
            if let Some(v) = vnet {
                h[..10].copy_from_slice(&v);
                iov[k] = libc::iovec { iov_base: h.as_mut_ptr().cast(), iov_len: 10 };
                k += 1;
            }
            match tag {
                Some(t) if data.len() >= 12 => {
                    h[10..14].copy_from_slice(&t);
                    iov[k] = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: 12 };
                    iov[k + 1] = libc::iovec { iov_base: h[10..].as_mut_ptr().cast(), iov_len: 4 };
                    iov[k + 2] = libc::iovec { iov_base: data[12..].as_ptr() as *mut _, iov_len: data.len() - 12 };
                    k += 3;
                }
                _ => {
                    iov[k] = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
                    k += 1;
                }
            }
            // SAFETY: msghdr is plain old data; all-zero is valid.
            let mut mh: libc::msghdr = unsafe { zeroed() };
            mh.msg_iov = iov.as_mut_ptr();
            mh.msg_iovlen = k;
            scratch.msgs[n] = libc::mmsghdr { msg_hdr: mh, msg_len: 0 };
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
            let msgs = scratch.msgs[i..].as_mut_ptr();
            // SAFETY: msgs[i..n] are initialised above and point to iovecs and bytes
            // (scratch and the caller's frames) that live across the call.
            let r = syscall!(unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs, (n - i) as u32, 0) });
            match r {
                Ok(k) => i += k as usize,
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

/// Opens `/dev/net/tun` as a TAP interface `name` with IFF_NO_PI and
/// IFF_VNET_HDR, and enables checksum and TSO offloads. Returns the fd
/// (non-blocking, close-on-exec) and the name the kernel gave it.
pub fn tun_open_tap(name: &str) -> io::Result<(OwnedFd, String)> {
    let flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the path is a NUL-terminated literal.
    let fd = syscall!(unsafe { libc::open(c"/dev/net/tun".as_ptr(), flags) })?;
    // SAFETY: fd was just returned by open() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes an ifreq, which ifr is.
    syscall!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) })?;
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes an unsigned long by value.
    syscall!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offloads as libc::c_ulong) })?;
    let actual: Vec<u8> = ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok((fd, String::from_utf8_lossy(&actual).into_owned()))
}

/// read(2) into `buf`; `Ok(None)` when nothing is ready.
pub fn read_nb(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: buf is a live, writable slice of the length given.
    match syscall!(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }) {
        Ok(n) => Ok(Some(n as usize)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// writev(2) of up to four parts, as one frame.
pub fn writev(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 4];
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = libc::iovec { iov_base: p.as_ptr() as *mut _, iov_len: p.len() };
    }
    // SAFETY: the iovecs point into the caller's slices, which outlive the call.
    syscall!(unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), parts.len().min(4) as i32) }).map(|n| n as usize)
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
    cmsgs: Box<[u8]>,
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
            cmsgs: vec![0u8; slots * CMSG_SPACE].into_boxed_slice(),
        };
        let base = r.bufs.ptr;
        let cbase = r.cmsgs.as_mut_ptr();
        for i in 0..slots {
            r.iovs[i] = libc::iovec { iov_base: base.wrapping_add(i * slot).cast(), iov_len: slot };
        }
        for i in 0..slots {
            let iov = &mut r.iovs[i] as *mut libc::iovec;
            let h = &mut r.msgs[i].msg_hdr;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_control = cbase.wrapping_add(i * CMSG_SPACE).cast();
            h.msg_controllen = CMSG_SPACE;
        }
        Ok(r)
    }

    /// Receives what is ready (non-blocking) and calls `f` for each frame.
    /// Returns how many were received; 0 when none was ready.
    pub fn recv<'a>(&'a mut self, fd: BorrowedFd<'_>, mut f: impl FnMut(MmsgFrame<'a>)) -> io::Result<usize> {
        for m in self.msgs.iter_mut() {
            m.msg_hdr.msg_controllen = CMSG_SPACE;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        let n = self.msgs.len() as u32;
        let msgs = self.msgs.as_mut_ptr();
        // SAFETY: every mmsghdr points to an iovec and control buffer owned by self,
        // sized as declared; the kernel writes at most those lengths.
        let r = syscall!(unsafe { libc::recvmmsg(fd.as_raw_fd(), msgs, n, libc::MSG_DONTWAIT, std::ptr::null_mut()) });
        let got = match r {
            Ok(k) => k as usize,
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
