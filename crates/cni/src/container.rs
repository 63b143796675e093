//! The pod's side: the veth pair, and the container interface's MAC, MTU,
//! sysctls, addresses and routes, set inside its network namespace over
//! netlink (no shelling out to iproute2).

use crate::error::CniError;
use crate::result::CniResult;
use std::os::fd::AsFd;
use std::path::Path;
use ub_netlink::{IpNet, Link, NetNs, Rtnl};
use ub_wire::Mac;

/// Opens the pod's namespace (the reference plugin's message).
pub fn open_netns(path: &Path) -> Result<NetNs, CniError> {
    NetNs::open_path(path).map_err(|e| CniError::internal(format!("failed to open netns {:?}: {e}", path.display())))
}

/// Runs `f` with a netlink socket inside `ns`.
pub fn within<T: Send>(ns: &NetNs, f: impl FnOnce(&mut Rtnl) -> Result<T, CniError> + Send) -> Result<T, CniError> {
    ns.run(|| f(&mut Rtnl::open()?))?
}

/// Writes a sysctl (`net/ipv4/conf/eth0/arp_notify`) in the calling
/// thread's namespace.
pub fn sysctl(key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(key), value)
}

/// Creates the pair: `host` here, `ifname` in `ns`. An interface already
/// called `ifname` in the pod is the reference plugin's error; a leftover
/// `host` end is a previous ADD never deleted.
pub fn make_veth(ns: &NetNs, host: &str, ifname: &str) -> Result<(), CniError> {
    let taken = within(ns, |nl| Ok(nl.link_by_name(ifname)?.is_some()))?;
    if taken {
        return Err(CniError::internal(format!("container veth name provided ({ifname}) already exists")));
    }
    let mut nl = Rtnl::open()?;
    if nl.link_by_name(host)?.is_some() {
        return Err(CniError::internal(format!(
            "host interface {host} for this container and interface already exists: a previous ADD was not deleted \
             (run DEL for it, or `ip link del {host}`), or, against odds of 1 in 10^13, another container's has its name"
        )));
    }
    nl.add_veth(host, ifname, Some(ns.as_fd()))?;
    Ok(())
}

/// Sets the pod interface's MAC (when asked) and MTU; returns its MAC.
pub fn prepare(ns: &NetNs, ifname: &str, mac: Option<Mac>, mtu: u32) -> Result<Mac, CniError> {
    within(ns, |nl| {
        let link = need(nl, ifname)?;
        if let Some(m) = mac {
            nl.set_mac(link.index, m.0)?;
        }
        nl.set_mtu(link.index, mtu)?;
        let now = need(nl, ifname)?;
        now.mac.map(Mac).ok_or_else(|| CniError::internal(format!("{ifname} has no MAC address")))
    })
}

fn need(nl: &mut Rtnl, name: &str) -> Result<Link, CniError> {
    nl.link_by_name(name)?.ok_or_else(|| CniError::internal(format!("failed to lookup {name:?}: no such interface")))
}

/// Configures the pod's interface from `result` (its IPs with interface
/// index 2, its routes), as the reference `ipam.ConfigureIface` does, and
/// brings it up; with no IPs (L2 only) it only brings it up.
pub fn configure(ns: &NetNs, ifname: &str, result: &CniResult, enable_dad: bool) -> Result<(), CniError> {
    within(ns, |nl| {
        let link = need(nl, ifname)?;
        if !result.ips.is_empty() {
            // Best effort, as the reference plugin's: a kernel without IPv6 has no such keys.
            if enable_dad {
                let _ = sysctl(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
                let _ = sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
            } else {
                let _ = sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
            }
            let _ = sysctl(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
            if result.ips.iter().any(|c| c.address.addr().is_ipv6()) {
                let _ = sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0");
            }
        }
        for c in &result.ips {
            nl.add_addr(link.index, c.address)
                .map_err(|e| CniError::internal(format!("failed to add IP addr {} to {ifname:?}: {e}", c.address)))?;
        }
        nl.set_up(link.index, true).map_err(|e| CniError::internal(format!("failed to set {ifname:?} up: {e}")))?;
        for r in &result.routes {
            let gw = r.gw.or_else(|| result.gateway_for(r.dst.addr().is_ipv4()));
            match nl.add_route(r.dst, gw, Some(link.index)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    let via = gw.map_or_else(String::new, |g| format!(" via {g}"));
                    return Err(CniError::internal(format!("failed to add route '{}{via} dev {ifname}': {e}", r.dst)));
                }
            }
        }
        Ok(())
    })
}

/// Deletes the pod's interface if it is there; whether it was.
pub fn delete_in(ns: &NetNs, ifname: &str) -> Result<bool, CniError> {
    within(ns, |nl| match nl.link_by_name(ifname)? {
        Some(l) => {
            nl.del_link(l.index)?;
            Ok(true)
        }
        None => Ok(false),
    })
}

/// Deletes a host interface if it is there (its veth peer goes with it).
pub fn delete_host(name: &str) -> Result<bool, CniError> {
    let mut nl = Rtnl::open()?;
    match nl.link_by_name(name)? {
        Some(l) => match nl.del_link(l.index) {
            Ok(()) => Ok(true),
            // Gone meanwhile (its namespace went).
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e.into()),
        },
        None => Ok(false),
    }
}

/// What CHECK compares: the pod interface's MAC, kind, addresses and the
/// namespace's routes.
pub struct Seen {
    pub link: Option<Link>,
    pub addrs: Vec<IpNet>,
    pub routes: Vec<ub_netlink::Route>,
}

pub fn seen(ns: &NetNs, ifname: &str) -> Result<Seen, CniError> {
    within(ns, |nl| {
        let link = nl.link_by_name(ifname)?;
        let addrs = match &link {
            Some(l) => nl.addrs(l.index)?,
            None => Vec::new(),
        };
        Ok(Seen { link, addrs, routes: nl.routes()? })
    })
}
