//! The bridge's host port: the pods' gateway, as the bridge device is on a
//! kernel bridge, and named as the bridge. Its addresses (the configured
//! ones and those the CNI plugin or the Docker driver put on it at run
//! time), its MAC as a static entry in each of its VLANs, and what happens
//! when someone deletes it or runs tcpdump on it. The interface outlives
//! the daemon (`ub_port::host`): only deleting the bridge deletes it.

use super::{Bridge, BridgeError, Opener, lock};
use crate::config::HostSettings;
use ub_port::host::HostOptions;
use ub_proto::{Backend, Origin, PortPolicy, PortSpec};

impl Bridge {
    /// How `ub_port::host` makes (or takes back) this bridge's host port.
    pub(super) fn host_options(&self, o: &Opener, h: &HostSettings) -> HostOptions {
        HostOptions {
            netns: self.start_ns.clone(),
            addresses: h.addresses.clone(),
            mtu: h.mtu,
            mac: h.mac,
            queues: o.open.rx.readers,
        }
    }

    /// The host port's spec: the gateway takes no unknown-unicast floods,
    /// as a kernel bridge's own device does not (it sees them while
    /// promiscuous, like the bridge).
    fn host_spec(h: &HostSettings) -> PortSpec {
        let d = PortPolicy::default();
        let policy = PortPolicy {
            flood: false,
            macs: vec![h.mac],
            // Its own addresses: ARP suppression leaves requests for them to the host.
            ips: h.addresses.iter().map(|a| a.addr()).collect(),
            vlans: h.vlans.clone().unwrap_or(d.vlans.clone()),
            ..d
        };
        PortSpec { policy, ..PortSpec::new(h.name.clone(), Backend::Host, Origin::Config) }
    }

    /// Makes (or takes back) and attaches the host port, with its MAC as a
    /// static entry and the addresses given to it at run time.
    pub fn attach_host(&self, o: &Opener) -> Result<(), BridgeError> {
        let Some(h) = &self.host else { return Ok(()) };
        let id = self.attach(o, Self::host_spec(h))?;
        self.sw.fdb.add_static(0, h.mac, id).map_err(|why| BridgeError::Static {
            mac: h.mac,
            port: h.name.clone(),
            why,
        })?;
        self.sync_host_statics();
        for a in lock(&self.host_extra).clone() {
            if let Err(e) = self.in_host_ns(|nl, idx| nl.add_addr_owned(idx, a).or_else(already_there)) {
                tracing::warn!(bridge = %self.name, address = %a, error = %e, "could not put a run-time address back on the host port");
            }
        }
        Ok(())
    }

    /// Deletes the host port's interface (the bridge is being deleted, or
    /// the daemon stops with --remove-bridges). Its readers must be stopped.
    pub fn remove_host_port(&self) -> Result<(), BridgeError> {
        let Some(h) = &self.host else { return Ok(()) };
        let err = |source| BridgeError::HostNetlink { port: h.name.clone(), source };
        self.in_start_ns(|| ub_port::host::remove(&h.name).map_err(err)).map_err(err)?
    }

    /// The addresses given at run time, recorded (a restart puts them back).
    pub fn set_host_extra(&self, addresses: Vec<ub_netlink::IpNet>) {
        *lock(&self.host_extra) = addresses;
    }

    /// Runs `f` with a netlink socket in the host port's namespace and the
    /// host port's ifindex.
    fn in_host_ns<T: Send>(
        &self,
        f: impl FnOnce(&mut ub_netlink::Rtnl, u32) -> ub_netlink::Result<T> + Send,
    ) -> Result<T, BridgeError> {
        let h = self.host.as_ref().ok_or_else(|| BridgeError::NoHostPort(self.name.clone()))?;
        let err = |source| BridgeError::HostNetlink { port: h.name.clone(), source };
        let run = || -> Result<T, BridgeError> {
            let mut nl = ub_netlink::Rtnl::open().map_err(err)?;
            let link =
                nl.link_by_name(&h.name).map_err(err)?.ok_or_else(|| BridgeError::NoSuchPort(h.name.to_string()))?;
            f(&mut nl, link.index).map_err(err)
        };
        self.in_start_ns(run).map_err(err)?
    }

    /// The host port: name, MAC, MTU and addresses now.
    pub fn host_info(&self) -> Result<ub_proto::Host, BridgeError> {
        let h = self.host.as_ref().ok_or_else(|| BridgeError::NoHostPort(self.name.clone()))?;
        let (addresses, mtu) = self.in_host_ns(|nl, idx| {
            let mtu = nl.link_by_index(idx)?.map_or(0, |l| l.mtu);
            Ok((nl.addrs(idx)?, mtu))
        })?;
        let addresses = addresses
            .into_iter()
            .filter(|a| !matches!(a.addr(), std::net::IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80))
            .collect();
        Ok(ub_proto::Host { name: h.name.to_string(), mac: h.mac, mtu, addresses })
    }

