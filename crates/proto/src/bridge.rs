//! The requests and replies about bridges (protocol version 2), and the
//! protocol's version.

use crate::IfName;
use crate::port::Origin;
use crate::types::{Host, is_false, yes};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use ub_wire::Mac;

fn is_true(b: &bool) -> bool {
    *b
}

// ---- requests ----

/// Makes a bridge (`userbridge bridge add`, the CNI plugin for a
/// configuration's `bridge`). With a host port (the default) the bridge's
/// name is also its interface, a TAP with `addresses`, `mtu` and `mac`, as
/// `ip link add NAME type bridge` makes one. The state file records a
/// bridge made at run time as this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeAdd {
    pub name: IfName,
    /// Make the bridge's own interface (its host port).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub host_port: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub vlan_filtering: bool,
    /// The CNI network whose ADD made it: that network's GC deletes it
    /// once it has no ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// A bridge of that name already there is not an error (`created`
    /// false): two CNI ADDs that both found it missing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub if_missing: bool,
}

impl BridgeAdd {
    /// A bridge with a host port and nothing else given.
    pub fn named(name: IfName) -> BridgeAdd {
        BridgeAdd {
            name,
            host_port: true,
            addresses: Vec::new(),
            mtu: None,
            mac: None,
            vlan_filtering: false,
            network: None,
            if_missing: false,
        }
    }
}

/// Deletes a bridge and its host port. A bridge with ports is refused
/// unless `detach`, which detaches them first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeDel {
    pub name: IfName,
    #[serde(default, skip_serializing_if = "is_false")]
    pub detach: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeList {}

/// The protocol's version and the daemon's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {}

/// Starts the daemon's binary again (the file it was started from, so an
/// upgraded one) with the same arguments and `--takeover`: it takes the
/// ports over and this daemon exits (docs/operations.md, "Upgrades").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {}

// ---- replies ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeAdded {
    pub added: IfName,
    /// False when `if_missing` found it there.
    pub created: bool,
    /// Its host port now, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeRemoved {
    pub removed: IfName,
    /// The ports `detach` took off it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detached: Vec<IfName>,
}

/// One bridge, as `bridge list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeInfo {
    pub name: IfName,
    /// From the configuration, or made at run time.
    pub origin: Origin,
    /// Its own interface (host port): MAC, MTU and addresses now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
    /// Ports, the host port left out.
    pub ports: u32,
    pub fdb_entries: u64,
    pub vlan_filtering: bool,
    /// The CNI network whose ADD made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Its way through the node's netfilter, if it has one: `on` (IP
    /// between its stations goes through the node's rules) or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The control protocol's version ([`crate::PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// The daemon's release.
    pub daemon: String,
    /// The daemon's process (0 from a daemon before it said).
    #[serde(default)]
    pub pid: u32,
    /// The last `upgrade` that did not take over, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_upgrade: Option<FailedUpgrade>,
}

/// A new daemon started by `upgrade` that exited before it took over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedUpgrade {
    pub pid: u32,
    /// How it ended (its log says why).
    pub why: String,
}

/// The new daemon started by `upgrade`, taking over from `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrading {
    pub pid: u32,
    pub from: u32,
    /// The binary it runs.
    pub binary: String,
}

/// The interfaces of bridge `bridge`'s way through the node's netfilter:
/// the kernel bridge, its port (a veth end) and the switch's port (the
/// other end): `ubnf` and a hash of the bridge's name, so any bridge name
/// fits in 15 characters and a restart finds what it made. The Docker
/// driver accepts the kernel bridge's traffic in its chains.
pub fn netfilter_names(bridge: &str) -> (String, String, String) {
    // FNV-1a: stable across releases.
    let h = bridge.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let base = format!("ubnf{h:08x}");
    (base.clone(), format!("{base}k"), format!("{base}u"))
}
