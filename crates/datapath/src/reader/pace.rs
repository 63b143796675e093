//! When a reader thread waits, ends a window, looks after its port, and
//! follows its frames to another CPU: the loop's decisions as pure state,
//! driven by the loop with its clock (and by the tests with theirs).
//! docs/architecture.md ("Reader threads") says why each bound is what it is.

use std::time::{Duration, Instant};

/// How often a busy or down port is looked at (kernel drops, link state);
/// an idle port that is up is looked at once after its last frame, then
/// its reader sleeps until a frame wakes it.
pub(super) const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The window over which the port's thread judges how busy it is.
pub(super) const WINDOW: Duration = Duration::from_millis(20);
/// Busy: the thread slept less than a quarter of the window.
pub(super) const BUSY_SLEEP_MAX: Duration = Duration::from_millis(5);
/// A member with this many frames in a window gets a helper even when the
/// thread is not busy (a steady stream from another CPU).
pub(super) const ACTIVE_FRAMES: u64 = 16;
/// While busy, how many batches between looks for other readable members.
pub(super) const PEEK_EVERY: u32 = 8;
/// A helper that has seen no frame for this long gives its member back.
pub(super) const HELPER_IDLE: Duration = Duration::from_secs(1);
/// Wake-ups in a row for frames from another CPU before the thread moves there.
pub(super) const FOLLOW_AFTER: u32 = 2;

/// How a reader waits after a pass over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Receive again at once.
    No,
    /// A look without waiting for other readable members (a busy thread).
    Peek,
    /// At most until the next housekeeping.
    Housekeeping,
    /// Until a frame, an error or a stop: nothing else is due.
    UntilFrame,
}

impl Wait {
    /// The poll timeout: `None` for no poll at all, `Some(None)` for none.
    pub(super) fn timeout(self) -> Option<Option<Duration>> {
        match self {
            Wait::No => None,
            Wait::Peek => Some(Some(Duration::ZERO)),
            Wait::Housekeeping => Some(Some(HOUSEKEEPING)),
            Wait::UntilFrame => Some(None),
        }
    }
}

/// A window that ended: whether the thread was busy in it, and the bytes it forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    pub busy: bool,
    pub bytes: u64,
}

/// The loop's clock-driven state.
#[derive(Debug)]
pub(super) struct Pace {
    housekept: Instant,
    last_frame: Instant,
    window_start: Instant,
    /// Slept in the current window.
    slept: Duration,
    /// Bytes forwarded in the current window.
    bytes: u64,
    /// Frames came since the port was last looked at.
    unchecked: bool,
    spins: u32,
    /// The last wait slept (nothing was ready before it).
    woke: bool,
    /// A member asked to be ticked again (`PortRx::tick`).
    ticking: bool,
}

impl Pace {
    pub(super) fn new(now: Instant) -> Pace {
        Pace {
            housekept: now,
            last_frame: now,
            window_start: now,
            slept: Duration::ZERO,
            bytes: 0,
            unchecked: true,
            spins: 0,
            woke: false,
            ticking: false,
        }
    }

    /// A pass over the members ended at `now`, having forwarded `bytes` if
    /// `got` frames. True when the thread woke from a sleep for them: time
    /// to see whether it follows them to their CPU.
    pub(super) fn passed(&mut self, got: bool, bytes: u64, now: Instant) -> bool {
        if got {
            self.unchecked = true;
            self.last_frame = now;
            self.bytes += bytes;
        }
        std::mem::take(&mut self.woke) && got
    }

    /// How to wait after that pass: the thread waits on descriptors
    /// (`waits`), holds more than one member (`several`), is a helper, and
    /// its port is up (`up`). The last two are asked only when they matter:
    /// they cost a look at the port table, and this runs after every pass.
    pub(super) fn wait(
        &mut self,
        got: bool,
        waits: bool,
        several: impl FnOnce() -> bool,
        helper: bool,
        up: impl FnOnce() -> bool,
    ) -> Wait {
        if !waits {
            return Wait::No;
        }
        if got {
            self.spins = self.spins.wrapping_add(1);
            let peek = self.spins.is_multiple_of(PEEK_EVERY) && several();
            return if peek { Wait::Peek } else { Wait::No };
        }
        if helper || self.unchecked || self.ticking || !up() { Wait::Housekeeping } else { Wait::UntilFrame }
    }

