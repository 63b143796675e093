//! A bridge's way through the node's netfilter (docs/architecture.md,
//! "Netfilter"): a kernel bridge of its own in the host port's namespace,
//! with one port in hairpin mode, the end of a veth pair whose other end is
//! a port of the switch. While the path is on, the switch sends IP unicast
//! between stations into it; the kernel bridge runs br_netfilter's hooks
//! (the node's FORWARD rules, conntrack) on each frame and sends what they
//! let through back out of the same port, to the switch, which delivers it.

use super::{Bridge, BridgeError, Opener};
use crate::lock;
use std::os::fd::AsFd;
use ub_netlink::{NetNs, Rtnl};
use ub_proto::{Backend, IfName, Origin, PortPolicy, PortSpec};

/// The path's interfaces for bridge `bridge` (`ub_proto::netfilter_names`),
/// the switch's port as an interface name.
pub fn names(bridge: &str) -> (String, String, IfName) {
    let (kbridge, outer, inner) = ub_proto::netfilter_names(bridge);
    (kbridge, outer, IfName::new(&inner).expect("13 characters"))
}

/// The largest MTU a veth takes: any frame the stations send fits.
const MTU: u32 = 65_535;

impl Bridge {
    /// Makes the path (bridges with a host port only) and attaches its
    /// switch port, off until [`Bridge::set_netfilter`] turns it on.
    /// Interfaces a daemon before this one left are made again.
    pub fn attach_netfilter(&self, o: &Opener) -> Result<(), BridgeError> {
        if self.host.is_none() {
            return Ok(());
        }
        let (kbridge, outer, inner) = names(&self.name);
        let err = |source| BridgeError::HostNetlink { port: inner.clone(), source };
        self.remove_netfilter_links();
        let mut nl = Rtnl::open().map_err(err)?;
        let host_ns = self.start_ns.as_ref().map(|ns| ns.as_fd());
        nl.add_veth(&inner, &outer, host_ns).map_err(err)?;
        let made = self.in_start_ns(|| -> ub_netlink::Result<()> {
            let mut nl = Rtnl::open()?;
            nl.add_bridge(&kbridge)?;
            let k = nl.link_by_name(&kbridge)?.ok_or_else(|| missing(&kbridge))?;
            let port = nl.link_by_name(&outer)?.ok_or_else(|| missing(&outer))?;
            nl.set_mtu(port.index, MTU)?;
            nl.enslave(port.index, k.index, true)?;
            // No address, no IPv6 of its own: the kernel bridge only filters.
            for dev in [&kbridge, &outer] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
            }
            nl.set_up(port.index, true)?;
            nl.set_up(k.index, true)
        });
        let made = made.map_err(err).and_then(|r| r.map_err(err)).and_then(|()| {
            let l = nl.link_by_name(&inner).map_err(err)?.ok_or_else(|| err(missing(&inner)))?;
            nl.set_mtu(l.index, MTU).map_err(err)?;
            nl.set_up(l.index, true).map_err(err)
        });
        if let Err(e) = made {
            self.remove_netfilter_links();
            return Err(e);
        }
        // What comes back from the kernel teaches nothing and takes no flood.
        let policy = PortPolicy {
            learning: false,
            flood: false,
            bcast_flood: false,
            mcast_flood: false,
            ..PortPolicy::default()
        };
        let spec = PortSpec { policy, ..PortSpec::new(inner.clone(), Backend::Afpacket, Origin::Config) };
        match self.attach(o, spec) {
            Ok(id) => {
                *lock(&self.netfilter) = Some(id);
                self.sw.set_netfilter(Some(id), false);
                Ok(())
            }
            Err(e) => {
                self.remove_netfilter_links();
                Err(e)
            }
        }
    }

    /// Turns the path on (IP between stations goes through the node's
    /// rules) or off (the direct path); whether it changed.
    pub fn set_netfilter(&self, on: bool) -> bool {
        let port = *lock(&self.netfilter);
        let changed = self.sw.netfilter().is_some() != (on && port.is_some());
        self.sw.set_netfilter(port, on);
        changed
    }

    /// Whether the way is off because the bridge filters VLANs, where the
    /// node's rules would otherwise have it on: true when that is news
    /// (the log says it once per change).
    pub fn netfilter_vlan_bypass(&self, now: bool) -> bool {
        self.netfilter_vlan_said.swap(now, std::sync::atomic::Ordering::Relaxed) != now && now
    }

    /// Whether the bridge has the path, and whether it is on.
    pub fn netfilter(&self) -> (bool, bool) {
        (lock(&self.netfilter).is_some(), self.sw.netfilter().is_some())
    }

    /// The switch's port of the path, if the bridge has one.
    pub fn netfilter_port(&self) -> Option<IfName> {
        lock(&self.netfilter).is_some().then(|| names(&self.name).2)
    }

    /// Deletes the path's interfaces (its port must be detached, or its
    /// readers stopped): the bridge is being deleted, or the daemon stops.
    pub fn remove_netfilter(&self) {
        if lock(&self.netfilter).take().is_some() {
            self.sw.set_netfilter(None, false);
        }
        self.remove_netfilter_links();
    }

    fn remove_netfilter_links(&self) {
        let (kbridge, _, inner) = names(&self.name);
        if let Ok(mut nl) = Rtnl::open()
            && let Ok(Some(l)) = nl.link_by_name(&inner)
        {
            let _ = nl.del_link(l.index);
        }
        let _ = self.in_start_ns(|| {
            if let Ok(mut nl) = Rtnl::open()
                && let Ok(Some(l)) = nl.link_by_name(&kbridge)
            {
                let _ = nl.del_link(l.index);
            }
        });
    }

    /// Runs `f` in the namespace the daemon started in (the host port's).
    pub(super) fn in_start_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> ub_netlink::Result<T> {
        NetNs::run_in(self.start_ns.as_deref(), f)
    }
}

fn missing(name: &str) -> ub_netlink::Error {
    ub_netlink::Error::Io {
        what: format!("looking up {name}"),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "vanished as it was made"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_differ_per_bridge() {
        let (k, o, i) = names("ub-0123456789ab");
        assert_eq!((k.len(), o.len(), i.len()), (12, 13, 13));
        assert!(o.starts_with(&k) && i.starts_with(&k));
        assert_ne!(names("cni0").0, names("cni1").0);
        assert_eq!(names("cni0"), names("cni0"), "stable");
    }
}
