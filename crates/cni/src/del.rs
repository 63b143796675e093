//! DEL, GC and STATUS. DEL succeeds whenever there is nothing left to
//! undo: when repeated, when the namespace is gone, when the daemon has no
//! such port, and when the daemon is down (its state file drops the port
//! when it starts again and finds the interface gone).

use crate::conf::NetConf;
use crate::container;
use crate::daemon::{Daemon, socket_of};
use crate::error::{CniError, code};
use crate::{Env, host_veth_name, ipam, masq};
use ub_proto::{BridgeDel, BridgeList, PortDel, PortList, Version};

pub fn del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    // The pod's interface; its namespace may be gone (then so is the pair).
    if let Some(path) = &env.netns {
        match container::open_netns(path).and_then(|ns| container::delete_in(&ns, &env.ifname)) {
            Ok(_) => {}
            Err(e) if !path.exists() => drop(e),
            Err(e) => eprintln!("userbridge: DEL: {}: {e}; taking it as gone", path.display()),
        }
    }
    let veth = host_veth_name(&env.container_id, &env.ifname);
    container::delete_host(&veth)?;
    match Daemon::connect(conf).and_then(|mut d| d.call(PortDel { name: veth.clone(), if_exists: true })) {
        Ok(_) => {}
        Err(e) if e.code == code::TRY_AGAIN_LATER => eprintln!(
            "userbridge: DEL: {e}; if it had port {veth}, the daemon drops it when it starts again (its interface is gone)"
        ),
        Err(e) => return Err(e),
    }
    if let Some(kind) = conf.ipam_type() {
        ipam::del(kind, env, stdin)?;
    }
    if conf.ip_masq {
        masq::teardown(&conf.name, &env.container_id)?;
    }
    Ok(())
}

/// STATUS (CNI 1.1): whether an ADD could succeed now. Code 50 when the
/// daemon does not answer; then the IPAM plugin's own STATUS if it has one.
pub fn status(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let mut d = Daemon::connect(conf).map_err(|e| {
        CniError::new(
            code::NOT_AVAILABLE,
            format!("the userbridge daemon at {} is not available", socket_of(conf).display()),
        )
        .with_details(e.msg)
    })?;
    d.call(Version {})?;
    if let Some(kind) = conf.ipam_type()
        && ipam::speaks_1_1(kind, env)
    {
        ipam::exec(kind, "STATUS", env, stdin)?;
    }
    Ok(())
}

/// GC (CNI 1.1): detaches and deletes the ports this network's plugin made
/// for attachments not in `cni.dev/valid-attachments`, with their
/// masquerade rules, and the bridge this network's ADD made once no port
/// is left on it; then the IPAM plugin's GC if it has one.
pub fn gc(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "GC needs \"cni.dev/valid-attachments\" (the attachments to keep); without it nothing is collected",
        ));
    };
    let mut d = Daemon::connect(conf)?;
    for p in d.call(PortList { bridge: None, port: None })? {
        let m = &p.meta;
        if m.network.as_deref() != Some(conf.name.as_str()) {
            continue;
        }
        let (Some(cid), Some(ifname)) = (&m.container_id, &m.ifname) else { continue };
        if valid.iter().any(|a| &a.container_id == cid && &a.ifname == ifname) {
            continue;
        }
        d.call(PortDel { name: p.name.clone(), if_exists: true })?;
        container::delete_host(&p.name)?;
        if conf.ip_masq {
            masq::teardown(&conf.name, cid)?;
        }
    }
    let ours = d.call(BridgeList {})?.into_iter().find(|b| b.name == conf.bridge.as_str());
    if let Some(b) = ours.filter(|b| b.ports == 0 && b.network.as_deref() == Some(conf.name.as_str())) {
        // Refused if an ADD attached a port meanwhile: the bridge is in use again.
        if let Err(e) = d.call(BridgeDel { name: b.name.clone(), detach: false }) {
            eprintln!("userbridge: GC: bridge {} kept: {}", b.name, e.msg);
        }
    }
    if let Some(kind) = conf.ipam_type()
        && ipam::speaks_1_1(kind, env)
    {
        ipam::exec(kind, "GC", env, stdin)?;
    }
    Ok(())
}