    /// A wait that began at `before` ended at `after`; it slept when the
    /// pass before it found nothing.
    pub(super) fn waited(&mut self, got: bool, before: Instant, after: Instant) {
        if !got {
            self.slept += after.saturating_duration_since(before);
            self.woke = true;
        }
    }

    /// A helper whose member has been quiet so long gives it back.
    pub(super) fn helper_idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_frame) >= HELPER_IDLE
    }

    /// The window, if it has ended at `now` (a new one starts).
    pub(super) fn window_end(&mut self, now: Instant) -> Option<Window> {
        if now.saturating_duration_since(self.window_start) < WINDOW {
            return None;
        }
        let w = Window { busy: self.slept < BUSY_SLEEP_MAX, bytes: self.bytes };
        (self.window_start, self.slept, self.bytes) = (now, Duration::ZERO, 0);
        Some(w)
    }

    /// Whether a member asked to be ticked at least once a second.
    pub(super) fn ticking(&mut self, on: bool) {
        self.ticking = on;
    }

    /// Whether the port is due a look at `now` (kernel drops, link state).
    pub(super) fn housekeeping(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.housekept) < HOUSEKEEPING {
            return false;
        }
        (self.housekept, self.unchecked) = (now, false);
        true
    }
}

/// Between windows, when to move an idle port's thread to the CPU its
/// frames now come from: after [`FOLLOW_AFTER`] wake-ups in a row, each
/// for frames of one member on that CPU, and at most once a [`WINDOW`], so
/// frames arriving from two CPUs by turns cannot make it move back and forth
/// on every wake-up (a move costs a migration, some 60 µs).
#[derive(Debug, Default)]
pub(super) struct Follow {
    /// The CPU the last wake-ups came from, and how many in a row.
    cpu: Option<usize>,
    wakes: u32,
    moved: Option<Instant>,
}

impl Follow {
    /// The thread (pinned to `pinned`) woke from a sleep and the frames it
    /// found came from `from` alone (`None`: from several members, or from
    /// one of no known CPU). Returns the CPU to move to, if it is time.
    pub(super) fn woke(&mut self, pinned: Option<usize>, from: Option<usize>, now: Instant) -> Option<usize> {
        let Some(cpu) = from.filter(|&c| Some(c) != pinned) else {
            self.wakes = 0;
            return None;
        };
        if self.cpu != Some(cpu) {
            (self.cpu, self.wakes) = (Some(cpu), 0);
        }
        self.wakes += 1;
        if self.wakes < FOLLOW_AFTER || self.moved.is_some_and(|t| now.duration_since(t) < WINDOW) {
            return None;
        }
        (self.wakes, self.moved) = (0, Some(now));
        Some(cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn an_idle_port_that_was_looked_at_sleeps_until_a_frame() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        // Frames came: the port is looked at once more before the thread sleeps for good.
        assert!(!p.passed(true, 64, ms(t0, 1)));
        assert_eq!(p.wait(false, true, || false, false, || true), Wait::Housekeeping);
        assert!(!p.housekeeping(ms(t0, 999)));
        assert!(p.housekeeping(ms(t0, 1001)));
        assert_eq!(p.wait(false, true, || false, false, || true), Wait::UntilFrame);
        // But not while its link is down, a member ticks, or for a helper.
        assert_eq!(p.wait(false, true, || false, false, || false), Wait::Housekeeping);
        assert_eq!(p.wait(false, true, || false, true, || true), Wait::Housekeeping);
        p.ticking(true);
        assert_eq!(p.wait(false, true, || false, false, || true), Wait::Housekeeping);
        // A member that receives without a descriptor is never waited for.
        assert_eq!(p.wait(false, false, || false, false, || true), Wait::No);
    }

    #[test]
    fn a_busy_thread_with_several_members_peeks_every_eighth_batch() {
        let mut p = Pace::new(Instant::now());
        let waits: Vec<Wait> = (0..16).map(|_| p.wait(true, true, || true, false, || true)).collect();
        let peeks: Vec<usize> = waits.iter().enumerate().filter(|(_, w)| **w == Wait::Peek).map(|(i, _)| i).collect();
        assert_eq!(peeks, [7, 15]);
        assert!((0..16).all(|_| p.wait(true, true, || false, false, || true) == Wait::No), "one member: never");
    }

    #[test]
    fn a_window_is_busy_when_the_thread_slept_under_a_quarter_of_it() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.passed(true, 1000, ms(t0, 1));
        p.waited(false, ms(t0, 2), ms(t0, 6));
        assert_eq!(p.window_end(ms(t0, 19)), None, "not over yet");
        assert_eq!(p.window_end(ms(t0, 20)), Some(Window { busy: true, bytes: 1000 }));
        p.waited(false, ms(t0, 21), ms(t0, 31));
        assert_eq!(p.window_end(ms(t0, 40)), Some(Window { busy: false, bytes: 0 }), "slept 10 of 20 ms");
        // A wait after a pass that found frames is a peek, not sleep.
        p.waited(true, ms(t0, 41), ms(t0, 59));
        assert_eq!(p.window_end(ms(t0, 60)).map(|w| w.busy), Some(true));
    }

