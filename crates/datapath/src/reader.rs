//! A port's reader: one thread that receives the port's frames and runs
//! them through the [`Forwarder`], plus helpers while the port is busy or
//! steadily fed from more than one CPU.
//!
//! A port may have several receive halves ("members": the sockets of a
//! PACKET_FANOUT group, the queues of a multiqueue TAP), member `i` getting
//! the frames that arrived on one CPU. The port's own thread serves them all
//! while it keeps up, so an idle node runs one thread per port, not one per
//! port per CPU. It runs on the CPU its frames arrive on (the member with
//! the most frames in the last 20 ms window), as a reader pinned per CPU
//! did: a wake-up on another, idle CPU costs a virtual machine some 70 µs
//! per frame (docs/benchmarks.md). When the thread spends most of a window
//! working, it keeps its busiest member and lends each other member that had
//! frames to a helper thread, pinned to that member's CPU (when it is not
//! busy, each member with a steady stream); a helper that sees no frame for
//! a second gives its member back and ends. Helpers across
//! the switch are bounded by the number of ports, so a node never runs more
//! than about two reader threads per port (docs/architecture.md). A thread
//! whose frames are a TCP stream's super-frames runs SCHED_BATCH while they
//! last, so it does not preempt the stream's own processes ([`Class`]).

use crate::counters::DropKind;
use crate::forward::Forwarder;
use crate::switch::Switch;
use crate::sys;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ub_fdb::PortId;
use ub_port::{Health, PortRx, RxFrame, Waiter, recycle_rx};
use ub_proto::PortState;

const WAKE: Token = Token(0);
/// How often a busy or down port is looked at (kernel drops, link state).
/// An idle port that is up is looked at once after its last frame, then
/// its reader sleeps until a frame, an error or a stop wakes it: the
/// kernel drops nothing on a socket nobody sends to (and the link watcher
/// follows the link's state), while 1000 readers waking every second cost
/// an idle node 1.7% of a core (docs/benchmarks.md).
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The window over which the port's thread decides it is busy: short, as
/// the frames a busy thread cannot keep up with meanwhile fill its sockets.
const WINDOW: Duration = Duration::from_millis(20);
/// Busy: the thread slept less than a quarter of the window.
const BUSY_SLEEP_MAX: Duration = Duration::from_millis(5);
/// A member (not the thread's own) with at least this many frames in a
/// window gets a helper on its CPU even when the thread is not busy: a
/// request/response exchange whose two ends run on two CPUs otherwise pays
/// a wake-up across CPUs per frame (docs/benchmarks.md).
const ACTIVE_FRAMES: u64 = 16;
/// While busy, how many batches between looks for other readable members.
const PEEK_EVERY: u32 = 8;
/// A helper that has seen no frame for this long gives its member back.
const HELPER_IDLE: Duration = Duration::from_secs(1);
/// A port's thread that woke this many times in a row for frames of one
/// member on another CPU moves there at once, without waiting for the end of
/// the window: a ping every 2 ms otherwise crosses CPUs for 10-20 round
/// trips after its sender moved (docs/benchmarks.md). Two, so that one stray
/// frame (an ARP from another CPU) does not move it.
const FOLLOW_AFTER: u32 = 2;
/// A reader thread whose frames in a window averaged at least this many
/// bytes (and were at least [`ACTIVE_FRAMES`]) carries bulk traffic: the
/// GSO super-frames of TCP streams, up to 64 KiB each. Above any MTU a pod
/// uses, so frames sent one by one never count.
const BULK_FRAME_BYTES: u64 = 16 * 1024;

/// The mio token of member `i`.
fn token(i: usize) -> Token {
    Token(i + 1)
}

/// One receive half of a port and where its frames come from.
pub struct Member {
    pub rx: Box<dyn PortRx>,
    /// The CPU whose frames this member gets, when readers are pinned: a
    /// helper serving it runs there.
    pub cpu: Option<usize>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("cpu", &self.cpu).finish_non_exhaustive()
    }
}

