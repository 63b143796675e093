//! The driver's answers: each remote-driver call against the daemon (only
//! through the control protocol), the host's links (veths), the node's
//! iptables rules (`rules.rs`), the published ports it holds
//! (`publish.rs`) and the state file. One call at a time: every handler
//! holds the driver's lock.

use crate::api::{self, CreateEndpoint, CreateNetwork, EndpointRef, ExternalConnectivity, Join, Joined, NetworkRef};
use crate::error::{DriverError, save, short};
use crate::external;
use crate::publish::{Inner, Reservations};
use crate::rules;
use crate::state::{Endpoint, Network, Store};
use ipnet::IpNet;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use ub_netlink::Rtnl;
use ub_proto::{
    BridgeAdd, BridgeDel, Client, ClientError, Host, HostAddressDel, HostInfo, IfName, PortAdd, PortDel, PortPolicy,
};

/// How long a call waits for a daemon busy with other clients.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// The driver: where the daemon is, the networks and endpoints, the ports held.
#[derive(Debug)]
pub struct Driver {
    socket: PathBuf,
    inner: Mutex<Inner>,
}

/// The switch port for an endpoint, and the name its container end has
/// until Docker moves it: `ubd`/`ubc` and 44 bits of the endpoint id's hash.
pub fn link_names(endpoint: &str) -> (IfName, IfName) {
    let tag = format!("{:011x}", ub_netlink::fnv1a(&[endpoint.as_bytes()]) >> 20);
    let name = |prefix: &str| IfName::new(&format!("{prefix}{tag}")).expect("3 letters and 11 hex digits is a name");
    (name("ubd"), name("ubc"))
}

/// The MAC Docker's bridge driver gives an address (02:42 and the IPv4
/// address), so containers look the same on either driver.
fn mac_from_ip(address: &str) -> Option<String> {
    let ip: IpNet = address.parse().ok()?;
    let std::net::IpAddr::V4(v4) = ip.addr() else { return None };
    let o = v4.octets();
    Some(format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]))
}

fn parse<T: serde::de::DeserializeOwned>(method: &str, body: &[u8]) -> Result<T, DriverError> {
    serde_json::from_slice(body).map_err(|e| DriverError::BadRequest { method: method.into(), detail: e.to_string() })
}

/// One call of Docker's remote driver protocol, its body read.
#[derive(Debug)]
pub enum Call {
    Activate,
    Capabilities,
    CreateNetwork(CreateNetwork),
    DeleteNetwork(NetworkRef),
    CreateEndpoint(CreateEndpoint),
    DeleteEndpoint(EndpointRef),
    EndpointOperInfo(EndpointRef),
    Join(Join),
    Leave(EndpointRef),
    ProgramExternalConnectivity(ExternalConnectivity),
    RevokeExternalConnectivity(EndpointRef),
    /// A call this driver answers with nothing to do.
    Nothing,
}

impl Call {
    /// The call `method` (the path without its slash) with `body`; a call
    /// the driver does not serve, or a body that is not its message, is
    /// refused by name. Reads only: nothing is done yet.
    pub fn parse(method: &str, body: &[u8]) -> Result<Call, DriverError> {
        Ok(match method {
            "Plugin.Activate" => Call::Activate,
            "NetworkDriver.GetCapabilities" => Call::Capabilities,
            "NetworkDriver.CreateNetwork" => Call::CreateNetwork(parse(method, body)?),
            "NetworkDriver.DeleteNetwork" => Call::DeleteNetwork(parse(method, body)?),
            "NetworkDriver.CreateEndpoint" => Call::CreateEndpoint(parse(method, body)?),
            "NetworkDriver.DeleteEndpoint" => Call::DeleteEndpoint(parse(method, body)?),
            "NetworkDriver.EndpointOperInfo" => Call::EndpointOperInfo(parse(method, body)?),
            "NetworkDriver.Join" => Call::Join(parse(method, body)?),
            "NetworkDriver.Leave" => Call::Leave(parse(method, body)?),
            "NetworkDriver.ProgramExternalConnectivity" => Call::ProgramExternalConnectivity(parse(method, body)?),
            "NetworkDriver.RevokeExternalConnectivity" => Call::RevokeExternalConnectivity(parse(method, body)?),
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Call::Nothing,
            "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => {
                return Err(DriverError::Refused(
                    "the userbridge driver is local-scope: it allocates no swarm networks".into(),
                ));
            }
            other => return Err(DriverError::Refused(format!("the userbridge driver does not implement {other}"))),
        })
    }
}

