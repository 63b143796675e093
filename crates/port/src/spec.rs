//! What a port is, as data: its name, backend, who added it, its policy and
//! its owner's metadata. The daemon keeps one [`PortSpec`] per port, the
//! control protocol carries them, the state file records them, and
//! [`crate::open`] turns one into an open port.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use ub_wire::Mac;

/// How a port reaches its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An existing interface (the host end of a pod's veth), through AF_PACKET.
    Afpacket,
    /// A TAP interface the daemon creates in its (pod-side) namespace.
    Tap,
    /// The pods' gateway: a TAP interface the daemon creates in the namespace
    /// it was started in, with addresses, like `cni0` itself.
    Host,
    /// In-memory (tests and benches); never opened by [`crate::open`].
    Mem,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Afpacket => "afpacket",
            Backend::Tap => "tap",
            Backend::Host => "host",
            Backend::Mem => "mem",
        }
    }
}

/// Who added a port, and so who may remove it: a reload reconciles only
/// the ports its file owns; run-time ports belong to whoever added them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Listed in the configuration (file or `run` flags).
    Config,
    /// Added at run time (`port add`, the CNI plugin, the Docker driver).
    #[default]
    Runtime,
}

/// A port's state as the datapath sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Up = 0,
    /// Link down: frames to it are dropped (`port_down`); it resumes on up.
    Down = 1,
    /// Interface deleted: its readers have stopped and its FDB entries are flushed.
    Gone = 2,
    /// Part of a loop (our own probe came back on it): it forwards nothing
    /// until the loop is gone.
    Blocked = 3,
    /// Its reader panicked too often: it forwards nothing until re-added.
    Failed = 4,
}

impl PortState {
    pub fn from_u8(v: u8) -> PortState {
        match v {
            0 => PortState::Up,
            1 => PortState::Down,
            3 => PortState::Blocked,
            4 => PortState::Failed,
            _ => PortState::Gone,
        }
    }
}

/// One VLAN a port is a member of, as `bridge vlan add dev X vid N [pvid] [untagged]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanEntry {
    pub vid: u16,
    /// Untagged frames arriving on the port belong to this VLAN (one per port).
    #[serde(default)]
    pub pvid: bool,
    /// Frames of this VLAN leave the port without a tag.
    #[serde(default)]
    pub untagged: bool,
}

/// The VLAN-aware default of every port, as the kernel's `default_pvid 1`.
pub const DEFAULT_VLANS: [VlanEntry; 1] = [VlanEntry { vid: 1, pvid: true, untagged: true }];

/// A port's forwarding policy, with the Linux bridge's meaning for each knob
/// (`bridge link set`, `bridge vlan`); see docs/policies.md. The default is
/// the kernel bridge's default port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortPolicy {
    /// Learn the sources of frames received here (`learning`).
    pub learning: bool,
    /// Receive unknown-unicast floods (`flood`).
    pub flood: bool,
    /// Receive multicast floods (`mcast_flood`).
    pub mcast_flood: bool,
    /// Receive broadcast floods (`bcast_flood`).
    pub bcast_flood: bool,
    /// Exchange frames only with non-isolated ports (`isolated`).
    pub isolated: bool,
    /// A frame may leave by the port it came in on (`hairpin`).
    pub hairpin: bool,
    /// Only the MACs in `macs` may send (`locked`; the CNI plugin's `macspoofchk`).
    pub locked: bool,
    /// Answer ARP requests for known addresses instead of flooding them (`neigh_suppress`).
    pub neigh_suppress: bool,
    /// The stations behind this port, as told at `port add` (the pod's MAC).
    pub macs: Vec<Mac>,
    /// Their addresses, as told at `port add` (answered by neigh_suppress).
    pub ips: Vec<IpAddr>,
    /// VLAN membership, used when the switch filters VLANs.
    pub vlans: Vec<VlanEntry>,
}

impl Default for PortPolicy {
    fn default() -> Self {
        PortPolicy {
            learning: true,
            flood: true,
            mcast_flood: true,
            bcast_flood: true,
            isolated: false,
            hairpin: false,
            locked: false,
            neigh_suppress: false,
            macs: Vec::new(),
            ips: Vec::new(),
            vlans: DEFAULT_VLANS.to_vec(),
        }
    }
}

