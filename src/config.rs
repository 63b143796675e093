//! What the daemon runs with: from `run`'s flags ([`RunArgs`]) or a TOML
//! file (`run --config FILE`), validated with errors that name the line.

use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;
use ub_datapath::{LoopDetect, StormLimits};
use ub_fdb::FdbConfig;
use ub_netlink::IpNet;
use ub_port::afpacket::RxConfig;
use ub_port::{Backend, Origin, PortSpec};
use ub_wire::Mac;

/// A configuration that does not validate: one line per problem,
/// `FILE:LINE: what is wrong` where a line is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Read everything from this TOML file (see docs/operations.md); SIGHUP re-reads it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ports", "taps", "socket", "ageing_secs", "fdb_max",
        "fdb_max_per_port", "netns", "rx", "ring_blocks", "block_kib", "retire_ms", "ring_slots", "busy_pps", "metrics", "storm_pps", "loop_detect",
        "readers", "fanout", "no_pin", "reader_nice", "host_port", "addresses", "mtu", "mac", "state_dir", "vlan_filtering"])]
    pub config: Option<PathBuf>,
    /// The pods' gateway, as `cni0` is: create TAP interface NAME in the
    /// namespace the daemon starts in (the host's, even with --netns), with a
    /// fixed MAC and the --address(es), and attach it as port kind `host`.
    /// Pods may then come later, through `port add` or the CNI plugin.
    #[arg(long, value_name = "NAME")]
    pub host_port: Option<String>,
    /// An address for the host port, as CIDR (10.244.1.1/24, fd00::1/64).
    /// Repeat for more; pods use the first of each family as their gateway.
    #[arg(long = "address", value_name = "CIDR", requires = "host_port", value_parser = parse_cidr)]
    pub addresses: Vec<IpNet>,
    /// The host port's MTU (68-65535; 1280 or more with an IPv6 address).
    #[arg(long, value_name = "N", requires = "host_port")]
    pub mtu: Option<u32>,
    /// The host port's MAC (default: derived from its name, the same after every restart).
    #[arg(long, value_name = "MAC", requires = "host_port", value_parser = parse_mac)]
    pub mac: Option<Mac>,
    /// Where the ports added at run time are recorded, so they survive a
    /// restart (the file is named after the control socket).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Attach this interface (e.g. the host end of a pod's veth). Repeat for more ports.
    #[arg(long = "port", value_name = "IF")]
    pub ports: Vec<String>,
    /// Create a TAP interface NAME and attach it. Repeat for more.
    #[arg(long = "tap", value_name = "NAME")]
    pub taps: Vec<String>,
    /// Control socket path.
    #[arg(long, default_value = crate::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Seconds an idle learned entry lives (the Linux bridge's default is 300).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ageing_secs: u64,
    /// Most learned entries in the table.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub fdb_max: u64,
    /// Most learned entries behind one port.
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(u32).range(1..))]
    pub fdb_max_per_port: u32,
    /// Enter this network namespace (as in `ip netns exec NAME`) before attaching.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// How ports receive: `busy-slots` (mmsg, and slots while a port is
    /// busy: from --busy-pps frames/s the port takes its slots, and gives
    /// them back after 2 s under a fifth of that), `mmsg` (recvmmsg with
    /// PACKET_AUXDATA, woken per arrival: lowest latency), `slots` (TPACKET_V2
    /// ring of 2 KiB slots, woken per arrival, less CPU per small frame;
    /// --ring-slots × 2 KiB of kernel memory per port and reader, held from
    /// the start) or `ring` (TPACKET_V3 ring, batches; a partly filled block
    /// waits up to --retire-ms).
    #[arg(long, value_enum, default_value_t = RxArg::BusySlots)]
    pub rx: RxArg,
    /// RX ring (--rx ring): blocks per port.
    #[arg(long, default_value_t = 8)]
    pub ring_blocks: usize,
    /// RX ring (--rx ring): block size in KiB (power of two, >= 128: a block holds a 64 KiB GSO frame).
    #[arg(long, default_value_t = 256)]
    pub block_kib: usize,
    /// RX ring (--rx ring): longest a partly filled block waits before the reader sees it, in ms.
    #[arg(long, default_value_t = 1)]
    pub retire_ms: u32,
    /// RX slots (--rx slots, busy-slots): slots per port and reader, 2 KiB each (an
    /// even count, 64-65536; the default, 32 MiB, held a 64-byte flood on a
    /// busy 2-CPU node without a loss, docs/benchmarks.md). With busy-slots,
    /// the most a ring takes: each is sized to hold 100 ms of its port's rate.
    #[arg(long, default_value_t = 16_384)]
    pub ring_slots: usize,
    /// --rx busy-slots: frames per second (the port's readers together,
    /// counting frames a 2 KiB slot holds less those it does not, so a TCP
    /// stream's super-frames keep its port on recvmmsg) from which a port
    /// takes its RX slots; it gives them back after 2 s under a fifth of it
    /// (1000-100000000).
    #[arg(long, default_value_t = 20_000, value_name = "FRAMES")]
    pub busy_pps: u64,
    /// Receive halves per port (`auto`: one per CPU this process may use, at
    /// most 8), in a PACKET_FANOUT group by CPU: member i takes the frames
    /// that arrived on CPU i (mod N), a TCP or UDP flow the member its hash
    /// picks (`--fanout`). One thread per port serves them, on the
    /// CPU its frames arrive on; while the port is busy, helper threads (at
    /// most one per port across the switch) take its other busy members on
    /// their own CPUs, and so does a member's steady stream while it is not.
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = parse_readers)]
    pub readers: Readers,
    /// How a port's members share its frames: `flow` (a TCP flow, and a UDP
    /// flow from a connected socket, stays with one member, so its frames
    /// are never reordered; other frames by CPU, so the datagrams of an
    /// unconnected UDP socket that moves between CPUs may be reordered) or
    /// `cpu` (by the CPU a frame arrived on).
    #[arg(long, value_enum, default_value_t = FanoutArg::Flow)]
    pub fanout: FanoutArg,
    /// Leave the reader threads unpinned (by default, with one member per
    /// allowed CPU, the thread serving member i runs on CPU i).
    #[arg(long)]
    pub no_pin: bool,
    /// Nice value of the reader threads, -20..=19: below a busy sender's 0, a
    /// reader sharing its core is not starved by it. Needs CAP_SYS_NICE (or
    /// the process already that nice); refused, the readers run at the
    /// process's own priority. A reader whose frames average 16 KiB or more
    /// (TCP super-frames) keeps it but runs SCHED_BATCH while they last, so
    /// it does not preempt the stream's own processes.
    #[arg(long, value_name = "NICE", default_value_t = DEFAULT_READER_NICE, allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub reader_nice: i32,
    /// Storm control: most broadcast, multicast and unknown-unicast frames per
    /// second each port may flood (each class); 0 turns it off.
    #[arg(long, default_value_t = 10_000, value_name = "PPS")]
    pub storm_pps: u32,
    /// Loop detection by probe frames: `on-flap` (default) probes only while
    /// stations flap between ports, `always` every second, `off` never.
    #[arg(long, value_enum, default_value_t = LoopMode::OnFlap)]
    pub loop_detect: LoopMode,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9435).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Log filter (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Filter VLANs, as a bridge with `vlan_filtering 1`: every port starts
    /// in VLAN 1 (PVID, untagged); change memberships with `userbridge vlan`.
    #[arg(long)]
    pub vlan_filtering: bool,
}

