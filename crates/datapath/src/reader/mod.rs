//! A port's reader: one thread that receives the port's frames and runs
//! them through the [`Forwarder`], plus helpers while the port is busy or
//! steadily fed from more than one CPU (`lend.rs`).
//!
//! A port may have several receive halves ("members": the sockets of a
//! PACKET_FANOUT group, the queues of a multiqueue TAP), member `i` getting
//! the frames that arrived on one CPU. The port's own thread serves them all
//! while it keeps up, so an idle node runs one thread per port. It runs on
//! the CPU its frames arrive on, and SCHED_BATCH while it carries TCP
//! super-frames (`placement.rs`). When it waits, ends a window or looks after
//! its port is `pace.rs`, pure state over the thread's clock.
//! docs/architecture.md ("Reader threads") says why, with the measurements.

mod lend;
mod pace;
mod placement;

pub use ub_supervise::Restart;

use crate::counters::DropKind;
use crate::forward::Forwarder;
use crate::switch::Switch;
use lend::{Helper, Lending};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use pace::{Pace, Wait};
use placement::{Class, Placement};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;
use ub_fdb::PortId;
use ub_port::{Health, PortRx, RxFrame, Waiter, recycle_rx};
use ub_proto::PortState;

const WAKE: Token = Token(0);
/// Passes a stopping reader makes at most to read rings empty (a ring of
/// 65 536 slots, read 64 frames a pass, takes 1 024).
const RING_PASSES: usize = 4096;

/// Readers started while this is set wait before their first frame.
static HOLD: AtomicBool = AtomicBool::new(false);

/// Holds the readers started from now on before their first frame, or
/// lets them go: a daemon taking over attaches all its ports, on the
/// sockets handed to it with frames already queued, before any is read (a
/// frame read while the port it goes to is not attached yet would be lost).
pub fn hold_readers(on: bool) {
    HOLD.store(on, Ordering::Release);
}

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

/// Starts the reader of port `id`, which has one receive half.
pub fn spawn_reader(sw: Arc<Switch>, id: PortId, rx: Box<dyn PortRx>) -> io::Result<ReaderHandle> {
    spawn_reader_at(sw, id, vec![Member { rx, cpu: None }], None, Restart::default())
}