    /// Puts `address` on the host port, as the reference CNI plugin's
    /// `ensureAddr` does on `cni0`: nothing if it is there; for IPv4, any
    /// other IPv4 address (for IPv6, an overlapping one) is a conflict
    /// unless `force` removes it. Recorded (the caller saves the record),
    /// so it survives a restart. An IPv6 address is usable at once: the
    /// daemon owns it, so it skips duplicate address detection (as `nodad`).
    pub fn host_address(&self, address: ub_netlink::IpNet, force: bool) -> Result<bool, BridgeError> {
        let _one_at_a_time = lock(&self.host_address_change);
        let existing = self.host_info()?.addresses;
        let configured = self.host.as_ref().is_some_and(|h| h.addresses.contains(&address));
        if existing.contains(&address) {
            // Recorded all the same (a restart finds it on a kept interface),
            // unless the configuration gives it anyway.
            let mut extra = lock(&self.host_extra);
            if !configured && !extra.contains(&address) {
                extra.push(address);
            }
            return Ok(false);
        }
        let conflicts: Vec<ub_netlink::IpNet> = existing
            .into_iter()
            .filter(|a| a.addr().is_ipv4() == address.addr().is_ipv4())
            .filter(|a| address.addr().is_ipv4() || a.contains(&address.addr()) || address.contains(&a.addr()))
            .collect();
        if let Some(c) = conflicts.first()
            && !force
        {
            return Err(BridgeError::HostAddressConflict { has: *c, wanted: address });
        }
        self.in_host_ns(|nl, idx| {
            for c in &conflicts {
                nl.del_addr(idx, *c)?;
            }
            nl.add_addr_owned(idx, address)
        })?;
        let mut extra = lock(&self.host_extra);
        extra.retain(|a| !conflicts.contains(a));
        if !configured && !extra.contains(&address) {
            extra.push(address);
        }
        drop(extra);
        self.host_ips_changed(&conflicts, Some(address));
        Ok(true)
    }

    /// Takes `address` off the host port; whether it had it. A configured
    /// address is refused (the configuration would bring it back).
    pub fn host_address_del(&self, address: ub_netlink::IpNet) -> Result<bool, BridgeError> {
        if self.host.as_ref().is_some_and(|h| h.addresses.contains(&address)) {
            return Err(BridgeError::HostAddressConfigured(address));
        }
        let _one_at_a_time = lock(&self.host_address_change);
        let had = self.host_info()?.addresses.contains(&address);
        if had {
            self.in_host_ns(|nl, idx| nl.del_addr(idx, address))?;
        }
        lock(&self.host_extra).retain(|a| *a != address);
        if had {
            self.host_ips_changed(&[address], None);
        }
        Ok(had)
    }

    /// The host port was deleted under us: make it again (the pods' ports
    /// switch among themselves meanwhile). Whether it was made again.
    pub fn recreate_host(&self, o: &Opener) -> bool {
        let Some(h) = &self.host else { return false };
        tracing::warn!(bridge = %self.name, port = %h.name, "the host port was deleted; making it again");
        let _ = self.detach(&h.name);
        match self.attach_host(o) {
            Ok(()) => {
                tracing::info!(port = %h.name, "host port made again");
                true
            }
            Err(e) => {
                tracing::error!(port = %h.name, error = %e, "could not make the host port again; pods have no gateway");
                false
            }
        }
    }

    /// Follows the host port's promiscuous flag: while set (tcpdump on it),
    /// every frame the bridge forwards is copied to it.
    pub fn host_promisc(&self, on: bool) {
        let Some(h) = &self.host else { return };
        let id = lock(&self.ports).attached.get(&h.name).map(|a| a.id);
        let want = if on { id } else { None };
        if self.sw.promisc() != want {
            tracing::info!(port = %h.name, promisc = on, "host port promiscuous mode changed");
            self.sw.set_promisc(want);
        }
    }

    /// The host port's MAC as a static entry in every VLAN the host port is
    /// in (and VLAN 0, for the VLAN-unaware switch), as the kernel keeps a
    /// bridge's own address per VLAN.
    pub fn sync_host_statics(&self) {
        let Some(h) = &self.host else { return };
        let Some((id, vids)) = lock(&self.ports)
            .attached
            .get(&h.name)
            .map(|a| (a.id, a.spec.policy.vlans.iter().map(|v| v.vid).collect::<Vec<u16>>()))
        else {
            return;
        };
        for vid in std::iter::once(0).chain(vids) {
            if let Err(why) = self.sw.fdb.add_static(vid, h.mac, id) {
                tracing::warn!(vid, mac = %h.mac, %why, "the host port's MAC could not be made static in a VLAN");
            }
        }
    }

    /// The host port's policy lists its addresses (ARP suppression leaves
    /// requests for them to the host): `added` in, `removed` out.
    fn host_ips_changed(&self, removed: &[ub_netlink::IpNet], added: Option<ub_netlink::IpNet>) {
        let Some(h) = &self.host else { return };
        let r = self.change_policy(&h.name, |p| {
            p.ips.retain(|ip| !removed.iter().any(|n| n.addr() == *ip));
            if let Some(a) = added.filter(|a| !p.ips.contains(&a.addr())) {
                p.ips.push(a.addr());
            }
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "the host port's address list in its policy was not updated");
        }
    }
}

/// An address the kernel says is there already: put back, as wanted.
fn already_there(e: ub_netlink::Error) -> ub_netlink::Result<()> {
    if e.raw_os_error() == Some(libc::EEXIST) { Ok(()) } else { Err(e) }
}
