//! Follows a namespace's links through netlink notifications and hands
//! what it sees to the daemon's loop ([`Seen`]); it never changes the
//! daemon itself. When notifications fail (ENOBUFS: the kernel dropped
//! some while many links changed at once), it subscribes again, reads
//! every link afresh and hands that over, and goes on.

use crate::daemon::Watched;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use ub_netlink::{Link, LinkEvent, LinkWatcher, NetNs};

/// What a watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Link(Watched, LinkEvent),
    /// Notifications were lost; these are all the links there now.
    Resynced(Watched, Vec<Link>),
}

/// Where link events come from: a netlink subscription, or a test's.
pub trait LinkSource {
    /// The next notifications; empty when none came for a while.
    fn wait(&mut self) -> ub_netlink::Result<Vec<LinkEvent>>;
    /// Subscribes afresh after a failure.
    fn reopen(&mut self) -> ub_netlink::Result<()>;
    /// Every link there now.
    fn dump(&mut self) -> ub_netlink::Result<Vec<Link>>;
}

/// How long `wait` blocks at most, so a stop is seen.
const POLL: Duration = Duration::from_millis(250);

/// The links of one namespace (the calling thread's when `ns` is `None`).
struct Netlink {
    ns: Option<Arc<NetNs>>,
    w: LinkWatcher,
}

impl Netlink {
    fn in_ns<T: Send>(
        ns: &Option<Arc<NetNs>>,
        f: impl FnOnce() -> ub_netlink::Result<T> + Send,
    ) -> ub_netlink::Result<T> {
        NetNs::run_in(ns.as_deref(), f)?
    }

    fn open(ns: Option<Arc<NetNs>>) -> ub_netlink::Result<Netlink> {
        let w = Self::in_ns(&ns, || LinkWatcher::open(POLL))?;
        Ok(Netlink { ns, w })
    }
}

impl LinkSource for Netlink {
    fn wait(&mut self) -> ub_netlink::Result<Vec<LinkEvent>> {
        self.w.wait()
    }
    fn reopen(&mut self) -> ub_netlink::Result<()> {
        self.w = Self::in_ns(&self.ns, || LinkWatcher::open(POLL))?;
        Ok(())
    }
    fn dump(&mut self) -> ub_netlink::Result<Vec<Link>> {
        Self::in_ns(&self.ns, || ub_netlink::Rtnl::open()?.links())
    }
}

/// Follows `src` until `stop`, sending what it sees on `tx` (a closed
/// channel ends it too). A failure is followed by a fresh subscription and
/// a whole read of the links, retried with a back-off until they work.
pub fn follow(src: &mut dyn LinkSource, w: Watched, tx: &Sender<Seen>, stop: &AtomicBool) {
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::Acquire) {
        let failed = match src.wait() {
            Ok(events) => {
                for ev in events {
                    if tx.send(Seen::Link(w, ev)).is_err() {
                        return;
                    }
                }
                continue;
            }
            Err(e) => e,
        };
        tracing::warn!(error = %failed, "link notifications failed; subscribing again and reading every link");
        // Subscribed first, so that no change after the read goes unseen.
        let links = src.reopen().and_then(|()| src.dump());
        match links {
            Ok(links) => {
                backoff = Duration::from_millis(100);
                if tx.send(Seen::Resynced(w, links)).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retry_ms = backoff.as_millis(), "reading the links failed");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A watcher thread; dropping it stops and joins it.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Follows the links of `ns` (the calling thread's when `None`), which
    /// holds what `w` says.
    pub fn start(
        ns: Option<Arc<NetNs>>,
        w: Watched,
        tx: Sender<Seen>,
        panics: Arc<AtomicU64>,
    ) -> ub_netlink::Result<Watcher> {
        let src = std::sync::Mutex::new(Netlink::open(ns)?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = ub_supervise::spawn("links", panics, {
            let stop = stop.clone();
            move || {
                let mut src = src.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                follow(&mut *src, w, &tx, &stop);
            }
        })
        .map_err(|e| ub_netlink::Error::io("starting the link watcher", e))?;
        Ok(Watcher { stop, thread: Some(thread) })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Notifications as a test scripts them; stops the follower when they run out.
    struct Script {
        waits: VecDeque<ub_netlink::Result<Vec<LinkEvent>>>,
        reopened: usize,
        stop: Arc<AtomicBool>,
    }

    impl LinkSource for Script {
        fn wait(&mut self) -> ub_netlink::Result<Vec<LinkEvent>> {
            self.waits.pop_front().unwrap_or_else(|| {
                self.stop.store(true, Ordering::Release);
                Ok(Vec::new())
            })
        }
        fn reopen(&mut self) -> ub_netlink::Result<()> {
            self.reopened += 1;
            Ok(())
        }
        fn dump(&mut self) -> ub_netlink::Result<Vec<Link>> {
            Ok(vec![link("veth2")])
        }
    }

    fn link(name: &str) -> Link {
        Link { name: name.into(), ..Link::default() }
    }

    #[test]
    fn lost_notifications_are_followed_by_every_link_and_then_by_more_notifications() {
        let stop = Arc::new(AtomicBool::new(false));
        let enobufs = ub_netlink::Error::io("reading link notifications", std::io::Error::from_raw_os_error(105));
        let mut s = Script {
            waits: VecDeque::from([
                Ok(vec![LinkEvent::Changed(link("veth1"))]),
                Err(enobufs),
                Ok(vec![LinkEvent::Removed { index: 3, name: "veth3".into() }]),
            ]),
            reopened: 0,
            stop: stop.clone(),
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Watched { pods: true, host: false };
        follow(&mut s, w, &tx, &stop);
        let seen: Vec<Seen> = rx.try_iter().collect();
        assert_eq!(
            seen,
            [
                Seen::Link(w, LinkEvent::Changed(link("veth1"))),
                Seen::Resynced(w, vec![link("veth2")]),
                Seen::Link(w, LinkEvent::Removed { index: 3, name: "veth3".into() }),
            ]
        );
        assert_eq!(s.reopened, 1);
    }
}
