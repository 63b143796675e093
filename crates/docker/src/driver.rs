//! The driver's answers: each remote-driver call against the daemon (only
//! through the control protocol), the host's links (veths) and the state
//! file. One call at a time: every handler holds the state's lock.

use crate::api::{self, CreateEndpoint, CreateNetwork, EndpointRef, Join, Joined, NetworkRef};
use crate::state::{Endpoint, Network, Store};
use ipnet::IpNet;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use ub_netlink::Rtnl;
use ub_proto::{Client, ClientError, Host, HostAddress, HostAddressDel, HostInfo, IfName, PortAdd, PortDel};

/// How long a call waits for a daemon busy with other clients.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// Why a call failed; Docker shows the message to the user.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{method}: a malformed request: {detail}")]
    BadRequest { method: String, detail: String },
    #[error("{0}")]
    Refused(String),
    #[error("userbridge daemon: {0}")]
    Daemon(#[from] ClientError),
    #[error("{0}")]
    Netlink(#[from] ub_netlink::Error),
    #[error("the driver's state file {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
}

/// The driver: where the daemon is, and the networks and endpoints.
#[derive(Debug)]
pub struct Driver {
    socket: PathBuf,
    bridge: Option<IfName>,
    store: Mutex<Store>,
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
            "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete" => Call::Nothing,
            "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => {
                return Err(DriverError::Refused(
                    "the userbridge driver is local-scope: it allocates no swarm networks".into(),
                ));
            }
            other => return Err(DriverError::Refused(format!("the userbridge driver does not implement {other}"))),
        })
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Driver {
    pub fn new(socket: &Path, bridge: Option<IfName>, state: &Path) -> Result<Driver, DriverError> {
        let store = Store::open(state).map_err(|source| DriverError::State { path: state.into(), source })?;
        Ok(Driver { socket: socket.into(), bridge, store: Mutex::new(store) })
    }

    /// Answers one call: `method` is the path without its slash.
    pub fn handle(&self, method: &str, body: &[u8]) -> Result<Value, DriverError> {
        let call = Call::parse(method, body)?;
        let mut store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match call {
            Call::Activate => Ok(json!({ "Implements": ["NetworkDriver"] })),
            Call::Capabilities => Ok(json!({ "Scope": "local", "ConnectivityScope": "local" })),
            Call::CreateNetwork(r) => self.create_network(&mut store, r),
            Call::DeleteNetwork(r) => self.delete_network(&mut store, &r),
            Call::CreateEndpoint(r) => self.create_endpoint(&mut store, r),
            Call::DeleteEndpoint(r) => self.delete_endpoint(&mut store, &r),
            Call::EndpointOperInfo(_) => Ok(json!({ "Value": {} })),
            Call::Join(r) => self.join(&mut store, &r),
            Call::Leave(r) => self.leave(&mut store, &r),
            // Port mappings were refused at CreateEndpoint: nothing to program.
            Call::Nothing => Ok(json!({})),
        }
    }

    fn client(&self) -> Result<Client, DriverError> {
        Ok(Client::connect(&self.socket)?)
    }

    /// The daemon's host port, which must be in this network namespace.
    fn host(&self, c: &mut Client) -> Result<Host, DriverError> {
        let host = c.call_patiently(HostInfo { bridge: self.bridge.clone() }, BUSY_PATIENCE).map_err(|e| match e {
            ClientError::Refused(msg) => DriverError::Refused(format!(
                "the userbridge daemon at {} has no bridge with a host port for this driver ({msg}): start it with --host-port NAME, or give the driver --bridge NAME",
                self.socket.display()
            )),
            other => other.into(),
        })?;
        if !Rtnl::open()?.has_link(&host.name, host.mac.0)? {
            return Err(DriverError::Refused(format!(
                "the userbridge daemon's host port {} is not in this network namespace: run the driver (and dockerd) where the daemon runs",
                host.name
            )));
        }
        Ok(host)
    }

    fn save(store: &Store) -> Result<(), DriverError> {
        store.save().map_err(|source| DriverError::State { path: store.path().into(), source })
    }

    fn create_network(&self, store: &mut Store, r: CreateNetwork) -> Result<Value, DriverError> {
        if store.state.networks.contains_key(&r.network_id) {
            return Ok(json!({}));
        }
        let mut c = self.client()?;
        let host = self.host(&mut c)?;
        if let Some(other) = store.state.networks.keys().next() {
            return Err(DriverError::Refused(format!(
                "the userbridge driver serves one network per host port, and {} already carries network {}: remove that network first (docker network rm)",
                host.name,
                short(other)
            )));
        }
        let mut mtu = 0;
        if let Some(generic) = r.options.get(api::GENERIC).and_then(Value::as_object) {
            for (k, v) in generic {
                if k != api::MTU {
                    return Err(DriverError::Refused(format!(
                        "unknown option -o {k}: the userbridge driver takes only -o {}=N",
                        api::MTU
                    )));
                }
                let n = v.as_str().map_or_else(|| v.as_u64(), |s| s.parse().ok());
                mtu = n.and_then(|n| u32::try_from(n).ok()).filter(|n| (68..=65535).contains(n)).ok_or_else(|| {
                    DriverError::Refused(format!("-o {}={v}: give an MTU from 68 to 65535", api::MTU))
                })?;
            }
        }
        let pools = r.ipv4_data.iter().chain(r.ipv6_data.iter()).flatten();
        let mut gateways = Vec::new();
        for g in pools.filter_map(|d| d.gateway.as_deref()) {
            let gw: IpNet = g.parse().map_err(|_| {
                DriverError::Refused(format!("Docker's IPAM gave the gateway {g:?}, not an address/prefix"))
            })?;
            gateways.push(gw);
        }
        // The gateways go on the host port: Docker puts them nowhere.
        let mut added = Vec::new();
        for gw in &gateways {
            match c
                .call_patiently(HostAddress { bridge: self.bridge.clone(), address: *gw, force: false }, BUSY_PATIENCE)
            {
                Ok(a) if a.added => added.push(*gw),
                Ok(_) => {}
                Err(e) => {
                    for a in &added {
                        let _ = c
                            .call_patiently(HostAddressDel { bridge: self.bridge.clone(), address: *a }, BUSY_PATIENCE);
                    }
                    return Err(DriverError::Refused(format!(
                        "cannot put the gateway {gw} on the host port {}: {e}",
                        host.name
                    )));
                }
            }
        }
        tracing::info!(network = short(&r.network_id), ?gateways, "network created");
        store.state.networks.insert(r.network_id, Network { gateways, added, mtu });
        Self::save(store)?;
        Ok(json!({}))
    }

    fn delete_network(&self, store: &mut Store, r: &NetworkRef) -> Result<Value, DriverError> {
        let Some(n) = store.state.networks.get(&r.network_id).cloned() else { return Ok(json!({})) };
        if !n.added.is_empty() {
            let mut c = self.client()?;
            for a in &n.added {
                c.call_patiently(HostAddressDel { bridge: self.bridge.clone(), address: *a }, BUSY_PATIENCE)?;
            }
        }
        // Docker deletes endpoints first; any left are stale records.
        store.state.endpoints.retain(|_, e| e.network != r.network_id);
        store.state.networks.remove(&r.network_id);
        tracing::info!(network = short(&r.network_id), "network deleted");
        Self::save(store)?;
        Ok(json!({}))
    }

    fn create_endpoint(&self, store: &mut Store, r: CreateEndpoint) -> Result<Value, DriverError> {
        if !store.state.networks.contains_key(&r.network_id) {
            return Err(DriverError::Refused(format!(
                "network {} is not one of this driver's (its state file {} lost it?): docker network rm it and create it again",
                short(&r.network_id),
                store.path().display()
            )));
        }
        if r.options.get(api::PORTMAP).and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
            return Err(DriverError::Refused(
                "publishing ports (-p) is not supported by the userbridge driver: reach the container at its address, or add a DNAT rule on the host".into(),
            ));
        }
        let iface = r.interface.unwrap_or_default();
        let given = iface.mac_address.filter(|m| !m.is_empty());
        let made = if given.is_none() { iface.address.as_deref().and_then(mac_from_ip) } else { None };
        let mac = given.or_else(|| made.clone());
        store.state.endpoints.insert(r.endpoint_id.clone(), Endpoint { network: r.network_id, mac, port: None });
        Self::save(store)?;
        Ok(match made {
            Some(m) => json!({ "Interface": { "MacAddress": m } }),
            None => json!({}),
        })
    }

    fn join(&self, store: &mut Store, r: &Join) -> Result<Value, DriverError> {
        let ep = store.state.endpoints.get(&r.endpoint_id).cloned().ok_or_else(|| {
            DriverError::Refused(format!("endpoint {} was never created on this driver", short(&r.endpoint_id)))
        })?;
        let net = store.state.networks.get(&ep.network).cloned().unwrap_or_default();
        let mut c = self.client()?;
        let host = self.host(&mut c)?;
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
            c.call_patiently(
                PortAdd { meta: Some(meta), bridge: self.bridge.clone(), ..PortAdd::afpacket(port.clone()) },
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
        Self::save(store)?;
        tracing::info!(endpoint = short(&r.endpoint_id), %port, sandbox = %r.sandbox_key, "joined");
        let gw = |v4: bool| {
            net.gateways.iter().find(|g| g.addr().is_ipv4() == v4).map(|g| g.addr().to_string()).unwrap_or_default()
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
            Self::save(store)?;
        }
        tracing::info!(endpoint = short(&r.endpoint_id), "left");
        Ok(json!({}))
    }

    fn delete_endpoint(&self, store: &mut Store, r: &EndpointRef) -> Result<Value, DriverError> {
        // Docker deletes endpoints it finds stale after its own restart,
        // joined or not, known to us or not: leave nothing behind.
        self.unplug(&r.endpoint_id)?;
        if store.state.endpoints.remove(&r.endpoint_id).is_some() {
            Self::save(store)?;
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
        let d = Driver::new(Path::new("/nonexistent/ub.sock"), None, &dir.join("s.json")).unwrap();
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
    fn port_mappings_are_refused_not_ignored() {
        let (d, dir) = driver("pm");
        d.store.lock().unwrap().state.networks.insert("n".into(), Network::default());
        let ep = br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.2/24"},
            "Options":{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostPort":8080}]}}"#;
        let e = d.handle("NetworkDriver.CreateEndpoint", ep).unwrap_err().to_string();
        assert!(e.contains("publishing ports (-p) is not supported"), "{e}");
        let ok = br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.2/24"},"Options":{"com.docker.network.portmap":[]}}"#;
        assert_eq!(
            d.handle("NetworkDriver.CreateEndpoint", ok).unwrap(),
            json!({ "Interface": { "MacAddress": "02:42:0a:00:00:02" } })
        );
        let given = br#"{"NetworkID":"n","EndpointID":"f","Interface":{"Address":"10.0.0.3/24","MacAddress":"02:00:00:00:00:09"}}"#;
        assert_eq!(d.handle("NetworkDriver.CreateEndpoint", given).unwrap(), json!({}));
        let _ = std::fs::remove_dir_all(dir);
    }
}
