//! [`Draft::build`]: the one place a configuration is checked and its
//! defaults filled in, whether it came from flags or a file.

use super::ConfigError;
use super::{
    At, Draft, Given, HostSettings, Readers, RxArg, Settings, StaticEntry, ThreadConfig, parse_cidr, parse_mac,
};
use std::fmt::Display;
use std::str::FromStr;
use ub_datapath::LoopDetect;
use ub_fdb::FdbConfig;
use ub_port::afpacket::{Fanout, RxConfig, RxMode};
use ub_proto::settings::{
    AGEING_SECS, BUSY_PPS, FDB_MAX, FDB_MAX_PER_PORT, LOG_LEVEL, READER_NICE, RING_SLOTS, STATE_DIR, Setting,
};
use ub_proto::{IfName, Origin, PortPolicy, PortSpec};

/// Collects the problems of a draft, each named where it was given.
struct Problems<'a> {
    origin: &'a str,
    found: Vec<String>,
}

impl Problems<'_> {
    /// `FILE:LINE: what` or `--flag: what`.
    fn at(&mut self, at: At, what: impl Display) {
        self.found.push(match at {
            At::Line(n) => format!("{}:{n}: {what}", self.origin),
            At::Flag(f) => format!("{f}: {what}"),
        });
    }

    /// Without a place: `FILE: what`.
    fn whole(&mut self, what: impl Display) {
        self.found.push(format!("{}: {what}", self.origin));
    }

    /// The value of setting `s`, or its default; out of range is a problem
    /// (`ageing_secs = 0: use 1 to 1000000`, `--ageing-secs 0: use 1 to 1000000`).
    fn setting<T: Copy + PartialOrd + Display + FromStr>(&mut self, s: &Setting<T>, v: &Option<Given<T>>) -> T {
        let Some(g) = v else { return s.default };
        s.check(g.value).unwrap_or_else(|why| {
            self.value(g, s.key, why);
            s.default
        })
    }

    /// A value given as `key` that is wrong: `key = V: why` in a file,
    /// `--flag V: why` on the command line.
    fn value<T: Display>(&mut self, g: &Given<T>, key: &str, why: impl Display) {
        self.found.push(match g.at {
            At::Line(n) => format!("{}:{n}: {key} = {}: {why}", self.origin, g.value),
            At::Flag(f) => format!("{f} {}: {why}", g.value),
        });
    }
}

