//! ADD: what the reference bridge plugin's `cmdAdd` does, with the daemon
//! in place of the kernel bridge. A failed ADD undoes every step it made
//! (veth, lease, port, masquerade), so nothing is left behind.

use crate::conf::NetConf;
use crate::container;
use crate::daemon::Daemon;
use crate::error::{CniError, code};
use crate::result::{CniResult, Interface, IpConfig, Route, first_host};
use crate::{Env, host_veth_name, ipam, masq};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use ub_proto::{Backend, IfName, PortMeta, PortPolicy, VlanEntry};
use ub_proto::{HostAddress, PortAdd, PortDel, SetVlanFiltering};

/// What ADD has made so far, to undo on failure.
#[derive(Debug, Default)]
struct Made {
    veth: Option<IfName>,
    lease: bool,
    port: Option<IfName>,
    masq: bool,
}

impl Made {
    /// Undoes the steps, last first; every step is tried (its failure goes
    /// to stderr, the ADD's own error is what the runtime sees).
    fn undo(self, env: &Env, conf: &NetConf, stdin: &[u8]) {
        let warn = |what: &str, e: CniError| eprintln!("userbridge: undoing a failed ADD: {what}: {e}");
        if self.masq
            && let Err(e) = masq::teardown(&conf.name, &env.container_id)
        {
            warn("masquerade rules", e);
        }
        if let Some(p) = self.port {
            let gone = Daemon::connect(conf).and_then(|mut d| d.call(PortDel { name: p, if_exists: true }));
            if let Err(e) = gone {
                warn("the port", e);
            }
        }
        if self.lease
            && let Some(kind) = conf.ipam_type()
            && let Err(e) = ipam::del(kind, env, stdin)
        {
            warn("the IPAM lease", e);
        }
        if let Some(v) = self.veth
            && let Err(e) = container::delete_host(&v)
        {
            warn("the veth pair", e);
        }
    }
}

/// The port's VLANs for `vlan` or `vlanTrunk`, as the reference plugin
/// sets them on its bridge port: `vlan` N makes an access port (N PVID,
/// untagged), `vlanTrunk` a trunk (its VIDs tagged); with
/// `preserveDefaultVlan` (the default) VLAN 1 stays, untagged (and PVID on
/// a trunk). `None` when neither is given: the daemon's default.
fn vlans_of(conf: &NetConf) -> Result<Option<Vec<VlanEntry>>, CniError> {
    let trunk = conf.trunk_vids()?;
    let access = u16::try_from(conf.vlan).ok().filter(|v| *v != 0);
    if access.is_none() && trunk.is_empty() {
        return Ok(None);
    }
    if conf.is_gateway || conf.is_default_gateway {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            "\"isGateway\" with \"vlan\" or \"vlanTrunk\" is not supported: the gateway of a VLAN needs its own \
             interface (the reference plugin's cni0.N), which userbridge does not make; route through a trunk \
             instead, or drop the VLAN keys",
        ));
    }
    let mut v = Vec::new();
    if conf.preserve_default_vlan {
        v.push(VlanEntry { vid: 1, pvid: access.is_none(), untagged: true });
    }
    match access {
        Some(vid) => v.push(VlanEntry { vid, pvid: true, untagged: true }),
        None => v.extend(trunk.into_iter().filter(|t| *t != 1 || !conf.preserve_default_vlan).map(|vid| VlanEntry {
            vid,
            pvid: false,
            untagged: false,
        })),
    }
    Ok(Some(v))
}

