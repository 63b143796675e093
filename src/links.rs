//! Follows the attached links through netlink notifications: a port whose
//! link goes down (administratively, or its veth peer went away or down) is
//! marked down and gets no frames; it is marked up again when the link is.
//! A deleted link's port is stopped by its reader (the socket reports it);
//! when an interface of that name comes back and the configuration lists
//! it, the port is re-attached.

use crate::daemon::{Daemon, DaemonError, spawn_supervised};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ub_netlink::{LinkEvent, LinkWatcher, NetNs};
use ub_port::PortState;

pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Follows the links of `ns` (the calling thread's namespace when `None`).
    /// The host port's events are handled by the watcher of the namespace it
    /// lives in: the start namespace's when the daemon entered another.
    pub fn start(d: Arc<Daemon>, ns: Option<Arc<NetNs>>) -> Result<Watcher, DaemonError> {
        let open = || LinkWatcher::open(Duration::from_millis(250));
        let w = match &ns {
            Some(ns) => ns.run(open).and_then(|r| r),
            None => open(),
        }
        .map_err(DaemonError::Links)?;
        let host_here = d.host.is_some() && (ns.is_some() || d.start_ns.is_none());
        let pods_here = ns.is_none();
        let w = std::sync::Mutex::new(w);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn_supervised("links", d.clone(), {
            let stop = stop.clone();
            move || {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                while !stop.load(Ordering::Acquire) {
                    match w.wait() {
                        Ok(events) => events.into_iter().for_each(|ev| handle(&d, ev, host_here, pods_here)),
                        Err(e) => {
                            tracing::error!(error = %e, "link notifications failed; link states are no longer followed");
                            return;
                        }
                    }
                }
            }
        })?;
        Ok(Watcher { stop, thread: Some(thread) })
    }
}

fn handle(d: &Daemon, ev: LinkEvent, host_here: bool, pods_here: bool) {
    let c = &d.links;
    let host = d.host.as_ref().map(|h| h.name.as_str());
    let name = match &ev {
        LinkEvent::Removed { name, .. } => name.as_str(),
        LinkEvent::Changed(l) => l.name.as_str(),
    };
    if Some(name) == host {
        if host_here {
            host_event(d, ev);
        }
        return;
    }
    if !pods_here {
        return;
    }
    match ev {
        LinkEvent::Removed { name, .. } => {
            if let Some(p) = d.sw.port_by_name(&name).filter(|p| p.state() != PortState::Gone) {
                c.gone.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(port = %name, "interface deleted");
                // The reader stops by itself once its socket reports it; no frame
                // goes to the port meanwhile, and its entries go now.
                d.sw.port_gone(p.id);
            }
        }
        LinkEvent::Changed(link) => {
            let Some(port) = d.sw.port_by_name(&link.name) else {
                return d.reattach_if_wanted(&link.name);
            };
            let now = port.state();
            if now == PortState::Gone {
                return d.reattach_if_wanted(&link.name);
            }
            let want = if link.admin_up && link.oper_up { PortState::Up } else { PortState::Down };
            // A blocked port's link being up changes nothing: the loop guard owns it.
            if now != want && !(now == PortState::Blocked && want == PortState::Up) {
                let counter = if want == PortState::Up { &c.up } else { &c.down };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::info!(port = %link.name, state = ?want, "link state changed");
                port.set_state(want);
            }
        }
    }
}

/// The host port's link: followed for its promiscuous flag (tcpdump on it)
/// and made again if someone deletes it.
fn host_event(d: &Daemon, ev: LinkEvent) {
    match ev {
        LinkEvent::Removed { .. } => d.recreate_host(),
        LinkEvent::Changed(link) => d.host_promisc(link.promisc),
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