/// Starts the reader of port `id` over its `members` (at least one), at
/// scheduling priority `nice`; a placement the system refuses (no such CPU,
/// no privilege) is a warning, not a failure. A panic in the per-batch
/// path is logged with the port's name, counted (`reader_panics`), and the
/// loop restarts as `restart` says; past its limit the port is `failed`,
/// so a reader never dies silently with its port "up".
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
    let lending = (held.len() > 1).then(|| Lending::new(sw.clone(), nice, restart, waker.clone()));
    let thread = std::thread::Builder::new().name(thread_name.clone()).spawn({
        let stop = stop.clone();
        move || {
            Placement { nice, ..Placement::default() }.apply_or_warn(&name);
            while HOLD.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let (sw, name, thread, stop, fwd) = (&sw, &name, &thread_name, &stop, Forwarder::new(id));
            let (helper, class) = (false, Class::of_this_thread());
            let mut r = Reader { sw, id, name, thread, stop, poll, held, lending, helper, fwd, store: vec![], class };
            run_supervised(&mut r, restart);
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

/// One reader thread's loop state: the port's own thread (with `lending`)
/// or a helper (without; it ends once its member has been quiet a second).
struct Reader<'s> {
    sw: &'s Switch,
    id: PortId,
    name: &'s str,
    thread: &'s str,
    stop: &'s AtomicBool,
    poll: Waits,
    held: Vec<Held>,
    lending: Option<Lending>,
    helper: bool,
    fwd: Forwarder,
    store: Vec<RxFrame<'static>>,
    class: Class,
}

/// What one pass over the members found.
#[derive(Debug, Default)]
struct Pass {
    got: bool,
    bytes: u64,
    /// The member whose frames it found, if only one had any.
    from: Option<usize>,
    /// A receive failed: look at the link.
    check: bool,
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

    /// Receives a batch from each member that may have frames, and forwards it.
    fn pass(&mut self, waits: bool) -> Pass {
        let sw = self.sw;
        let mut p = Pass::default();
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
                p.bytes += frames.iter().map(|f| f.data.len() as u64).sum::<u64>();
                p.from = if p.got { None } else { Some(h.index) };
                p.got = true;
            }
            self.store = recycle_rx(frames);
            if had && waits && rx.drained() {
                // Emptied: the next frame signals; no receive just to hear "none".
                h.ready = false;
            }
            if let Err(e) = res {
                tracing::warn!(port = %self.name, error = %e, "receive failed");
                p.check = true;
            }
        }
        p
    }

    /// The loop; returns when stopped, when the port is gone, or (a helper)
    /// when its member has been quiet for a second.
    fn run(&mut self) {
        let sw = self.sw;
        // Afresh after a panic: the last batch may have stopped half-staged.
        self.fwd = Forwarder::new(self.id);
        let mut events = Events::with_capacity(8);
        let waits = self.held.iter().any(|h| h.rx.as_ref().is_some_and(|rx| rx.wait_fd().is_some()));
        let mut pace = Pace::new(Instant::now());
        while !self.stop.load(Ordering::Acquire) {
            let Pass { got, bytes, from, mut check } = self.pass(waits);
            let mut now = Instant::now();
            let woke_for_frames = pace.passed(got, bytes, now);
            if self.lending.is_some() {
                if let (true, Some(i)) = (woke_for_frames, from) {
                    self.follow(i, now);
                }
                self.take_back();
            }
            let held = &self.held;
            let several = || held.iter().filter(|h| h.rx.is_some()).nth(1).is_some();
            let up = || sw.port(self.id).is_some_and(|p| p.state() == PortState::Up);
            let wait = pace.wait(got, waits, several, self.helper, up);
            if let Some(timeout) = wait.timeout() {
                if wait == Wait::UntilFrame {
                    // Asleep until a frame: no bulk stream runs through it.
                    self.class.window(0, 0, self.thread);
                }
                if let Err(e) = self.poll.poll.poll(&mut events, timeout)
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    tracing::error!(port = %self.name, error = %e, "poll failed; reader stops");
                    break;
                }
                let after = Instant::now();
                pace.waited(got, now, after);
                now = after;
                for ev in events.iter() {
                    let Some(h) = ev.token().0.checked_sub(1).and_then(|i| self.held.get_mut(i)) else { continue };
                    h.ready = true;
                    check |= ev.is_error() || ev.is_read_closed();
                }
            }
            if self.helper && pace.helper_idle(now) {
                // A helper whose member went quiet: the port's thread takes it back.
                return;
            }
            if let Some(w) = pace.window_end(now) {
                let ticking = self.held.iter_mut().filter_map(|h| h.rx.as_mut()).fold(false, |t, rx| rx.tick(now) | t);
                pace.ticking(ticking);
                if self.lending.is_some() {
                    // Home first: a helper started for another member never
                    // shares a CPU with this thread, not even until it moves.
                    self.place();
                    self.lend_members(if w.busy { 1 } else { pace::ACTIVE_FRAMES });
                }
                let frames = self.held.iter_mut().map(|h| std::mem::take(&mut h.frames)).sum();
                self.class.window(frames, w.bytes, self.thread);
            }
            if pace.housekeeping(now)
                && let Some(p) = sw.port(self.id)
            {
                for rx in self.held.iter().filter_map(|h| h.rx.as_ref()) {
                    p.counters.drop_n(DropKind::RingFull, rx.kernel_drops());
                }
                check |= p.state() == PortState::Down;
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
        self.empty_rings(waits);
    }

    /// Stopped before a handover: the rings the port gives back are read
    /// empty and their frames forwarded here, at once, since they cannot
    /// travel (frames go to the sockets already). Bounded.
    fn empty_rings(&mut self, waits: bool) {
        for _ in 0..RING_PASSES {
            if !self.held.iter().any(|h| h.rx.as_ref().is_some_and(|rx| rx.ring_to_empty())) {
                return;
            }
            for h in &mut self.held {
                h.ready = true;
            }
            self.pass(waits);
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
        let set = Arc::new(crate::sys::dup_poll(&poll)?);
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

/// Runs the reader loop under `ub_supervise`: a panic is logged and
/// counted on the port, the loop restarts after its back-off (not past a
/// stop), and past the restart limit the port is marked failed.
fn run_supervised(r: &mut Reader<'_>, restart: Restart) {
    let (sw, id, name, thread, stop) = (r.sw, r.id, r.name, r.thread, r.stop);
    let panicked = |msg: &str, v: ub_supervise::Verdict| {
        let port = sw.port(id);
        if let Some(p) = &port {
            p.counters.reader_panics.fetch_add(1, Ordering::Relaxed);
        }
        match v {
            ub_supervise::Verdict::Restart(backoff) => tracing::error!(port = %name, thread, panic = msg,
                backoff_ms = backoff.as_millis(), "reader panicked; restarting it"),
            ub_supervise::Verdict::GiveUp => {
                tracing::error!(port = %name, thread, panic = msg,
                    "reader panicked again; the port is marked failed (re-add it with `userbridge port del` and `port add`)");
                if let Some(p) = &port {
                    p.set_failed();
                }
            }
        }
    };
    ub_supervise::run(restart, || r.run(), panicked, || stop.load(Ordering::Acquire));
}
