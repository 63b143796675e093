//! The host port: what `cni0` is to a node. A TAP interface the daemon
//! creates in the network namespace it was started in (the host's, even
//! when the pods' ports are in another), with a fixed MAC, the gateway's
//! addresses and MTU, up; its host end is the host stack, so pods reach the
//! node (and, through it, the rest of the world) and the node reaches them.
//! One queue per reader (IFF_MULTI_QUEUE) and the vnet header both ways, so
//! host-pod TCP keeps its offloads.
//!
//! The interface is persistent (TUNSETPERSIST) and marked as a host port by
//! its alias: it outlives the daemon, however the daemon ends, with its
//! ifindex, addresses and the routes others put on it (without carrier
//! while no daemon serves it, as a kernel bridge without ports), and the
//! next daemon takes it back. Only [`remove`] deletes it.

use crate::{Claim, OpenedPort, PortError, PortRx, tap};
use std::sync::Arc;
use ub_netlink::{IpNet, NetNs, Rtnl};
use ub_proto::{Backend, IfName};
use ub_wire::Mac;

/// The alias a host port carries (`ip link show` prints it): how a daemon
/// tells a host port it may take back from any other interface of the name.
pub const ALIAS: &str = "userbridge host port";

/// How to make the host port.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The namespace to create it in (the daemon's start namespace); `None`
    /// is the calling thread's.
    pub netns: Option<Arc<NetNs>>,
    /// Addresses to give it; pods use the first of each family as their gateway.
    pub addresses: Vec<IpNet>,
    pub mtu: Option<u32>,
    pub mac: Mac,
    /// TAP queues (one per reader).
    pub queues: usize,
}

/// The host port's MAC when none is given: derived from its name (FNV-1a),
/// locally administered and unicast, so it is the same after every restart.
/// A kernel bridge's MAC follows its lowest-numbered port and changes as
/// ports come and go, which leaves stale entries in the pods' ARP caches.
pub fn mac_for(name: &str) -> Mac {
    let b = ub_netlink::fnv1a(&[name.as_bytes()]).to_be_bytes();
    Mac([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

/// Makes host port `name` as `o` says (or takes back the one a daemon made
/// before), claims it, and returns it open. Refuses any other interface of
/// that name (a kernel bridge, a veth, someone's TAP).
pub fn open(name: &IfName, o: &HostOptions, opts: &crate::OpenOptions) -> Result<OpenedPort, PortError> {
    let (claim_dir, holder) = (&opts.claim_dir, &opts.holder);
    let make = || -> Result<OpenedPort, PortError> {
        let mut nl = Rtnl::open()?;
        let kept = match nl.link_by_name(name)? {
            Some(l) if is_host_port(&l) => Some(l),
            Some(l) => {
                return Err(PortError::Exists {
                    name: name.to_string(),
                    kind: l.kind.unwrap_or_else(|| "device".into()),
                });
            }
            None => None,
        };
        // A kept interface is claimed before a queue is attached: if another
        // daemon serves it, it stays that daemon's.
        let claim = kept.as_ref().map(|l| crate::claim_of(opts, &l.name, l.index)).transpose()?;
        let (rx, tx, info) = tap::open_queues(name, o.queues, true, opts.inherit.take(name, crate::Role::Tap))?;
        let claim = match claim {
            Some(c) => c,
            None => Claim::take(claim_dir, &info.name, info.ifindex, holder)?,
        };
        let nl_err = |e: ub_netlink::Error| PortError::Netlink(e);
        let mut set_up = || -> Result<(), PortError> {
            tx.set_persist(true).map_err(|e| PortError::io("making the host port persistent", &info.name, e))?;
            nl.set_alias(info.ifindex, ALIAS).map_err(nl_err)?;
            if info.mac != Some(o.mac.0) {
                nl.set_mac(info.ifindex, o.mac.0).map_err(nl_err)?;
            }
            if let Some(mtu) = o.mtu {
                nl.set_mtu(info.ifindex, mtu).map_err(nl_err)?;
                tx.set_mtu(mtu);
            }
            if o.addresses.iter().any(|a| a.addr().is_ipv6()) {
                // A namespace may default new interfaces to IPv6 off (the kernel then
                // refuses IPv6 addresses with EACCES): this one is asked for IPv6.
                let knob = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", info.name);
                std::fs::write(&knob, "0").map_err(|e| PortError::io("enabling IPv6", &info.name, e))?;
            }
            let has = nl.addrs(info.ifindex).map_err(nl_err)?;
            for a in o.addresses.iter().filter(|a| !has.contains(a)) {
                nl.add_addr_owned(info.ifindex, *a).map_err(nl_err)?;
            }
            nl.set_up(info.ifindex, true).map_err(nl_err)
        };
        if let Err(e) = set_up() {
            if kept.is_none() {
                // Not persistent, it goes with its queues: nothing half-made stays.
                let _ = tx.set_persist(false);
            }
            return Err(e);
        }
        if kept.is_some() {
            tracing::info!(port = %info.name, ifindex = info.ifindex, "host port taken back, addresses and routes as they were");
        }
        Ok(OpenedPort {
            name: info.name,
            backend: Backend::Host,
            rx: rx.into_iter().map(|r| Box::new(r) as Box<dyn PortRx>).collect(),
            tx: Box::new(tx),
            up: true,
            ifindex: info.ifindex,
            mac: Some(o.mac.0),
            claim,
            // The host port is the node's own interface: its IP stack is the point.
            quiet: None,
            made: kept.is_none(),
        })
    };
    ub_netlink::NetNs::run_in(o.netns.as_deref(), make)?
}

/// Whether `l` is a host port a daemon made (a TAP with the host port's alias).
pub fn is_host_port(l: &ub_netlink::Link) -> bool {
    l.kind.as_deref() == Some("tun") && l.alias.as_deref() == Some(ALIAS)
}

/// Deletes host port `name` of the calling thread's namespace, if it is
/// one (nothing if there is no such interface; any other is left alone).
pub fn remove(name: &str) -> ub_netlink::Result<()> {
    let mut nl = Rtnl::open()?;
    match nl.link_by_name(name)? {
        Some(l) if is_host_port(&l) => match nl.del_link(l.index) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r,
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::mac_for;

    #[test]
    fn the_mac_is_the_names_own_local_unicast_and_stable() {
        let m = mac_for("cni0");
        assert_eq!(m, mac_for("cni0"));
        assert_ne!(m, mac_for("cni1"));
        assert!(m.is_valid_source());
        assert_eq!(m.0[0] & 0x03, 0x02, "locally administered, unicast");
        // Pinned: a change here changes every node's gateway MAC.
        assert_eq!(m.to_string(), "06:eb:17:91:15:fa");
    }
}