pub fn add(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<String, CniError> {
    let vlans = vlans_of(conf)?;
    let mac = conf.mac(&env.args)?;
    let mut daemon = Daemon::connect(conf)?;
    let host = daemon.bridge(conf)?;
    if host.is_none() && (conf.is_gateway || conf.is_default_gateway || conf.promisc_mode) {
        let key = if conf.promisc_mode { "promiscMode" } else { "isGateway" };
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            format!("bridge {} has no host port, which \"{key}\" needs: name a bridge that has one", conf.bridge),
        ));
    }
    let netns = env.netns.as_deref().ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, "CNI_NETNS missing"))?;
    let ns = container::open_netns(netns)?;
    let mut made = Made::default();
    match steps(env, conf, stdin, &mut daemon, host.as_ref(), &ns, mac, vlans, &mut made) {
        Ok(r) => Ok(r.to_json(&conf.cni_version)),
        Err(e) => {
            drop(daemon);
            made.undo(env, conf, stdin);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn steps(
    env: &Env,
    conf: &NetConf,
    stdin: &[u8],
    daemon: &mut Daemon,
    host: Option<&ub_proto::Host>,
    ns: &ub_netlink::NetNs,
    mac: Option<ub_wire::Mac>,
    vlans: Option<Vec<VlanEntry>>,
    made: &mut Made,
) -> Result<CniResult, CniError> {
    let veth = host_veth_name(&env.container_id, &env.ifname);
    let bridge = crate::daemon::bridge_name(conf)?;
    let mtu = match u32::try_from(conf.mtu) {
        Ok(m) if m > 0 => m,
        _ => host.map_or(1500, |h| h.mtu),
    };

    container::make_veth(ns, &veth, &env.ifname)?;
    made.veth = Some(veth.clone());
    let pod_mac = container::prepare(ns, &env.ifname, mac, mtu)?;
    let veth_mac = {
        let mut nl = ub_netlink::Rtnl::open()?;
        let l = nl.link_by_name(&veth)?.ok_or_else(|| CniError::internal(format!("failed to lookup {veth:?}")))?;
        nl.set_mtu(l.index, mtu)?;
        nl.set_up(l.index, true)?;
        l.mac.map(ub_wire::Mac).unwrap_or_default()
    };

    let mut result = CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: host.map(|h| h.mac.to_string()).unwrap_or_default(),
                sandbox: String::new(),
            },
            Interface { name: veth.to_string(), mac: veth_mac.to_string(), sandbox: String::new() },
            Interface {
                name: env.ifname.clone(),
                mac: pod_mac.to_string(),
                sandbox: env.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            },
        ],
        ..CniResult::default()
    };
    let mut gateways: Vec<IpNet> = Vec::new();
    if let Some(kind) = conf.ipam_type() {
        let r = ipam::add(kind, env, stdin)?;
        made.lease = true;
        result.ips = r.ips;
        result.routes = r.routes;
        result.dns = r.dns;
        gateways = gateways_of(&mut result, conf);
    }

    // The port: the pod's MAC and addresses go with it (its spoof check, and
    // what `port list` shows next to the container).
    let d = PortPolicy::default();
    if vlans.is_some() {
        // As the reference plugin makes its bridge VLAN-filtering for these keys.
        daemon.call(SetVlanFiltering { bridge: Some(bridge.clone()), on: true })?;
    }
    let policy = PortPolicy {
        hairpin: conf.hairpin_mode,
        isolated: conf.port_isolation,
        locked: conf.macspoofchk,
        macs: vec![pod_mac],
        ips: result.ips.iter().map(|c| c.address.addr()).collect(),
        vlans: vlans.unwrap_or(d.vlans.clone()),
        ..d
    };
    let meta = PortMeta {
        container_id: Some(env.container_id.clone()),
        ifname: Some(env.ifname.clone()),
        netns: env.netns.as_ref().map(|p| p.display().to_string()),
        network: Some(conf.name.clone()),
        endpoint: None,
    };
    daemon.call(PortAdd {
        name: veth.clone(),
        bridge: Some(bridge.clone()),
        tap: false,
        backend: Some(Backend::Afpacket),
        policy: Some(policy),
        meta: Some(meta),
    })?;
    made.port = Some(veth.clone());

    container::configure(ns, &env.ifname, &result, conf.enabledad)?;

    if conf.is_gateway || conf.is_default_gateway {
        for gw in &gateways {
            daemon
                .call(HostAddress { bridge: Some(bridge.clone()), address: *gw, force: conf.force_address })
                .map_err(|e| CniError::new(e.code, format!("failed to set bridge addr: {}", e.msg)))?;
        }
        for v4 in [true, false] {
            if gateways.iter().any(|g| g.addr().is_ipv4() == v4) {
                let key = if v4 { "net/ipv4/ip_forward" } else { "net/ipv6/conf/all/forwarding" };
                container::sysctl(key, "1")
                    .map_err(|e| CniError::internal(format!("failed to enable forwarding ({key}): {e}")))?;
            }
        }
    }
    if conf.ip_masq || conf.service_masq() {
        let addresses: Vec<IpNet> = result.ips.iter().map(|c| c.address).collect();
        nat_rules(conf, &env.container_id, &addresses, made)?;
    }
    if let Some(host) = host.filter(|_| conf.promisc_mode) {
        let mut nl = ub_netlink::Rtnl::open()?;
        if let Some(l) = nl.link_by_name(&host.name)? {
            nl.set_promisc(l.index, true)
                .map_err(|e| CniError::internal(format!("could not set promiscuous mode on {:?}: {e}", host.name)))?;
        }
    }
    if conf.dns.as_ref().is_some_and(dns_set) {
        result.dns = conf.dns.clone().unwrap_or_default();
    }
    Ok(result)
}