/// `true`/`false` as Docker passes `-o` values (strings), or a JSON bool.
fn flag(key: &str, v: &Value) -> Result<bool, DriverError> {
    match v.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        _ => v.as_bool().ok_or_else(|| DriverError::Refused(format!("-o {key}={v}: give true or false"))),
    }
}

/// The bridge name the bridge driver would give network `id`'s device:
/// `-o com.docker.network.bridge.name`, else a prefix and the id's first
/// 12 characters (Docker's `br-`, ours `ub-`).
fn bridge_name(id: &str, given: Option<&str>) -> Result<IfName, DriverError> {
    let name = given.map_or_else(|| format!("ub-{}", short(id)), str::to_string);
    IfName::new(&name).map_err(|e| DriverError::Refused(format!("-o {}={name}: {e}", api::BRIDGE_NAME)))
}

impl Driver {
    /// A driver on the daemon at `socket` with its state at `state`: the
    /// ports its endpoints published are held again and the node's rules
    /// put back as the state says (a restart of the driver, or after the
    /// node's firewall was flushed).
    pub fn new(socket: &Path, state: &Path) -> Result<Driver, DriverError> {
        let store = Store::open(state).map_err(|source| DriverError::State { path: state.into(), source })?;
        let mut held = Reservations::default();
        for (id, ep) in store.state.endpoints.iter().filter(|(_, e)| !e.published.is_empty()) {
            if let Err(e) = held.restore(id, &ep.published) {
                tracing::warn!(endpoint = short(id), error = %e, "a published port could not be held again");
            }
        }
        let d = Driver { socket: socket.into(), inner: Mutex::new(Inner { store, held }) };
        if let Err(e) = d.reapply() {
            tracing::warn!(error = %e, "the node's rules could not be put back");
        }
        Ok(d)
    }