impl PortPolicy {
    /// Checks the policy is one the switch can apply; the message names the
    /// knob and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = [false; 4096];
        let mut pvids = 0;
        for v in &self.vlans {
            if !(1..=4094).contains(&v.vid) {
                return Err(format!("vid {} is not a VLAN id (use 1 to 4094)", v.vid));
            }
            if std::mem::replace(&mut seen[usize::from(v.vid)], true) {
                return Err(format!("vid {} is listed twice", v.vid));
            }
            pvids += usize::from(v.pvid);
        }
        if pvids > 1 {
            return Err("more than one VLAN is marked pvid (a port has one)".into());
        }
        if self.locked && self.macs.is_empty() {
            return Err("locked needs the port's MAC (give --mac MAC): with none, nothing could send".into());
        }
        if let Some(m) = self.macs.iter().find(|m| !m.is_valid_source()) {
            return Err(format!("{m} is not a unicast station address"));
        }
        Ok(())
    }

    /// The PVID, if the port has one.
    pub fn pvid(&self) -> Option<u16> {
        self.vlans.iter().find(|v| v.pvid).map(|v| v.vid)
    }
}

/// Who a run-time port belongs to, shown by `port list`: the container and
/// its interface for the CNI plugin, the endpoint for the Docker driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The interface inside the container (CNI_IFNAME).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The container's network namespace (CNI_NETNS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The CNI network name, or the Docker network id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The Docker endpoint id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl PortMeta {
    pub fn is_empty(&self) -> bool {
        *self == PortMeta::default()
    }
}

/// A port as the daemon knows it: enough to open it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub backend: Backend,
    #[serde(default)]
    pub origin: Origin,
    #[serde(default)]
    pub policy: PortPolicy,
    #[serde(default, skip_serializing_if = "PortMeta::is_empty")]
    pub meta: PortMeta,
}

impl PortSpec {
    /// A port with the default policy and no metadata.
    pub fn new(name: &str, backend: Backend, origin: Origin) -> PortSpec {
        PortSpec { name: name.to_string(), backend, origin, policy: PortPolicy::default(), meta: PortMeta::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_defaults_fill_in() {
        let s: PortSpec = serde_json::from_str(r#"{"name":"veth1","backend":"afpacket"}"#).unwrap();
        assert_eq!(s, PortSpec::new("veth1", Backend::Afpacket, Origin::Runtime));
        let mut full = s.clone();
        full.policy.locked = true;
        full.policy.macs = vec!["02:00:00:00:00:01".parse().unwrap()];
        full.meta.container_id = Some("abc".into());
        let text = serde_json::to_string(&full).unwrap();
        assert!(text.contains(r#""macs":["02:00:00:00:00:01"]"#), "{text}");
        assert_eq!(serde_json::from_str::<PortSpec>(&text).unwrap(), full);
        assert!(serde_json::from_str::<PortSpec>(r#"{"name":"a","backend":"afpacket","frob":1}"#).is_err());
    }

    #[test]
    fn policy_validation_names_the_problem() {
        let p = |f: &dyn Fn(&mut PortPolicy)| {
            let mut p = PortPolicy::default();
            f(&mut p);
            p.validate()
        };
        assert_eq!(p(&|_| {}), Ok(()));
        assert!(
            p(&|p| p.vlans.push(VlanEntry { vid: 4095, pvid: false, untagged: false })).unwrap_err().contains("4095")
        );
        assert!(
            p(&|p| p.vlans.push(VlanEntry { vid: 1, pvid: false, untagged: false })).unwrap_err().contains("twice")
        );
        assert!(p(&|p| p.vlans.push(VlanEntry { vid: 2, pvid: true, untagged: false })).unwrap_err().contains("pvid"));
        assert!(p(&|p| p.locked = true).unwrap_err().contains("MAC"));
        assert!(p(&|p| p.macs.push(Mac::BROADCAST)).unwrap_err().contains("unicast"));
    }
}
