//! The tun device: a TAP interface with a vnet header, read and written per frame.

use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Opens `/dev/net/tun` as a TAP interface `name` with IFF_NO_PI and
/// IFF_VNET_HDR (and IFF_MULTI_QUEUE with `multi_queue`: each call then
/// opens one more queue of the same interface), and enables checksum and TSO
/// offloads. Returns the fd (non-blocking, close-on-exec) and the name the
/// kernel gave it.
pub fn tun_open_tap(name: &str, multi_queue: bool) -> io::Result<(OwnedFd, String)> {
    let flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the path is a NUL-terminated literal.
    let fd = syscall!(unsafe { libc::open(c"/dev/net/tun".as_ptr(), flags) })?;
    // SAFETY: fd was just returned by open() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = libc::c_char::from_ne_bytes([s]);
    }
    let mq = if multi_queue { libc::IFF_MULTI_QUEUE } else { 0 };
    ifr.ifr_ifru.ifru_flags = libc::c_short::try_from(libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | mq)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: TUNSETIFF reads and writes an ifreq, which ifr is.
    syscall!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) })?;
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes an unsigned long by value.
    syscall!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offloads as libc::c_ulong) })?;
    let actual: Vec<u8> = ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c.to_ne_bytes()[0]).collect();
    Ok((fd, String::from_utf8_lossy(&actual).into_owned()))
}

/// Makes the TAP interface of `fd` persistent (it stays when its last queue
/// closes, without carrier, until deleted) or not.
pub fn tun_set_persist(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes an int by value.
    syscall!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, libc::c_ulong::from(on)) }).map(drop)
}

/// read(2) into `buf`; `Ok(None)` when nothing is ready.
pub fn read_nb(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: buf is a live, writable slice of the length given.
    match syscall!(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }) {
        Ok(n) => Ok(Some(super::count(n))),
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
    let n = libc::c_int::try_from(parts.len().min(4)).unwrap_or(4);
    // SAFETY: the iovecs point into the caller's slices, which outlive the call.
    syscall!(unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), n) }).map(super::count)
}
