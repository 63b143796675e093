//! [`Draft::build`]: the one place a configuration is checked and its
//! defaults filled in, whether it came from flags or a file.

use super::ConfigError;
use super::{
    At, BridgeDefaults, BridgeDraft, BridgeSettings, DEFAULT_BRIDGE, Draft, Given, HostDraft, HostSettings, Readers,
    RxArg, Settings, StaticEntry, ThreadConfig, parse_cidr, parse_mac,
};
use std::fmt::Display;
use std::str::FromStr;
use ub_datapath::LoopDetect;
use ub_datapath::StormLimits;
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
        let defaults = BridgeDefaults {
            fdb,
            storm: self.storm.over(StormLimits::default()),
            loop_detect: self.loop_detect.map_or(LoopDetect::OnFlap, Into::into),
            netfilter: self.netfilter.unwrap_or_default(),
        };
        let rx = self.rx_config(&mut p);
        let threads = ThreadConfig { pin: self.pin.unwrap_or(true), nice: p.setting(&READER_NICE, &self.nice) };
        let bridges = self.bridges(&mut p, &defaults);
        if !p.found.is_empty() {
            return Err(ConfigError(p.found));
        }
        Ok(Settings {
            socket: self.socket.unwrap_or_else(|| ub_proto::DEFAULT_SOCKET.into()),
            netns,
            metrics,
            log_level,
            rx,
            threads,
            state_dir: self.state_dir.unwrap_or_else(|| STATE_DIR.into()),
            defaults,
            bridges,
            remove_bridges: self.remove_bridges,
        })
    }

    /// The bridges: `[[bridge]]` tables, or the single-bridge format's one
    /// (none if it says nothing: a daemon waiting for `bridge add`). Every
    /// bridge and port named once across the daemon.
    fn bridges(&self, p: &mut Problems<'_>, defaults: &BridgeDefaults) -> Vec<BridgeSettings> {
        let mut drafts: Vec<(BridgeDraft, At, bool)> = Vec::new();
        let single = self.single_bridge(p);
        if self.bridges.is_empty() {
            drafts.extend(single.map(|(b, at)| (b, at, false)));
        } else if let Some((b, at)) = single {
            let what = if b.ports.is_empty() { "[host] and vlan_filtering" } else { "ports" };
            p.at(at, format!("{what} belong in a [[bridge]] table when the file has [[bridge]] tables"));
        }
        drafts.extend(self.bridges.iter().map(|g| (g.value.clone(), g.at, true)));
        let mut out: Vec<BridgeSettings> = Vec::new();
        for (d, at, table) in drafts {
            let Some(b) = self.bridge(p, &d, table, defaults) else { continue };
            if out.iter().any(|o| o.name == b.name) {
                p.at(at, format!("bridge '{}' is given twice", b.name));
                continue;
            }
            let names = |o: &BridgeSettings| o.ports.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
            if let Some(o) = out.iter().find(|o| o.ports.iter().any(|s| s.name == b.name)) {
                p.at(at, format!("bridge '{}' is also a port of bridge '{}'", b.name, o.name));
                continue;
            }
            for port in names(&b) {
                if let Some(o) = out.iter().find(|o| o.name == port || o.ports.iter().any(|s| s.name == port)) {
                    p.at(at, format!("port '{port}' of bridge '{}' is also in bridge '{}'", b.name, o.name));
                }
            }
            out.push(b);
        }
        out
    }

    /// The single-bridge format's bridge, if it says anything, with where.
    fn single_bridge(&self, p: &mut Problems<'_>) -> Option<(BridgeDraft, At)> {
        let mut b = self.single.clone();
        if let Some(flag) = &self.single_name {
            match &b.name {
                Some(host) if host.value != flag.value => p.at(
                    flag.at,
                    format!(
                        "{}: the bridge is named after its host port ({}): give one name, or drop --host-port",
                        flag.value, host.value
                    ),
                ),
                _ => b.name = Some(flag.clone()),
            }
        }
        if b.is_empty() {
            return None;
        }
        let at = b.name.as_ref().map(|n| n.at).or(b.ports.first().map(|g| g.at)).unwrap_or(At::Line(1));
        Some((b, at))
    }

    /// One bridge (`table`: a `[[bridge]]` table), checked, with `defaults`
    /// under what it does not say.
    fn bridge(
        &self,
        p: &mut Problems<'_>,
        d: &BridgeDraft,
        table: bool,
        defaults: &BridgeDefaults,
    ) -> Option<BridgeSettings> {
        let name = match &d.name {
            None => IfName::new(DEFAULT_BRIDGE).expect("a valid name"),
            Some(g) => match IfName::new(&g.value) {
                Ok(n) => n,
                Err(e) => {
                    p.at(g.at, format!("bridge name: {e}"));
                    return None;
                }
            },
        };
        let ageing = d.ageing_secs.is_some().then(|| p.setting(&AGEING_SECS, &d.ageing_secs) * 1000);
        let max = d.fdb_max.is_some().then(|| p.setting(&FDB_MAX, &d.fdb_max));
        let per_port = d.fdb_max_per_port.is_some().then(|| p.setting(&FDB_MAX_PER_PORT, &d.fdb_max_per_port));
        let fdb = FdbConfig {
            ageing_ms: ageing.unwrap_or(defaults.fdb.ageing_ms),
            max_entries: max.map_or(defaults.fdb.max_entries, |m| usize::try_from(m).unwrap_or(usize::MAX)),
            max_per_port: per_port.unwrap_or(defaults.fdb.max_per_port),
            ..defaults.fdb
        };
        let ports = port_specs(p, d);
        if d.host.is_none()
            && let Some(g) = d.ports.iter().find(|g| g.value.name == name.as_str())
        {
            p.at(
                g.at,
                format!("port '{name}' has its bridge's name: a bridge and its ports are interfaces of their own"),
            );
        }
        let statics = statics(p, d, &ports);
        let label = if table { format!("[[bridge]] {name}:") } else { "[host]".to_string() };
        let host = d.host.as_ref().and_then(|g| host_settings(p, &name, &label, g, &ports));
        Some(BridgeSettings {
            name,
            host,
            fdb,
            storm: d.storm.over(defaults.storm),
            loop_detect: d.loop_detect.map_or(defaults.loop_detect, Into::into),
            netfilter: d.netfilter.unwrap_or(defaults.netfilter),
            vlan_filtering: d.vlan_filtering.unwrap_or(false),
            ports,
            statics,
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
}

/// A bridge's ports, each named once, with their policies checked.
fn port_specs(p: &mut Problems<'_>, d: &BridgeDraft) -> Vec<PortSpec> {
    let mut specs: Vec<PortSpec> = Vec::new();
    for g in &d.ports {
        let pd = &g.value;
        let name = match IfName::new(&pd.name) {
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
        let policy = pd.change.apply(PortPolicy::default());
        if let Err(e) = policy.validate() {
            p.at(g.at, format!("[[port]] {name}: {e}"));
            continue;
        }
        specs.push(PortSpec { policy, ..PortSpec::new(name, pd.backend, Origin::Config) });
    }
    specs
}

/// A bridge's static entries, each behind one of its ports.
fn statics(p: &mut Problems<'_>, d: &BridgeDraft, ports: &[PortSpec]) -> Vec<StaticEntry> {
    let mut out = Vec::new();
    for g in &d.statics {
        let sd = &g.value;
        match parse_mac(&sd.mac) {
            Err(e) => p.at(g.at, format!("static mac {e}")),
            Ok(mac) if sd.vlan >= 4095 => p.at(g.at, format!("static {mac}: vlan {} is not 0-4094", sd.vlan)),
            Ok(mac) => match ports.iter().find(|s| s.name == sd.port.as_str()) {
                Some(s) => out.push(StaticEntry { mac, port: s.name.clone(), vlan: sd.vlan }),
                None => {
                    p.at(g.at, format!("static entry's port '{}' is not one of the bridge's ports or taps", sd.port))
                }
            },
        }
    }
    out
}

/// Bridge `name`'s host port, checked.
fn host_settings(
    p: &mut Problems<'_>,
    name: &IfName,
    label: &str,
    g: &Given<HostDraft>,
    ports: &[PortSpec],
) -> Option<HostSettings> {
    let d = &g.value;
    let checked = (|| {
        if ports.iter().any(|s| s.name == *name) {
            return Err(format!("name '{name}' is also in ports or taps"));
        }
        let addresses =
            d.addresses.iter().map(|a| parse_cidr(a)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        let mac = d.mac.as_deref().map(parse_mac).transpose().map_err(|e| e.to_string())?;
        let h = HostSettings::new(name.clone(), addresses, d.mtu, mac).map_err(|e| e.to_string())?;
        if let Some(v) = &d.vlans {
            PortPolicy { vlans: v.clone(), ..PortPolicy::default() }.validate().map_err(|e| format!("vlans: {e}"))?;
        }
        Ok(HostSettings { vlans: d.vlans.clone(), ..h })
    })();
    checked
        .map_err(|e| match g.at {
            At::Line(_) => p.at(g.at, format!("{label} {e}")),
            At::Flag(_) => p.at(g.at, e),
        })
        .ok()
}