/// The readers' default nice value (docs/benchmarks.md: a reader at 0 on a
/// core with a busy sender gets half of it and loses most frames).
pub const DEFAULT_READER_NICE: i32 = -10;

/// `--readers auto` gives a port one receive half per CPU up to this many:
/// on a large node, ports × CPUs sockets (each with its receive buffers)
/// would cost more than they bring.
pub const AUTO_READERS_MAX: usize = 8;

/// `--readers`: a count, or one per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    Auto,
    Count(u16),
}

impl Readers {
    /// How many readers a port gets.
    pub fn count(self) -> usize {
        match self {
            Readers::Count(n) => usize::from(n),
            Readers::Auto => allowed_cpus().len().clamp(1, AUTO_READERS_MAX),
        }
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    rustix::thread::sched_getaffinity(None)
        .map(|set| (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
        .unwrap_or_default()
}

/// Parses `--readers` and `readers_per_port`: `auto` or 1..=64.
pub fn parse_readers(s: &str) -> Result<Readers, String> {
    if s == "auto" {
        return Ok(Readers::Auto);
    }
    match s.parse::<u16>() {
        Ok(n) if (1..=ub_port::afpacket::MAX_FANOUT).contains(&usize::from(n)) => Ok(Readers::Count(n)),
        _ => Err(format!("'{s}' is not `auto` or a count from 1 to {}", ub_port::afpacket::MAX_FANOUT)),
    }
}

/// `--rx`, see `ub_port::afpacket::RxMode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RxArg {
    Ring,
    Mmsg,
    Slots,
    BusySlots,
}

impl From<RxArg> for ub_port::afpacket::RxMode {
    fn from(m: RxArg) -> Self {
        match m {
            RxArg::Ring => ub_port::afpacket::RxMode::Ring,
            RxArg::Mmsg => ub_port::afpacket::RxMode::Mmsg,
            RxArg::Slots => ub_port::afpacket::RxMode::Slots,
            RxArg::BusySlots => ub_port::afpacket::RxMode::BusySlots,
        }
    }
}

/// `--fanout`: how a port's readers share its frames.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FanoutArg {
    /// By flow (a TCP or UDP flow stays on one reader, in order), by CPU
    /// for other frames and for TCP or UDP without a flow hash.
    Flow,
    /// By the CPU the frame arrived on: a frame is forwarded on the core that
    /// sent it, but one flow's frames may be reordered between readers.
    Cpu,
}

impl From<FanoutArg> for ub_port::afpacket::Fanout {
    fn from(f: FanoutArg) -> Self {
        match f {
            FanoutArg::Flow => ub_port::afpacket::Fanout::FlowOrCpu,
            FanoutArg::Cpu => ub_port::afpacket::Fanout::Cpu,
        }
    }
}

/// `--loop-detect`, see `ub_datapath::LoopDetect`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopMode {
    Off,
    OnFlap,
    Always,
}

