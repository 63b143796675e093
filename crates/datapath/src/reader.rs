use crate::counters::DropKind;
use crate::forward::Forwarder;
use crate::switch::Switch;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ub_fdb::PortId;
use ub_port::{Health, PortRx, PortState, RxFrame, recycle_rx};

const RX: Token = Token(0);
const WAKE: Token = Token(1);
/// How often a busy or down port is looked at (kernel drops, link state).
/// An idle port that is up is looked at once after its last frame, then
/// its reader sleeps until a frame, an error or a stop wakes it: the
/// kernel drops nothing on a socket nobody sends to (and the link watcher
/// follows the link's state), while 1000 readers waking every second cost
/// an idle node 1.7% of a core (docs/benchmarks.md).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// A running reader thread; `stop` ends it and waits for it.
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
pub struct Placement {
    /// Pin the thread to this CPU (with PACKET_FANOUT by CPU, reader `i` of a
    /// port gets the frames that arrived on CPU `i`).
    pub cpu: Option<usize>,
    /// Scheduling priority (nice, -20..=19) of the thread.
    pub nice: Option<i32>,
    /// Index of the reader among its port's readers, for the thread name.
    pub index: Option<usize>,
}

impl Placement {
    /// Applies the placement to the calling thread.
    fn apply(&self) -> io::Result<()> {
        if let Some(cpu) = self.cpu {
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            rustix::thread::sched_setaffinity(None, &set)?;
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

/// Starts the reader thread of port `id`.
pub fn spawn_reader(sw: Arc<Switch>, id: PortId, rx: Box<dyn PortRx>) -> io::Result<ReaderHandle> {
    spawn_reader_at(sw, id, rx, Placement::default(), Restart::default())
}

/// Starts a reader thread of port `id` placed as `at` says; a placement the
/// system refuses (no such CPU, no privilege) is a warning, not a failure.
/// The thread supervises itself: a panic in the per-batch path is logged
/// with the port's name, counted (`reader_panics`), and the loop restarts
/// as `restart` says, so a reader never dies silently with its port "up".
pub fn spawn_reader_at(
    sw: Arc<Switch>,
    id: PortId,
    rx: Box<dyn PortRx>,
    at: Placement,
    restart: Restart,
) -> io::Result<ReaderHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    if let Some(fd) = rx.wait_fd() {
        // Edge-triggered: the loop drains the port until it is empty before waiting.
        poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), RX, Interest::READABLE)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let name = sw.port(id).map_or_else(|| format!("port{id}"), |p| p.name.clone());
    let thread_name = match at.index {
        Some(i) => format!("rx-{name}/{i}"),
        None => format!("rx-{name}"),
    };
    let thread = std::thread::Builder::new().name(thread_name.clone()).spawn({
        let stop = stop.clone();
        move || {
            if let Err(e) = at.apply() {
                // Once per process: the same refusal would repeat for every reader.
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(port = %name, cpu = ?at.cpu, nice = ?at.nice, error = %e,
                        "reader placement refused (CPU pinning or nice needs CAP_SYS_NICE below the process's nice); readers run unplaced");
                } else {
                    tracing::debug!(port = %name, error = %e, "reader placement refused");
                }
            }
            supervise(&sw, id, rx, poll, &stop, &name, &thread_name, restart)
        }
    })?;
    Ok(ReaderHandle { id, stop, waker, thread: Some(thread) })
}

/// What a panic said, for the log.
fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs the reader loop, restarting it after a panic (see [`Restart`]).
#[allow(clippy::too_many_arguments)]
fn supervise(
    sw: &Switch,
    id: PortId,
    mut rx: Box<dyn PortRx>,
    mut poll: Poll,
    stop: &AtomicBool,
    name: &str,
    thread: &str,
    restart: Restart,
) {
    let mut panics: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut backoff = restart.backoff;
    loop {
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(sw, id, &mut *rx, &mut poll, stop, name)));
        let Err(payload) = run else { return };
        if let Some(p) = sw.port(id) {
            p.counters.reader_panics.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        while panics.front().is_some_and(|t| now.duration_since(*t) > restart.window) {
            panics.pop_front();
        }
        if panics.len() >= restart.max_restarts {
            tracing::error!(port = %name, thread, panic = panic_message(&*payload), restarts = panics.len(),
                "reader panicked again; the port is marked failed (re-add it with `userbridge port del` and `port add`)");
            if let Some(p) = sw.port(id) {
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
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn run(sw: &Switch, id: PortId, rx: &mut dyn PortRx, poll: &mut Poll, stop: &AtomicBool, name: &str) {
    let mut fwd = Forwarder::new(id);
    let mut events = Events::with_capacity(8);
    let mut store: Vec<RxFrame<'static>> = Vec::with_capacity(ub_port::BATCH);
    let waits = rx.wait_fd().is_some();
    let mut last_housekeeping = Instant::now();
    // Frames arrived since the port was last looked at.
    let mut unchecked = true;
    let set_state = |s: PortState| {
        if let Some(p) = sw.port(id)
            && p.state() != s
        {
            tracing::info!(port = %name, state = ?s, "port state changed");
            p.set_state(s);
        }
    };
    while !stop.load(Ordering::Acquire) {
        let mut frames = recycle_rx(store);
        let res = rx.recv_batch(&mut frames);
        let got = !frames.is_empty();
        if got {
            fwd.forward(sw, &frames, sw.now_ms());
            unchecked = true;
        }
        store = recycle_rx(frames);
        let mut check = false;
        if let Err(e) = res {
            tracing::warn!(port = %name, error = %e, "receive failed");
            check = true;
        }
        if !got && waits {
            let idle = !unchecked && sw.port(id).is_some_and(|p| p.state() == PortState::Up);
            if let Err(e) = poll.poll(&mut events, if idle { None } else { Some(HOUSEKEEPING) })
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(port = %name, error = %e, "poll failed; reader stops");
                break;
            }
            check |= events.iter().any(|ev| ev.token() == RX && (ev.is_error() || ev.is_read_closed()));
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            unchecked = false;
            if let Some(p) = sw.port(id) {
                p.counters.drop_n(DropKind::RingFull, rx.kernel_drops());
                check |= p.state() == PortState::Down;
            }
        }
        if check {
            match rx.check() {
                Health::Up => set_state(PortState::Up),
                Health::Down => set_state(PortState::Down),
                Health::Gone => {
                    tracing::warn!(port = %name, "interface is gone; port removed from forwarding");
                    sw.port_gone(id);
                    return;
                }
            }
        }
    }
}
