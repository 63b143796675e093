//! Receiving after tc ingress. A packet socket bound to ETH_P_ALL is served
//! before the interface's tc ingress runs, one bound to a single protocol
//! after it: on a port whose interface has an ingress qdisc (the CNI
//! bandwidth plugin's ifb redirect, a policer), the port takes IPv4, IPv6
//! and ARP from three protocol sockets and its ETH_P_ALL sockets' filter
//! leaves them out, so what tc drops or delays is never forwarded early.
//! Half 0 looks at the qdisc when a qdisc notification names its interface
//! (its socket wakes the reader). docs/architecture.md
//! ("Shaping: tc ingress on a port") says why and what differs.

use super::recv::mmsg_batch;
use super::socket::{MMSG_SLOTS, rx_buffers, unbound_rx_socket};
use crate::sys::{self, AFTER_TC, MmsgRecv};
use crate::{Role, RxFrame, Waiter};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};
use ub_netlink::{NetNs, Rtnl, TcNews, TcWatcher};

/// What a port's receive halves share: whether frames of [`AFTER_TC`] come
/// from the protocol sockets, and the ETH_P_ALL sockets whose filter
/// follows that, set at once from the thread that switches (a half that
/// gets no frames may not run for a second).
#[derive(Debug)]
pub(super) struct Shaping {
    /// Each half's socket.
    mains: Vec<Arc<OwnedFd>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    on: bool,
    /// The protocol sockets while they are open (half 0 reads them).
    after_tc: Vec<Arc<OwnedFd>>,
    /// The busy halves' ring sockets; gone when their half closed them.
    rings: Vec<Weak<OwnedFd>>,
}

impl Shaping {
    pub(super) fn new(mains: Vec<Arc<OwnedFd>>) -> Arc<Shaping> {
        Arc::new(Shaping { mains, state: Mutex::default() })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives a new ring socket of the port the filter the port's state
    /// calls for, and keeps it in step from then on.
    pub(super) fn add_ring(&self, fd: &Arc<OwnedFd>) -> io::Result<()> {
        let mut st = self.state();
        sys::skip_after_tc(fd.as_fd(), st.on)?;
        st.rings.retain(|r| r.strong_count() > 0);
        st.rings.push(Arc::downgrade(fd));
        Ok(())
    }

    /// Duplicates of the port's receive sockets: each half's, then those
    /// read after tc ingress, to hand over.
    pub(super) fn handover_fds(&self) -> io::Result<Vec<(Role, OwnedFd)>> {
        let st = self.state();
        let rx = self.mains.iter().map(|fd| Ok((Role::Rx, fd.try_clone()?)));
        rx.chain(st.after_tc.iter().map(|fd| Ok((Role::AfterTc, fd.try_clone()?)))).collect()
    }

    fn set_after_tc(&self, socks: &[ProtoSock]) {
        self.state().after_tc = socks.iter().map(|s| s.fd.clone()).collect();
    }

    fn set(&self, on: bool) -> io::Result<()> {
        let mut st = self.state();
        st.on = on;
        st.rings.retain(|r| r.strong_count() > 0);
        let rings = st.rings.iter().filter_map(Weak::upgrade);
        self.mains.iter().cloned().chain(rings).try_for_each(|fd| sys::skip_after_tc(fd.as_fd(), on))
    }
}

/// Which sources a batch reads right after a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    /// The half's own: it holds the frames from before the protocol sockets.
    Own,
    /// The protocol sockets, unbound: they hold the frames from before the
    /// half's own took everything again.
    Protos,
    /// The protocol sockets are empty: closed at the next batch.
    Closing,
}

/// A protocol socket.
#[derive(Debug)]
struct ProtoSock {
    fd: Arc<OwnedFd>,
    recv: MmsgRecv,
}

/// Half 0's part: the look at the ingress qdisc when a notification says
/// it changed, and the protocol sockets while the interface has one, read
/// in turn with the half's own.
#[derive(Debug)]
pub(super) struct Shaper {
    shared: Arc<Shaping>,
    name: String,
    ifindex: u32,
    /// The port's namespace, where its protocol sockets are made.
    netns: NetNs,
    rtnl: Rtnl,
    /// Qdisc notifications, in the reader's epoll set.
    events: TcWatcher,
    /// Empty, or one per [`AFTER_TC`] type: bound while `on`, and after it
    /// until what they hold is read.
    socks: Vec<ProtoSock>,
    /// Frames of [`AFTER_TC`] come through `socks`.
    on: bool,
    /// At a switch, the sources that hold the older frames, read alone
    /// until empty so a flow is not reordered.
    first: Option<First>,
    /// The source read first next time: 0 is the half's own.
    turn: usize,
    /// Every source was found empty in the last batch.
    drained: bool,
    reader: Option<Waiter>,
    /// The last look failed (said once, until a look succeeds).
    failing: bool,
}