impl From<LoopMode> for LoopDetect {
    fn from(m: LoopMode) -> LoopDetect {
        match m {
            LoopMode::Off => LoopDetect::Off,
            LoopMode::OnFlap => LoopDetect::OnFlap,
            LoopMode::Always => LoopDetect::Always,
        }
    }
}

impl RunArgs {
    /// The settings these flags (or the file they name) ask for.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let one = |m: String| ConfigError(vec![m]);
        if let Some(path) = &self.config {
            let mut s = Settings::load(path)?;
            s.log_level.clone_from(&self.log_level);
            return Ok(s);
        }
        if self.ports.is_empty() && self.taps.is_empty() && self.host_port.is_none() {
            return Err(one(
                "no ports: give at least one --port IF, --tap NAME or --host-port NAME (or --config FILE)".into(),
            ));
        }
        let host = match &self.host_port {
            Some(name) => Some(HostSettings::new(name, self.addresses.clone(), self.mtu, self.mac).map_err(one)?),
            None => None,
        };
        let mut ports: Vec<PortSpec> = Vec::new();
        let given =
            self.ports.iter().map(|n| (n, Backend::Afpacket)).chain(self.taps.iter().map(|n| (n, Backend::Tap)));
        for (name, backend) in given {
            ub_port::validate_ifname(name).map_err(|e| one(e.to_string()))?;
            if ports.iter().any(|p| &p.name == name) || host.as_ref().is_some_and(|h| &h.name == name) {
                return Err(one(format!("'{name}' is given twice")));
            }
            ports.push(PortSpec::new(name, backend, Origin::Config));
        }
        let ring = RxConfig {
            mode: self.rx.into(),
            block_kib: self.block_kib,
            blocks: self.ring_blocks,
            retire_ms: self.retire_ms,
            slots: self.ring_slots,
            busy_pps: self.busy_pps,
            fanout: self.readers.count(),
            spread: self.fanout.into(),
        };
        ring.validate().map_err(one)?;
        Ok(Settings {
            socket: self.socket.clone(),
            netns: self.netns.clone(),
            metrics: self.metrics,
            log_level: self.log_level.clone(),
            fdb: FdbConfig {
                ageing_ms: self.ageing_secs * 1000,
                max_entries: usize::try_from(self.fdb_max).unwrap_or(usize::MAX),
                max_per_port: self.fdb_max_per_port,
                ..FdbConfig::default()
            },
            loop_detect: self.loop_detect.into(),
            storm: StormLimits {
                broadcast_pps: self.storm_pps,
                multicast_pps: self.storm_pps,
                unknown_unicast_pps: self.storm_pps,
            },
            ring,
            threads: ThreadConfig { pin: !self.no_pin, nice: Some(self.reader_nice) },
            ports,
            statics: Vec::new(),
            host,
            state_dir: self.state_dir.clone(),
            vlan_filtering: self.vlan_filtering,
        })
    }
}

/// Where the state file lives unless --state-dir or `state_dir` say otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/userbridge";

/// Parses `--address`: a CIDR, IPv4 or IPv6.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse().map_err(|_| format!("'{s}' is not an address with its prefix length (like 10.244.1.1/24 or fd00::1/64)"))
}

fn parse_mac(s: &str) -> Result<Mac, String> {
    let m: Mac = s.parse().map_err(|e: ub_wire::ParseMacError| e.to_string())?;
    if m.is_valid_source() { Ok(m) } else { Err(format!("{m} is not a unicast station address")) }
}

/// The host port: the pods' gateway (`--host-port` or `[host]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    pub name: String,
    pub addresses: Vec<IpNet>,
    pub mtu: Option<u32>,
    pub mac: Mac,
    /// Its VLANs (`[host] vlans`; VLAN 1 untagged by default), as the
    /// bridge device's own `bridge vlan ... self`.
    pub vlans: Option<Vec<ub_port::VlanEntry>>,
}

