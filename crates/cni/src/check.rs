//! CHECK: the container is as ADD left it. The pod's interface is there,
//! a veth with the MAC of `prevResult`, with its addresses and routes; the
//! host end is attached to the daemon as this container's port; the IPAM
//! plugin agrees (its own CHECK).

use crate::conf::NetConf;
use crate::container;
use crate::daemon::Daemon;
use crate::error::CniError;
use crate::result::CniResult;
use crate::{Env, host_veth_name, ipam};
use ub_proto::PortList;

pub fn check(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let Some(prev) = conf.prev_result.clone() else {
        return Err(CniError::internal("Required prevResult missing"));
    };
    let prev = CniResult::from_value(prev, "prevResult")?;
    if let Some(kind) = conf.ipam_type() {
        ipam::check(kind, env, stdin)?;
    }
    let mut d = Daemon::connect(conf)?;
    let host = d.host(conf)?;
    let netns = env.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default();

    let Some((index, pod)) = prev.interfaces.iter().enumerate().find(|(_, i)| i.name == env.ifname) else {
        return Err(CniError::internal(format!("CNI created interface in container {} not found", env.ifname)));
    };
    if pod.sandbox != netns {
        return Err(CniError::internal(format!(
            "Sandbox in prevResult {} doesn't match configured netns: {netns}",
            pod.sandbox
        )));
    }
    if let Some(br) = prev.interfaces.iter().find(|i| i.sandbox.is_empty() && i.name == conf.bridge)
        && !br.mac.is_empty()
        && br.mac != host.mac.to_string()
    {
        return Err(CniError::internal(format!("Bridge interface {} Mac doesn't match: {}", br.name, br.mac)));
    }

    let ns = container::open_netns(env.netns.as_deref().unwrap_or_else(|| std::path::Path::new("")))?;
    let seen = container::seen(&ns, &env.ifname)?;
    let Some(link) = seen.link else {
        return Err(CniError::internal(format!("Interface name {} not found", env.ifname)));
    };
    if link.kind.as_deref() != Some("veth") {
        return Err(CniError::internal(format!("Error: Container interface {} not of type veth", env.ifname)));
    }
    let mac = link.mac.map(|m| ub_wire::Mac(m).to_string()).unwrap_or_default();
    if !pod.mac.is_empty() && pod.mac != mac {
        return Err(CniError::internal(format!(
            "Interface {} Mac {} doesn't match container Mac: {mac}",
            env.ifname, pod.mac
        )));
    }

    // The host end: attached, and to this container.
    let veth = host_veth_name(&env.container_id, &env.ifname);
    let port = d.call(PortList { bridge: None, port: Some(veth.clone()) }).ok().and_then(|v| v.into_iter().next());
    let Some(port) = port else {
        return Err(CniError::internal(format!(
            "CNI veth created for bridge {} was not found: the daemon has no port {veth}",
            conf.bridge
        )));
    };
    if port.meta.container_id.as_deref() != Some(env.container_id.as_str())
        || port.meta.ifname.as_deref() != Some(env.ifname.as_str())
    {
        return Err(CniError::internal(format!(
            "port {veth} belongs to container {:?} interface {:?}, not {} {}",
            port.meta.container_id, port.meta.ifname, env.container_id, env.ifname
        )));
    }

    for ip in prev.ips.iter().filter(|c| c.interface.is_none_or(|i| i == index)) {
        if !seen.addrs.contains(&ip.address) {
            return Err(CniError::internal(format!("Failed to match addr {} on interface {}", ip.address, env.ifname)));
        }
    }
    for r in &prev.routes {
        let gw = r.gw.or_else(|| prev.gateway_for(r.dst.addr().is_ipv4()));
        if !seen.routes.iter().any(|s| s.dst == r.dst && (gw.is_none() || s.gw == gw)) {
            let via = gw.map_or_else(String::new, |g| format!(" via {g}"));
            return Err(CniError::internal(format!("Failed to match route {}{via} in the container", r.dst)));
        }
    }
    Ok(())
}