impl Shaper {
    /// Half 0's shaper, in the port's namespace (the calling thread's); it
    /// looks at once, so a port attached to a shaped interface starts so.
    /// `after_tc`: the protocol sockets a daemon before this one handed
    /// over (bound, with what waits in them), taken as they are.
    pub(super) fn new(shared: Arc<Shaping>, name: &str, ifindex: u32, after_tc: Vec<OwnedFd>) -> io::Result<Shaper> {
        let netns = NetNs::current().map_err(io::Error::other)?;
        let rtnl = Rtnl::open().map_err(io::Error::other)?;
        let events = TcWatcher::open().map_err(io::Error::other)?;
        let mut s = Shaper {
            shared,
            name: name.to_string(),
            ifindex,
            netns,
            rtnl,
            events,
            socks: Vec::new(),
            on: false,
            first: None,
            turn: 0,
            drained: false,
            reader: None,
            failing: false,
        };
        if after_tc.len() == AFTER_TC.len() {
            for fd in after_tc {
                let recv = rx_buffers()?;
                s.socks.push(ProtoSock { fd: Arc::new(fd), recv });
            }
            s.shared.set(true)?;
            s.shared.set_after_tc(&s.socks);
            s.on = true;
        }
        s.look();
        Ok(s)
    }

    /// Whether the protocol sockets are open: then [`Shaper::recv`] reads.
    pub(super) fn active(&self) -> bool {
        !self.socks.is_empty()
    }

    /// Closes the protocol sockets (whatever they still hold is lost).
    fn close(&mut self) {
        self.shared.set_after_tc(&[]);
        for s in self.socks.drain(..) {
            if let Some(w) = &self.reader {
                let _ = w.remove(s.fd.as_fd());
            }
        }
        self.first = None;
    }

    pub(super) fn drained(&self) -> bool {
        self.drained
    }

    /// Reads the qdisc notifications; looks again if one named the port's
    /// interface or some were lost.
    pub(super) fn tick(&mut self) {
        if self.first == Some(First::Closing) {
            self.close();
        }
        if self.events.drain(self.ifindex) != TcNews::Nothing {
            self.look();
        }
    }

