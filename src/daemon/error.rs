//! What a request to the daemon can meet beyond one bridge's own errors:
//! which bridge it means, and the names every bridge shares. Each message
//! names the thing and, where there is one, the fix.

use crate::bridge::BridgeError;
use crate::config::HostError;
use ub_proto::IfName;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(
        "no bridge yet: make one with `userbridge bridge add NAME` (or start the daemon with --host-port NAME or --port IF)"
    )]
    NoBridge,
    #[error("no bridge named '{0}' (see `userbridge bridge list`)")]
    NoSuchBridge(String),
    #[error("{} bridges ({}): name one (`br NAME`, `master NAME`, or \"bridge\" in the request)", .0.len(), .0.join(", "))]
    SeveralBridges(Vec<String>),
    #[error("bridge '{0}' exists already")]
    BridgeExists(IfName),
    #[error("bridge '{name}' has ports ({}): detach them first, or delete it with --detach", .ports.join(", "))]
    BridgeHasPorts { name: IfName, ports: Vec<String> },
    #[error("'{port}' is a port of bridge '{bridge}': detach it there first")]
    InBridge { port: IfName, bridge: IfName },
    #[error("'{0}' is a bridge (its own interface): attach other interfaces to it")]
    IsBridge(IfName),
    #[error("port '{port}' is in bridge '{is_in}', not '{named}'")]
    WrongBridge { port: IfName, is_in: IfName, named: IfName },
    #[error("'{0}' is being attached or made by another request: try again")]
    Busy(IfName),
    #[error("bridge '{name}': {source}")]
    BadBridge { name: IfName, source: HostError },
}

impl DaemonError {
    /// No port of that name in any bridge.
    pub fn no_port(name: &str) -> DaemonError {
        DaemonError::Bridge(BridgeError::NoSuchPort(name.to_string()))
    }
}
