//! What a port is, as data: its name, backend, who added it, its policy and
//! its owner's metadata. The daemon keeps one [`PortSpec`] per port, the
//! control protocol carries them, the state file records them, and
//! `ub_port::open` turns one into an open port.

use crate::IfName;
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::{Map, Value};
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
    /// In-memory (tests and benches); never opened by `ub_port::open`.
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

/// Declares the policy's on/off knobs once: [`PortPolicy`] (a port's
/// policy), [`PolicyChange`] (some of its knobs changed, from `port set`,
/// a `[[port]]` table or `port_add`), and the list both are read through.
macro_rules! knobs {
    ($( $(#[doc = $doc:literal])* $knob:ident = $default:literal, )*) => {
        /// A port's forwarding policy, with the Linux bridge's meaning for each knob
        /// (`bridge link set`, `bridge vlan`); see docs/policies.md. The default is
        /// the kernel bridge's default port.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct PortPolicy {
            $( $(#[doc = $doc])* pub $knob: bool, )*
            /// The stations behind this port, as told at `port add` (the pod's MAC).
            pub macs: Vec<Mac>,
            /// Their addresses, as told at `port add` (answered by neigh_suppress).
            pub ips: Vec<IpAddr>,
            /// VLAN membership, used when the switch filters VLANs.
            pub vlans: Vec<VlanEntry>,
        }

        impl Default for PortPolicy {
            fn default() -> Self {
                PortPolicy { $( $knob: $default, )* macs: Vec::new(), ips: Vec::new(), vlans: DEFAULT_VLANS.to_vec() }
            }
        }

        /// A change to a port's policy: the knobs given change, the rest stay.
        /// `port set`'s flags, a `[[port]]` table and the `port_set` request
        /// all say one.
        #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct PolicyChange {
            $( $(#[doc = $doc])* #[serde(default, skip_serializing_if = "Option::is_none")] pub $knob: Option<bool>, )*
            /// The port's stations (replaces the list).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub macs: Option<Vec<Mac>>,
            /// Their addresses (replaces the list).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub ips: Option<Vec<IpAddr>>,
            /// VLAN memberships (replaces the list; `vlan add|del` change one).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub vlans: Option<Vec<VlanEntry>>,
        }

        impl PortPolicy {
            /// Each on/off knob: its name, its help, its kernel-bridge default.
            pub const KNOBS: &[(&str, &str, bool)] = &[$( (stringify!($knob), concat!($($doc),*), $default) ),*];

            /// The knobs' values, in [`PortPolicy::KNOBS`]' order.
            pub fn knobs(&self) -> Vec<bool> {
                vec![$( self.$knob ),*]
            }
        }

        impl PolicyChange {
            /// `policy` with these changes made.
            pub fn apply(&self, mut p: PortPolicy) -> PortPolicy {
                $( if let Some(v) = self.$knob { p.$knob = v; } )*
                if let Some(m) = &self.macs {
                    p.macs.clone_from(m);
                }
                if let Some(i) = &self.ips {
                    p.ips.clone_from(i);
                }
                if let Some(v) = &self.vlans {
                    p.vlans.clone_from(v);
                }
                p
            }

            /// Sets knob `name` (one of [`PortPolicy::KNOBS`]); false if there is none.
            pub fn set_knob(&mut self, name: &str, on: bool) -> bool {
                match name {
                    $( stringify!($knob) => self.$knob = Some(on), )*
                    _ => return false,
                }
                true
            }
        }
    };
}

knobs! {
    /// Learn the sources of frames received here (`learning`).
    learning = true,
    /// Take unknown-unicast floods (`flood`; known unicast is always delivered).
    flood = true,
    /// Take multicast floods (`mcast_flood`).
    mcast_flood = true,
    /// Take broadcast floods (`bcast_flood`).
    bcast_flood = true,
    /// Exchange frames only with non-isolated ports (`isolated`).
    isolated = false,
    /// Let a frame go back out of the port it came in on (`hairpin`).
    hairpin = false,
    /// Let only the port's stations (`macs`) send (`locked`; the CNI plugin's `macspoofchk`).
    locked = false,
    /// Answer ARP requests for known addresses behind this port; keep answered requests from it (`neigh_suppress`).
    neigh_suppress = false,
}

impl PortPolicy {
    /// Checks the policy is one the switch can apply.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut seen = [false; 4096];
        let mut pvids = 0;
        for v in &self.vlans {
            if !(1..=4094).contains(&v.vid) {
                return Err(PolicyError::BadVid(v.vid));
            }
            if std::mem::replace(&mut seen[usize::from(v.vid)], true) {
                return Err(PolicyError::VidTwice(v.vid));
            }
            pvids += usize::from(v.pvid);
        }
        if pvids > 1 {
            return Err(PolicyError::TwoPvids);
        }
        if self.locked && self.macs.is_empty() {
            return Err(PolicyError::LockedWithoutMac);
        }
        if let Some(m) = self.macs.iter().find(|m| !m.is_valid_source()) {
            return Err(PolicyError::NotUnicast(*m));
        }
        Ok(())
    }

    /// The PVID, if the port has one.
    pub fn pvid(&self) -> Option<u16> {
        self.vlans.iter().find(|v| v.pvid).map(|v| v.vid)
    }
}

/// A policy the switch cannot apply; each names the knob and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("vid {0} is not a VLAN id (use 1 to 4094)")]
    BadVid(u16),
    #[error("vid {0} is listed twice")]
    VidTwice(u16),
    #[error("more than one VLAN is marked pvid (a port has one)")]
    TwoPvids,
    #[error("locked needs the port's MAC (give --mac MAC): with none, nothing could send")]
    LockedWithoutMac,
    #[error("{0} is not a unicast station address")]
    NotUnicast(Mac),
}

/// Reads a map whose `key` names a port and whose other keys are a
/// [`PolicyChange`]'s (a `port_set` request, a `[[port]]` table). A
/// misspelt knob is refused by name, as `deny_unknown_fields` refuses it.
pub fn named_change<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<(IfName, PolicyChange), D::Error> {
    let mut m = Map::<String, Value>::deserialize(d)?;
    let name = m.remove(key).ok_or_else(|| de::Error::missing_field(key))?;
    let name = IfName::deserialize(name).map_err(de::Error::custom)?;
    let change = PolicyChange::deserialize(Value::Object(m)).map_err(de::Error::custom)?;
    Ok((name, change))
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
    pub name: IfName,
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
    pub fn new(name: IfName, backend: Backend, origin: Origin) -> PortSpec {
        PortSpec { name, backend, origin, policy: PortPolicy::default(), meta: PortMeta::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_defaults_fill_in() {
        let s: PortSpec = serde_json::from_str(r#"{"name":"veth1","backend":"afpacket"}"#).unwrap();
        assert_eq!(s, PortSpec::new(IfName::new("veth1").unwrap(), Backend::Afpacket, Origin::Runtime));
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
        let vlan = |vid, pvid| VlanEntry { vid, pvid, untagged: false };
        assert_eq!(p(&|p| p.vlans.push(vlan(4095, false))), Err(PolicyError::BadVid(4095)));
        assert_eq!(p(&|p| p.vlans.push(vlan(1, false))), Err(PolicyError::VidTwice(1)));
        assert_eq!(p(&|p| p.vlans.push(vlan(2, true))), Err(PolicyError::TwoPvids));
        assert!(p(&|p| p.locked = true).unwrap_err().to_string().contains("MAC"));
        assert!(p(&|p| p.macs.push(Mac::BROADCAST)).unwrap_err().to_string().contains("unicast"));
    }
}