impl HostSettings {
    /// Checks a host port's settings; the message names what to fix.
    pub fn new(name: &str, addresses: Vec<IpNet>, mtu: Option<u32>, mac: Option<Mac>) -> Result<HostSettings, String> {
        ub_port::validate_ifname(name).map_err(|e| e.to_string())?;
        for (i, a) in addresses.iter().enumerate() {
            if addresses[..i].iter().any(|b| b.addr() == a.addr()) {
                return Err(format!("host port address {} is given twice", a.addr()));
            }
        }
        if let Some(m) = mtu {
            let v6 = addresses.iter().any(|a| a.addr().is_ipv6());
            let min = if v6 { 1280 } else { 68 };
            if !(min..=65_535).contains(&m) {
                return Err(format!(
                    "host port MTU {m}: use {min} to 65535{}",
                    if v6 { " (IPv6 needs at least 1280)" } else { "" }
                ));
            }
        }
        Ok(HostSettings {
            name: name.to_string(),
            addresses,
            mtu,
            mac: mac.unwrap_or_else(|| ub_port::host::mac_for(name)),
            vlans: None,
        })
    }
}

/// A static FDB entry from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEntry {
    pub mac: Mac,
    pub port: String,
    pub vlan: u16,
}

/// The daemon's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub socket: PathBuf,
    pub netns: Option<String>,
    pub metrics: Option<SocketAddr>,
    pub log_level: String,
    pub fdb: FdbConfig,
    pub storm: StormLimits,
    pub loop_detect: LoopDetect,
    pub ring: RxConfig,
    pub threads: ThreadConfig,
    /// The ports the configuration owns (origin `config`): AF_PACKET ports
    /// (`ports`, `--port`), then TAPs (`taps`, `--tap`).
    pub ports: Vec<PortSpec>,
    pub statics: Vec<StaticEntry>,
    /// The pods' gateway, if the daemon has one.
    pub host: Option<HostSettings>,
    /// Where run-time ports are recorded.
    pub state_dir: PathBuf,
    /// Ports' VLAN memberships apply (`vlan_filtering`).
    pub vlan_filtering: bool,
}

impl Settings {
    /// The names of the configured ports of `backend`.
    pub fn names(&self, backend: Backend) -> Vec<&str> {
        self.ports.iter().filter(|p| p.backend == backend).map(|p| p.name.as_str()).collect()
    }
}

/// `readers_per_port`: "auto" or a count.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum ReadersValue {
    Count(i64),
    Word(String),
}

/// Where reader threads run (the count per port is `RxConfig::fanout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadConfig {
    /// Pin reader i of every port to CPU i.
    pub pin: bool,
    /// Nice value of the reader threads.
    pub nice: Option<i32>,
}

impl Default for ThreadConfig {
    fn default() -> Self {
        ThreadConfig { pin: true, nice: Some(DEFAULT_READER_NICE) }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    socket: Option<PathBuf>,
    netns: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    loop_detect: Option<LoopMode>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    #[serde(default)]
    taps: Vec<Spanned<String>>,
    fdb: Option<FdbSection>,
    storm: Option<StormSection>,
    ring: Option<RingSection>,
    threads: Option<ThreadsSection>,
    #[serde(default, rename = "static")]
    statics: Vec<Spanned<StaticSection>>,
    host: Option<Spanned<HostSection>>,
    state_dir: Option<PathBuf>,
    vlan_filtering: Option<bool>,
    /// `[[port]]`: a port with its policy.
    #[serde(default, rename = "port")]
    port_tables: Vec<Spanned<PortSection>>,
}

/// A `[[port]]` table: an interface (or a TAP) and its policy knobs, with
/// the kernel bridge's names (docs/policies.md).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PortSection {
    name: String,
    #[serde(default)]
    tap: bool,
    learning: Option<bool>,
    flood: Option<bool>,
    mcast_flood: Option<bool>,
    bcast_flood: Option<bool>,
    isolated: Option<bool>,
    hairpin: Option<bool>,
    locked: Option<bool>,
    neigh_suppress: Option<bool>,
    #[serde(default)]
    macs: Vec<String>,
    #[serde(default)]
    ips: Vec<std::net::IpAddr>,
    vlans: Option<Vec<ub_port::VlanEntry>>,
}

