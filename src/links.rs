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
use ub_netlink::{LinkEvent, LinkWatcher};
use ub_port::PortState;

pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub fn start(d: Arc<Daemon>) -> Result<Watcher, DaemonError> {
        let w = std::sync::Mutex::new(LinkWatcher::open(Duration::from_millis(250)).map_err(DaemonError::Links)?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn_supervised("links", d.clone(), {
            let stop = stop.clone();
            move || {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                while !stop.load(Ordering::Acquire) {
                    match w.wait() {
                        Ok(events) => events.into_iter().for_each(|ev| handle(&d, ev)),
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

fn handle(d: &Daemon, ev: LinkEvent) {
    let c = &d.links;
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

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
