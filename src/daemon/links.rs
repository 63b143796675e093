//! What the daemon does when a link changes: a port whose link goes down
//! (administratively, or its veth peer went away or down) is marked down
//! and gets no frames, and up again when the link is; a deleted link's port
//! is gone (its reader stops by itself), and a configured port whose
//! interface comes back is re-attached. A bridge's host port is made again
//! when someone deletes it, and copied every frame while tcpdump watches
//! it. The events come from `crate::watch`, through the daemon's loop.

use super::Daemon;
use std::sync::atomic::Ordering;
use ub_datapath::PortState;
use ub_netlink::{Link, LinkEvent};

/// Which links a watcher's events are about: it watches the namespace of
/// the pods' ports, of the host ports, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub pods: bool,
    pub host: bool,
}

impl Daemon {
    /// A link of the namespace `w` watches changed.
    pub fn link_event(&self, w: Watched, ev: LinkEvent) {
        let name = match &ev {
            LinkEvent::Removed { name, .. } => name.as_str(),
            LinkEvent::Changed(l) => l.name.as_str(),
        };
        if let Some(b) = self.bridges().into_iter().find(|b| b.host.as_ref().is_some_and(|h| h.name == name)) {
            if w.host {
                match ev {
                    LinkEvent::Removed { .. } => {
                        if b.recreate_host(&self.opener) {
                            self.links.host_recreated.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    LinkEvent::Changed(link) => b.host_promisc(link.promisc),
                }
            }
            return;
        }
        if w.pods {
            self.port_link_event(ev);
        }
    }

    fn port_link_event(&self, ev: LinkEvent) {
        let c = &self.links;
        match ev {
            LinkEvent::Removed { name, .. } => {
                let Some(b) = self.bridge_of_port(&name) else { return };
                if let Some(p) = b.sw.port_by_name(&name).filter(|p| p.state() != PortState::Gone) {
                    c.gone.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(bridge = %b.name, port = %name, "interface deleted");
                    // The reader stops by itself once its socket reports it; no frame
                    // goes to the port meanwhile, and its entries go now.
                    b.sw.port_gone(p.id);
                }
            }
            LinkEvent::Changed(link) => {
                let Some(port) = self.bridge_of_port(&link.name).and_then(|b| b.sw.port_by_name(&link.name)) else {
                    return self.reattach_if_wanted(&link.name);
                };
                let now = port.state();
                if now == PortState::Gone {
                    return self.reattach_if_wanted(&link.name);
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

    /// Notifications of the namespace `w` watches were lost (the kernel
    /// drops them when many links change at once): `links` is every link
    /// there now, read afresh. Each is taken as changed, and each port whose
    /// link is not among them as deleted.
    pub fn links_resynced(&self, w: Watched, links: Vec<Link>) {
        self.links.resyncs.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(links = links.len(), "link notifications were lost; links read again");
        let present = |name: &str| links.iter().any(|l| l.name == name);
        let mut missing: Vec<String> = Vec::new();
        for b in self.bridges() {
            let host = b.host.as_ref().map(|h| h.name.clone());
            if let Some(h) = host.as_ref().filter(|h| w.host && !present(h)) {
                missing.push(h.to_string());
            }
            if w.pods {
                missing.extend(b.port_names().iter().filter(|n| !present(n)).map(ToString::to_string));
            }
        }
        for name in missing {
            self.link_event(w, LinkEvent::Removed { index: 0, name });
        }
        for l in links {
            self.link_event(w, LinkEvent::Changed(l));
        }
    }
}
