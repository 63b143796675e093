//! Where a reader thread runs and how eagerly: its CPU and nice value
//! ([`Placement`]), and its scheduling class while it carries bulk frames
//! ([`Class`]).

use super::pace::ACTIVE_FRAMES;
use crate::sys;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// A reader thread whose frames in a window averaged at least this many
/// bytes (and were at least [`ACTIVE_FRAMES`]) carries bulk traffic: the
/// GSO super-frames of TCP streams. Above any MTU a pod uses.
const BULK_FRAME_BYTES: u64 = 16 * 1024;

/// Where and how eagerly a reader thread runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Placement {
    /// Pin the thread to this CPU.
    pub(super) cpu: Option<usize>,
    /// Scheduling priority (nice, -20..=19) of the thread.
    pub(super) nice: Option<i32>,
}

impl Placement {
    /// Applies the placement to the calling thread.
    fn apply(&self) -> io::Result<()> {
        if let Some(cpu) = self.cpu {
            pin_to(cpu)?;
        }
        if let Some(nice) = self.nice {
            // On Linux a thread id names one thread for get/setpriority. Asking for
            // the nice value the thread already has (inherited from a unit's Nice=)
            // would still need CAP_SYS_NICE, so it is not asked for.
            let tid = Some(rustix::thread::gettid());
            if rustix::process::getpriority_process(tid)? > nice {
                rustix::process::setpriority_process(tid, nice)?;
            }
        }
        Ok(())
    }

    /// Applies the placement, warning (once per process) if refused.
    pub(super) fn apply_or_warn(&self, port: &str) {
        if let Err(e) = self.apply() {
            // Once per process: the same refusal would repeat for every reader.
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(port, cpu = ?self.cpu, nice = ?self.nice, error = %e,
                    "reader placement refused (CPU pinning or nice needs CAP_SYS_NICE below the process's nice); readers run unplaced");
            } else {
                tracing::debug!(port, error = %e, "reader placement refused");
            }
        }
    }
}

/// Lets the calling thread run on `cpu` only.
pub(super) fn pin_to(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    Ok(rustix::thread::sched_setaffinity(None, &set)?)
}

/// A reader thread's scheduling class: SCHED_BATCH while it carries bulk
/// frames (same nice, no preemption of the TCP stream's own processes on
/// every wake-up), SCHED_OTHER for small frames, where preempting is the
/// point; a daemon started in another class (`chrt`) keeps it
/// (docs/architecture.md, "Reader threads").
#[derive(Debug, Clone, Copy)]
pub(super) struct Class {
    /// The thread runs SCHED_BATCH.
    batch: bool,
    /// The thread's class is ours to change: it started in SCHED_OTHER, and
    /// no change has been refused.
    managed: bool,
}

impl Class {
    /// The calling thread's class, as it starts.
    pub(super) fn of_this_thread() -> Class {
        Class { batch: false, managed: sys::normal() }
    }

    /// The class to switch to after a window in which the thread forwarded
    /// `frames` frames of `bytes` bytes, if it changes.
    fn next(&self, frames: u64, bytes: u64) -> Option<bool> {
        let bulk = frames >= ACTIVE_FRAMES && bytes >= frames.saturating_mul(BULK_FRAME_BYTES);
        (self.managed && bulk != self.batch).then_some(bulk)
    }

    /// Ends a window: switches the calling thread's class if [`next`](Class::next) says so.
    /// A thread about to sleep until its next frame ends one with nothing,
    /// so that frame wakes it in the normal class, not in a bulk class left
    /// behind by a stream that has ended.
    pub(super) fn window(&mut self, frames: u64, bytes: u64, thread: &str) {
        let Some(batch) = self.next(frames, bytes) else { return };
        match sys::set_batch(batch) {
            Ok(()) => {
                self.batch = batch;
                tracing::debug!(
                    thread,
                    batch,
                    frames,
                    bytes,
                    "reader class changed (SCHED_BATCH while its frames are bulk)"
                );
            }
            Err(e) => {
                self.managed = false;
                tracing::debug!(thread, error = %e, "reader class change refused; it keeps its class");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_of_super_frames_makes_the_thread_batch_and_a_window_of_small_frames_ends_it() {
        let mut c = Class { batch: false, managed: true };
        // A TCP stream's window: some 400 GSO super-frames of 64 KiB, a few smaller.
        assert_eq!(c.next(400, 380 * 65_226 + 20 * 1_514), Some(true));
        c.batch = true;
        assert_eq!(c.next(400, 380 * 65_226 + 20 * 1_514), None, "already batch: no change");
        // Then pings, a flood of 64-byte frames, the stream's ACKs, or nothing.
        for (frames, bytes) in [(10, 980), (9_000, 9_000 * 64), (4_000, 4_000 * 66), (0, 0)] {
            assert_eq!(c.next(frames, bytes), Some(false), "{frames} frames of {bytes} bytes");
        }
    }

    #[test]
    fn small_frames_full_size_frames_or_a_few_big_ones_keep_the_normal_class() {
        let c = Class { batch: false, managed: true };
        let windows = [
            (9_000, 9_000 * 64),              // a 64-byte flood
            (2_000, 2_000 * 1_514),           // full-size frames without offloads
            (2_000, 2_000 * 9_014),           // jumbo frames
            (ACTIVE_FRAMES - 1, 15 * 65_226), // a few super-frames
            (0, 0),
        ];
        for (frames, bytes) in windows {
            assert_eq!(c.next(frames, bytes), None, "{frames} frames of {bytes} bytes");
        }
        // Exactly at the bounds it is bulk.
        assert_eq!(c.next(ACTIVE_FRAMES, ACTIVE_FRAMES * BULK_FRAME_BYTES), Some(true));
    }

    #[test]
    fn a_thread_whose_class_is_not_ours_is_never_changed() {
        // Started under chrt (SCHED_FIFO, SCHED_BATCH), or a change was refused.
        let c = Class { batch: false, managed: false };
        assert_eq!(c.next(400, 400 * 65_226), None);
    }
}
