//! RX slots while a port is busy (`--rx busy-slots`).
//!
//! A TPACKET_V2 ring ([`SlotRing`], `--rx slots`) takes small frames for
//! less CPU than `recvmmsg`, but holds its memory (slots × 2 KiB per
//! receive half) from the start. Here a port receives with `recvmmsg`, and
//! only while its frame rate is high does it hold rings:
//!
//! - The port's receive halves are members `0..n` of a CBPF fanout group
//!   whose program picks member `x % n` (`x` the CPU or the flow hash,
//!   [`Steer`]).
//! - Going busy, the port makes `n` fresh sockets (in its own network
//!   namespace), gives each a ring sized to the port's rate
//!   ([`slots_for`]), and joins them to the group, in order,
//!   so they are members `n..2n`; then it replaces the program with one
//!   that picks member `n + x % n`. Each frame sees the old program or the
//!   new one, so for each half the frames before the switch are on its
//!   socket and those after it in its ring; the half reads its socket
//!   until it is empty, then its ring.
//! - Going quiet, the program picks the sockets again; after a grace
//!   period each half reads its ring until it is empty, then closes that
//!   socket, which leaves the group and gives the ring's memory back. A
//!   port that outgrows its rings does the same, then takes larger ones.
//!
//! A half's reader waits on an epoll descriptor of the half's own, its wait
//! set, where a new ring's socket is put; the half moves its socket, and
//! its ring's once it takes it, from there into the reader's own epoll:
//! the reader never sees the change, and a frame wakes it directly.
//! When to switch is [`Policy`], pure logic over injected time.

use crate::afpacket::RxConfig;
use crate::sys::{self, Fanout, SlotRing, Steer};
use rustix::event::epoll;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ub_netlink::NetNs;

/// A port takes rings when its halves together receive at least
/// `RxConfig::busy_pps` frames per second more that a slot holds whole than
/// frames it does not (by default 20 k: eight 64-byte floods at once are
/// 30-45 k/s a port on the 2-CPU lab, one flood 300-450 k/s, a TCP
/// stream's ACKs a few k/s; its data port, with a small tail frame for
/// every two or so super-frames, never gets there); a port with rings
/// gives them back once it has stayed under a fifth of that for this long.
pub const QUIET_FOR: Duration = Duration::from_secs(2);
/// The shortest span a rate is taken over.
pub const LOOK: Duration = Duration::from_millis(50);
/// After the program picks the sockets again, how long before the rings
/// are closed: a frame that saw the old program on another CPU has long
/// been written into its ring by then (the kernel's grace period for the
/// swap is microseconds).
pub const GRACE: Duration = Duration::from_millis(20);
/// After rings could not be set up (no memory), how long before trying again.
pub const RETRY: Duration = Duration::from_secs(10);
/// A ring is sized to hold this long of the rate that made its port busy
/// (in whole powers of two of slots, at most `--ring-slots`): 16 384 slots,
/// 36 ms of a 450 k/s flood, lost nothing on the 2-CPU lab where 8 192
/// (18 ms) lost up to 1.5% (docs/architecture.md). A port busy at 40 k/s
/// so takes 4 096 slots, 8 MiB, not 32: less memory, and set up four times
/// faster by a thread that may get little CPU on a busy node.
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
    fn from_u8(v: u8) -> Phase {
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

/// A ring's socket, in the group at member `n + i`, and its ring.
#[derive(Debug)]
pub struct RingSocket {
    pub fd: OwnedFd,
    pub ring: SlotRing,
}

/// Frames counted by one half (its own cache line: each half writes its own).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Count {
    fit: AtomicU64,
    big: AtomicU64,
}

/// What a port's halves share.
#[derive(Debug)]
pub struct BusySlots {
    name: String,
    ifindex: u32,
    spread: Fanout,
    members: u32,
    group: u16,
    /// The port's namespace, where its ring sockets are made.
    netns: NetNs,
    /// A member's socket, to replace the group's program through.
    steer_fd: Arc<OwnedFd>,
    /// Each half's epoll descriptor, to add its ring socket to.
    waits: Vec<Arc<OwnedFd>>,
    counts: Vec<Count>,
    phase: AtomicU8,
    /// Ring sockets set up for halves that have not taken them yet.
    mailbox: Vec<Mutex<Option<RingSocket>>>,
    /// Halves (or mailboxes) still holding a ring.
    held: AtomicUsize,
    /// Rings are being set up.
    attaching: AtomicBool,
    /// When frames were last steered to the rings, ns after `base`; 0 when
    /// they go to the sockets.
    steered_ns: AtomicU64,
    base: Instant,
    policy: Mutex<Policy>,
}