impl PortSection {
    fn policy(&self) -> Result<ub_port::PortPolicy, String> {
        let d = ub_port::PortPolicy::default();
        let macs: Result<Vec<Mac>, String> = self.macs.iter().map(|m| parse_mac(m)).collect();
        let p = ub_port::PortPolicy {
            learning: self.learning.unwrap_or(d.learning),
            flood: self.flood.unwrap_or(d.flood),
            mcast_flood: self.mcast_flood.unwrap_or(d.mcast_flood),
            bcast_flood: self.bcast_flood.unwrap_or(d.bcast_flood),
            isolated: self.isolated.unwrap_or(d.isolated),
            hairpin: self.hairpin.unwrap_or(d.hairpin),
            locked: self.locked.unwrap_or(d.locked),
            neigh_suppress: self.neigh_suppress.unwrap_or(d.neigh_suppress),
            macs: macs?,
            ips: self.ips.clone(),
            vlans: self.vlans.clone().unwrap_or(d.vlans),
        };
        p.validate()?;
        Ok(p)
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HostSection {
    name: String,
    #[serde(default)]
    addresses: Vec<String>,
    mtu: Option<u32>,
    mac: Option<String>,
    vlans: Option<Vec<ub_port::VlanEntry>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FdbSection {
    ageing_secs: Option<Spanned<u64>>,
    max_entries: Option<Spanned<u64>>,
    max_per_port: Option<Spanned<u32>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct StormSection {
    broadcast_pps: Option<u32>,
    multicast_pps: Option<u32>,
    unknown_unicast_pps: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RingSection {
    mode: Option<RxArg>,
    blocks: Option<usize>,
    block_kib: Option<usize>,
    retire_ms: Option<u32>,
    slots: Option<usize>,
    busy_pps: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ThreadsSection {
    readers_per_port: Option<Spanned<ReadersValue>>,
    pin: Option<bool>,
    nice: Option<Spanned<i32>>,
    fanout: Option<FanoutArg>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct StaticSection {
    mac: String,
    port: String,
    #[serde(default)]
    vlan: u16,
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl Settings {
    /// Reads and validates a configuration file. Errors are
    /// `FILE:LINE: what is wrong`, one per problem.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("{}: cannot read: {e}", path.display())]))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            ConfigError(vec![format!("{origin}:{line}: {}", e.message().trim())])
        })?;
        let mut errs = Vec::new();
        let mut err = |span: std::ops::Range<usize>, msg: String| {
            errs.push(format!("{origin}:{}: {msg}", line_of(text, span.start)))
        };
        let d = FdbConfig::default();
        let mut s = Settings {
            socket: file.socket.unwrap_or_else(|| crate::DEFAULT_SOCKET.into()),
            netns: file.netns.map(Spanned::into_inner),
            metrics: None,
            log_level: file.log_level.as_ref().map_or_else(|| "info".into(), |l| l.get_ref().clone()),
            fdb: d,
            storm: StormLimits::default(),
            loop_detect: file.loop_detect.map_or(LoopDetect::OnFlap, Into::into),
            ring: RxConfig { fanout: Readers::Auto.count(), ..RxConfig::default() },
            threads: ThreadConfig::default(),
            ports: Vec::new(),
            statics: Vec::new(),
            host: None,
            state_dir: file.state_dir.clone().unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            vlan_filtering: file.vlan_filtering.unwrap_or(false),
        };
        if let Some(m) = &file.metrics {
            match m.get_ref().parse() {
                Ok(a) => s.metrics = Some(a),
                Err(_) => {
                    err(m.span(), format!("metrics = \"{}\" is not an address:port like 127.0.0.1:9435", m.get_ref()))
                }
            }
        }
        if let Some(l) = &file.log_level
            && tracing_subscriber::EnvFilter::try_new(l.get_ref()).is_err()
        {
            err(
                l.span(),
                format!("log_level = \"{}\" is not a log filter (error, warn, info, debug, trace)", l.get_ref()),
            );
        }
        if let Some(f) = &file.fdb {
            if let Some(a) = &f.ageing_secs {
                match *a.get_ref() {
                    1..=1_000_000 => s.fdb.ageing_ms = a.get_ref() * 1000,
                    v => err(a.span(), format!("ageing_secs = {v}: use 1 to 1000000")),
                }
            }
            if let Some(m) = &f.max_entries {
                match *m.get_ref() {
                    v @ 1..=16_777_216 => s.fdb.max_entries = usize::try_from(v).unwrap_or(usize::MAX),
                    v => err(m.span(), format!("max_entries = {v}: use 1 to 16777216")),
                }
            }
            if let Some(m) = &f.max_per_port {
                match *m.get_ref() {
                    0 => err(m.span(), "max_per_port = 0: a port must be able to learn at least one entry".into()),
                    v => s.fdb.max_per_port = v,
                }
            }
        }
        if let Some(st) = &file.storm {
            let dflt = StormLimits::default();
            s.storm = StormLimits {
                broadcast_pps: st.broadcast_pps.unwrap_or(dflt.broadcast_pps),
                multicast_pps: st.multicast_pps.unwrap_or(dflt.multicast_pps),
                unknown_unicast_pps: st.unknown_unicast_pps.unwrap_or(dflt.unknown_unicast_pps),
            };
        }
        if let Some(t) = &file.threads {
            if let Some(r) = &t.readers_per_port {
                let text = match r.get_ref() {
                    ReadersValue::Count(n) => n.to_string(),
                    ReadersValue::Word(w) => w.clone(),
                };
                match parse_readers(&text) {
                    Ok(v) => s.ring.fanout = v.count(),
                    Err(m) => err(r.span(), format!("readers_per_port = {text}: {m}")),
                }
            }
            s.threads.pin = t.pin.unwrap_or(s.threads.pin);
            if let Some(f) = t.fanout {
                s.ring.spread = f.into();
            }
            if let Some(n) = &t.nice {
                match *n.get_ref() {
                    v @ -20..=19 => s.threads.nice = Some(v),
                    v => err(n.span(), format!("nice = {v}: use -20 to 19")),
                }
            }
        }
        if let Some(r) = &file.ring {
            let dflt = RxConfig::default();
            s.ring = RxConfig {
                mode: r.mode.map_or(dflt.mode, Into::into),
                blocks: r.blocks.unwrap_or(dflt.blocks),
                block_kib: r.block_kib.unwrap_or(dflt.block_kib),
                retire_ms: r.retire_ms.unwrap_or(dflt.retire_ms),
                slots: r.slots.unwrap_or(dflt.slots),
                busy_pps: r.busy_pps.unwrap_or(dflt.busy_pps),
                fanout: s.ring.fanout,
                spread: s.ring.spread,
            };
        }
        if let Err(m) = s.ring.validate() {
            errs.push(format!("{origin}: [ring] or [threads]: {m}"));
        }
        let mut names: Vec<String> = Vec::new();
        for (list, backend) in [(&file.ports, Backend::Afpacket), (&file.taps, Backend::Tap)] {
            for p in list.iter() {
                let name = p.get_ref();
                if let Err(e) = ub_port::validate_ifname(name) {
                    errs.push(format!("{origin}:{}: {e}", line_of(text, p.span().start)));
                } else if names.contains(name) {
                    errs.push(format!("{origin}:{}: '{name}' is listed twice", line_of(text, p.span().start)));
                } else {
                    names.push(name.clone());
                    s.ports.push(PortSpec::new(name, backend, Origin::Config));
                }
            }
        }
        for t in &file.port_tables {
            let line = line_of(text, t.span().start);
            let v = t.get_ref();
            if let Err(e) = ub_port::validate_ifname(&v.name) {
                errs.push(format!("{origin}:{line}: [[port]] {e}"));
            } else if names.contains(&v.name) {
                errs.push(format!("{origin}:{line}: [[port]] '{}' is listed twice", v.name));
            } else {
                match v.policy() {
                    Ok(policy) => {
                        names.push(v.name.clone());
                        let backend = if v.tap { Backend::Tap } else { Backend::Afpacket };
                        s.ports.push(PortSpec { policy, ..PortSpec::new(&v.name, backend, Origin::Config) });
                    }
                    Err(e) => errs.push(format!("{origin}:{line}: [[port]] {}: {e}", v.name)),
                }
            }
        }
        for st in &file.statics {
            let line = line_of(text, st.span().start);
            let v = st.get_ref();
            match v.mac.parse::<Mac>() {
                Ok(mac) if !mac.is_valid_source() => {
                    errs.push(format!("{origin}:{line}: static mac {mac} is not a unicast station address"))
                }
                Ok(mac) if v.vlan >= 4095 => {
                    errs.push(format!("{origin}:{line}: static {mac}: vlan {} is not 0-4094", v.vlan))
                }
                Ok(_) if !names.contains(&v.port) => {
                    errs.push(format!("{origin}:{line}: static entry's port '{}' is not in ports or taps", v.port))
                }
                Ok(mac) => s.statics.push(StaticEntry { mac, port: v.port.clone(), vlan: v.vlan }),
                Err(e) => errs.push(format!("{origin}:{line}: {e}")),
            }
        }
        if let Some(h) = &file.host {
            let line = line_of(text, h.span().start);
            let v = h.get_ref();
            let addrs: Result<Vec<IpNet>, String> = v.addresses.iter().map(|a| parse_cidr(a)).collect();
            let mac = v.mac.as_deref().map(parse_mac).transpose();
            match (addrs, mac) {
                (Err(e), _) | (_, Err(e)) => errs.push(format!("{origin}:{line}: [host] {e}")),
                (Ok(addrs), Ok(mac)) => match HostSettings::new(&v.name, addrs, v.mtu, mac) {
                    Ok(hs) if names.contains(&hs.name) => {
                        errs.push(format!("{origin}:{line}: [host] name '{}' is also in ports or taps", hs.name))
                    }
                    Ok(hs) => {
                        let vlans = v.vlans.clone();
                        let check =
                            ub_port::PortPolicy { vlans: vlans.clone().unwrap_or_default(), ..Default::default() };
                        match check.validate() {
                            Ok(()) => s.host = Some(HostSettings { vlans, ..hs }),
                            Err(e) => errs.push(format!("{origin}:{line}: [host] vlans: {e}")),
                        }
                    }
                    Err(e) => errs.push(format!("{origin}:{line}: [host] {e}")),
                },
            }
        }
        if s.ports.is_empty() && s.host.is_none() {
            errs.push(format!(
                "{origin}: no ports: add ports = [\"IF\", ...], taps = [\"NAME\"], [[port]] tables or a [host] table"
            ));
        }
        if errs.is_empty() { Ok(s) } else { Err(ConfigError(errs)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
socket = "/run/userbridge/node.sock"
metrics = "127.0.0.1:9435"
log_level = "debug"
ports = ["veth1", "veth2"]
taps = ["tap0"]

[fdb]
ageing_secs = 60
max_entries = 1000
max_per_port = 100

[ring]
blocks = 4

[threads]
readers_per_port = 2
pin = true
nice = -5

[storm]
broadcast_pps = 500
unknown_unicast_pps = 0

[[static]]
mac = "02:00:00:00:00:09"
port = "veth2"
vlan = 7
"#;

    #[test]
    fn a_full_file() {
        let s = Settings::parse(GOOD, "t.toml").unwrap();
        assert_eq!(s.socket, PathBuf::from("/run/userbridge/node.sock"));
        assert_eq!(s.metrics, Some("127.0.0.1:9435".parse().unwrap()));
        assert_eq!(s.names(Backend::Afpacket), vec!["veth1", "veth2"]);
        assert_eq!(s.names(Backend::Tap), vec!["tap0"]);
        assert!(s.ports.iter().all(|p| p.origin == Origin::Config));
        assert_eq!(
            s.fdb,
            FdbConfig { ageing_ms: 60_000, max_entries: 1000, max_per_port: 100, ..FdbConfig::default() }
        );
        assert_eq!(s.storm, StormLimits { broadcast_pps: 500, multicast_pps: 10_000, unknown_unicast_pps: 0 });
        assert_eq!(s.ring.blocks, 4);
        assert_eq!(s.ring.block_kib, 256);
        assert_eq!(s.ring.fanout, 2);
        assert_eq!(s.threads, ThreadConfig { pin: true, nice: Some(-5) });
        assert_eq!(
            s.statics,
            vec![StaticEntry { mac: "02:00:00:00:00:09".parse().unwrap(), port: "veth2".into(), vlan: 7 }]
        );
    }

    #[test]
    fn a_host_port_table() {
        let text = "[host]\nname = \"cni0\"\naddresses = [\"10.244.2.1/24\", \"fd00:2::1/64\"]\nmtu = 1450\n";
        let s = Settings::parse(text, "h.toml").unwrap();
        let h = s.host.unwrap();
        assert_eq!(h.name, "cni0");
        assert_eq!(h.addresses, vec!["10.244.2.1/24".parse::<IpNet>().unwrap(), "fd00:2::1/64".parse().unwrap()]);
        assert_eq!((h.mtu, h.mac), (Some(1450), ub_port::host::mac_for("cni0")));
        assert!(s.ports.is_empty(), "a host port alone is a valid switch");
        for (bad, says) in [
            (
                "[host]\nname = \"cni0\"\naddresses = [\"10.244.2.1\"]\n",
                "h.toml:1: [host] '10.244.2.1' is not an address",
            ),
            ("[host]\nname = \"cni0\"\naddresses = [\"10.0.0.1/24\", \"10.0.0.1/16\"]\n", "given twice"),
            ("[host]\nname = \"cni0\"\nmtu = 60\n", "MTU 60: use 68 to 65535"),
            ("[host]\nname = \"cni0\"\naddresses = [\"fd00::1/64\"]\nmtu = 1000\n", "IPv6 needs at least 1280"),
            ("[host]\nname = \"a-name-far-too-long\"\n", "not a valid interface name"),
            ("[host]\nname = \"cni0\"\nmac = \"01:00:5e:00:00:01\"\n", "not a unicast"),
            ("ports = [\"cni0\"]\n[host]\nname = \"cni0\"\n", "also in ports"),
        ] {
            let e = Settings::parse(bad, "h.toml").unwrap_err().0;
            assert!(e[0].contains(says), "{bad}: {e:?}");
        }
    }

    #[test]
    fn port_tables_carry_policies() {
        let text = r#"
vlan_filtering = true
ports = ["veth0"]

[[port]]
name = "veth1"
isolated = true
locked = true
macs = ["02:00:00:00:00:01"]
ips = ["10.244.1.5"]
vlans = [{ vid = 10, pvid = true, untagged = true }]

[[port]]
name = "tap1"
tap = true
flood = false

[host]
name = "cni0"
vlans = [{ vid = 10, pvid = true, untagged = true }, { vid = 20 }]
"#;
        let s = Settings::parse(text, "p.toml").unwrap();
        assert!(s.vlan_filtering);
        assert_eq!(s.names(Backend::Afpacket), vec!["veth0", "veth1"]);
        let v1 = s.ports.iter().find(|p| p.name == "veth1").unwrap();
        assert!(v1.policy.isolated && v1.policy.locked && v1.policy.flood);
        assert_eq!(v1.policy.ips, vec!["10.244.1.5".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(v1.policy.pvid(), Some(10));
        let t = s.ports.iter().find(|p| p.name == "tap1").unwrap();
        assert_eq!((t.backend, t.policy.flood), (Backend::Tap, false));
        assert_eq!(s.host.unwrap().vlans.unwrap().len(), 2);
        for (bad, says) in [
            ("[[port]]\nname = \"v\"\nlocked = true\n", "p.toml:1: [[port]] v: locked needs the port's MAC"),
            ("[[port]]\nname = \"v\"\nvlans = [{ vid = 5000 }]\n", "vid 5000 is not a VLAN id"),
            (
                "[[port]]\nname = \"v\"\nvlans = [{ vid = 2, pvid = true }, { vid = 3, pvid = true }]\n",
                "more than one VLAN is marked pvid",
            ),
            ("ports = [\"v\"]\n[[port]]\nname = \"v\"\n", "'v' is listed twice"),
            ("[[port]]\nname = \"v\"\nhairpn = true\n", "unknown field `hairpn`"),
            ("[[port]]\nname = \"v\"\nmacs = [\"zz\"]\n", "'zz' is not a MAC address"),
            ("[host]\nname = \"cni0\"\nvlans = [{ vid = 0 }]\n", "[host] vlans: vid 0 is not a VLAN id"),
        ] {
            let e = Settings::parse(bad, "p.toml").unwrap_err().0;
            assert!(e[0].contains(says), "{bad}: {e:?}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = Settings::parse("ports = [\"a\"]\n\n[fdb]\nageing_secs = 0\n", "c.toml").unwrap_err().0;
        assert_eq!(e, vec!["c.toml:4: ageing_secs = 0: use 1 to 1000000"]);
        let e = Settings::parse("ports = [\"ok\",\n  \"bad/name\"]\n", "c.toml").unwrap_err().0;
        assert!(e[0].starts_with("c.toml:2: 'bad/name' is not a valid interface name"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\nfrobnicate = 1\n", "c.toml").unwrap_err().0;
        assert!(e[0].starts_with("c.toml:2: unknown field `frobnicate`"), "{e:?}");
        let e = Settings::parse("ports = [\"a\", \"a\"]\n", "c.toml").unwrap_err().0;
        assert!(e[0].contains("listed twice"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\n[[static]]\nmac = \"ff:ff:ff:ff:ff:ff\"\nport = \"a\"\n", "c.toml")
            .unwrap_err()
            .0;
        assert!(e[0].starts_with("c.toml:2:") && e[0].contains("not a unicast"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\nmetrics = \"nope\"\n", "c.toml").unwrap_err().0;
        assert!(e[0].starts_with("c.toml:2: metrics"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\n[threads]\nnice = 20\n", "c.toml").unwrap_err().0;
        assert_eq!(e, vec!["c.toml:3: nice = 20: use -20 to 19"]);
        let e = Settings::parse("ports = [\"a\"]\n[threads]\nreaders_per_port = 0\n", "c.toml").unwrap_err().0;
        assert_eq!(e, vec!["c.toml:3: readers_per_port = 0: '0' is not `auto` or a count from 1 to 64"]);
        let e = Settings::parse("ports = [\"a\"]\n[threads]\nreaders_per_port = \"many\"\n", "c.toml").unwrap_err().0;
        assert!(e[0].starts_with("c.toml:3: readers_per_port = many"), "{e:?}");
        let s = Settings::parse("ports = [\"a\"]\n[threads]\nreaders_per_port = \"auto\"\n", "c.toml").unwrap();
        assert_eq!(s.ring.fanout, Readers::Auto.count());
        assert!(s.ring.fanout >= 1);
        let s = Settings::parse("ports = [\"a\"]\n[ring]\nmode = \"slots\"\nslots = 1024\n", "c.toml").unwrap();
        assert_eq!((s.ring.mode, s.ring.slots), (ub_port::afpacket::RxMode::Slots, 1024));
        let e = Settings::parse("ports = [\"a\"]\n[ring]\nmode = \"slots\"\nslots = 1001\n", "c.toml").unwrap_err().0;
        assert_eq!(e, vec!["c.toml: [ring] or [threads]: 1001 RX ring slots: use an even count from 64 to 65536"]);
        let s = Settings::parse("ports = [\"a\"]\n[ring]\nmode = \"busy-slots\"\nbusy_pps = 5000\n", "c.toml").unwrap();
        assert_eq!((s.ring.mode, s.ring.busy_pps), (ub_port::afpacket::RxMode::BusySlots, 5000));
        let e = Settings::parse("ports = [\"a\"]\n[ring]\nbusy_pps = 10\n", "c.toml").unwrap_err().0;
        assert_eq!(e, vec!["c.toml: [ring] or [threads]: busy-slots rate 10 frames/s: use 1000 to 100000000"]);
        let e = Settings::parse("", "c.toml").unwrap_err().0;
        assert!(e[0].contains("no ports"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"\n", "c.toml").unwrap_err().0;
        assert!(e[0].starts_with("c.toml:"), "{e:?}");
    }
}
