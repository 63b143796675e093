//! What the driver keeps across its own restarts and dockerd's (which never
//! replays CreateNetwork): the networks and endpoints, in one JSON file
//! replaced atomically on every change.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

fn yes() -> bool {
    true
}

/// A network: a bridge of the daemon's, and what the bridge driver's
/// options said of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// The daemon's bridge (and its host port) that carries it; empty in a
    /// file of the release before bridges (then `shared`), until the
    /// daemon names its only bridge.
    #[serde(default)]
    pub bridge: String,
    /// The bridge is not the network's own (a network of the release before
    /// bridges, on the daemon's only bridge): deleting the network takes
    /// only the gateways it `added` off it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// The gateways on the bridge's host port, with the pools' prefix lengths.
    pub gateways: Vec<IpNet>,
    /// A shared bridge: the gateways this network put on its host port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<IpNet>,
    /// The containers' MTU (0: the host port's).
    #[serde(default)]
    pub mtu: u32,
    /// Masquerade what leaves the network's subnet (`enable_ip_masquerade`).
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// Containers of the network reach each other (`enable_icc`).
    #[serde(default = "yes")]
    pub icc: bool,
    /// `--internal`: no way out, no published port.
    #[serde(default)]
    pub internal: bool,
}

impl Network {
    /// It has a bridge of its own (not one of the release before bridges,
    /// shared): the driver's rules are for such networks.
    pub fn owns_bridge(&self) -> bool {
        !self.bridge.is_empty() && !self.shared
    }

    /// The network's IPv4 subnets (its gateways' prefixes).
    pub fn subnets_v4(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.gateways.iter().filter(|g| g.addr().is_ipv4()).map(IpNet::trunc)
    }
}

/// A port a container publishes, as programmed: `host_port` chosen by the
/// driver when Docker sent 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Published {
    /// 6 TCP, 17 UDP.
    pub proto: u8,
    /// The address it is published on (`None`: every address of the node).
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
    pub port: u16,
}

impl Published {
    pub fn proto_name(self) -> &'static str {
        if self.proto == 17 { "udp" } else { "tcp" }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its IPv4 address (without prefix), for its published ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// The switch port (the veth's host end) while joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Its published ports, while its external connectivity is programmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<Published>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// The state and the file it lives in.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    pub state: State,
}

impl Store {
    /// Loads `path` (empty when it does not exist yet).
    pub fn open(path: &Path) -> io::Result<Store> {
        let state = match std::fs::read(path) {
            Ok(b) => {
                let mut s: State = serde_json::from_slice(&b).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a driver state file: {e}", path.display()),
                    )
                })?;
                for n in s.networks.values_mut().filter(|n| n.bridge.is_empty()) {
                    n.shared = true;
                }
                s
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        Ok(Store { path: path.to_path_buf(), state })
    }

    /// Writes the state, replacing the file whole.
    pub fn save(&self) -> io::Result<()> {
        ub_files::write(&self.path, &serde_json::to_vec_pretty(&self.state).map_err(io::Error::other)?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("ub-docker-state-{}", std::process::id()));
        let path = dir.join("state.json");
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.state, State::default());
        let gw: IpNet = "10.1.0.1/24".parse().unwrap();
        let n1 = Network {
            bridge: "ub-n1".into(),
            shared: false,
            gateways: vec![gw],
            added: vec![],
            mtu: 0,
            masquerade: true,
            icc: false,
            internal: false,
        };
        s.state.networks.insert("n1".into(), n1);
        let e1 = Endpoint { network: "n1".into(), port: Some("ubd1".into()), ..Endpoint::default() };
        s.state.endpoints.insert("e1".into(), e1);
        s.save().unwrap();
        assert_eq!(Store::open(&path).unwrap().state, s.state);
        // A file of the release before bridges: its network is on the daemon's only bridge.
        std::fs::write(
            &path,
            br#"{"networks":{"n0":{"gateways":["10.1.0.1/24"],"added":["10.1.0.1/24"],"mtu":0}},"endpoints":{}}"#,
        )
        .unwrap();
        let old = Store::open(&path).unwrap().state;
        let n0 = &old.networks["n0"];
        assert!(n0.shared && n0.bridge.is_empty() && n0.masquerade && n0.icc && !n0.internal, "{n0:?}");
        assert_eq!(n0.added, vec![gw]);
        std::fs::write(&path, b"{").unwrap();
        assert!(Store::open(&path).unwrap_err().to_string().contains("not a driver state file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