    #[test]
    fn waking_from_sleep_for_frames_is_when_the_thread_may_follow_them() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        assert!(!p.passed(true, 64, ms(t0, 1)), "no sleep before");
        p.waited(false, ms(t0, 1), ms(t0, 3));
        assert!(p.passed(true, 64, ms(t0, 3)), "woke for frames");
        p.waited(false, ms(t0, 3), ms(t0, 5));
        assert!(!p.passed(false, 0, ms(t0, 5)), "woke for nothing (a timeout)");
    }

    #[test]
    fn a_helper_gives_its_member_back_after_a_quiet_second() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.passed(true, 64, ms(t0, 10));
        assert!(!p.helper_idle(ms(t0, 1009)));
        assert!(p.helper_idle(ms(t0, 1010)));
    }

    /// Wake-ups 2 ms apart, as a ping every 2 ms makes them.
    fn wakes(f: &mut Follow, pinned: &mut Option<usize>, t0: Instant, from: &[Option<usize>]) -> Vec<Option<usize>> {
        from.iter()
            .enumerate()
            .map(|(i, &cpu)| {
                let to = f.woke(*pinned, cpu, t0 + Duration::from_millis(2 * i as u64));
                if to.is_some() {
                    *pinned = to;
                }
                to
            })
            .collect()
    }

    #[test]
    fn an_idle_thread_follows_its_frames_to_another_cpu_on_the_second_wake_up() {
        let (mut f, mut pinned, t0) = (Follow::default(), Some(0), Instant::now());
        let moves = wakes(&mut f, &mut pinned, t0, &[Some(0), Some(1), Some(1), Some(1)]);
        assert_eq!(moves, [None, None, Some(1), None]);
        assert_eq!(pinned, Some(1));
    }

    #[test]
    fn one_stray_frame_or_frames_from_several_members_do_not_move_it() {
        let (mut f, mut pinned, t0) = (Follow::default(), Some(0), Instant::now());
        let moves = wakes(&mut f, &mut pinned, t0, &[Some(1), Some(0), Some(1), None, Some(1), Some(0), None]);
        assert_eq!(moves, [None; 7]);
        // A member of no known CPU never moves it either.
        let moves = wakes(&mut f, &mut pinned, t0 + Duration::from_secs(1), &[None, None, None]);
        assert_eq!(moves, [None; 3]);
        assert_eq!(pinned, Some(0));
    }

    #[test]
    fn it_moves_at_most_once_a_window_when_frames_come_from_two_cpus_by_turns() {
        let (mut f, mut pinned, t0) = (Follow::default(), Some(0), Instant::now());
        // Runs of two wake-ups from each CPU by turns, 2 ms apart: 40 wake-ups in 80 ms.
        let from: Vec<_> = (0..40).map(|i| Some(1 - (i / 2) % 2)).collect();
        let moves = wakes(&mut f, &mut pinned, t0, &from);
        let at: Vec<_> = moves.iter().enumerate().filter(|(_, m)| m.is_some()).map(|(i, _)| i).collect();
        assert!(!at.is_empty(), "it follows at all");
        for w in at.windows(2) {
            let gap = Duration::from_millis(2 * (w[1] - w[0]) as u64);
            assert!(gap >= WINDOW, "moves at wake-ups {at:?}: two within {gap:?}");
        }
        assert!(at.len() <= 4, "moves at wake-ups {at:?}");
    }
}
