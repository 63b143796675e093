//! What the daemon does when a link changes: a port whose link goes down
//! (administratively, or its veth peer went away or down) is marked down
//! and gets no frames, and up again when the link is; a deleted link's port
//! is gone (its reader stops by itself), and a configured port whose
//! interface comes back is re-attached. The host port is made again when
//! someone deletes it, and copied every frame while tcpdump watches it.
//! The events come from `crate::watch`, through the daemon's loop.

use super::{Daemon, lock};
use std::sync::atomic::Ordering;
use ub_datapath::PortState;
use ub_netlink::{Link, LinkEvent};

/// Which links a watcher's events are about: it watches the namespace of
/// the pods' ports, of the host port, or both.
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
        if self.host.as_ref().is_some_and(|h| h.name == name) {
            if w.host {
                match ev {
                    LinkEvent::Removed { .. } => self.recreate_host(),
                    LinkEvent::Changed(link) => self.host_promisc(link.promisc),
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
                if let Some(p) = self.sw.port_by_name(&name).filter(|p| p.state() != PortState::Gone) {
                    c.gone.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(port = %name, "interface deleted");
                    // The reader stops by itself once its socket reports it; no frame
                    // goes to the port meanwhile, and its entries go now.
                    self.sw.port_gone(p.id);
                }
            }
            LinkEvent::Changed(link) => {
                let Some(port) = self.sw.port_by_name(&link.name) else {
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
        if let Some(h) = self.host.as_ref().filter(|h| w.host && !present(&h.name)) {
            missing.push(h.name.to_string());
        }
        if w.pods {
            let host = self.host.as_ref().map(|h| h.name.clone());
            missing.extend(
                lock(&self.ports).keys().filter(|n| Some(*n) != host.as_ref() && !present(n)).map(ToString::to_string),
            );
        }
        for name in missing {
            self.link_event(w, LinkEvent::Removed { index: 0, name });
        }
        for l in links {
            self.link_event(w, LinkEvent::Changed(l));
        }
    }
}
