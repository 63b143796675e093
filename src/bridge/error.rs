//! What a change to one bridge can meet; each message names the thing and,
//! where there is one, the fix.

use ub_proto::{IfName, PolicyError};
use ub_wire::Mac;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Opening the port failed (the port's error names the interface and why).
    #[error(transparent)]
    Port(#[from] ub_port::PortError),
    #[error(transparent)]
    Switch(#[from] ub_datapath::SwitchError),
    #[error("no port named '{0}' (see `userbridge port list`)")]
    NoSuchPort(String),
    #[error("port '{0}' is already attached")]
    AlreadyAttached(IfName),
    #[error("port '{port}': {why}")]
    BadPolicy { port: IfName, why: PolicyError },
    #[error("starting a reader of {port}: {source} (threads: see `ulimit -u`)")]
    Reader { port: IfName, source: std::io::Error },
    #[error("static entry {mac} dev {port}: {why}")]
    Static { mac: Mac, port: IfName, why: ub_fdb::Refused },
    #[error("bridge {0} has no host port (it was made without one)")]
    NoHostPort(IfName),
    #[error("the host port {port}: {source}")]
    HostNetlink { port: IfName, source: ub_netlink::Error },
    #[error("the host port already has {has}, not {wanted} (set forceAddress to replace it)")]
    HostAddressConflict { has: ub_netlink::IpNet, wanted: ub_netlink::IpNet },
    #[error("{0} is the host port's configured address: remove it from the configuration (or --address) instead")]
    HostAddressConfigured(ub_netlink::IpNet),
    #[error("bridge {0} was deleted meanwhile")]
    Deleted(IfName),
}
