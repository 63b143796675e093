//! The only unsafe code of this crate: a reader thread's scheduling class
//! (rustix has no `sched_setscheduler`), and a duplicate of a `mio::Poll`'s
//! epoll descriptor (mio gives only its number).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// A new descriptor for `poll`'s epoll set (close-on-exec).
pub(crate) fn dup_poll(poll: &mio::Poll) -> io::Result<OwnedFd> {
    // SAFETY: the number is `poll`'s own epoll descriptor, open for as long
    // as `poll`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(poll.as_raw_fd()) };
    fd.try_clone_to_owned()
}

/// Whether the calling thread runs in the normal class, SCHED_OTHER. A
/// reader changes its class only from there: a daemon started under `chrt`
/// keeps the class it was given.
pub(crate) fn normal() -> bool {
    // SAFETY: no pointers; pid 0 is the calling thread.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_OTHER }
}

/// Puts the calling thread in SCHED_BATCH (`true`) or back in SCHED_OTHER.
/// Its nice value stays: `sched_setscheduler` keeps it for these classes,
/// so no privilege is needed.
pub(crate) fn set_batch(on: bool) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if on { libc::SCHED_BATCH } else { libc::SCHED_OTHER };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
