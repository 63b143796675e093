//! Helpers: while a port's thread is busy, or a member of its port gets a
//! steady stream from another CPU, that member is lent to a helper thread
//! pinned to the member's CPU; a helper whose member goes quiet gives it
//! back and ends. Helpers across the switch are bounded by the number of
//! ports (`Switch::take_helper`), so a node runs about two reader threads
//! per port at most.

use super::pace::Follow;
use super::placement::{Class, Placement, pin_to};
use super::{Held, Reader, WAKE, Waits, run_supervised, token};
use crate::forward::Forwarder;
use crate::switch::Switch;
use mio::Waker;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;
use ub_fdb::PortId;
use ub_port::PortRx;
use ub_supervise::Restart;

/// A helper thread serving one member; it sends the member back when it ends.
pub(super) struct Helper {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
}

/// What the port's own thread needs to lend members to helpers.
pub(super) struct Lending {
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
    /// For a port thread whose waker is `waker`: helpers at `nice`,
    /// restarted as `restart` says.
    pub(super) fn new(sw: Arc<Switch>, nice: Option<i32>, restart: Restart, waker: Arc<Waker>) -> Lending {
        let (give_back, returned) = std::sync::mpsc::channel();
        Lending { sw, nice, restart, waker, give_back, returned, pinned: None, follow: Follow::default() }
    }

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

impl Reader<'_> {
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
    pub(super) fn lend_members(&mut self, min_frames: u64) {
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
    pub(super) fn take_back(&mut self) {
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
    pub(super) fn place(&mut self) {
        let Some(cpu) = self.home().and_then(|i| self.held[i].cpu) else { return };
        if let Some(l) = &mut self.lending {
            l.pin(cpu, self.name);
        }
    }

    /// The thread woke for frames of member `i` alone: moves to its CPU if
    /// [`Follow`] says so.
    pub(super) fn follow(&mut self, i: usize, now: Instant) {
        let cpu = self.held[i].cpu;
        let Some(l) = &mut self.lending else { return };
        if let Some(to) = l.follow.woke(l.pinned, cpu, now) {
            l.pin(to, self.name);
        }
    }

    /// Stops every helper and waits for it (the port's thread is ending).
    pub(super) fn recall_helpers(&mut self) {
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
            run_supervised(&mut r, restart);
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