impl Draft {
    /// The settings this draft asks for, or every problem in it.
    pub fn build(self) -> Result<Settings, ConfigError> {
        let mut p = Problems { origin: &self.origin, found: Vec::new() };
        for r in &self.removed {
            p.at(r.at, &r.value);
        }
        let metrics = self.metrics.as_ref().and_then(|m| match m.value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                p.at(m.at, format!("metrics = \"{}\" is not an address:port like 127.0.0.1:9435", m.value));
                None
            }
        });
        let log_level = match &self.log_level {
            Some(l) if tracing_subscriber::EnvFilter::try_new(&l.value).is_err() => {
                p.at(
                    l.at,
                    format!("log_level = \"{}\" is not a log filter (error, warn, info, debug, trace)", l.value),
                );
                LOG_LEVEL.to_string()
            }
            Some(l) => l.value.clone(),
            None => LOG_LEVEL.to_string(),
        };
        let netns = self.netns.as_ref().and_then(|n| match ub_netlink::NetNs::validate_name(&n.value) {
            Ok(()) => Some(n.value.clone()),
            Err(e) => {
                p.at(n.at, e);
                None
            }
        });
        let fdb = FdbConfig {
            ageing_ms: p.setting(&AGEING_SECS, &self.ageing_secs) * 1000,
            max_entries: usize::try_from(p.setting(&FDB_MAX, &self.fdb_max)).unwrap_or(usize::MAX),
            max_per_port: p.setting(&FDB_MAX_PER_PORT, &self.fdb_max_per_port),
            ..FdbConfig::default()
        };
        let rx = self.rx_config(&mut p);
        let threads = ThreadConfig { pin: self.pin.unwrap_or(true), nice: p.setting(&READER_NICE, &self.nice) };
        let ports = self.port_specs(&mut p);
        let statics = self.statics(&mut p, &ports);
        let host = self.host_settings(&mut p, &ports);
        if ports.is_empty() && host.is_none() {
            p.whole("no ports: give --port IF, --tap NAME or --host-port NAME, or in a file ports = [\"IF\", ...], taps, [[port]] tables or a [host] table");
        }
        if !p.found.is_empty() {
            return Err(ConfigError(p.found));
        }
        Ok(Settings {
            socket: self.socket.unwrap_or_else(|| ub_proto::DEFAULT_SOCKET.into()),
            netns,
            metrics,
            log_level,
            fdb,
            storm: self.storm,
            loop_detect: self.loop_detect.map_or(LoopDetect::OnFlap, Into::into),
            rx,
            threads,
            ports,
            statics,
            host,
            state_dir: self.state_dir.unwrap_or_else(|| STATE_DIR.into()),
            vlan_filtering: self.vlan_filtering,
        })
    }

    fn rx_config(&self, p: &mut Problems<'_>) -> RxConfig {
        let mode = match self.rx.as_ref().map(|g| g.value) {
            None | Some(RxArg::BusySlots) => RxMode::BusySlots,
            Some(RxArg::Mmsg) => RxMode::Mmsg,
            // Refused as removed (`Draft::removed`), with what replaces them.
            Some(RxArg::Slots | RxArg::Ring) => RxMode::BusySlots,
        };
        let ring_slots = p.setting(&RING_SLOTS, &self.ring_slots);
        if let Some(g) = &self.ring_slots
            && !g.value.is_multiple_of(2)
        {
            p.value(g, RING_SLOTS.key, "use an even count");
        }
        let readers = match &self.readers {
            None => Readers::Auto.count(),
            Some(g) => match Readers::parse(&g.value) {
                Ok(r) => r.count(),
                Err(why) => {
                    p.value(g, "readers_per_port", why);
                    1
                }
            },
        };
        RxConfig {
            mode,
            ring_slots,
            busy_pps: p.setting(&BUSY_PPS, &self.busy_pps),
            readers,
            fanout: self.fanout.map_or(Fanout::FlowOrCpu, Into::into),
        }
    }

    /// The ports, each named once, with their policies checked.
    fn port_specs(&self, p: &mut Problems<'_>) -> Vec<PortSpec> {
        let mut specs: Vec<PortSpec> = Vec::new();
        for g in &self.ports {
            let d = &g.value;
            let name = match IfName::new(&d.name) {
                Ok(n) => n,
                Err(e) => {
                    p.at(g.at, e);
                    continue;
                }
            };
            if specs.iter().any(|s| s.name == name) {
                p.at(g.at, format!("'{name}' is listed twice"));
                continue;
            }
            let policy = d.change.apply(PortPolicy::default());
            if let Err(e) = policy.validate() {
                p.at(g.at, format!("[[port]] {name}: {e}"));
                continue;
            }
            specs.push(PortSpec { policy, ..PortSpec::new(name, d.backend, Origin::Config) });
        }
        specs
    }

    fn statics(&self, p: &mut Problems<'_>, ports: &[PortSpec]) -> Vec<StaticEntry> {
        let mut out = Vec::new();
        for g in &self.statics {
            let d = &g.value;
            match parse_mac(&d.mac) {
                Err(e) => p.at(g.at, format!("static mac {e}")),
                Ok(mac) if d.vlan >= 4095 => p.at(g.at, format!("static {mac}: vlan {} is not 0-4094", d.vlan)),
                Ok(mac) => match ports.iter().find(|s| s.name == d.port.as_str()) {
                    Some(s) => out.push(StaticEntry { mac, port: s.name.clone(), vlan: d.vlan }),
                    None => p.at(g.at, format!("static entry's port '{}' is not in ports or taps", d.port)),
                },
            }
        }
        out
    }

    fn host_settings(&self, p: &mut Problems<'_>, ports: &[PortSpec]) -> Option<HostSettings> {
        let g = self.host.as_ref()?;
        let d = &g.value;
        let checked = (|| {
            let name = IfName::new(&d.name).map_err(|e| e.to_string())?;
            if ports.iter().any(|s| s.name == name) {
                return Err(format!("name '{name}' is also in ports or taps"));
            }
            let addresses =
                d.addresses.iter().map(|a| parse_cidr(a)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
            let mac = d.mac.as_deref().map(parse_mac).transpose().map_err(|e| e.to_string())?;
            let h = HostSettings::new(name, addresses, d.mtu, mac).map_err(|e| e.to_string())?;
            if let Some(v) = &d.vlans {
                PortPolicy { vlans: v.clone(), ..PortPolicy::default() }
                    .validate()
                    .map_err(|e| format!("vlans: {e}"))?;
            }
            Ok(HostSettings { vlans: d.vlans.clone(), ..h })
        })();
        checked
            .map_err(|e| match g.at {
                At::Line(_) => p.at(g.at, format!("[host] {e}")),
                At::Flag(_) => p.at(g.at, e),
            })
            .ok()
    }
}
