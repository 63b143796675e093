//! What the daemon runs with ([`Settings`]), from `run`'s flags
//! ([`flags`]) or a TOML file ([`file`]). Both fill in a [`Draft`], and one
//! function checks and completes it ([`Draft::build`]), with each setting's
//! default and range from `ub_proto::settings`: a value is judged the same
//! whichever way it came, and its error names the line or the flag.

mod build;
pub mod file;
pub mod flags;
pub mod modes;
#[cfg(test)]
mod tests;

pub use flags::RunArgs;
pub use modes::{FanoutArg, LoopMode, NetfilterMode, RxArg};

use std::net::SocketAddr;
use std::path::PathBuf;
use ub_datapath::{LoopDetect, StormLimits};
use ub_fdb::FdbConfig;
use ub_netlink::IpNet;
use ub_port::afpacket::RxConfig;
use ub_proto::settings::{AUTO_READERS_MAX, HOST_MTU, IPV6_MIN_MTU, READER_NICE, READERS_MAX};
use ub_proto::{IfName, PolicyChange, PortSpec, VlanEntry};
use ub_wire::Mac;

/// A configuration that does not validate: one line per problem,
/// `FILE:LINE: what is wrong` (or `--flag VALUE: what is wrong`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// The name of the one bridge `run --port ...` makes without `--bridge`
/// or `--host-port` (and a file's top-level ports without `[host]`).
pub const DEFAULT_BRIDGE: &str = "ub0";

/// The daemon's whole configuration: what the daemon itself runs with, and
/// its bridges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub socket: PathBuf,
    pub netns: Option<String>,
    pub metrics: Option<SocketAddr>,
    pub log_level: String,
    pub rx: RxConfig,
    pub threads: ThreadConfig,
    /// Where run-time bridges and ports are recorded.
    pub state_dir: PathBuf,
    /// What every bridge starts with unless its table says otherwise, and
    /// what a bridge made at run time gets.
    pub defaults: BridgeDefaults,
    /// The bridges the configuration owns (origin `config`).
    pub bridges: Vec<BridgeSettings>,
    /// Delete every bridge's host port when the daemon stops cleanly
    /// (`--remove-bridges`); otherwise they stay, as kernel bridges do.
    pub remove_bridges: bool,
}

/// A bridge's FDB, storm control and loop detection, when not its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeDefaults {
    pub fdb: FdbConfig,
    pub storm: StormLimits,
    pub loop_detect: LoopDetect,
    pub netfilter: NetfilterMode,
}

/// One bridge: its own FDB, VLANs, policies, storm control and loop guard,
/// its host port (named as it) and the ports the configuration gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSettings {
    pub name: IfName,
    /// Its own interface, the pods' gateway; `None`: a bridge without one.
    pub host: Option<HostSettings>,
    pub fdb: FdbConfig,
    pub storm: StormLimits,
    pub loop_detect: LoopDetect,
    /// Whether IP between its stations goes through the node's netfilter.
    pub netfilter: NetfilterMode,
    /// Ports' VLAN memberships apply (`vlan_filtering`).
    pub vlan_filtering: bool,
    /// The ports the configuration owns (origin `config`).
    pub ports: Vec<PortSpec>,
    pub statics: Vec<StaticEntry>,
}

impl BridgeSettings {
    /// A bridge made at run time (`bridge add`, the CNI plugin): as
    /// `add` asks, the rest from `defaults`.
    pub fn made(add: &ub_proto::BridgeAdd, defaults: &BridgeDefaults) -> Result<BridgeSettings, HostError> {
        let host = add
            .host_port
            .then(|| HostSettings::new(add.name.clone(), add.addresses.clone(), add.mtu, add.mac))
            .transpose()?;
        Ok(BridgeSettings {
            name: add.name.clone(),
            host,
            fdb: defaults.fdb,
            storm: defaults.storm,
            loop_detect: defaults.loop_detect,
            netfilter: defaults.netfilter,
            vlan_filtering: add.vlan_filtering,
            ports: Vec::new(),
            statics: Vec::new(),
        })
    }

    /// The names of the configured ports of `backend`.
    pub fn names(&self, backend: ub_proto::Backend) -> Vec<&str> {
        self.ports.iter().filter(|p| p.backend == backend).map(|p| p.name.as_str()).collect()
    }
}