/// A running reader (the port's thread and its helpers); `stop` ends them
/// and waits for them.
#[derive(Debug)]
pub struct ReaderHandle {
    pub id: PortId,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl ReaderHandle {
    pub fn stop(mut self) {
        self.halt();
    }
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
    /// True once the thread has ended by itself (its port is gone).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for ReaderHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Where and how eagerly a reader thread runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Placement {
    /// Pin the thread to this CPU.
    cpu: Option<usize>,
    /// Scheduling priority (nice, -20..=19) of the thread.
    nice: Option<i32>,
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
    fn apply_or_warn(&self, port: &str) {
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
fn pin_to(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    Ok(rustix::thread::sched_setaffinity(None, &set)?)
}

/// How a reader that panics is restarted: after `backoff` (doubling, at
/// most 5 s), at most `max_restarts` times within `window`; one more panic
/// in that window and the port is marked `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    pub max_restarts: usize,
    pub window: Duration,
    pub backoff: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Restart { max_restarts: 5, window: Duration::from_secs(60), backoff: Duration::from_millis(100) }
    }
}

/// Starts the reader of port `id`, which has one receive half.
pub fn spawn_reader(sw: Arc<Switch>, id: PortId, rx: Box<dyn PortRx>) -> io::Result<ReaderHandle> {
    spawn_reader_at(sw, id, vec![Member { rx, cpu: None }], None, Restart::default())
}

/// Starts the reader of port `id` over its `members` (at least one), at
/// scheduling priority `nice`; a placement the system refuses (no such CPU,
/// no privilege) is a warning, not a failure. The threads supervise
/// themselves: a panic in the per-batch path is logged with the port's name,
/// counted (`reader_panics`), and the loop restarts as `restart` says, so a
/// reader never dies silently with its port "up".
pub fn spawn_reader_at(
    sw: Arc<Switch>,
    id: PortId,
    members: Vec<Member>,
    nice: Option<i32>,
    restart: Restart,
) -> io::Result<ReaderHandle> {
    if members.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a port needs at least one receive half"));
    }
    let poll = Waits::new()?;
    let waker = Arc::new(Waker::new(poll.poll.registry(), WAKE)?);
    let mut held = Vec::with_capacity(members.len());
    for (i, mut m) in members.into_iter().enumerate() {
        poll.register(m.rx.as_mut(), token(i))?;
        held.push(Held { index: i, cpu: m.cpu, rx: Some(m.rx), ready: true, frames: 0, helper: None });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let name = sw.port(id).map_or_else(|| format!("port{id}"), |p| p.name.clone());
    let thread_name = format!("rx-{name}");
    let lending = (held.len() > 1).then(|| {
        let (give_back, returned) = channel();
        Lending {
            nice,
            restart,
            waker: waker.clone(),
            give_back,
            returned,
            sw: sw.clone(),
            pinned: None,
            follow: Follow::default(),
        }
    });
    let thread = std::thread::Builder::new().name(thread_name.clone()).spawn({
        let stop = stop.clone();
        move || {
            Placement { nice, ..Placement::default() }.apply_or_warn(&name);
            let (sw, name, thread, stop, fwd) = (&sw, &name, &thread_name, &stop, Forwarder::new(id));
            let (helper, class) = (false, Class::of_this_thread());
            let mut r = Reader { sw, id, name, thread, stop, poll, held, lending, helper, fwd, store: vec![], class };
            supervise(&mut r, restart);
            r.recall_helpers();
        }
    })?;
    Ok(ReaderHandle { id, stop, waker, thread: Some(thread) })
}

/// A member as a reader thread holds it.
struct Held {
    index: usize,
    cpu: Option<usize>,
    /// `None` while a helper serves it.
    rx: Option<Box<dyn PortRx>>,
    /// May have frames: set by an edge, cleared when a receive finds none.
    ready: bool,
    /// Frames received in the current window.
    frames: u64,
    helper: Option<Helper>,
}

/// A helper thread serving one member; it sends the member back when it ends.
struct Helper {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
}

/// What the port's own thread needs to lend members to helpers.
struct Lending {
    /// The switch, for helpers (a thread cannot borrow it).
    sw: Arc<Switch>,
    nice: Option<i32>,
    restart: Restart,
    /// The port thread's waker: a helper that gives its member back wakes it.
    waker: Arc<Waker>,
    give_back: Sender<(usize, Box<dyn PortRx>)>,
    returned: Receiver<(usize, Box<dyn PortRx>)>,
    /// The CPU the thread is pinned to (that of the member it follows).
    pinned: Option<usize>,
    follow: Follow,
}

impl Lending {
    /// Pins the port's thread (the caller) to `cpu`, unless it is there.
    fn pin(&mut self, cpu: usize, port: &str) {
        if self.pinned == Some(cpu) {
            return;
        }
        match pin_to(cpu) {
            Ok(()) => self.pinned = Some(cpu),
            Err(e) => tracing::debug!(port, error = %e, "reader placement refused"),
        }
    }
}

/// Between windows, when to move an idle port's thread to the CPU its
/// frames now come from: after [`FOLLOW_AFTER`] wake-ups in a row, each
/// for frames of one member on that CPU, and at most once a [`WINDOW`], so
/// frames arriving from two CPUs by turns cannot make it move back and forth
/// on every wake-up (a move costs a migration, some 60 µs).
#[derive(Debug, Default)]
struct Follow {
    /// The CPU the last wake-ups came from, and how many in a row.
    cpu: Option<usize>,
    wakes: u32,
    moved: Option<Instant>,
}

impl Follow {
    /// The thread (pinned to `pinned`) woke from a sleep and the frames it
    /// found came from `from` alone (`None`: from several members, or from
    /// one of no known CPU). Returns the CPU to move to, if it is time.
    fn woke(&mut self, pinned: Option<usize>, from: Option<usize>, now: Instant) -> Option<usize> {
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

/// A reader thread's scheduling class. At nice -10, a reader woken on a
/// CPU where another process runs preempts it at once. For small frames
/// that is what is wanted: a ping's reader runs sooner, and a flood's
/// reader keeps up with the sender that shares its CPU. For a TCP stream's
/// super-frames it preempts the stream's sender (or receiver) once per frame
/// and forwards them one at a time, a reschedule interrupt each: a thread
/// carrying bulk frames runs SCHED_BATCH instead, with the same nice and so
/// the same share of its CPU, but no preemption on wake-up
/// (docs/benchmarks.md). A daemon started in another class (`chrt`) keeps
/// it.
#[derive(Debug, Clone, Copy)]
struct Class {
    /// The thread runs SCHED_BATCH.
    batch: bool,
    /// The thread's class is ours to change: it started in SCHED_OTHER, and
    /// no change has been refused.
    managed: bool,
}

impl Class {
    /// The calling thread's class, as it starts.
    fn of_this_thread() -> Class {
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
    fn window(&mut self, frames: u64, bytes: u64, thread: &str) {
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

/// One reader thread's loop state: the port's own thread (with `lending`)
/// or a helper (without; it ends after [`HELPER_IDLE`] without frames).
struct Reader<'s> {
    sw: &'s Switch,
    id: PortId,
    name: &'s str,
    thread: &'s str,
    stop: &'s AtomicBool,
    poll: Waits,
    held: Vec<Held>,
    lending: Option<Lending>,
    /// A helper: it ends when its member has been quiet for [`HELPER_IDLE`].
    helper: bool,
    fwd: Forwarder,
    store: Vec<RxFrame<'static>>,
    class: Class,
}

impl Reader<'_> {
    fn set_state(&self, s: PortState) {
        if let Some(p) = self.sw.port(self.id)
            && p.state() != s
        {
            tracing::info!(port = %self.name, state = ?s, "port state changed");
            p.set_state(s);
        }
    }

    /// The loop; returns when stopped, when the port is gone, or (a helper)
    /// when its member has been idle for [`HELPER_IDLE`].
    fn run(&mut self) {
        let sw = self.sw;
        // Afresh after a panic: the last batch may have stopped half-staged.
        self.fwd = Forwarder::new(self.id);
        let mut events = Events::with_capacity(8);
        let waits = self.held.iter().any(|h| h.rx.as_ref().is_some_and(|rx| rx.wait_fd().is_some()));
        let mut last_housekeeping = Instant::now();
        let mut last_frame = last_housekeeping;
        let (mut window_start, mut slept) = (last_housekeeping, Duration::ZERO);
        // Bytes this thread forwarded in the window (its frames are its members' `frames`).
        let mut window_bytes = 0u64;
        // Frames arrived since the port was last looked at.
        let mut unchecked = true;
        let mut spins = 0u32;
        // The last wait slept (nothing was ready before it).
        let mut woke = false;
        // A member asked to be ticked again (`PortRx::tick`).
        let mut ticking = false;
        while !self.stop.load(Ordering::Acquire) {
            let mut got = false;
            let mut check = false;
            // The member whose frames this pass found, if only one had any.
            let mut from = None;
            for h in &mut self.held {
                let Some(rx) = h.rx.as_mut().filter(|_| h.ready) else { continue };
                let mut frames = recycle_rx(std::mem::take(&mut self.store));
                let res = rx.recv_batch(&mut frames);
                let had = !frames.is_empty();
                if !had {
                    h.ready = !waits;
                } else {
                    self.fwd.forward(sw, &frames, sw.now_ms());
                    h.frames += frames.len() as u64;
                    window_bytes += frames.iter().map(|f| f.data.len() as u64).sum::<u64>();
                    from = if got { None } else { Some(h.index) };
                    got = true;
                }
                self.store = recycle_rx(frames);
                if had && waits && rx.drained() {
                    // Emptied: the next frame signals; no receive just to hear "none".
                    h.ready = false;
                }
                if let Err(e) = res {
                    tracing::warn!(port = %self.name, error = %e, "receive failed");
                    check = true;
                }
            }
            let mut now = Instant::now();
            if got {
                unchecked = true;
                last_frame = now;
            }
            let lending = self.lending.is_some();
            if lending {
                if woke && let Some(i) = from {
                    self.follow(i, now);
                }
                self.take_back();
            }
            woke = false;
            // Wait when nothing is ready. While some member is busy, every
            // few batches a look (no wait) for other members become readable.
            let peek = got && {
                spins = spins.wrapping_add(1);
                spins.is_multiple_of(PEEK_EVERY) && self.held.iter().filter(|h| h.rx.is_some()).nth(1).is_some()
            };
            if waits && (!got || peek) {
                let timeout = if got {
                    Some(Duration::ZERO)
                } else if self.helper {
                    Some(HOUSEKEEPING)
                } else if !unchecked && !ticking && sw.port(self.id).is_some_and(|p| p.state() == PortState::Up) {
                    None
                } else {
                    Some(HOUSEKEEPING)
                };
                if timeout.is_none() {
                    // Asleep until a frame: no bulk stream runs through it.
                    self.class.window(0, 0, self.thread);
                }
                if let Err(e) = self.poll.poll.poll(&mut events, timeout)
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    tracing::error!(port = %self.name, error = %e, "poll failed; reader stops");
                    break;
                }
                if !got {
                    let after = Instant::now();
                    slept += after.duration_since(now);
                    now = after;
                    woke = true;
                }
                for ev in events.iter() {
                    let Some(h) = ev.token().0.checked_sub(1).and_then(|i| self.held.get_mut(i)) else { continue };
                    h.ready = true;
                    check |= ev.is_error() || ev.is_read_closed();
                }
            }
            if self.helper && now.duration_since(last_frame) >= HELPER_IDLE {
                // A helper whose member went quiet: the port's thread takes it back.
                return;
            }
            if now.duration_since(window_start) >= WINDOW {
                ticking = false;
                for rx in self.held.iter_mut().filter_map(|h| h.rx.as_mut()) {
                    ticking |= rx.tick(now);
                }
                if lending {
                    // Home first: a helper started for another member never
                    // shares a CPU with this thread, not even until it moves.
                    self.place();
                    self.lend_members(if slept < BUSY_SLEEP_MAX { 1 } else { ACTIVE_FRAMES });
                }
                let window_frames = self.held.iter_mut().map(|h| std::mem::take(&mut h.frames)).sum();
                self.class.window(window_frames, window_bytes, self.thread);
                (window_start, slept, window_bytes) = (now, Duration::ZERO, 0);
            }
            if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
                last_housekeeping = now;
                unchecked = false;
                if let Some(p) = sw.port(self.id) {
                    for rx in self.held.iter().filter_map(|h| h.rx.as_ref()) {
                        p.counters.drop_n(DropKind::RingFull, rx.kernel_drops());
                    }
                    check |= p.state() == PortState::Down;
                }
            }
            if check && let Some(rx) = self.held.iter_mut().find_map(|h| h.rx.as_mut()) {
                match rx.check() {
                    Health::Up => self.set_state(PortState::Up),
                    Health::Down => self.set_state(PortState::Down),
                    // A helper just gives its member back: the port's thread
                    // sees the same and says it once.
                    Health::Gone if self.helper => return,
                    Health::Gone => {
                        tracing::warn!(port = %self.name, "interface is gone; port removed from forwarding");
                        sw.port_gone(self.id);
                        return;
                    }
                }
            }
        }
    }

    /// The member this thread should run next to: the only one it holds,
    /// else the one with the most frames in the window (if any had frames).
    fn home(&self) -> Option<usize> {
        let mut owned = self.held.iter().filter(|h| h.rx.is_some());
        if owned.clone().count() == 1 {
            return owned.next().map(|h| h.index);
        }
        owned.filter(|h| h.frames > 0).max_by_key(|h| h.frames).map(|h| h.index)
    }

    /// The port's thread keeps its busiest member, and each other member
    /// that had at least `min_frames` frames in the window (any, when the
    /// thread is busy) goes to a helper of its own, while the switch's budget
    /// lasts.
    fn lend_members(&mut self, min_frames: u64) {
        let Some(l) = &self.lending else { return };
        let home = self.home();
        for i in 0..self.held.len() {
            let h = &mut self.held[i];
            if Some(i) == home || h.rx.is_none() || h.frames < min_frames.max(1) || !self.sw.take_helper() {
                continue;
            }
            let mut rx = h.rx.take().expect("checked above");
            self.poll.deregister(rx.as_mut());
            match spawn_helper(self.id, self.name, h.index, h.cpu, rx, l, self.class) {
                Ok(helper) => {
                    tracing::debug!(port = %self.name, member = h.index, cpu = ?h.cpu, frames = h.frames,
                        busy = min_frames <= 1, "a helper serves a member on its CPU");
                    h.helper = Some(helper);
                }
                Err((rx, e)) => {
                    self.sw.return_helper();
                    tracing::warn!(port = %self.name, error = %e, "no helper thread; the port's thread serves every member");
                    self.poll.hold(h, rx);
                }
            }
        }
    }

    /// Members helpers gave back: served here again.
    fn take_back(&mut self) {
        let Some(l) = &self.lending else { return };
        let mut any = false;
        while let Ok((i, rx)) = l.returned.try_recv() {
            any = true;
            let Some(h) = self.held.get_mut(i) else { continue };
            if let Some(helper) = h.helper.take() {
                let _ = helper.thread.join();
                self.sw.return_helper();
            }
            self.poll.hold(h, rx);
        }
        if any {
            self.place();
        }
    }

    /// Pins the port's thread to the CPU of its [`home`](Reader::home)
    /// member, where that member's frames arrive, if members have CPUs.
    fn place(&mut self) {
        let Some(cpu) = self.home().and_then(|i| self.held[i].cpu) else { return };
        if let Some(l) = &mut self.lending {
            l.pin(cpu, self.name);
        }
    }

    /// The thread woke for frames of member `i` alone: moves to its CPU if
    /// [`Follow`] says so.
    fn follow(&mut self, i: usize, now: Instant) {
        let cpu = self.held[i].cpu;
        let Some(l) = &mut self.lending else { return };
        if let Some(to) = l.follow.woke(l.pinned, cpu, now) {
            l.pin(to, self.name);
        }
    }

    /// Stops every helper and waits for it (the port's thread is ending).
    fn recall_helpers(&mut self) {
        for h in &mut self.held {
            if let Some(helper) = h.helper.take() {
                helper.stop.store(true, Ordering::Release);
                let _ = helper.waker.wake();
                let _ = helper.thread.join();
                self.sw.return_helper();
            }
        }
    }
}

/// A reader thread's epoll set, and the handle on it that its receive
/// halves keep ([`Waiter`]): a duplicate of the set's descriptor, so a half
/// that adds a socket later always adds it to this set.
struct Waits {
    poll: Poll,
    set: Arc<OwnedFd>,
}

impl Waits {
    fn new() -> io::Result<Waits> {
        let poll = Poll::new()?;
        let set = Arc::new(sys::dup_poll(&poll)?);
        Ok(Waits { poll, set })
    }

