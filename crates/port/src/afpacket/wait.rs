//! Where a busy-slots half's sockets wait: in the reader's own epoll set
//! (through the [`Waiter`] the reader gave), or, while no reader holds the
//! half or before the half has taken a new ring, in the half's wait set,
//! an epoll descriptor of its own that the reader registers. A frame on a
//! socket in the reader's set wakes it directly; through the wait set it
//! takes a second epoll level, 2-4% more CPU per frame (docs/benchmarks-history.md).

use crate::Waiter;
use rustix::event::epoll;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A new wait set holding `fd`: it becomes readable when any socket it
/// holds does.
pub(super) fn wait_set(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    wait_set_add(ep.as_fd(), fd)?;
    Ok(ep)
}

/// Adds `fd` to the wait set `ep`, edge-triggered as the reader's own
/// epoll is (a closed socket leaves it by itself).
pub(super) fn wait_set_add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = epoll::EventFlags::IN | epoll::EventFlags::ET;
    Ok(epoll::add(ep, fd, epoll::EventData::new_u64(0), flags)?)
}

/// Moves `fd` from the wait set `wait` into `reader`'s set under the
/// half's token (added there first, so no frame goes unsignalled); true
/// if it is there now. With no reader, or if the reader's set refuses it,
/// it stays in the wait set, which wakes the reader too.
pub(super) fn into_reader(wait: &OwnedFd, reader: Option<&Waiter>, fd: BorrowedFd<'_>) -> bool {
    let Some(w) = reader else { return false };
    let moved = w.add(fd).is_ok();
    if moved {
        let _ = epoll::delete(wait.as_fd(), fd);
    }
    moved
}

/// Moves `fd` back from `reader`'s set into the wait set `wait` (added
/// there first).
pub(super) fn out_of_reader(wait: &OwnedFd, reader: Option<&Waiter>, fd: BorrowedFd<'_>) {
    let _ = wait_set_add(wait.as_fd(), fd);
    if let Some(w) = reader {
        let _ = w.remove(fd);
    }
}
