//! The requests and their replies, as they go on the wire.

use crate::IfName;
use crate::port::{Backend, Origin, PolicyChange, PortMeta, PortPolicy, PortState, VlanEntry};
use crate::settings::AGEING_SECS;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use ub_wire::Mac;

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A VLAN id for the FDB: 0 (untagged) to 4094; absent or null is 0.
fn fdb_vid<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match Option::<u64>::deserialize(d)? {
        None => Ok(0),
        Some(v) => u16::try_from(v)
            .ok()
            .filter(|v| *v <= 4094)
            .ok_or_else(|| serde::de::Error::custom(format!("\"vlan\" {v} must be 0-4094"))),
    }
}

/// Ageing time in seconds, in [`AGEING_SECS`]' range.
fn ageing_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    AGEING_SECS.check(v).map_err(|why| serde::de::Error::custom(format!("\"secs\" {v}: {why}")))
}

// ---- requests ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbShow {
    /// Only this bridge (absent: every bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbAdd {
    /// The port's bridge, checked if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    pub mac: Mac,
    pub port: IfName,
    #[serde(default, deserialize_with = "fdb_vid")]
    pub vlan: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbDel {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    pub mac: Mac,
    #[serde(default, deserialize_with = "fdb_vid")]
    pub vlan: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbFlush {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    /// Only the entries behind this port.
    #[serde(default)]
    pub port: Option<IfName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    /// Only this port.
    #[serde(default)]
    pub port: Option<IfName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortList {
    /// Only this bridge (absent: every bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    /// Only this port.
    #[serde(default)]
    pub port: Option<IfName>,
}

/// Attaches a port. The old form `{"name": N, "tap": true}` still works;
/// `backend`, `policy` and `meta` say more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortAdd {
    /// The bridge to attach to (`master NAME`; absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    pub name: IfName,
    /// Shorthand for `"backend": "tap"`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tap: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PortPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<PortMeta>,
}

impl PortAdd {
    /// An AF_PACKET port with the default policy.
    pub fn afpacket(name: IfName) -> PortAdd {
        PortAdd { name, bridge: None, tap: false, backend: None, policy: None, meta: None }
    }

    pub fn backend(&self) -> Backend {
        self.backend.unwrap_or(if self.tap { Backend::Tap } else { Backend::Afpacket })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortDel {
    pub name: IfName,
    /// No error when there is no such port (the CNI plugin's DEL).
    #[serde(default, skip_serializing_if = "is_false")]
    pub if_exists: bool,
}

/// The host port: the pods' gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
}

/// Puts `address` on the host port unless it has it (the CNI plugin's
/// `isGateway`); another address of the same IPv4 subnet is an error unless
/// `force` (`forceAddress`) replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAddress {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// Takes `address` off the host port if it has it (a Docker network's
/// gateway when the network is removed). An address the configuration or
/// `--address` gives is refused: it would come back at the next reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAddressDel {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    pub address: IpNet,
}

/// Changes a port's policy (`bridge link set`): only the knobs given; the
/// rest stay. Applied whole or not at all. On the wire the change's knobs
/// sit beside `name`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortSet {
    pub name: IfName,
    #[serde(flatten)]
    pub change: PolicyChange,
}

impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortSet, D::Error> {
        let (name, change) = crate::port::named_change(d, "name")?;
        Ok(PortSet { name, change })
    }
}

/// A VID (1-4094) for a VLAN membership.
fn member_vid<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = u64::deserialize(d)?;
    u16::try_from(v)
        .ok()
        .filter(|v| (1..=4094).contains(v))
        .ok_or_else(|| serde::de::Error::custom(format!("vid {v} is not a VLAN id (use 1 to 4094)")))
}

fn member_vid_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "member_vid")] u16);
    Option::<W>::deserialize(d).map(|o| o.map(|w| w.0))
}

/// Makes `port` a member of `vid` (to `vid_end`), as `bridge vlan add dev
/// PORT vid N[-M] [pvid] [untagged]`: the flags given replace the VLAN's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanAdd {
    pub port: IfName,
    #[serde(deserialize_with = "member_vid")]
    pub vid: u16,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "member_vid_opt")]
    pub vid_end: Option<u16>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pvid: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub untagged: bool,
}

