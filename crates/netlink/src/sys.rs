//! The only unsafe code of this crate: namespace syscalls.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Moves the calling thread into the network namespace `fd`.
pub fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only reads the fd, which the borrow keeps open.
    cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// Gives the calling thread a new, empty network namespace.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: no pointers; affects only the calling thread's namespace.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(drop)
}

/// `mount --bind src dst`.
pub fn bind_mount(src: &str, dst: &str) -> io::Result<()> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    // SAFETY: both strings are NUL-terminated and outlive the call; fstype and data may be null for MS_BIND.
    cvt(unsafe { libc::mount(s.as_ptr(), d.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) }).map(drop)
}

/// `mount --make-rshared path`: mounts made below it propagate to every
/// mount namespace that shares it (as iproute2 makes /run/netns).
pub fn make_rshared(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: p is NUL-terminated and outlives the call; source, fstype and data may be null here.
    cvt(unsafe {
        libc::mount(std::ptr::null(), p.as_ptr(), std::ptr::null(), libc::MS_SHARED | libc::MS_REC, std::ptr::null())
    })
    .map(drop)
}

/// `mount --rbind path path`: makes `path` a mount point of its own,
/// carrying the mounts below it.
pub fn rbind_self(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: p is NUL-terminated and outlives the call; fstype and data may be null for MS_BIND.
    cvt(unsafe {
        libc::mount(p.as_ptr(), p.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null())
    })
    .map(drop)
}

/// `umount -l path`.
pub fn umount_detach(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: p is NUL-terminated and outlives the call.
    cvt(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Sets SO_RCVTIMEO so a blocking receive returns (EAGAIN) after `t`.
pub fn set_recv_timeout(fd: BorrowedFd<'_>, t: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(t.subsec_micros()),
    };
    // SAFETY: tv is a live timeval and the length matches it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            socklen_of::<libc::timeval>(),
        )
    })
    .map(drop)
}

/// The size of C struct `T`, as the socket calls take it.
#[allow(clippy::cast_possible_truncation, reason = "a C struct's size is far below 4 GiB")]
const fn socklen_of<T>() -> libc::socklen_t {
    std::mem::size_of::<T>() as libc::socklen_t
}