    /// Puts the node's rules back as the state says (`SIGHUP`, every few
    /// seconds, after the node's firewall was flushed or reloaded, or
    /// dockerd put its own rules first); whether they had to be.
    pub fn reapply(&self) -> Result<bool, DriverError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.name_shared_bridges(&mut inner.store);
        if let Err(e) = self.reap(&mut inner) {
            tracing::warn!(error = %e, "stale endpoints could not be looked for");
        }
        Ok(rules::sync(&inner.store.state)?)
    }

    /// Forgets the endpoints whose container is gone without a word from
    /// Docker, and frees their published ports: after a kill -9 of dockerd
    /// its next start removes the dead containers' sandboxes before it
    /// loads remote drivers, so no Leave or DeleteEndpoint ever comes.
    /// Such an endpoint was joined and its veth is gone (its namespace took
    /// it along). Returns how many were forgotten.
    pub(crate) fn reap(&self, inner: &mut Inner) -> Result<usize, DriverError> {
        let mut nl = Rtnl::open()?;
        let mut gone = Vec::new();
        for (id, ep) in &inner.store.state.endpoints {
            if let Some(port) = ep.port.as_deref().and_then(|p| IfName::new(p).ok())
                && nl.link_by_name(&port)?.is_none()
            {
                gone.push(id.clone());
            }
        }
        let mut forgotten = 0;
        for id in gone {
            // The daemon's port goes too; with the daemon down, next time.
            if let Err(e) = self.unplug(&id) {
                tracing::debug!(endpoint = short(&id), error = %e, "a stale endpoint stays until the daemon answers");
                continue;
            }
            inner.held.release(&id);
            inner.store.state.endpoints.remove(&id);
            tracing::info!(
                endpoint = short(&id),
                "forgotten: its container is gone (dockerd restarted without a Leave)"
            );
            forgotten += 1;
        }
        if forgotten > 0 {
            rules::apply(&inner.store.state)?;
            save(&inner.store)?;
        }
        Ok(forgotten)
    }

    /// Answers one call: `method` is the path without its slash.
    pub fn handle(&self, method: &str, body: &[u8]) -> Result<Value, DriverError> {
        let call = Call::parse(method, body)?;
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let inner = &mut *guard;
        match call {
            Call::Activate => Ok(json!({ "Implements": ["NetworkDriver"] })),
            Call::Capabilities => Ok(json!({ "Scope": "local", "ConnectivityScope": "local" })),
            Call::CreateNetwork(r) => self.create_network(&mut inner.store, r),
            Call::DeleteNetwork(r) => self.delete_network(&mut inner.store, &r),
            Call::CreateEndpoint(r) => self.create_endpoint(&mut inner.store, r),
            Call::DeleteEndpoint(r) => self.delete_endpoint(inner, &r),
            Call::EndpointOperInfo(r) => Ok(external::oper_info(&inner.store, &r.endpoint_id)),
            Call::Join(r) => self.join(&mut inner.store, &r),
            Call::Leave(r) => self.leave(&mut inner.store, &r),
            Call::ProgramExternalConnectivity(r) => {
                external::program(inner, &r, &mut |i| self.reap(i).is_ok_and(|n| n > 0))
            }
            Call::RevokeExternalConnectivity(r) => external::revoke(inner, &r.endpoint_id),
            Call::Nothing => Ok(json!({})),
        }
    }

    fn client(&self) -> Result<Client, DriverError> {
        Ok(Client::connect(&self.socket)?)
    }

    /// Names the daemon's only bridge for networks of the release before
    /// bridges (best effort: the daemon may be down; named at the next call).
    fn name_shared_bridges(&self, store: &mut Store) {
        if !store.state.networks.values().any(|n| n.bridge.is_empty()) {
            return;
        }
        let Ok(host) = self.client().and_then(|mut c| Ok(c.call_patiently(HostInfo { bridge: None }, BUSY_PATIENCE)?))
        else {
            return;
        };
        for n in store.state.networks.values_mut().filter(|n| n.bridge.is_empty()) {
            n.bridge = host.name.clone();
        }
        let _ = store.save();
    }

    /// The network's bridge's host port, which must be in this network namespace.
    fn host(&self, c: &mut Client, net: &Network) -> Result<Host, DriverError> {
        let bridge = (!net.shared).then(|| IfName::new(&net.bridge).ok()).flatten();
        let host = c.call_patiently(HostInfo { bridge }, BUSY_PATIENCE).map_err(|e| match e {
            ClientError::Refused(msg) => DriverError::Refused(format!(
                "the network's bridge {} at the userbridge daemon {}: {msg} (docker network rm it and create it again)",
                net.bridge,
                self.socket.display()
            )),
            other => other.into(),
        })?;
        if !Rtnl::open()?.has_link(&host.name, host.mac.0)? {
            return Err(DriverError::Refused(format!(
                "the userbridge daemon's bridge {} is not in this network namespace: run the driver (and dockerd) where the daemon runs",
                host.name
            )));
        }
        Ok(host)
    }

    fn create_network(&self, store: &mut Store, r: CreateNetwork) -> Result<Value, DriverError> {
        if store.state.networks.contains_key(&r.network_id) {
            return Ok(json!({}));
        }
        let (mut mtu, mut name, mut masquerade, mut icc) = (0, None, true, true);
        if let Some(generic) = r.options.get(api::GENERIC).and_then(Value::as_object) {
            for (k, v) in generic {
                match k.as_str() {
                    api::MTU => {
                        let n = v.as_str().map_or_else(|| v.as_u64(), |s| s.parse().ok());
                        mtu = n.and_then(|n| u32::try_from(n).ok()).filter(|n| (68..=65535).contains(n)).ok_or_else(
                            || DriverError::Refused(format!("-o {}={v}: give an MTU from 68 to 65535", api::MTU)),
                        )?;
                    }
                    api::BRIDGE_NAME => name = v.as_str().map(str::to_string),
                    api::ENABLE_IP_MASQUERADE => masquerade = flag(k, v)?,
                    api::ENABLE_ICC => icc = flag(k, v)?,
                    other => {
                        return Err(DriverError::Refused(format!(
                            "unknown option -o {other}: the userbridge driver takes {}, {}, {} and {}",
                            api::MTU,
                            api::BRIDGE_NAME,
                            api::ENABLE_IP_MASQUERADE,
                            api::ENABLE_ICC
                        )));
                    }
                }
            }
        }
        let internal = r.options.get(api::INTERNAL).is_some_and(|v| v.as_bool() == Some(true));
        let bridge = bridge_name(&r.network_id, name.as_deref())?;
        if let Some((other, _)) = store.state.networks.iter().find(|(_, n)| n.bridge == bridge.as_str()) {
            return Err(DriverError::Refused(format!(
                "bridge {bridge} already carries network {}: give this one another -o {}",
                short(other),
                api::BRIDGE_NAME
            )));
        }
        let pools = r.ipv4_data.iter().chain(r.ipv6_data.iter()).flatten();
        let mut gateways = Vec::new();
        for g in pools.filter_map(|d| d.gateway.as_deref()) {
            let gw: IpNet = g.parse().map_err(|_| {
                DriverError::Refused(format!("Docker's IPAM gave the gateway {g:?}, not an address/prefix"))
            })?;
            gateways.push(gw);
        }
        // The bridge, with the gateways on its host port: Docker puts them nowhere.
        let mut c = self.client()?;
        let add = BridgeAdd {
            addresses: gateways.clone(),
            mtu: (mtu > 0).then_some(mtu),
            network: Some(format!("docker-{}", short(&r.network_id))),
            ..BridgeAdd::named(bridge.clone())
        };
        c.call_patiently(add, BUSY_PATIENCE).map_err(|e| match e {
            ClientError::Refused(msg) => DriverError::Refused(format!("the network's bridge {bridge}: {msg}")),
            other => other.into(),
        })?;
        let net = Network {
            bridge: bridge.to_string(),
            shared: false,
            gateways: gateways.clone(),
            added: Vec::new(),
            mtu,
            masquerade,
            icc,
            internal,
        };
        store.state.networks.insert(r.network_id.clone(), net);
        let done = rules::apply(&store.state).map_err(DriverError::from).and_then(|()| save(store));
        if let Err(e) = done {
            store.state.networks.remove(&r.network_id);
            let _ = rules::apply(&store.state);
            let _ = c.call_patiently(BridgeDel { name: bridge, detach: true }, BUSY_PATIENCE);
            return Err(e);
        }
        tracing::info!(network = short(&r.network_id), %bridge, ?gateways, masquerade, icc, internal, "network created");
        Ok(json!({}))
    }

    fn delete_network(&self, store: &mut Store, r: &NetworkRef) -> Result<Value, DriverError> {
        let Some(n) = store.state.networks.get(&r.network_id).cloned() else { return Ok(json!({})) };
        let mut c = self.client()?;
        if n.shared {
            for a in &n.added {
                c.call_patiently(HostAddressDel { bridge: None, address: *a }, BUSY_PATIENCE)?;
            }
        } else if let Ok(name) = IfName::new(&n.bridge) {
            match c.call_patiently(BridgeDel { name, detach: true }, BUSY_PATIENCE) {
                Ok(_) => {}
                // Deleted already (by hand, or a driver that died half way): nothing left to do.
                Err(ClientError::Refused(msg)) if msg.starts_with("no bridge named") => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Docker deletes endpoints first; any left are stale records.
        store.state.endpoints.retain(|_, e| e.network != r.network_id);
        store.state.networks.remove(&r.network_id);
        rules::apply(&store.state)?;
        tracing::info!(network = short(&r.network_id), bridge = %n.bridge, "network deleted");
        save(store)?;
        Ok(json!({}))
    }

    fn create_endpoint(&self, store: &mut Store, r: CreateEndpoint) -> Result<Value, DriverError> {
        let Some(net) = store.state.networks.get(&r.network_id) else {
            return Err(DriverError::Refused(format!(
                "network {} is not one of this driver's (its state file {} lost it?): docker network rm it and create it again",
                short(&r.network_id),
                store.path().display()
            )));
        };
        let publishes = r.options.get(api::PORTMAP).and_then(Value::as_array).is_some_and(|m| !m.is_empty());
        if publishes && net.internal {
            return Err(DriverError::Refused("an --internal network publishes no port".into()));
        }
        let iface = r.interface.unwrap_or_default();
        let given = iface.mac_address.filter(|m| !m.is_empty());
        let made = if given.is_none() { iface.address.as_deref().and_then(mac_from_ip) } else { None };
        let mac = given.or_else(|| made.clone());
        let address = iface.address.as_deref().and_then(|a| a.parse::<IpNet>().ok()).and_then(|a| match a.addr() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        });
        let ep = Endpoint { network: r.network_id, mac, address, ..Endpoint::default() };
        store.state.endpoints.insert(r.endpoint_id.clone(), ep);
        save(store)?;
        Ok(match made {
            Some(m) => json!({ "Interface": { "MacAddress": m } }),
            None => json!({}),
        })
    }

    fn join(&self, store: &mut Store, r: &Join) -> Result<Value, DriverError> {
        let ep = store.state.endpoints.get(&r.endpoint_id).cloned().ok_or_else(|| {
            DriverError::Refused(format!("endpoint {} was never created on this driver", short(&r.endpoint_id)))
        })?;
        self.name_shared_bridges(store);
        let net = store.state.networks.get(&ep.network).cloned().ok_or_else(|| {
            DriverError::Refused(format!("network {} is not one of this driver's", short(&ep.network)))
        })?;
        let mut c = self.client()?;
        let host = self.host(&mut c, &net)?;
        let (port, peer) = link_names(&r.endpoint_id);
        let mut nl = Rtnl::open()?;
        // A join that died half way: start again.
        if let Some(l) = nl.link_by_name(&port)? {
            nl.del_link(l.index)?;
        }
        nl.add_veth(&port, &peer, None)?;
        let made = (|| -> Result<(), DriverError> {
            let mtu = if net.mtu == 0 { host.mtu } else { net.mtu };
            for name in [&port, &peer] {
                let l = nl.link_by_name(name)?.ok_or_else(|| DriverError::Refused(format!("{name} vanished")))?;
                nl.set_mtu(l.index, mtu)?;
                if *name == port {
                    nl.set_up(l.index, true)?;
                } else if let Some(mac) = ep.mac.as_deref().and_then(|m| m.parse::<ub_wire::Mac>().ok()) {
                    nl.set_mac(l.index, mac.0)?;
                }
            }
            let meta = ub_proto::PortMeta {
                network: Some(ep.network.clone()),
                endpoint: Some(r.endpoint_id.clone()),
                ..Default::default()
            };
            // enable_icc=false: the network's containers reach the gateway, not each other.
            let policy = (!net.icc).then(|| PortPolicy { isolated: true, ..PortPolicy::default() });
            let bridge = IfName::new(&host.name).ok();
            c.call_patiently(
                PortAdd { meta: Some(meta), bridge, policy, ..PortAdd::afpacket(port.clone()) },
                BUSY_PATIENCE,
            )?;
            Ok(())
        })();
        if let Err(e) = made {
            if let Ok(Some(l)) = nl.link_by_name(&port) {
                let _ = nl.del_link(l.index);
            }
            return Err(e);
        }
        if let Some(e) = store.state.endpoints.get_mut(&r.endpoint_id) {
            e.port = Some(port.to_string());
        }
        save(store)?;
        // After a restart of dockerd its rules come first again: ours go back ahead.
        if let Err(e) = rules::apply(&store.state) {
            tracing::warn!(error = %e, "the node's rules could not be checked");
        }
        tracing::info!(endpoint = short(&r.endpoint_id), %port, bridge = %host.name, sandbox = %r.sandbox_key, "joined");
        // An --internal network gives no default route: no way out.
        let gw = |v4: bool| {
            let g = net.gateways.iter().find(|g| g.addr().is_ipv4() == v4);
            g.filter(|_| !net.internal).map(|g| g.addr().to_string()).unwrap_or_default()
        };
        let j = Joined {
            interface_name: api::InterfaceName { src_name: peer.to_string(), dst_prefix: "eth".into() },
            gateway: gw(true),
            gateway_ipv6: gw(false),
        };
        Ok(serde_json::to_value(j).unwrap_or_default())
    }

    /// Detaches the endpoint's port and deletes its veth (the container end
    /// is back in this namespace after Leave; deleting either end deletes both).
    fn unplug(&self, endpoint: &str) -> Result<(), DriverError> {
        let (port, _) = link_names(endpoint);
        let mut c = self.client()?;
        c.call_patiently(PortDel { name: port.clone(), if_exists: true }, BUSY_PATIENCE)?;
        let mut nl = Rtnl::open()?;
        if let Some(l) = nl.link_by_name(&port)? {
            match nl.del_link(l.index) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn leave(&self, store: &mut Store, r: &EndpointRef) -> Result<Value, DriverError> {
        self.unplug(&r.endpoint_id)?;
        if let Some(e) = store.state.endpoints.get_mut(&r.endpoint_id) {
            e.port = None;
            save(store)?;
        }
        tracing::info!(endpoint = short(&r.endpoint_id), "left");
        Ok(json!({}))
    }

    fn delete_endpoint(&self, inner: &mut Inner, r: &EndpointRef) -> Result<Value, DriverError> {
        // Docker deletes endpoints it finds stale after its own restart,
        // joined or not, known to us or not: leave nothing behind.
        self.unplug(&r.endpoint_id)?;
        inner.held.release(&r.endpoint_id);
        if let Some(e) = inner.store.state.endpoints.remove(&r.endpoint_id) {
            if !e.published.is_empty() {
                rules::apply(&inner.store.state)?;
            }
            save(&inner.store)?;
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_and_differ() {
        let (a, b) = link_names("3f1c9d0e6b2a4c8d9e0f1a2b3c4d5e6f3f1c9d0e6b2a4c8d9e0f1a2b3c4d5e6f");
        assert_eq!((a.len(), b.len()), (14, 14));
        assert_eq!(a[3..], b[3..]);
        assert_ne!(link_names("e1").0, link_names("e2").0);
    }

    #[test]
    fn macs_as_the_bridge_driver_makes_them() {
        assert_eq!(mac_from_ip("172.18.0.2/16").as_deref(), Some("02:42:ac:12:00:02"));
        assert_eq!(mac_from_ip("fd00::2/64"), None);
        assert_eq!(mac_from_ip(""), None);
    }

    fn driver(tag: &str) -> (Driver, PathBuf) {
        let dir = std::env::temp_dir().join(format!("ub-docker-{tag}-{}", std::process::id()));
        let d = Driver::new(Path::new("/nonexistent/ub.sock"), &dir.join("s.json")).unwrap();
        (d, dir)
    }

    #[test]
    fn handshake_and_refusals_need_no_daemon() {
        let (d, dir) = driver("hs");
        assert_eq!(d.handle("Plugin.Activate", b"{}").unwrap(), json!({ "Implements": ["NetworkDriver"] }));
        assert_eq!(d.handle("NetworkDriver.GetCapabilities", b"{}").unwrap()["Scope"], "local");
        let e = d.handle("NetworkDriver.CreateNetwork", b"{").unwrap_err().to_string();
        assert!(e.starts_with("NetworkDriver.CreateNetwork: a malformed request"), "{e}");
        let ep = br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.2/24"},"Options":{}}"#;
        let e = d.handle("NetworkDriver.CreateEndpoint", ep).unwrap_err().to_string();
        assert!(e.contains("network n is not one of this driver's"), "{e}");
        // The daemon not there: said so, with the way out.
        let e = d.handle("NetworkDriver.CreateNetwork", br#"{"NetworkID":"n","Options":{}}"#).unwrap_err().to_string();
        assert!(e.contains("is `userbridge run` running?"), "{e}");
        assert!(d.handle("NetworkDriver.Nonsense", b"{}").unwrap_err().to_string().contains("does not implement"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn endpoints_get_the_bridge_drivers_mac_and_internal_networks_publish_nothing() {
        let (d, dir) = driver("pm");
        let net = Network {
            bridge: "ub-n".into(),
            shared: false,
            gateways: vec!["10.0.0.1/24".parse().unwrap()],
            added: vec![],
            mtu: 0,
            masquerade: true,
            icc: true,
            internal: true,
        };
        d.inner.lock().unwrap().store.state.networks.insert("n".into(), net);
        let ep = br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.2/24"},
            "Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":8080}]}}"#;
        let e = d.handle("NetworkDriver.CreateEndpoint", ep).unwrap_err().to_string();
        assert!(e.contains("an --internal network publishes no port"), "{e}");
        let ok = br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.2/24"},"Options":{}}"#;
        assert_eq!(
            d.handle("NetworkDriver.CreateEndpoint", ok).unwrap(),
            json!({ "Interface": { "MacAddress": "02:42:0a:00:00:02" } })
        );
        assert_eq!(d.inner.lock().unwrap().store.state.endpoints["e"].address, Some("10.0.0.2".parse().unwrap()));
        let given = br#"{"NetworkID":"n","EndpointID":"f","Interface":{"Address":"10.0.0.3/24","MacAddress":"02:00:00:00:00:09"}}"#;
        assert_eq!(d.handle("NetworkDriver.CreateEndpoint", given).unwrap(), json!({}));
        assert_eq!(
            d.handle("NetworkDriver.EndpointOperInfo", br#"{"NetworkID":"n","EndpointID":"e"}"#).unwrap(),
            json!({"Value": {}})
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bridge_names_as_the_bridge_driver_gives_them() {
        assert_eq!(bridge_name("0123456789abcdef0123", None).unwrap(), "ub-0123456789ab");
        assert_eq!(bridge_name("x", Some("mynet0")).unwrap(), "mynet0");
        assert!(
            bridge_name("x", Some("far-too-long-a-name"))
                .unwrap_err()
                .to_string()
                .contains("not a valid interface name")
        );
    }
}
