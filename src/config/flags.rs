//! `userbridge run`'s flags, into a [`Draft`] (or the file `--config` names).

use super::modes::{FanoutArg, LoopMode, NetfilterMode, RING_GEOMETRY_REMOVED, RxArg};
use super::{
    At, BridgeDraft, ConfigError, Draft, Given, HostDraft, PortDraft, Readers, Settings, StormDraft, file, parse_cidr,
    parse_mac,
};
use clap::Args;
use std::path::PathBuf;
use ub_proto::settings::{
    AGEING_SECS, BUSY_PPS, FDB_MAX, FDB_MAX_PER_PORT, READER_NICE, RING_SLOTS, STATE_DIR, STORM_PPS, SettingError,
};
use ub_proto::{Backend, PolicyChange};

fn ageing_secs(s: &str) -> Result<u64, SettingError> {
    AGEING_SECS.parse(s)
}
fn fdb_max(s: &str) -> Result<u64, SettingError> {
    FDB_MAX.parse(s)
}
fn fdb_max_per_port(s: &str) -> Result<u32, SettingError> {
    FDB_MAX_PER_PORT.parse(s)
}
fn ring_slots(s: &str) -> Result<usize, SettingError> {
    RING_SLOTS.parse(s)
}
fn busy_pps(s: &str) -> Result<u64, SettingError> {
    BUSY_PPS.parse(s)
}
fn reader_nice(s: &str) -> Result<i32, SettingError> {
    READER_NICE.parse(s)
}
fn storm_pps(s: &str) -> Result<u32, SettingError> {
    STORM_PPS.parse(s)
}
fn readers(s: &str) -> Result<String, super::BadReaders> {
    Readers::parse(s).map(|_| s.to_string())
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Read everything from this TOML file (see docs/operations.md); SIGHUP re-reads it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ports", "taps", "socket", "ageing_secs", "fdb_max",
        "fdb_max_per_port", "netns", "rx", "ring_slots", "busy_pps", "metrics", "storm_pps", "loop_detect", "netfilter",
        "readers", "fanout", "no_pin", "reader_nice", "host_port", "addresses", "mtu", "mac", "state_dir",
        "vlan_filtering", "ring_blocks", "block_kib", "retire_ms", "bridge"])]
    pub config: Option<PathBuf>,
    /// Make bridge NAME with its own interface NAME, the pods' gateway, as
    /// `cni0` is: a TAP in the namespace the daemon starts in (the host's,
    /// even with --netns), with a fixed MAC and the --address(es). It stays
    /// when the daemon stops (see --remove-bridges) and is taken back on start.
    #[arg(long, value_name = "NAME")]
    pub host_port: Option<String>,
    /// The name of the bridge --port and --tap make, when it has no host
    /// port (default ub0). Without any of them the daemon starts with no
    /// bridge and waits for `userbridge bridge add`.
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// Delete every bridge's host port when the daemon stops on SIGINT or
    /// SIGTERM (by default they stay, with their addresses and routes, as
    /// kernel bridges do, and the next start takes them back).
    #[arg(long)]
    pub remove_bridges: bool,
    /// An address for the host port, as CIDR (10.244.1.1/24, fd00::1/64).
    /// Repeat for more; pods use the first of each family as their gateway.
    #[arg(long = "address", value_name = "CIDR", requires = "host_port", value_parser = parse_cidr)]
    pub addresses: Vec<ub_netlink::IpNet>,
    /// The host port's MTU (68-65535; 1280 or more with an IPv6 address).
    #[arg(long, value_name = "N", requires = "host_port")]
    pub mtu: Option<u32>,
    /// The host port's MAC (default: derived from its name, the same after every restart).
    #[arg(long, value_name = "MAC", requires = "host_port", value_parser = parse_mac)]
    pub mac: Option<ub_wire::Mac>,
    /// Where the ports added at run time are recorded, so they survive a
    /// restart (the file is named after the control socket).
    #[arg(long, value_name = "DIR", default_value = STATE_DIR)]
    pub state_dir: PathBuf,
    /// Attach this interface (e.g. the host end of a pod's veth). Repeat for more ports.
    #[arg(long = "port", value_name = "IF")]
    pub ports: Vec<String>,
    /// Create a TAP interface NAME and attach it. Repeat for more.
    #[arg(long = "tap", value_name = "NAME")]
    pub taps: Vec<String>,
    /// Control socket path.
    #[arg(long, default_value = ub_proto::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Seconds an idle learned entry lives (the Linux bridge's default is 300).
    #[arg(long, value_name = "N", default_value_t = AGEING_SECS.default, value_parser = ageing_secs)]
    pub ageing_secs: u64,
    /// Most learned entries in the table.
    #[arg(long, value_name = "N", default_value_t = FDB_MAX.default, value_parser = fdb_max)]
    pub fdb_max: u64,
    /// Most learned entries behind one port.
    #[arg(long, value_name = "N", default_value_t = FDB_MAX_PER_PORT.default, value_parser = fdb_max_per_port)]
    pub fdb_max_per_port: u32,
    /// Enter this network namespace (as in `ip netns exec NAME`) before attaching.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// How ports receive: `busy-slots` (recvmmsg, and a ring of 2 KiB RX
    /// slots per receive half while the port takes --busy-pps frames/s or
    /// more) or `mmsg` (recvmmsg only: never any ring memory).
    #[arg(long, value_enum, default_value_t = RxArg::BusySlots)]
    pub rx: RxArg,
    /// The most 2 KiB slots a busy port's ring takes per receive half (an
    /// even count; each ring holds 100 ms of its port's rate).
    #[arg(long, value_name = "N", default_value_t = RING_SLOTS.default, value_parser = ring_slots)]
    pub ring_slots: usize,
    /// `--rx busy-slots`: frames per second (the port's receive halves
    /// together, frames a slot holds less those it does not) from which a
    /// port takes its RX slots; it gives them back after 2 s under a fifth.
    #[arg(long, value_name = "FRAMES", default_value_t = BUSY_PPS.default, value_parser = busy_pps)]
    pub busy_pps: u64,
    /// Receive halves per port (`auto`: one per CPU this process may use,
    /// at most 8), a PACKET_FANOUT group; one thread per port serves them,
    /// with helpers while it is busy (docs/cli.md).
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = readers)]
    pub readers: String,
    /// How a port's receive halves share its frames: `flow` (a TCP flow, or
    /// a connected UDP socket's, stays with one half, in order; the rest by
    /// CPU) or `cpu` (by the CPU a frame arrived on).
    #[arg(long, value_enum, default_value_t = FanoutArg::Flow)]
    pub fanout: FanoutArg,
    /// Leave the reader threads unpinned (by default, with one receive half
    /// per allowed CPU, the thread serving half i runs on CPU i).
    #[arg(long)]
    pub no_pin: bool,
    /// Nice value of the reader threads: below a busy sender's 0, a reader
    /// sharing its core keeps up with it (needs CAP_SYS_NICE).
    #[arg(long, value_name = "NICE", default_value_t = READER_NICE.default, allow_negative_numbers = true,
        value_parser = reader_nice)]
    pub reader_nice: i32,
    /// Storm control: most broadcast, multicast and unknown-unicast frames per
    /// second each port may flood (each class); 0 turns it off.
    #[arg(long, value_name = "PPS", default_value_t = STORM_PPS.default, value_parser = storm_pps)]
    pub storm_pps: u32,
    /// Loop detection by probe frames: `on-flap` probes only while stations
    /// flap between ports, `always` every second, `off` never.
    #[arg(long, value_enum, default_value_t = LoopMode::OnFlap)]
    pub loop_detect: LoopMode,
    /// Whether IP between a bridge's stations goes through the node's
    /// netfilter (its FORWARD rules, conntrack), as br_netfilter makes a
    /// kernel bridge's go: `auto` while br_netfilter is on and the node's
    /// forward chains hold a rule, `on` while br_netfilter is on, `off`
    /// never (docs/operations.md, "NetworkPolicy and node firewalls").
    #[arg(long, value_enum, default_value_t = NetfilterMode::Auto)]
    pub netfilter: NetfilterMode,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9435).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Log filter (error, warn, info, debug, trace; default info); RUST_LOG
    /// overrides it. With --config, it overrides the file's `log_level`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Filter VLANs, as a bridge with `vlan_filtering 1`: every port starts
    /// in VLAN 1 (PVID, untagged); change memberships with `userbridge vlan`.
    #[arg(long)]
    pub vlan_filtering: bool,
    /// Take over from the daemon running on the same socket with the same
    /// bridges and ports (an upgrade): it hands over its ports' sockets,
    /// listeners and learned entries and exits; no frame is lost. Refused,
    /// with the reason, when the arguments differ: the running one goes on.
    #[arg(long)]
    pub takeover: bool,
    /// Removed with `--rx ring`.
    #[arg(long, hide = true, value_name = "N")]
    pub ring_blocks: Option<String>,
    /// Removed with `--rx ring`.
    #[arg(long, hide = true, value_name = "N")]
    pub block_kib: Option<String>,
    /// Removed with `--rx ring`.
    #[arg(long, hide = true, value_name = "N")]
    pub retire_ms: Option<String>,
}

