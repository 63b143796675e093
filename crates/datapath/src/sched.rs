//! The only unsafe code of this crate: a reader thread's scheduling class
//! (rustix has no `sched_setscheduler`).
#![allow(unsafe_code)]

use std::io;

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