/// ipMasq's and serviceMasq's rules for `addresses`: per family, one
/// listing of the nat table and a transaction for what is missing.
fn nat_rules(conf: &NetConf, container_id: &str, addresses: &[IpNet], made: &mut Made) -> Result<(), CniError> {
    for v6 in [false, true] {
        let fam: Vec<IpNet> = addresses.iter().copied().filter(|a| a.addr().is_ipv6() == v6).collect();
        if fam.is_empty() {
            continue;
        }
        let nat = match masq::Nat::load(v6) {
            Ok(n) => n,
            Err(e) if !conf.ip_masq && conf.service_masq.is_none() => {
                // serviceMasq on by default: a node without iptables has no Services to fix.
                eprintln!("userbridge: ADD: the Service-reply masquerade rule was not added: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        if conf.ip_masq {
            made.masq = true;
            nat.apply(&nat.masq(&fam, &conf.name, container_id))?;
        }
        // The shared rule is usually there already; only its first ADD
        // takes the lock and lists again (another ADD may have just added it).
        if conf.service_masq() && fam.iter().any(|a| !nat.service(*a, &conf.name).is_empty()) {
            let _lock = masq::service_lock();
            let added = masq::Nat::load(v6).and_then(|now| {
                let mut plan: Vec<String> = Vec::new();
                for l in fam.iter().flat_map(|a| now.service(*a, &conf.name)) {
                    if !plan.contains(&l) {
                        plan.push(l);
                    }
                }
                now.apply(&plan)
            });
            match added {
                Ok(()) => {}
                Err(e) if conf.service_masq == Some(true) => return Err(e),
                Err(e) => eprintln!("userbridge: ADD: the Service-reply masquerade rule was not added: {e}"),
            }
        }
    }
    Ok(())
}

/// The reference plugin's `calcGateways`: every IP is the pod interface's
/// (index 2); one with no gateway gets its subnet's first host when the
/// plugin is the gateway; `isDefaultGateway` adds a default route per
/// family unless IPAM gave one with a gateway. Returns the gateway
/// addresses (with the subnet's prefix) to put on the host port.
fn gateways_of(result: &mut CniResult, conf: &NetConf) -> Vec<IpNet> {
    let is_gw = conf.is_gateway || conf.is_default_gateway;
    let mut gws = Vec::new();
    let mut default_found = [false, false];
    for i in 0..result.ips.len() {
        let IpConfig { address, gateway, .. } = result.ips[i];
        result.ips[i].interface = Some(2);
        let gateway = match gateway {
            None if is_gw => Some(first_host(address)),
            g => g,
        };
        result.ips[i].gateway = gateway;
        let v4 = address.addr().is_ipv4();
        let any: IpNet = if v4 {
            IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap_or_default()
        } else {
            IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).unwrap_or_default()
        };
        let fam = usize::from(!v4);
        if conf.is_default_gateway && !default_found[fam] {
            if !result.routes.iter().any(|r| r.gw.is_some() && r.dst == any) {
                result.routes.push(Route { dst: any, gw: gateway, other: serde_json::Map::new() });
            }
            default_found[fam] = true;
        }
        if is_gw
            && let Some(g) = gateway
            && let Ok(net) = IpNet::new(g, address.prefix_len())
        {
            gws.push(net);
        }
    }
    gws
}

/// Whether the configuration's `dns` says anything (then it wins over IPAM's).
fn dns_set(v: &serde_json::Value) -> bool {
    ["nameservers", "search", "options", "domain"].iter().any(|k| v.get(k).is_some_and(|x| !x.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> NetConf {
        NetConf::parse(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"userbridge"{extra}}}"#).as_bytes()).unwrap()
    }

    fn ipam(routes: &str) -> CniResult {
        CniResult::parse(
            format!(r#"{{"cniVersion":"1.0.0","ips":[{{"address":"10.244.1.5/24"}}],"routes":[{routes}]}}"#).as_bytes(),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn gateways_as_the_reference_plugin_computes_them() {
        let mut r = ipam("");
        let gws = gateways_of(&mut r, &conf(r#","isDefaultGateway":true"#));
        assert_eq!(gws, vec!["10.244.1.1/24".parse::<IpNet>().unwrap()]);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[0].gateway, Some("10.244.1.1".parse().unwrap()));
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(r.routes[0].gw, Some("10.244.1.1".parse().unwrap()));
        // Not the gateway: no gateway invented, nothing for the host port.
        let mut r = ipam("");
        assert!(gateways_of(&mut r, &conf("")).is_empty());
        assert_eq!(r.ips[0].gateway, None);
        // A default route with a gateway from IPAM is kept, not doubled.
        let mut r = ipam(r#"{"dst":"0.0.0.0/0","gw":"10.244.1.254"}"#);
        gateways_of(&mut r, &conf(r#","isDefaultGateway":true"#));
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn vlan_keys_make_access_and_trunk_ports_as_the_reference_plugin() {
        let e = |vid, pvid, untagged| VlanEntry { vid, pvid, untagged };
        assert_eq!(vlans_of(&conf("")).unwrap(), None);
        assert_eq!(vlans_of(&conf(r#","vlan":100"#)).unwrap(), Some(vec![e(1, false, true), e(100, true, true)]));
        assert_eq!(
            vlans_of(&conf(r#","vlan":100,"preserveDefaultVlan":false"#)).unwrap(),
            Some(vec![e(100, true, true)])
        );
        assert_eq!(
            vlans_of(&conf(r#","vlanTrunk":[{"minID":10,"maxID":11},{"id":20}]"#)).unwrap(),
            Some(vec![e(1, true, true), e(10, false, false), e(11, false, false), e(20, false, false)])
        );
        assert_eq!(
            vlans_of(&conf(r#","vlanTrunk":[{"id":20}],"preserveDefaultVlan":false"#)).unwrap(),
            Some(vec![e(20, false, false)])
        );
        let err = vlans_of(&conf(r#","vlan":100,"isGateway":true"#)).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.msg.contains("isGateway"), "{}", err.msg);
    }
}