impl RunArgs {
    /// The settings these flags (or the file they name) ask for.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut draft = match &self.config {
            Some(path) => file::load(path)?,
            None => self.draft(),
        };
        if let Some(l) = &self.log_level {
            draft.log_level = Some(Given::at(l.clone(), At::Flag("--log-level")));
        }
        draft.remove_bridges |= self.remove_bridges;
        draft.build()
    }

    /// What the flags say.
    fn draft(&self) -> Draft {
        let flag = |f: &'static str| At::Flag(f);
        let given = |v, f| Some(Given::at(v, flag(f)));
        let port = |name: &String, backend, f| {
            Given::at(PortDraft { name: name.clone(), backend, change: PolicyChange::default() }, flag(f))
        };
        let ports = self.ports.iter().map(|n| port(n, Backend::Afpacket, "--port"));
        let taps = self.taps.iter().map(|n| port(n, Backend::Tap, "--tap"));
        let single = BridgeDraft {
            name: self.host_port.clone().and_then(|n| given(n, "--host-port")),
            host: self.host_port.as_ref().map(|_| {
                let h = HostDraft {
                    addresses: self.addresses.iter().map(ToString::to_string).collect(),
                    mtu: self.mtu,
                    mac: self.mac.map(|m| m.to_string()),
                    vlans: None,
                };
                Given::at(h, flag("--host-port"))
            }),
            vlan_filtering: self.vlan_filtering.then_some(true),
            ports: ports.chain(taps).collect(),
            ..BridgeDraft::default()
        };
        let mut removed: Vec<Given<String>> = Vec::new();
        if let Some(why) = self.rx.removed() {
            removed.push(Given::at(why.to_string(), flag("--rx")));
        }
        for (f, v) in
            [("--ring-blocks", &self.ring_blocks), ("--block-kib", &self.block_kib), ("--retire-ms", &self.retire_ms)]
        {
            if v.is_some() {
                removed.push(Given::at(RING_GEOMETRY_REMOVED.to_string(), flag(f)));
            }
        }
        Draft {
            origin: "run".into(),
            socket: Some(self.socket.clone()),
            netns: self.netns.clone().and_then(|n| given(n, "--netns")),
            metrics: self.metrics.clone().and_then(|m| given(m, "--metrics")),
            log_level: None,
            ageing_secs: Some(Given::at(self.ageing_secs, flag("--ageing-secs"))),
            fdb_max: Some(Given::at(self.fdb_max, flag("--fdb-max"))),
            fdb_max_per_port: Some(Given::at(self.fdb_max_per_port, flag("--fdb-max-per-port"))),
            storm: StormDraft {
                broadcast_pps: Some(self.storm_pps),
                multicast_pps: Some(self.storm_pps),
                unknown_unicast_pps: Some(self.storm_pps),
            },
            loop_detect: Some(self.loop_detect),
            netfilter: Some(self.netfilter),
            rx: Some(Given::at(self.rx, flag("--rx"))),
            ring_slots: Some(Given::at(self.ring_slots, flag("--ring-slots"))),
            busy_pps: Some(Given::at(self.busy_pps, flag("--busy-pps"))),
            readers: Some(Given::at(self.readers.clone(), flag("--readers"))),
            fanout: Some(self.fanout),
            pin: Some(!self.no_pin),
            nice: Some(Given::at(self.reader_nice, flag("--reader-nice"))),
            state_dir: Some(self.state_dir.clone()),
            remove_bridges: self.remove_bridges,
            single,
            single_name: self.bridge.clone().and_then(|n| given(n, "--bridge")),
            bridges: Vec::new(),
            removed,
        }
    }
}