impl BusySlots {
    /// The shared part of a port's halves, `waits` their wait sets, in
    /// fanout group `group`, which `steer_fd` is a member of; in the
    /// network namespace of the calling thread.
    pub fn new(
        name: &str,
        ifindex: u32,
        rx: &RxConfig,
        group: u16,
        steer_fd: Arc<OwnedFd>,
        waits: Vec<Arc<OwnedFd>>,
    ) -> io::Result<BusySlots> {
        let netns = NetNs::current().map_err(io::Error::other)?;
        let n = waits.len();
        Ok(BusySlots {
            name: name.to_string(),
            ifindex,
            spread: rx.spread,
            members: u32::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            group,
            netns,
            steer_fd,
            waits,
            counts: (0..n).map(|_| Count::default()).collect(),
            phase: AtomicU8::new(Phase::Sockets as u8),
            mailbox: (0..n).map(|_| Mutex::new(None)).collect(),
            held: AtomicUsize::new(0),
            attaching: AtomicBool::new(false),
            steered_ns: AtomicU64::new(0),
            base: Instant::now(),
            policy: Mutex::new(Policy::new(rx.busy_pps, rx.slots)),
        })
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Half `i` has received `frames` in all.
    pub fn count(&self, i: usize, frames: Counted) {
        self.counts[i].fit.store(frames.fit, Ordering::Relaxed);
        self.counts[i].big.store(frames.big, Ordering::Relaxed);
    }

    /// Half `i`'s ring socket, if one was set up for it and it has not taken it.
    pub fn take(&self, i: usize) -> Option<RingSocket> {
        lock(&self.mailbox[i]).take()
    }

    /// A half closed its ring.
    pub fn freed(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    /// Closes the rings set up for halves that have not taken them.
    fn close_untaken(&self) {
        for m in &self.mailbox {
            if lock(m).take().is_some() {
                self.freed();
            }
        }
    }

    /// Looks at the port's rate and takes the step [`Policy`] says, unless
    /// another half is looking (then it is that half's to do). Rings are
    /// set up on a thread of its own: zeroing and mapping them takes tens of
    /// milliseconds, which the caller, a reader, spends forwarding.
    pub fn look(self: &Arc<Self>, now: Instant) {
        if self.attaching.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut policy) = self.policy.try_lock() else { return };
        let frames = self.counts.iter().fold(Counted::default(), |sum, c| Counted {
            fit: sum.fit + c.fit.load(Ordering::Relaxed),
            big: sum.big + c.big.load(Ordering::Relaxed),
        });
        let step = policy.look(now, frames, self.held.load(Ordering::Acquire));
        let ok = match step {
            Step::Stay => return,
            Step::Attach(slots) => {
                self.attaching.store(true, Ordering::Release);
                let this = self.clone();
                let spawned = std::thread::Builder::new().name(format!("slots-{}", self.name)).spawn(move || {
                    step_aside();
                    let ok = this.attach_logged(slots);
                    lock(&this.policy).took(step, ok, Instant::now());
                    this.attaching.store(false, Ordering::Release);
                });
                match spawned {
                    Ok(_) => return,
                    Err(e) => {
                        self.attaching.store(false, Ordering::Release);
                        tracing::warn!(port = %self.name, error = %e, "no thread to set up RX slots with");
                        false
                    }
                }
            }
            Step::Detach { outgrown } => {
                if outgrown {
                    tracing::info!(port = %self.name, "port busier than its RX slots hold: giving them back for larger ones");
                }
                self.steered_ns.store(0, Ordering::Release);
                let steered = sys::steer_fanout(self.steer_fd.as_fd(), self.spread, self.steer(0));
                if let Err(e) = &steered {
                    tracing::warn!(port = %self.name, error = %e, "steering frames back to the sockets failed");
                }
                self.phase.store(Phase::Leaving as u8, Ordering::Release);
                steered.is_ok()
            }
            Step::Free => {
                self.phase.store(Phase::Sockets as u8, Ordering::Release);
                // Rings no half took (it had no frame meanwhile) are closed here.
                self.close_untaken();
                tracing::info!(port = %self.name, "RX slots given back");
                true
            }
        };
        policy.took(step, ok, now);
    }

    /// [`attach`](Self::attach), said in the log.
    fn attach_logged(&self, slots: usize) -> bool {
        match self.attach(slots) {
            Ok(()) => {
                tracing::info!(port = %self.name, slots, halves = self.members, "port busy: RX slots taken");
                true
            }
            Err(e) => {
                tracing::warn!(port = %self.name, error = %e, retry_s = RETRY.as_secs(),
                    "port busy, but no RX slots (the port stays on recvmmsg)");
                false
            }
        }
    }

    fn steer(&self, offset: u32) -> Steer {
        Steer { members: self.members, offset }
    }

    /// Sets up a ring socket of `slots` slots for each half, joined in the
    /// halves' order after them, hands them over, and steers frames to them.
    /// On an error, whatever was set up is closed (and leaves the group).
    fn attach(&self, slots: usize) -> io::Result<()> {
        let n = self.waits.len();
        let fresh = self.netns.run(|| (0..n).map(|_| ring_socket()).collect::<io::Result<Vec<_>>>());
        let fresh = fresh.map_err(io::Error::other)??;
        let mut made = Vec::with_capacity(n);
        for (fd, wait) in fresh.into_iter().zip(&self.waits) {
            let ring = SlotRing::map(fd.as_fd(), slots)?;
            // Until it has joined the group the socket would get every frame.
            sys::drop_all(fd.as_fd(), true)?;
            sys::bind_packet(fd.as_fd(), self.ifindex)?;
            sys::join_fanout(fd.as_fd(), self.group, self.spread, self.steer(0))?;
            sys::drop_all(fd.as_fd(), false)?;
            wait_set_add(wait.as_fd(), fd.as_fd())?;
            made.push(RingSocket { fd, ring });
        }
        for (m, r) in self.mailbox.iter().zip(made) {
            *lock(m) = Some(r);
        }
        self.held.store(n, Ordering::Release);
        // Halves look for their rings from here on; none gets a frame before the program says so.
        self.phase.store(Phase::Slots as u8, Ordering::Release);
        if let Err(e) = sys::steer_fanout(self.steer_fd.as_fd(), self.spread, self.steer(self.members)) {
            self.phase.store(Phase::Sockets as u8, Ordering::Release);
            self.close_untaken();
            return Err(e);
        }
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        self.steered_ns.store(ns, Ordering::Release);
        Ok(())
    }

    /// Whether frames have gone to the rings for longer than [`GRACE`] at
    /// `now`: a half that finds its socket empty then will get nothing more
    /// on it until the port is quiet again.
    pub fn settled(&self, now: Instant) -> bool {
        let ns = self.steered_ns.load(Ordering::Acquire);
        ns != 0 && now.saturating_duration_since(self.base) >= Duration::from_nanos(ns) + GRACE
    }
}

/// Makes the calling thread, started by a reader and so pinned to its CPU
/// at its priority, yield to the readers: nice 0, on any CPU the process
/// may use. Set up at the readers' nice -10 beside the busy half's reader,
/// the rings took half its CPU for 40-60 ms and its socket's queue
/// overflowed (3 of 20 floods lost 3-21 k frames); at nice 19 they took
/// seconds on a busy node. Best effort: a refusal leaves it as it was.
fn step_aside() {
    let me = Some(rustix::thread::gettid());
    let _ = rustix::process::setpriority_process(me, 0);
    if let Ok(all) = rustix::thread::sched_getaffinity(Some(rustix::process::getpid())) {
        let _ = rustix::thread::sched_setaffinity(None, &all);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A packet socket, not yet bound, ready for a ring: vnet headers, auxdata
/// and a deep queue for the frames too big for a slot.
fn ring_socket() -> io::Result<OwnedFd> {
    let fd = sys::packet_socket()?;
    SlotRing::prepare(fd.as_fd())?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
    crate::afpacket::deep_queue(fd.as_fd());
    Ok(fd)
}

/// A new epoll descriptor holding `fd`, for a half to wait on: it becomes
/// readable when any socket it holds does.
pub fn wait_set(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    wait_set_add(ep.as_fd(), fd)?;
    Ok(ep)
}

/// Adds `fd` to the wait set `ep`, edge-triggered as the reader's own
/// epoll is (a closed socket leaves it by itself).
pub fn wait_set_add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = epoll::EventFlags::IN | epoll::EventFlags::ET;
    Ok(epoll::add(ep, fd, epoll::EventData::new_u64(0), flags)?)
}

/// Takes `fd` out of the wait set `ep`.
pub fn wait_set_remove(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(epoll::delete(ep, fd)?)
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