impl Settings {
    /// The names of the configured ports of `backend`, every bridge's.
    pub fn names(&self, backend: ub_proto::Backend) -> Vec<&str> {
        self.bridges.iter().flat_map(|b| b.names(backend)).collect()
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Settings, ConfigError> {
        file::load(path)?.build()
    }
}

/// Where reader threads run (how many a port gets is `RxConfig::readers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadConfig {
    /// Pin the thread serving member i of a port to CPU i.
    pub pin: bool,
    /// Nice value of the reader threads.
    pub nice: i32,
}

impl Default for ThreadConfig {
    fn default() -> Self {
        ThreadConfig { pin: true, nice: READER_NICE.default }
    }
}

/// A host port's settings that do not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host port address {0} is given twice")]
    AddressTwice(std::net::IpAddr),
    #[error("host port MTU {mtu}: use {min} to {max}{}", if *.v6 { " (IPv6 needs at least 1280)" } else { "" })]
    Mtu { mtu: u32, min: u32, max: u32, v6: bool },
}

/// `--readers` or `readers_per_port` that is not `auto` or a count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not `auto` or a count from 1 to {READERS_MAX}")]
pub struct BadReaders(pub String);

/// An address without its prefix length, or not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an address with its prefix length (like 10.244.1.1/24 or fd00::1/64)")]
pub struct BadCidr(pub String);

/// A station's MAC that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMac {
    #[error(transparent)]
    Parse(#[from] ub_wire::ParseMacError),
    #[error("{0} is not a unicast station address")]
    NotUnicast(Mac),
}

/// A bridge's host port: the pods' gateway, named as its bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    pub name: IfName,
    pub addresses: Vec<IpNet>,
    pub mtu: Option<u32>,
    pub mac: Mac,
    /// Its VLANs (`[host] vlans`; VLAN 1 untagged by default), as the
    /// bridge device's own `bridge vlan ... self`.
    pub vlans: Option<Vec<VlanEntry>>,
}

impl HostSettings {
    /// Checks a host port's settings; the message names what to fix.
    pub fn new(
        name: IfName,
        addresses: Vec<IpNet>,
        mtu: Option<u32>,
        mac: Option<Mac>,
    ) -> Result<HostSettings, HostError> {
        for (i, a) in addresses.iter().enumerate() {
            if addresses[..i].iter().any(|b| b.addr() == a.addr()) {
                return Err(HostError::AddressTwice(a.addr()));
            }
        }
        if let Some(m) = mtu {
            let v6 = addresses.iter().any(|a| a.addr().is_ipv6());
            let min = if v6 { IPV6_MIN_MTU } else { HOST_MTU.min };
            if !(min..=HOST_MTU.max).contains(&m) {
                return Err(HostError::Mtu { mtu: m, min, max: HOST_MTU.max, v6 });
            }
        }
        let mac = mac.unwrap_or_else(|| ub_port::host::mac_for(&name));
        Ok(HostSettings { name, addresses, mtu, mac, vlans: None })
    }
}

/// A static FDB entry from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEntry {
    pub mac: Mac,
    pub port: IfName,
    pub vlan: u16,
}

/// `--readers` and `readers_per_port`: a count, or one per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    Auto,
    Count(u16),
}

impl Readers {
    /// How many receive halves a port gets.
    pub fn count(self) -> usize {
        match self {
            Readers::Count(n) => usize::from(n),
            Readers::Auto => allowed_cpus().len().clamp(1, AUTO_READERS_MAX),
        }
    }

    /// `auto` or 1..=64.
    pub fn parse(s: &str) -> Result<Readers, BadReaders> {
        if s == "auto" {
            return Ok(Readers::Auto);
        }
        match s.parse::<u16>() {
            Ok(n) if (1..=READERS_MAX).contains(&usize::from(n)) => Ok(Readers::Count(n)),
            _ => Err(BadReaders(s.to_string())),
        }
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    rustix::thread::sched_getaffinity(None)
        .map(|set| (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
        .unwrap_or_default()
}

/// An address with its prefix length (`--address`, `[host] addresses`).
pub fn parse_cidr(s: &str) -> Result<IpNet, BadCidr> {
    s.parse().map_err(|_| BadCidr(s.to_string()))
}

/// A station's MAC (`--mac`, `[host] mac`, `[[static]] mac`): unicast.
pub fn parse_mac(s: &str) -> Result<Mac, BadMac> {
    let m: Mac = s.parse()?;
    if m.is_valid_source() { Ok(m) } else { Err(BadMac::NotUnicast(m)) }
}

/// Where a value was given, for its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// A line of the file.
    Line(usize),
    /// A flag of `run`.
    Flag(&'static str),
}

/// A value and where it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given<T> {
    pub value: T,
    pub at: At,
}

impl<T> Given<T> {
    pub fn at(value: T, at: At) -> Given<T> {
        Given { value, at }
    }
}

/// A port the configuration lists: its name as given, its backend, its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDraft {
    pub name: String,
    pub backend: ub_proto::Backend,
    pub change: PolicyChange,
}

/// A `[[static]]` entry as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDraft {
    pub mac: String,
    pub port: String,
    pub vlan: u16,
}

