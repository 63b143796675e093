//! When a busy-slots port takes RX rings and gives them back: pure logic
//! over the halves' frame counts and an injected clock.

use std::time::{Duration, Instant};

/// A port with rings gives them back once it has stayed under a fifth of
/// `--busy-pps` for this long.
pub const QUIET_FOR: Duration = Duration::from_secs(2);
/// The shortest span a rate is taken over.
pub const LOOK: Duration = Duration::from_millis(50);
/// After the program picks the sockets again, how long before the rings
/// are closed: a frame that saw the old program has long been written by
/// then (the kernel swaps the program under RCU, in microseconds).
pub const GRACE: Duration = Duration::from_millis(20);
/// After rings could not be set up (no memory), how long before trying again.
pub const RETRY: Duration = Duration::from_secs(10);
/// A ring is sized to hold this long of the rate that made its port busy,
/// in powers of two of slots, at most `--ring-slots` (docs/benchmarks.md,
/// "Receive modes").
pub const HOLD: Duration = Duration::from_millis(100);
/// The fewest slots a ring is given (2 MiB).
pub const MIN_SLOTS: usize = 1024;

/// Slots for a ring that is to hold [`HOLD`] of `pps` frames a second: a
/// power of two from [`MIN_SLOTS`] to `max` (or `max`, if it is smaller).
pub fn slots_for(pps: u64, max: usize) -> usize {
    let want = usize::try_from(u128::from(pps) * HOLD.as_millis() / 1000).unwrap_or(usize::MAX);
    want.checked_next_power_of_two().unwrap_or(usize::MAX).clamp(MIN_SLOTS.min(max), max)
}

/// Where a port's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// To the halves' sockets; a half still holding a ring reads it empty
    /// first, then closes it.
    Sockets = 0,
    /// To the rings; a half reads what is left on its socket first.
    Slots = 1,
    /// To the sockets again, but a frame may still be on its way into a
    /// ring: halves read their rings first and keep them.
    Leaving = 2,
}

impl Phase {
    pub(super) fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Slots,
            2 => Phase::Leaving,
            _ => Phase::Sockets,
        }
    }
}

/// What the port does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Stay,
    /// Set up rings of this many slots and steer frames to them.
    Attach(usize),
    /// Steer frames back to the sockets: the port is quiet, or (`outgrown`)
    /// its rings hold less than a quarter of [`HOLD`] at its rate now and
    /// will be set up again, larger, once they are closed.
    Detach {
        outgrown: bool,
    },
    /// The grace period is over: halves may close their rings.
    Free,
}

/// Frames a port's halves have received in all: those a 2 KiB slot holds
/// whole (`fit`), which a ring takes for less CPU than `recvmmsg`, and the
/// rest (`big`: GSO super-frames, jumbo frames), for which a ring only adds
/// a slot and a copy of the frame's head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub fit: u64,
    pub big: u64,
}