/// Takes `port` out of `vid` (to `vid_end`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanDel {
    pub port: IfName,
    #[serde(deserialize_with = "member_vid")]
    pub vid: u16,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "member_vid_opt")]
    pub vid_end: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanShow {
    /// Only this bridge (absent: every bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    #[serde(default)]
    pub port: Option<IfName>,
}

/// Turns VLAN filtering on or off (`ip link set br0 type bridge vlan_filtering 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVlanFiltering {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    pub on: bool,
}

/// The neighbour table ARP suppression answers from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighShow {
    /// Only this bridge (absent: every bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
}

/// What the switch would do with a frame (`ofproto/trace`): `in_port`
/// receives a frame from `src` to `dst`, tagged `vlan` if given, of
/// `ethertype` (default IPv4), or an ARP request for `arp_target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    pub in_port: IfName,
    pub src: Mac,
    pub dst: Mac,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_target: Option<std::net::Ipv4Addr>,
    /// The ARP request's sender address (default 0.0.0.0: a probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_sender: Option<std::net::Ipv4Addr>,
}

impl Trace {
    /// The frame the trace sends through the switch (padded to 60 bytes).
    pub fn frame(&self) -> Vec<u8> {
        let mut f = self.dst.0.to_vec();
        f.extend_from_slice(&self.src.0);
        if let Some(v) = self.vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
        }
        match self.arp_target {
            Some(tip) => {
                f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]);
                f.extend_from_slice(&self.src.0);
                f.extend_from_slice(&self.arp_sender.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED).octets());
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&tip.octets());
            }
            None => f.extend_from_slice(&self.ethertype.unwrap_or(0x0800).to_be_bytes()),
        }
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAgeing {
    /// The bridge (absent: the daemon's only bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
    #[serde(deserialize_with = "ageing_secs")]
    pub secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorAdd {
    pub from: IfName,
    /// Another port...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<IfName>,
    /// ...or a pcap file (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap: Option<String>,
    /// The pcap file's size cap (default 100 MiB, at least 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorDel {
    pub from: IfName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorList {
    /// Only this bridge (absent: every bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<IfName>,
}

// ---- replies ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    Learned,
    Static,
}

/// One FDB entry, as `bridge fdb show` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// The bridge it belongs to.
    #[serde(default)]
    pub bridge: String,
    pub mac: Mac,
    /// The port's name (none if the port is being removed).
    pub port: Option<String>,
    pub port_id: u16,
    pub vlan: u16,
    /// Seconds since last seen (0 for static entries).
    pub age_secs: f64,
    pub state: EntryState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbAdded {
    pub added: Mac,
    pub port: IfName,
    pub vlan: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbRemoved {
    pub removed: Mac,
    pub vlan: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flushed {
    pub flushed: u64,
}

/// A port's counters. Drop reasons are named by the datapath (docs/cli.md
/// lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames received here that were flooded.
    pub flooded: u64,
    /// Times a reader of this port panicked (and was restarted, until `failed`).
    pub reader_panics: u64,
    pub drops: BTreeMap<String, u64>,
}

/// One port, as `port list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    /// The bridge it belongs to.
    #[serde(default)]
    pub bridge: String,
    pub id: u16,
    pub name: IfName,
    pub kind: Backend,
    pub state: PortState,
    pub mtu: u32,
    pub fdb_learned: u32,
    pub origin: Origin,
    /// Gets a copy of every frame: the host port while its interface is
    /// promiscuous (tcpdump on it).
    #[serde(default)]
    pub promisc: bool,
    pub policy: PortPolicy,
    #[serde(default, skip_serializing_if = "PortMeta::is_empty")]
    pub meta: PortMeta,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbStatus {
    pub entries: u64,
    pub learned: u64,
    pub ageing_secs: f64,
    /// learned, moved, aged, refused, flushed, flaps, flap_refused.
    pub events: BTreeMap<String, u64>,
}

/// Storm control: the most frames per second each port may flood, per
/// class; 0 is no limit. Each port has one bucket per class, shared by all
/// its readers (a reader per CPU does not multiply the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormLimits {
    pub broadcast_pps: u32,
    pub multicast_pps: u32,
    pub unknown_unicast_pps: u32,
}

impl StormLimits {
    /// The same limit for every class (`--storm-pps`).
    pub fn all(pps: u32) -> StormLimits {
        StormLimits { broadcast_pps: pps, multicast_pps: pps, unknown_unicast_pps: pps }
    }
}

impl Default for StormLimits {
    fn default() -> Self {
        StormLimits::all(crate::settings::STORM_PPS.default)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopStatus {
    /// `off`, `on-flap` or `always`.
    pub mode: String,
    /// The source MAC of the loop guard's probes.
    pub probe_mac: Mac,
    /// detected, blocked, unblocked.
    pub events: BTreeMap<String, u64>,
}

/// What the daemon itself has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    /// Configuration reloads (SIGHUP) applied, and refused (file invalid).
    pub reloads: u64,
    pub reload_errors: u64,
    /// Panics of the daemon's own threads (ager, link watcher, control,
    /// metrics), each restarted.
    pub thread_panics: u64,
    /// Reader helper threads running now (extra readers of ports that are
    /// busy or get steady frames from more than one CPU, at most one per
    /// port).
    #[serde(default)]
    pub reader_helpers: u64,
}

/// Everything `stats` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The bridge it belongs to.
    #[serde(default)]
    pub bridge: String,
    pub ports: Vec<PortStatus>,
    /// VLAN filtering on: ports' VLAN memberships apply.
    #[serde(default)]
    pub vlan_filtering: bool,
    pub fdb: FdbStatus,
    /// Link events followed since start: down, up, gone, reattached.
    pub links: BTreeMap<String, u64>,
    pub storm: StormLimits,
    pub loops: LoopStatus,
    pub daemon: DaemonStatus,
    /// Its way through the node's netfilter, if it has one (its port is
    /// not among `ports`: it is the bridge's own, not a station's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterStatus>,
}

/// A bridge's way through the node's netfilter: whether IP between its
/// stations takes it, its port, and that port's counters (`tx`: to the
/// kernel; `rx`: what the kernel let through).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetfilterStatus {
    pub on: bool,
    pub port: IfName,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortAdded {
    pub added: IfName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortRemoved {
    pub removed: IfName,
    /// False when `if_exists` found no such port.
    #[serde(default = "yes")]
    pub existed: bool,
}

pub(crate) fn yes() -> bool {
    true
}

/// The host port as the CNI plugin needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub mac: Mac,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostAddressed {
    pub address: IpNet,
    /// False when the host port had it already.
    pub added: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostAddressRemoved {
    pub address: IpNet,
    /// False when the host port did not have it.
    pub removed: bool,
}

/// A port's policy after `port_set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortPolicySet {
    pub port: IfName,
    pub policy: PortPolicy,
}

/// A port's VLANs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlanPort {
    /// The bridge it belongs to.
    #[serde(default)]
    pub bridge: String,
    pub port: IfName,
    pub vlans: Vec<VlanEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlanFiltering {
    pub vlan_filtering: bool,
}

/// One neighbour: an address, its MAC and the port it was told to or
/// learned on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighInfo {
    /// The bridge it belongs to.
    #[serde(default)]
    pub bridge: String,
    pub ip: std::net::Ipv4Addr,
    pub mac: Mac,
    pub port: Option<String>,
    /// Told at `port add`/`port set` (never ages), or learned.
    pub told: bool,
    /// One of the host port's own addresses.
    pub local: bool,
    pub age_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    pub step: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEgress {
    pub port: String,
    pub sent: bool,
    pub why: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tagged: Option<u16>,
}

/// What `trace` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traced {
    /// The bridge it belongs to.
    #[serde(default)]
    pub bridge: String,
    pub steps: Vec<TraceStep>,
    pub decision: String,
    pub vlan: u16,
    pub egress: Vec<TraceEgress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ageing {
    pub ageing_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mirroring {
    pub mirroring: IfName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorStopped {
    pub stopped: IfName,
}

/// A mirror: to a port (`to`), or to a pcap file (its fields inline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorInfo {
    /// The bridge it belongs to.
    #[serde(default)]
    pub bridge: String,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PcapInfo>,
}

/// A pcap mirror's file and counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcapInfo {
    pub pcap: String,
    pub max_bytes: u64,
    pub written: u64,
    pub bytes: u64,
    pub dropped: u64,
}