/// A host port as given: the bridge's own interface, named as the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostDraft {
    pub addresses: Vec<String>,
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    pub vlans: Option<Vec<VlanEntry>>,
}

/// Storm limits as given: a class not given takes the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StormDraft {
    pub broadcast_pps: Option<u32>,
    pub multicast_pps: Option<u32>,
    pub unknown_unicast_pps: Option<u32>,
}

impl StormDraft {
    /// These limits over `base`.
    pub fn over(self, base: StormLimits) -> StormLimits {
        StormLimits {
            broadcast_pps: self.broadcast_pps.unwrap_or(base.broadcast_pps),
            multicast_pps: self.multicast_pps.unwrap_or(base.multicast_pps),
            unknown_unicast_pps: self.unknown_unicast_pps.unwrap_or(base.unknown_unicast_pps),
        }
    }
}

/// A bridge as given: a `[[bridge]]` table, or the single-bridge format's
/// top-level keys (and `run`'s flags). What it does not say comes from the
/// daemon's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeDraft {
    /// Absent in the single-bridge format without `[host]` or `--bridge`.
    pub name: Option<Given<String>>,
    /// Its host port; `None`: a bridge without one.
    pub host: Option<Given<HostDraft>>,
    pub vlan_filtering: Option<bool>,
    pub ageing_secs: Option<Given<u64>>,
    pub fdb_max: Option<Given<u64>>,
    pub fdb_max_per_port: Option<Given<u32>>,
    pub storm: StormDraft,
    pub loop_detect: Option<LoopMode>,
    pub netfilter: Option<NetfilterMode>,
    pub ports: Vec<Given<PortDraft>>,
    pub statics: Vec<Given<StaticDraft>>,
}

impl BridgeDraft {
    /// Whether the single-bridge format says anything of a bridge.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.host.is_none()
            && self.vlan_filtering.is_none()
            && self.ports.is_empty()
            && self.statics.is_empty()
    }
}

/// A configuration as given, not yet checked: what the flags or the file
/// say, each value with where it was said. [`Draft::build`] checks it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Draft {
    /// The file's name, or `run` for flags: errors start with it when they have no line.
    pub origin: String,
    pub socket: Option<PathBuf>,
    pub netns: Option<Given<String>>,
    pub metrics: Option<Given<String>>,
    pub log_level: Option<Given<String>>,
    /// The bridges' defaults.
    pub ageing_secs: Option<Given<u64>>,
    pub fdb_max: Option<Given<u64>>,
    pub fdb_max_per_port: Option<Given<u32>>,
    pub storm: StormDraft,
    pub loop_detect: Option<LoopMode>,
    pub netfilter: Option<NetfilterMode>,
    pub rx: Option<Given<RxArg>>,
    pub ring_slots: Option<Given<usize>>,
    pub busy_pps: Option<Given<u64>>,
    pub readers: Option<Given<String>>,
    pub fanout: Option<FanoutArg>,
    pub pin: Option<bool>,
    pub nice: Option<Given<i32>>,
    pub state_dir: Option<PathBuf>,
    pub remove_bridges: bool,
    /// The single-bridge format: top-level ports, `[host]`, `--port`, ...
    pub single: BridgeDraft,
    /// `--bridge NAME`, which names the single bridge.
    pub single_name: Option<Given<String>>,
    /// `[[bridge]]` tables.
    pub bridges: Vec<Given<BridgeDraft>>,
    /// Settings of receive modes that were removed, each with what to use instead.
    pub removed: Vec<Given<String>>,
}