/// When a port takes rings and gives them back: from its frame counts and
/// the time, both given (no clock of its own). The rate it goes by is the
/// frames a slot holds less those it does not, per second: a port whose
/// frames are mostly super-frames stays on `recvmmsg` however many small
/// ones come with them.
#[derive(Debug)]
pub struct Policy {
    busy_pps: u64,
    max_slots: usize,
    /// Slots of the rings the port holds or is setting up.
    slots: usize,
    last: Option<(Instant, Counted)>,
    phase: Option<Phase>,
    quiet_since: Option<Instant>,
    left_at: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Policy {
    /// Rings from `busy_pps` frames per second, given back under a fifth of
    /// it; of at most `max_slots` slots.
    pub fn new(busy_pps: u64, max_slots: usize) -> Policy {
        Policy {
            busy_pps,
            max_slots,
            slots: 0,
            last: None,
            phase: None,
            quiet_since: None,
            left_at: None,
            retry_at: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or(Phase::Sockets)
    }

    /// Looks at the port at `now`, when its halves have received `frames`
    /// in all and `held` of them still hold a ring.
    pub fn look(&mut self, now: Instant, frames: Counted, held: usize) -> Step {
        let Some((t0, f0)) = self.last else {
            self.last = Some((now, frames));
            return Step::Stay;
        };
        let span = now.saturating_duration_since(t0);
        if self.phase() == Phase::Leaving {
            let over = self.left_at.is_some_and(|t| now.saturating_duration_since(t) >= GRACE);
            return if over { Step::Free } else { Step::Stay };
        }
        if span < LOOK {
            return Step::Stay;
        }
        self.last = Some((now, frames));
        let ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(1);
        let net = frames.fit.saturating_sub(f0.fit).saturating_sub(frames.big.saturating_sub(f0.big));
        let rate = net.saturating_mul(1000) / ms;
        match self.phase() {
            Phase::Sockets => {
                let may = held == 0 && self.retry_at.is_none_or(|t| now >= t);
                if rate >= self.busy_pps && may {
                    self.slots = slots_for(rate, self.max_slots);
                    Step::Attach(self.slots)
                } else {
                    Step::Stay
                }
            }
            Phase::Slots if rate < self.busy_pps / 5 => {
                let since = *self.quiet_since.get_or_insert(now);
                let quiet = now.saturating_duration_since(since) >= QUIET_FOR;
                if quiet { Step::Detach { outgrown: false } } else { Step::Stay }
            }
            Phase::Slots => {
                self.quiet_since = None;
                let outgrown = self.slots < self.max_slots && slots_for(rate, self.max_slots) >= 4 * self.slots;
                if outgrown { Step::Detach { outgrown: true } } else { Step::Stay }
            }
            Phase::Leaving => Step::Stay,
        }
    }

    /// The outcome of a step the port took at `now`.
    pub fn took(&mut self, step: Step, ok: bool, now: Instant) {
        match (step, ok) {
            (Step::Attach(_), true) => {
                self.phase = Some(Phase::Slots);
                self.quiet_since = None;
                self.retry_at = None;
            }
            (Step::Attach(_), false) => self.retry_at = Some(now + RETRY),
            (Step::Detach { .. }, _) => {
                // Even if steering back failed, the rings keep being read; go on.
                self.phase = Some(Phase::Leaving);
                self.left_at = Some(now);
            }
            (Step::Free, _) => {
                self.phase = Some(Phase::Sockets);
                self.last = None;
            }
            (Step::Stay, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// `n` frames in all, every one of which a slot holds.
    fn fit(n: u64) -> Counted {
        Counted { fit: n, big: 0 }
    }

    #[test]
    fn a_busy_port_takes_rings_and_gives_them_back_when_quiet() {
        let t0 = Instant::now();
        let mut p = Policy::new(100_000, 16_384);
        assert_eq!(p.look(t0, fit(0), 0), Step::Stay, "the first look only counts");
        // 1000 frames in 100 ms: 10 k/s, not busy.
        assert_eq!(p.look(at(t0, 100), fit(1000), 0), Step::Stay);
        // Too short a span to judge: waits for LOOK.
        assert_eq!(p.look(at(t0, 110), fit(100_000), 0), Step::Stay);
        // 50 000 frames in 100 ms: 500 k/s.
        assert_eq!(p.look(at(t0, 200), fit(51_000), 0), Step::Attach(16_384));
        p.took(Step::Attach(16_384), true, at(t0, 200));
        assert_eq!(p.phase(), Phase::Slots);
        // Still busy, then quiet: rings are kept for QUIET_FOR.
        assert_eq!(p.look(at(t0, 300), fit(101_000), 2), Step::Stay);
        assert_eq!(p.look(at(t0, 1300), fit(101_000), 2), Step::Stay, "quiet from here");
        assert_eq!(p.look(at(t0, 2300), fit(101_100), 2), Step::Stay);
        assert_eq!(p.look(at(t0, 3300), fit(101_100), 2), Step::Detach { outgrown: false }, "quiet for 2 s");
        p.took(Step::Detach { outgrown: false }, true, at(t0, 3300));
        assert_eq!(p.phase(), Phase::Leaving);
        assert_eq!(p.look(at(t0, 3310), fit(101_100), 2), Step::Stay, "within the grace period");
        assert_eq!(p.look(at(t0, 3320), fit(101_100), 2), Step::Free);
        p.took(Step::Free, true, at(t0, 3320));
        assert_eq!(p.phase(), Phase::Sockets);
        assert_eq!(p.look(at(t0, 3320), fit(101_100), 2), Step::Stay, "counting starts afresh");
        // Busy again while a half still holds its ring: not until it has closed it.
        assert_eq!(p.look(at(t0, 3420), fit(201_100), 1), Step::Stay);
        assert_eq!(p.look(at(t0, 3520), fit(301_100), 0), Step::Attach(16_384));
    }

    #[test]
    fn a_burst_between_quiet_spells_keeps_the_rings() {
        let t0 = Instant::now();
        let mut p = Policy::new(100_000, 16_384);
        p.look(t0, fit(0), 0);
        assert_eq!(p.look(at(t0, 100), fit(50_000), 0), Step::Attach(16_384));
        p.took(Step::Attach(16_384), true, at(t0, 100));
        // Half the rate that took them (above a fifth of it) keeps them, however long.
        for k in 1..=10 {
            assert_eq!(p.look(at(t0, 100 + k * 500), fit(50_000 + k * 25_000), 2), Step::Stay, "50 k/s");
        }
        let t0 = t0 + Duration::from_secs(5);
        assert_eq!(p.look(at(t0, 1100), fit(300_000), 2), Step::Stay, "quiet");
        assert_eq!(p.look(at(t0, 2000), fit(400_000), 2), Step::Stay, "busy again: the quiet spell restarts");
        assert_eq!(p.look(at(t0, 3100), fit(400_000), 2), Step::Stay, "quiet for 1.1 s");
        assert_eq!(p.look(at(t0, 5100), fit(400_000), 2), Step::Detach { outgrown: false }, "quiet for 3.1 s");
    }

    #[test]
    fn rings_that_could_not_be_set_up_are_tried_again_later() {
        let t0 = Instant::now();
        let mut p = Policy::new(100_000, 16_384);
        p.look(t0, fit(0), 0);
        assert_eq!(p.look(at(t0, 100), fit(50_000), 0), Step::Attach(16_384));
        p.took(Step::Attach(16_384), false, at(t0, 100));
        assert_eq!(p.phase(), Phase::Sockets);
        assert_eq!(p.look(at(t0, 200), fit(100_000), 0), Step::Stay, "within RETRY");
        let later = 100 + u64::try_from(RETRY.as_millis()).unwrap();
        assert_eq!(p.look(at(t0, later), fit(100_000 + later * 500), 0), Step::Attach(16_384));
    }

    #[test]
    fn frames_too_big_for_a_slot_offset_those_it_holds() {
        let t0 = Instant::now();
        let mut p = Policy::new(20_000, 16_384);
        p.look(t0, Counted::default(), 0);
        // A TCP stream's data port: 25 k small tail frames/s with 50 k super-frames/s.
        let tcp = |ms: u64| Counted { fit: ms * 25, big: ms * 50 };
        for k in 1..=10 {
            assert_eq!(p.look(at(t0, k * 100), tcp(k * 100), 0), Step::Stay, "mostly super-frames");
        }
        // 64-byte frames at 50 k/s with 10 k super-frames/s: 40 k/s net.
        let c = tcp(1000);
        let mixed = Counted { fit: c.fit + 5000, big: c.big + 1000 };
        assert_eq!(p.look(at(t0, 1100), mixed, 0), Step::Attach(4096));
        p.took(Step::Attach(4096), true, at(t0, 1100));
        // Then super-frames alone, at any rate: quiet.
        let later = |ms: u64| Counted { fit: mixed.fit, big: mixed.big + ms * 50 };
        assert_eq!(p.look(at(t0, 1200), later(100), 2), Step::Stay, "quiet from here");
        assert_eq!(p.look(at(t0, 3200), later(2100), 2), Step::Detach { outgrown: false }, "quiet for 2 s");
    }

    #[test]
    fn a_ring_holds_a_tenth_of_a_second_of_the_rate_in_powers_of_two() {
        assert_eq!(slots_for(0, 16_384), MIN_SLOTS);
        assert_eq!(slots_for(20_000, 16_384), 2048);
        assert_eq!(slots_for(40_000, 16_384), 4096);
        assert_eq!(slots_for(41_000, 16_384), 8192);
        assert_eq!(slots_for(450_000, 16_384), 16_384, "at most --ring-slots");
        assert_eq!(slots_for(40_000, 256), 256, "--ring-slots under MIN_SLOTS");
        assert_eq!(slots_for(u64::MAX, 65_536), 65_536);
    }

    #[test]
    fn a_port_that_outgrows_its_rings_gives_them_back_and_takes_larger_ones() {
        let t0 = Instant::now();
        let mut p = Policy::new(20_000, 16_384);
        p.look(t0, fit(0), 0);
        // 40 k/s: 4096 slots.
        let s1 = p.look(at(t0, 100), fit(4000), 0);
        assert_eq!(s1, Step::Attach(4096));
        p.took(s1, true, at(t0, 100));
        // Twice that still fits (50 ms held at 80 k/s).
        assert_eq!(p.look(at(t0, 200), fit(12_000), 2), Step::Stay, "80 k/s");
        // 450 k/s: the ring would hold 9 ms.
        let s2 = p.look(at(t0, 300), fit(57_000), 2);
        assert_eq!(s2, Step::Detach { outgrown: true });
        p.took(s2, true, at(t0, 300));
        assert_eq!(p.look(at(t0, 320), fit(66_000), 2), Step::Free);
        p.took(Step::Free, true, at(t0, 320));
        assert_eq!(p.look(at(t0, 320), fit(66_000), 0), Step::Stay, "counting starts afresh");
        assert_eq!(p.look(at(t0, 420), fit(111_000), 0), Step::Attach(16_384));
        p.took(Step::Attach(16_384), true, at(t0, 420));
        // At --ring-slots already: kept at any rate.
        assert_eq!(p.look(at(t0, 520), fit(211_000), 2), Step::Stay, "1 M/s");
    }
}
