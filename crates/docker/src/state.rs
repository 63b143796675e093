//! What the driver keeps across its own restarts and dockerd's (which never
//! replays CreateNetwork): the networks and endpoints, in one JSON file
//! replaced atomically on every change.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// The gateways on the host port, with the pools' prefix lengths.
    pub gateways: Vec<IpNet>,
    /// The gateways this network put on the host port (and so takes off).
    pub added: Vec<IpNet>,
    /// The containers' MTU (0: the host port's).
    #[serde(default)]
    pub mtu: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The switch port (the veth's host end) while joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
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
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a driver state file: {e}", path.display()))
            })?,
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
        s.state.networks.insert("n1".into(), Network { gateways: vec![gw], added: vec![gw], mtu: 0 });
        s.state.endpoints.insert("e1".into(), Endpoint { network: "n1".into(), mac: None, port: Some("ubd1".into()) });
        s.save().unwrap();
        assert_eq!(Store::open(&path).unwrap().state, s.state);
        std::fs::write(&path, b"{").unwrap();
        assert!(Store::open(&path).unwrap_err().to_string().contains("not a driver state file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