    /// Receives after tc ingress while the interface has a qdisc there.
    fn look(&mut self) {
        let kind = match self.rtnl.ingress_qdisc(self.ifindex) {
            Ok(k) => k,
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(port = %self.name, error = %e, "cannot read the port's ingress qdisc; tc ingress may be bypassed");
                }
                return;
            }
        };
        self.failing = false;
        match kind {
            Some(kind) if !self.on => match self.start() {
                Ok(()) => tracing::info!(port = %self.name, qdisc = %kind,
                    "tc ingress on the port: IPv4, IPv6 and ARP are now received after it (its shaping and policing apply)"),
                Err(e) => tracing::warn!(port = %self.name, qdisc = %kind, error = %e,
                    "cannot receive after tc ingress; the port's ingress qdisc is bypassed"),
            },
            None if self.on => {
                self.stop();
                tracing::info!(port = %self.name, "no tc ingress on the port any more: all frames received directly");
            }
            _ => {}
        }
    }

    /// Opens the protocol sockets. The ETH_P_ALL sockets leave those
    /// protocols out first, then the protocol sockets are bound: a frame
    /// arriving in between is lost rather than forwarded twice.
    fn start(&mut self) -> io::Result<()> {
        self.close();
        let name = self.name.clone();
        let made = self
            .netns
            .run(|| AFTER_TC.iter().map(|_| unbound_rx_socket(&name)).collect::<Result<Vec<_>, _>>())
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        if let Err(e) = self.shared.set(true) {
            // Some sockets may have taken the filter: all of them take everything again.
            let _ = self.shared.set(false);
            return Err(e);
        }
        let bound = made
            .iter()
            .zip(AFTER_TC)
            .try_for_each(|((fd, _), t)| sys::bind_packet_protocol(fd.as_fd(), self.ifindex, t.to_be()));
        if let Err(e) = bound {
            let _ = self.shared.set(false);
            return Err(e);
        }
        self.socks = made.into_iter().map(|(fd, recv)| ProtoSock { fd: Arc::new(fd), recv }).collect();
        self.shared.set_after_tc(&self.socks);
        (self.on, self.first) = (true, Some(First::Own));
        if let Some(w) = &self.reader {
            for s in &self.socks {
                let _ = w.add(s.fd.as_fd());
            }
        }
        Ok(())
    }

    /// Stops the protocol sockets' frames (a filter that drops all: binding
    /// to protocol 0 keeps the old one), then lets the ETH_P_ALL sockets
    /// take everything again; the protocol sockets are read empty first and
    /// closed then.
    fn stop(&mut self) {
        let stopped = self.socks.iter().try_for_each(|s| sys::drop_all(s.fd.as_fd(), true));
        if stopped.is_err() {
            self.close();
        }
        self.on = false;
        self.first = (!self.socks.is_empty()).then_some(First::Protos);
        if let Err(e) = self.shared.set(false) {
            tracing::warn!(port = %self.name, error = %e, "cannot take the port's receive filter off");
        }
    }

    /// The reader changes: the notifications' socket and the protocol
    /// sockets move to its epoll set.
    pub(super) fn waiting_in(&mut self, reader: Option<Waiter>) {
        let fds = || std::iter::once(self.events.as_fd()).chain(self.socks.iter().map(|s| s.fd.as_fd()));
        if let Some(old) = &self.reader {
            for fd in fds() {
                let _ = old.remove(fd);
            }
        }
        if let Some(w) = &reader {
            for fd in fds() {
                let _ = w.add(fd);
            }
        }
        self.reader = reader;
    }

    /// One batch from the first source, in turn from where the last one
    /// with frames left off, that has frames: the half's own (`own`, which
    /// says whether it emptied it) or a protocol socket. Right after a
    /// switch, the sources with the older frames alone until they are empty.
    pub(super) fn recv<'a>(
        &'a mut self,
        out: &mut Vec<RxFrame<'a>>,
        own: impl FnOnce(&mut Vec<RxFrame<'a>>) -> io::Result<bool>,
    ) -> io::Result<()> {
        if self.first == Some(First::Closing) {
            self.close();
        }
        let Shaper { socks, turn, drained, first, .. } = self;
        // A source not read in this batch may have frames: not drained.
        *drained = false;
        match first {
            Some(First::Own) => {
                if own(out)? {
                    *first = None;
                }
                return Ok(());
            }
            Some(First::Protos) => {
                let mut empty = true;
                for p in socks.iter_mut() {
                    empty &= mmsg_batch(&mut p.recv, p.fd.as_fd(), out)? < MMSG_SLOTS;
                }
                if empty {
                    *first = Some(First::Closing);
                }
                return Ok(());
            }
            Some(First::Closing) | None => {}
        }
        let n = 1 + socks.len();
        let mut own = Some(own);
        let mut it = socks.iter_mut();
        let mut protos = [it.next(), it.next(), it.next()];
        let mut empty = [false; 1 + AFTER_TC.len()];
        for k in 0..n {
            let s = (*turn + k) % n;
            if s == 0 {
                if let Some(f) = own.take() {
                    empty[0] = f(out)?;
                }
            } else if let Some(p) = protos[s - 1].take() {
                empty[s] = mmsg_batch(&mut p.recv, p.fd.as_fd(), out)? < MMSG_SLOTS;
            }
            if !out.is_empty() {
                *turn = (s + 1) % n;
                break;
            }
        }
        *drained = empty[..n].iter().all(|e| *e);
        Ok(())
    }

    /// Clears the protocol sockets' pending errors (ENETDOWN).
    pub(super) fn take_errors(&self) {
        for s in &self.socks {
            let _ = sys::take_socket_error(s.fd.as_fd());
        }
    }

    /// Frames the kernel dropped on the protocol sockets since the last call.
    pub(super) fn kernel_drops(&self) -> u64 {
        self.socks.iter().map(|s| sys::packet_drops(s.fd.as_fd()).map_or(0, u64::from)).sum()
    }
}
