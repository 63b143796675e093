//! RX slots while a port is busy (`--rx busy-slots`).
//!
//! A TPACKET_V2 ring ([`SlotRing`], `--rx slots`) takes small frames for
//! less CPU than `recvmmsg`, but holds its memory (slots × 2 KiB per
//! receive half) from the start. Here a port receives with `recvmmsg`, and
//! only while its frame rate is high does it hold rings:
//!
//! - The port's receive halves are members `0..n` of a CBPF fanout group
//!   whose program picks member `x % n` (`x` the CPU or TCP flow hash,
//!   [`Steer`]).
//! - Going busy, the port makes `n` fresh sockets (in its own network
//!   namespace), gives each a ring, and joins them to the group, in order,
//!   so they are members `n..2n`; then it replaces the program with one
//!   that picks member `n + x % n`. Each frame sees the old program or the
//!   new one, so for each half the frames before the switch are on its
//!   socket and those after it in its ring; the half reads its socket
//!   until it is empty, then its ring.
//! - Going quiet, the program picks the sockets again; after a grace
//!   period each half reads its ring until it is empty, then closes that
//!   socket, which leaves the group and gives the ring's memory back.
//!
//! A half waits on an epoll descriptor of its own that holds its socket and,
//! while it has one, its ring's socket: the reader never sees the change.
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
/// `RxConfig::busy_pps` frames per second (by default 100 k: a 64-byte
/// flood through one port is 300-450 k/s on the 2-CPU lab, a TCP stream's
/// GSO super-frames and ACKs well under it); a port with rings gives them
/// back once it has stayed under a fifth of that for this long.
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
    /// Set up rings and steer frames to them.
    Attach,
    /// Steer frames back to the sockets.
    Detach,
    /// The grace period is over: halves may close their rings.
    Free,
}

/// When a port takes rings and gives them back: from its frame count and
/// the time, both given (no clock of its own).
#[derive(Debug)]
pub struct Policy {
    busy_pps: u64,
    last: Option<(Instant, u64)>,
    phase: Option<Phase>,
    quiet_since: Option<Instant>,
    left_at: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Policy {
    /// Rings from `busy_pps` frames per second, given back under a fifth of it.
    pub fn new(busy_pps: u64) -> Policy {
        Policy { busy_pps, last: None, phase: None, quiet_since: None, left_at: None, retry_at: None }
    }

    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or(Phase::Sockets)
    }

    /// Looks at the port at `now`, when its halves have received `frames`
    /// in all and `held` of them still hold a ring.
    pub fn look(&mut self, now: Instant, frames: u64, held: usize) -> Step {
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
        let rate = frames.saturating_sub(f0).saturating_mul(1000) / ms;
        match self.phase() {
            Phase::Sockets => {
                let may = held == 0 && self.retry_at.is_none_or(|t| now >= t);
                if rate >= self.busy_pps && may { Step::Attach } else { Step::Stay }
            }
            Phase::Slots if rate < self.busy_pps / 5 => {
                let since = *self.quiet_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= QUIET_FOR { Step::Detach } else { Step::Stay }
            }
            Phase::Slots => {
                self.quiet_since = None;
                Step::Stay
            }
            Phase::Leaving => Step::Stay,
        }
    }