    /// Registers `rx` under `t`: its wait descriptor (edge-triggered: a
    /// member is drained until it is empty before waiting), and, through
    /// [`PortRx::waiting_in`], any descriptor it opens later.
    fn register(&self, rx: &mut dyn PortRx, t: Token) -> io::Result<()> {
        if let Some(fd) = rx.wait_fd() {
            self.poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), t, Interest::READABLE)?;
        }
        rx.waiting_in(Some(Waiter::new(self.set.clone(), u64::try_from(t.0).unwrap_or(u64::MAX))));
        Ok(())
    }

    /// Undoes [`Waits::register`], before `rx` moves to another thread.
    fn deregister(&self, rx: &mut dyn PortRx) {
        rx.waiting_in(None);
        if let Some(fd) = rx.wait_fd() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
    }

    /// Holds a member again: registered, and drained before the next wait.
    fn hold(&self, h: &mut Held, mut rx: Box<dyn PortRx>) {
        let _ = self.register(rx.as_mut(), token(h.index));
        h.rx = Some(rx);
        h.ready = true;
    }
}

/// Starts a helper serving member `index` (`rx`); on failure the member
/// comes back with the error. The helper starts in the port thread's
/// `class`, which it inherits from it, and manages it as that thread does.
#[allow(clippy::type_complexity)]
fn spawn_helper(
    id: PortId,
    name: &str,
    index: usize,
    cpu: Option<usize>,
    mut rx: Box<dyn PortRx>,
    l: &Lending,
    class: Class,
) -> Result<Helper, (Box<dyn PortRx>, io::Error)> {
    let setup = |rx: &mut dyn PortRx| -> io::Result<(Waits, Arc<Waker>)> {
        let poll = Waits::new()?;
        let waker = Arc::new(Waker::new(poll.poll.registry(), WAKE)?);
        poll.register(rx, token(0))?;
        Ok((poll, waker))
    };
    let (poll, waker) = match setup(rx.as_mut()) {
        Ok(v) => v,
        Err(e) => {
            rx.waiting_in(None);
            return Err((rx, e));
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let at = Placement { cpu, nice: l.nice };
    let thread_name = format!("rx-{name}/{index}");
    let sw = l.sw.clone();
    let (name, restart, give_back, port_waker) = (name.to_string(), l.restart, l.give_back.clone(), l.waker.clone());
    // The member moves into the thread once it runs: if the thread cannot
    // start, it is taken back from here.
    let handover = Arc::new(std::sync::Mutex::new(Some(rx)));
    let thread = std::thread::Builder::new().name(thread_name.clone()).spawn({
        let (stop, handover) = (stop.clone(), handover.clone());
        move || {
            let Some(rx) = handover.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else { return };
            at.apply_or_warn(&name);
            let held = vec![Held { index: 0, cpu, rx: Some(rx), ready: true, frames: 0, helper: None }];
            let (sw, name, thread, stop, fwd) = (&sw, &name, &thread_name, &stop, Forwarder::new(id));
            let (lending, helper) = (None, true);
            let mut r = Reader { sw, id, name, thread, stop, poll, held, lending, helper, fwd, store: vec![], class };
            supervise(&mut r, restart);
            if let Some(mut rx) = r.held.pop().and_then(|h| h.rx) {
                // Out of this thread's epoll while it is still open.
                rx.waiting_in(None);
                let _ = give_back.send((index, rx));
                let _ = port_waker.wake();
            }
        }
    });
    match thread {
        Ok(thread) => Ok(Helper { stop, waker, thread }),
        Err(e) => {
            let rx = handover.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            Err((rx.expect("a thread that did not start took nothing"), e))
        }
    }
}

/// Runs the reader loop, restarting it after a panic (see [`Restart`]).
fn supervise(r: &mut Reader<'_>, restart: Restart) {
    let mut panics: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut backoff = restart.backoff;
    loop {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.run()));
        let Err(payload) = run else { return };
        let (sw, name, thread) = (r.sw, r.name, r.thread);
        if let Some(p) = sw.port(r.id) {
            p.counters.reader_panics.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        while panics.front().is_some_and(|t| now.duration_since(*t) > restart.window) {
            panics.pop_front();
        }
        if panics.len() >= restart.max_restarts {
            tracing::error!(port = %name, thread, panic = panic_message(&*payload), restarts = panics.len(),
                "reader panicked again; the port is marked failed (re-add it with `userbridge port del` and `port add`)");
            if let Some(p) = sw.port(r.id) {
                p.set_failed();
            }
            return;
        }
        panics.push_back(now);
        tracing::error!(port = %name, thread, panic = panic_message(&*payload), backoff_ms = backoff.as_millis(),
            "reader panicked; restarting it");
        // Wait out the back-off, but not past a stop.
        let until = now + backoff;
        while Instant::now() < until {
            if r.stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// What a panic said, for the log.
fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

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
