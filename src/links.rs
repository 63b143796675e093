//! Follows the attached links through netlink notifications: a port whose
//! link goes down (administratively, or its veth peer went away or down) is
//! marked down and gets no frames; it is marked up again when the link is.
//! Deletion is handled by the port's reader (its socket reports it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ub_datapath::{PortState, Switch};
use ub_netlink::{LinkEvent, LinkWatcher};

pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub fn start(sw: Arc<Switch>) -> Result<Watcher, String> {
        let mut w = LinkWatcher::open(Duration::from_millis(250)).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("links".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Acquire) {
                        let events = match w.wait() {
                            Ok(ev) => ev,
                            Err(e) => {
                                tracing::error!(error = %e, "link notifications failed; link states are no longer followed");
                                return;
                            }
                        };
                        for ev in events {
                            let LinkEvent::Changed(link) = ev else { continue };
                            let Some(port) = sw.port_by_name(&link.name) else { continue };
                            let want = if link.admin_up && link.oper_up { PortState::Up } else { PortState::Down };
                            let now = port.state();
                            if now != PortState::Gone && now != want {
                                tracing::info!(port = %link.name, state = ?want, "link state changed");
                                port.set_state(want);
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("starting the link watcher: {e}"))?;
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
