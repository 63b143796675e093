//! RX slots while a port is busy (`--rx busy-slots`, the default): the
//! port receives with `recvmmsg`, and while its rate is high a TPACKET_V2
//! ring per receive half joins its fanout group and the group's program is
//! swapped to pick the rings. How and why: docs/architecture.md, "RX slots
//! while a port is busy"; when to switch is `policy`, pure logic.

mod policy;

pub use policy::QUIET_FOR;
use policy::{Counted, GRACE, Phase, Policy, RETRY, Step};

use super::RxConfig;
use super::recv::{SlotsRx, mmsg_batch};
use super::shaped::Shaping;
use super::socket::{MMSG_SLOTS, ring_socket};
use super::wait::{into_reader, out_of_reader, wait_set, wait_set_add};
use crate::sys::{self, Fanout, MmsgRecv, SlotRing, Steer};
use crate::{RxFrame, Waiter};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ub_netlink::NetNs;

/// A ring's socket, in the group at member `n + i`, and its ring.
#[derive(Debug)]
struct RingSocket {
    /// Shared with the port's [`Shaping`], which sets its filter.
    pub fd: Arc<OwnedFd>,
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
pub(super) struct BusySlots {
    name: String,
    ifindex: u32,
    fanout: Fanout,
    members: u32,
    group: u16,
    /// The port's namespace, where its ring sockets are made.
    netns: NetNs,
    /// A member's socket, to replace the group's program through.
    steer_fd: Arc<OwnedFd>,
    /// The port's tc ingress, whose filter a new ring socket takes.
    shaping: Arc<Shaping>,
    /// Each half's epoll descriptor, to add its ring socket to.
    waits: Vec<Arc<OwnedFd>>,
    counts: Vec<Count>,
    phase: AtomicU8,
    /// Ring sockets set up for halves that have not taken them yet.
    mailbox: Vec<Mutex<Option<RingSocket>>>,
    /// Frames the kernel dropped on rings closed before a half counted them.
    closed_drops: AtomicU64,
    /// Halves (or mailboxes) still holding a ring.
    held: AtomicUsize,
    /// Rings are being set up.
    attaching: AtomicBool,
    /// The port is being handed over: no rings from here on.
    handing_over: AtomicBool,
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
    fn new(
        name: &str,
        ifindex: u32,
        rx: &RxConfig,
        group: u16,
        steer_fd: Arc<OwnedFd>,
        shaping: Arc<Shaping>,
        waits: Vec<Arc<OwnedFd>>,
    ) -> io::Result<BusySlots> {
        let netns = NetNs::current().map_err(io::Error::other)?;
        let n = waits.len();
        Ok(BusySlots {
            name: name.to_string(),
            ifindex,
            fanout: rx.fanout,
            members: u32::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            group,
            netns,
            steer_fd,
            shaping,
            waits,
            counts: (0..n).map(|_| Count::default()).collect(),
            phase: AtomicU8::new(Phase::Sockets as u8),
            mailbox: (0..n).map(|_| Mutex::new(None)).collect(),
            closed_drops: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            attaching: AtomicBool::new(false),
            handing_over: AtomicBool::new(false),
            steered_ns: AtomicU64::new(0),
            base: Instant::now(),
            policy: Mutex::new(Policy::new(rx.busy_pps, rx.ring_slots)),
        })
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Half `i` has received `frames` in all.
    fn count(&self, i: usize, frames: Counted) {
        self.counts[i].fit.store(frames.fit, Ordering::Relaxed);
        self.counts[i].big.store(frames.big, Ordering::Relaxed);
    }

    /// Half `i`'s ring socket, if one was set up for it and it has not taken it.
    fn take(&self, i: usize) -> Option<RingSocket> {
        lock(&self.mailbox[i]).take()
    }

    /// A half closed its ring.
    fn freed(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    /// Closes the rings set up for halves that have not taken them.
    fn close_untaken(&self) {
        for m in &self.mailbox {
            if let Some(r) = lock(m).take() {
                self.closed_drops.fetch_add(drops_of(r.fd.as_fd()), Ordering::Relaxed);
                self.freed();
            }
        }
    }

    /// Looks at the port's rate and takes the step [`Policy`] says, unless
    /// another half is looking (then it is that half's to do). Rings are
    /// set up on a thread of its own: zeroing and mapping them takes tens of
    /// milliseconds, which the caller, a reader, spends forwarding.
    fn look(self: &Arc<Self>, now: Instant) {
        if self.attaching.load(Ordering::Acquire) || self.handing_over.load(Ordering::Acquire) {
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
                let steered = sys::steer_fanout(self.steer_fd.as_fd(), self.fanout, self.steer(0));
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

    /// The handover [`BusySlots::hand_back`] prepared did not happen: the
    /// port takes rings again when it is busy.
    pub(super) fn keep(&self) {
        self.handing_over.store(false, Ordering::Release);
    }

    /// Gives the rings back before the port is handed over (a ring's read
    /// position cannot travel): frames go to the sockets again, and each
    /// half's reader reads its ring empty and closes it as it stops
    /// ([`BusyRx::ring_to_empty`]). Takes the grace period.
    pub(super) fn hand_back(&self) {
        self.handing_over.store(true, Ordering::Release);
        // A ring being set up goes first (bounded: it takes tens of milliseconds).
        for _ in 0..200 {
            if !self.attaching.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.phase() == Phase::Sockets {
            return;
        }
        self.steered_ns.store(0, Ordering::Release);
        if let Err(e) = sys::steer_fanout(self.steer_fd.as_fd(), self.fanout, self.steer(0)) {
            tracing::warn!(port = %self.name, error = %e, "steering frames back to the sockets failed");
        }
        self.phase.store(Phase::Leaving as u8, Ordering::Release);
        // Frames steered before the swap may still land in the rings meanwhile.
        std::thread::sleep(GRACE);
        self.phase.store(Phase::Sockets as u8, Ordering::Release);
        self.close_untaken();
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
            let fd = Arc::new(fd);
            let ring = SlotRing::map(fd.as_fd(), slots)?;
            // Until it has joined the group the socket would get every frame.
            sys::drop_all(fd.as_fd(), true)?;
            sys::bind_packet(fd.as_fd(), self.ifindex)?;
            sys::join_fanout(fd.as_fd(), self.group, self.fanout, self.steer(0))?;
            // Replaces the drop-all filter with the port's own.
            self.shaping.add_ring(&fd)?;
            wait_set_add(wait.as_fd(), fd.as_fd())?;
            made.push(RingSocket { fd, ring });
        }
        for (m, r) in self.mailbox.iter().zip(made) {
            *lock(m) = Some(r);
        }
        self.held.store(n, Ordering::Release);
        // Halves look for their rings from here on; none gets a frame before the program says so.
        self.phase.store(Phase::Slots as u8, Ordering::Release);
        if let Err(e) = sys::steer_fanout(self.steer_fd.as_fd(), self.fanout, self.steer(self.members)) {
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
    fn settled(&self, now: Instant) -> bool {
        let ns = self.steered_ns.load(Ordering::Acquire);
        ns != 0 && now.saturating_duration_since(self.base) >= Duration::from_nanos(ns) + GRACE
    }
}

/// What the ring closer drops.
type Closing = Box<dyn Send>;

/// The thread that closes rings: unmapping one waits for an RCU grace
/// period (about 50 ms measured), which a reader must not spend. One per
/// process, for its whole life (a thread per ring came and went under the
/// soak's thread count).
static CLOSER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Closing>>> = std::sync::OnceLock::new();

/// Starts the ring closer, if it does not run yet (the daemon, at its start).
pub fn start_ring_closer() {
    CLOSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Closing>();
        let closer = std::thread::Builder::new().name("ring-close".into()).spawn(move || rx.into_iter().for_each(drop));
        closer.ok().map(|_| tx)
    });
}

/// Closes `ring` on the ring closer (here if it could not start).
fn close_aside(ring: Closing) {
    start_ring_closer();
    match CLOSER.get().and_then(Option::as_ref) {
        Some(tx) => {
            if let Err(back) = tx.send(ring) {
                drop(back.0);
            }
        }
        None => drop(ring),
    }
}

/// Makes the calling thread, started by a reader and so pinned to its CPU
/// at its priority, yield to the readers: nice 0, on any CPU the process
/// may use (beside the busy reader at -10, its queue overflowed; measured
/// in docs/benchmarks-history.md). Best effort.
fn step_aside() {
    let me = Some(rustix::thread::gettid());
    let _ = rustix::process::setpriority_process(me, 0);
    if let Ok(all) = rustix::thread::sched_getaffinity(Some(rustix::process::getpid())) {
        let _ = rustix::thread::sched_setaffinity(None, &all);
    }
}

/// Frames the kernel dropped on socket `fd` since the last look.
fn drops_of(fd: BorrowedFd<'_>) -> u64 {
    sys::packet_drops(fd).map_or(0, u64::from)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A busy-slots half: its socket read with `recvmmsg`, and
/// while the port is busy its ring, on a socket of its own. The reader
/// registers `wait`, where the ring thread puts a new ring's socket; the
/// half moves its socket, and its ring's once it takes it, from there into
/// the reader's epoll (`waiting_in`). `frames`: received in all, for the port's
/// rate; `socket_done`: since it took its ring, the socket was found empty
/// after the port [settled](BusySlots::settled) on the rings, so only the
/// ring is read.
#[derive(Debug)]
pub(super) struct BusyRx {
    recv: MmsgRecv,
    pub(super) drained: bool,
    wait: Arc<OwnedFd>,
    shared: Arc<BusySlots>,
    index: usize,
    frames: Counted,
    ring: Option<(Arc<OwnedFd>, SlotsRx)>,
    socket_done: bool,
    /// The reader waiting on `wait`.
    reader: Option<Waiter>,
    /// The half's socket is in `reader`'s epoll (else in `wait`).
    socket_in_reader: bool,
    /// The ring's socket is in `reader`'s epoll (else in `wait`).
    ring_in_reader: bool,
}

impl BusyRx {
    /// Takes the ring set up for this half when the port has gone busy, or
    /// closes it once the port is quiet and the ring read empty.
    fn settle(&mut self) {
        match (&mut self.ring, self.shared.phase()) {
            (None, Phase::Slots) => {
                self.ring = self.shared.take(self.index).map(|r| (r.fd, SlotsRx::new(r.ring)));
                self.socket_done = false;
                // Set up in the wait set (so a frame wakes the reader at once); into the
                // reader's own epoll now: one wake-up per frame, not two.
                self.ring_to_reader();
            }
            (Some((_, slots)), Phase::Sockets) => {
                slots.release_held();
                if !slots.has_frame() {
                    // Its drops, counted before they go with it: a ring outgrown by a burst overflows.
                    if let Some((fd, _)) = &self.ring {
                        self.shared.closed_drops.fetch_add(drops_of(fd.as_fd()), Ordering::Relaxed);
                    }
                    // Closes the ring's socket and unmaps the ring: once both are gone the
                    // socket leaves the group and the wait set, and the kernel frees the ring.
                    // The unmapping waits for an RCU grace period (tens of milliseconds,
                    // measured: a reader held up 50 ms), so not on the reader's time.
                    if let Some(ring) = self.ring.take() {
                        close_aside(Box::new(ring));
                    }
                    self.ring_in_reader = false;
                    self.shared.freed();
                }
            }
            _ => {}
        }
    }

    /// Moves the ring's socket from the wait set into the reader's epoll,
    /// if there are both a ring and a reader. On failure it stays in the
    /// wait set, which wakes the reader too.
    fn ring_to_reader(&mut self) {
        if let (Some((fd, _)), false) = (&self.ring, self.ring_in_reader) {
            self.ring_in_reader = into_reader(&self.wait, self.reader.as_ref(), fd.as_fd());
        }
    }

    /// The reader waiting on this half changes: the half's socket and its
    /// ring's, where they are in the old reader's epoll, go back into the
    /// wait set first (which the next reader registers), then into the new
    /// reader's epoll. There a frame wakes the reader directly: through the
    /// wait set, a second epoll level, it cost 2-4% more CPU per frame.
    pub(super) fn waiting_in(&mut self, sock: BorrowedFd<'_>, reader: Option<Waiter>) {
        if std::mem::take(&mut self.socket_in_reader) {
            out_of_reader(&self.wait, self.reader.as_ref(), sock);
        }
        if let (Some((fd, _)), true) = (&self.ring, std::mem::take(&mut self.ring_in_reader)) {
            out_of_reader(&self.wait, self.reader.as_ref(), fd.as_fd());
        }
        self.reader = reader;
        self.socket_in_reader = into_reader(&self.wait, self.reader.as_ref(), sock);
        self.ring_to_reader();
    }

    /// One batch: from the socket, or from the ring. Frames before the
    /// switch to the ring are on the socket, those after it in the ring; the
    /// other way round when the port goes quiet.
    /// Returns whether it emptied what it read (`drained`).
    pub(super) fn recv<'a>(&'a mut self, sock: BorrowedFd<'_>, out: &mut Vec<RxFrame<'a>>) -> io::Result<bool> {
        self.settle();
        let phase = self.shared.phase();
        let BusyRx { recv, drained, ring, frames, shared, index, socket_done, .. } = self;
        let has_ring = ring.is_some();
        // Busy: the socket until it is empty, then the ring (once settled, the
        // ring alone: no syscall per batch). Going quiet: the ring, then the socket.
        let ring_first = match ring {
            None => false,
            Some(_) if phase == Phase::Slots && *socket_done => true,
            Some(_) if phase == Phase::Slots => {
                let empty = sys::first_queued_len(sock)? == 0;
                *socket_done = empty && shared.settled(Instant::now());
                empty
            }
            Some((_, slots)) => slots.has_frame(),
        };
        match ring.as_mut().filter(|_| ring_first) {
            Some((fd, slots)) => {
                *drained = false;
                // Going quiet, the socket may have frames that came after these.
                *drained = slots.recv(fd.as_fd(), recv, out)? && phase == Phase::Slots;
            }
            None => {
                *drained = false;
                let got = mmsg_batch(recv, sock, out)?;
                // Going busy, the ring may have frames that came after these.
                *drained = got < MMSG_SLOTS && !(phase == Phase::Slots && has_ring);
            }
        }
        let fit = out.iter().filter(|f| f.wire_len as usize <= sys::SLOT_ROOM).count() as u64;
        frames.fit += fit;
        frames.big += out.len() as u64 - fit;
        shared.count(*index, *frames);
        Ok(*drained)
    }

    /// Looks at the port's rate (the step it calls for is taken here), and
    /// takes or closes this half's ring; true while the port has rings.
    pub(super) fn tick(&mut self, now: Instant) -> bool {
        self.shared.look(now);
        self.settle();
        self.ring.is_some() || self.shared.phase() != Phase::Sockets
    }

    /// What the port's halves share.
    pub(super) fn slots(&self) -> Arc<BusySlots> {
        self.shared.clone()
    }

    /// The descriptor the reader registers: the half's wait set.
    pub(super) fn wait_fd(&self) -> BorrowedFd<'_> {
        self.wait.as_fd()
    }

    /// The half holds a ring the port is giving back.
    pub(super) fn ring_to_empty(&self) -> bool {
        self.ring.is_some() && self.shared.phase() == Phase::Sockets
    }

    /// The ring's socket, while the half holds one.
    pub(super) fn ring_fd(&self) -> Option<BorrowedFd<'_>> {
        self.ring.as_ref().map(|(fd, _)| fd.as_fd())
    }

    /// Frames the kernel dropped on this half's ring since the last call,
    /// and on rings of the port closed meanwhile.
    pub(super) fn ring_drops(&self) -> u64 {
        let open = self.ring_fd().map_or(0, drops_of);
        open + self.shared.closed_drops.swap(0, Ordering::Relaxed)
    }
}

/// Makes the receive halves `socks` (members `0..n` of fanout group
/// `group`, on `recvmmsg`) the halves of a busy-slots port, each with a
/// wait set of its own, sharing what decides when the port takes rings.
pub(super) fn halves(
    name: &str,
    ifindex: u32,
    rx: &RxConfig,
    group: u16,
    socks: Vec<(Arc<OwnedFd>, MmsgRecv)>,
    shaping: &Arc<Shaping>,
) -> io::Result<Vec<(Arc<OwnedFd>, BusyRx)>> {
    let waits = socks.iter().map(|(fd, _)| wait_set(fd.as_fd()).map(Arc::new)).collect::<io::Result<Vec<_>>>()?;
    let steer_fd =
        socks.first().map(|(fd, _)| fd.clone()).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let shared = Arc::new(BusySlots::new(name, ifindex, rx, group, steer_fd, shaping.clone(), waits.clone())?);
    Ok(socks
        .into_iter()
        .zip(waits)
        .enumerate()
        .map(|(index, ((fd, recv), wait))| {
            let half = BusyRx {
                recv,
                drained: false,
                wait,
                shared: shared.clone(),
                index,
                frames: Counted::default(),
                ring: None,
                socket_done: false,
                reader: None,
                socket_in_reader: false,
                ring_in_reader: false,
            };
            (fd, half)
        })
        .collect())
}