    /// The outcome of a step the port took at `now`.
    pub fn took(&mut self, step: Step, ok: bool, now: Instant) {
        match (step, ok) {
            (Step::Attach, true) => {
                self.phase = Some(Phase::Slots);
                self.quiet_since = None;
                self.retry_at = None;
            }
            (Step::Attach, false) => self.retry_at = Some(now + RETRY),
            (Step::Detach, _) => {
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
struct Count(AtomicU64);

/// What a port's halves share.
#[derive(Debug)]
pub struct BusySlots {
    name: String,
    ifindex: u32,
    spread: Fanout,
    members: u32,
    group: u16,
    slots: usize,
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
            slots: rx.slots,
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
            policy: Mutex::new(Policy::new(rx.busy_pps)),
        })
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Half `i` has received `frames` in all.
    pub fn count(&self, i: usize, frames: u64) {
        self.counts[i].0.store(frames, Ordering::Relaxed);
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
        let frames = self.counts.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
        let step = policy.look(now, frames, self.held.load(Ordering::Acquire));
        let ok = match step {
            Step::Stay => return,
            Step::Attach => {
                self.attaching.store(true, Ordering::Release);
                let this = self.clone();
                let spawned = std::thread::Builder::new().name(format!("slots-{}", self.name)).spawn(move || {
                    step_aside();
                    let ok = this.attach_logged();
                    lock(&this.policy).took(Step::Attach, ok, Instant::now());
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
            Step::Detach => {
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
                tracing::info!(port = %self.name, "port quiet: RX slots given back");
                true
            }
        };
        policy.took(step, ok, now);
    }

    /// [`attach`](Self::attach), said in the log.
    fn attach_logged(&self) -> bool {
        match self.attach() {
            Ok(()) => {
                tracing::info!(port = %self.name, slots = self.slots, halves = self.members, "port busy: RX slots taken");
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

    /// Sets up a ring socket for each half, joined in the halves' order
    /// after them, hands them over, and steers frames to them. On an error,
    /// whatever was set up is closed (and leaves the group).
    fn attach(&self) -> io::Result<()> {
        let n = self.waits.len();
        let fresh = self.netns.run(|| (0..n).map(|_| ring_socket()).collect::<io::Result<Vec<_>>>());
        let fresh = fresh.map_err(io::Error::other)??;
        let mut made = Vec::with_capacity(n);
        for (fd, wait) in fresh.into_iter().zip(&self.waits) {
            let ring = SlotRing::map(fd.as_fd(), self.slots)?;
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

    #[test]
    fn a_busy_port_takes_rings_and_gives_them_back_when_quiet() {
        let t0 = Instant::now();
        let mut p = Policy::new(100_000);
        assert_eq!(p.look(t0, 0, 0), Step::Stay, "the first look only counts");
        // 1000 frames in 100 ms: 10 k/s, not busy.
        assert_eq!(p.look(at(t0, 100), 1000, 0), Step::Stay);
        // Too short a span to judge: waits for LOOK.
        assert_eq!(p.look(at(t0, 110), 100_000, 0), Step::Stay);
        // 50 000 frames in 100 ms: 500 k/s.
        assert_eq!(p.look(at(t0, 200), 51_000, 0), Step::Attach);
        p.took(Step::Attach, true, at(t0, 200));
        assert_eq!(p.phase(), Phase::Slots);
        // Still busy, then quiet: rings are kept for QUIET_FOR.
        assert_eq!(p.look(at(t0, 300), 101_000, 2), Step::Stay);
        assert_eq!(p.look(at(t0, 1300), 101_000, 2), Step::Stay, "quiet from here");
        assert_eq!(p.look(at(t0, 2300), 101_100, 2), Step::Stay);
        assert_eq!(p.look(at(t0, 3300), 101_100, 2), Step::Detach, "quiet for 2 s");
        p.took(Step::Detach, true, at(t0, 3300));
        assert_eq!(p.phase(), Phase::Leaving);
        assert_eq!(p.look(at(t0, 3310), 101_100, 2), Step::Stay, "within the grace period");
        assert_eq!(p.look(at(t0, 3320), 101_100, 2), Step::Free);
        p.took(Step::Free, true, at(t0, 3320));
        assert_eq!(p.phase(), Phase::Sockets);
        assert_eq!(p.look(at(t0, 3320), 101_100, 2), Step::Stay, "counting starts afresh");
        // Busy again while a half still holds its ring: not until it has closed it.
        assert_eq!(p.look(at(t0, 3420), 201_100, 1), Step::Stay);
        assert_eq!(p.look(at(t0, 3520), 301_100, 0), Step::Attach);
    }

    #[test]
    fn a_burst_between_quiet_spells_keeps_the_rings() {
        let t0 = Instant::now();
        let mut p = Policy::new(100_000);
        p.look(t0, 0, 0);
        assert_eq!(p.look(at(t0, 100), 50_000, 0), Step::Attach);
        p.took(Step::Attach, true, at(t0, 100));
        // Half the rate that took them (above a fifth of it) keeps them, however long.
        for k in 1..=10 {
            assert_eq!(p.look(at(t0, 100 + k * 500), 50_000 + k * 25_000, 2), Step::Stay, "50 k/s");
        }
        let t0 = t0 + Duration::from_secs(5);
        assert_eq!(p.look(at(t0, 1100), 300_000, 2), Step::Stay, "quiet");
        assert_eq!(p.look(at(t0, 2000), 400_000, 2), Step::Stay, "busy again: the quiet spell restarts");
        assert_eq!(p.look(at(t0, 3100), 400_000, 2), Step::Stay, "quiet for 1.1 s");
        assert_eq!(p.look(at(t0, 5100), 400_000, 2), Step::Detach, "quiet for 3.1 s");
    }

    #[test]
    fn rings_that_could_not_be_set_up_are_tried_again_later() {
        let t0 = Instant::now();
        let mut p = Policy::new(100_000);
        p.look(t0, 0, 0);
        assert_eq!(p.look(at(t0, 100), 50_000, 0), Step::Attach);
        p.took(Step::Attach, false, at(t0, 100));
        assert_eq!(p.phase(), Phase::Sockets);
        assert_eq!(p.look(at(t0, 200), 100_000, 0), Step::Stay, "within RETRY");
        let later = 100 + u64::try_from(RETRY.as_millis()).unwrap();
        assert_eq!(p.look(at(t0, later), 100_000 + later * 500, 0), Step::Attach);
    }
}
