//! The configuration file (`run --config FILE`, `check-config FILE`): TOML
//! into a [`Draft`], each value with its line. docs/operations.md has a
//! sample, which a test checks.

use super::modes::{FanoutArg, LoopMode, NetfilterMode, RING_GEOMETRY_REMOVED, RxArg};
use super::{At, BridgeDraft, ConfigError, Draft, Given, HostDraft, PortDraft, StaticDraft, StormDraft};
use serde::{Deserialize, Deserializer, de};
use std::path::{Path, PathBuf};
use toml::Spanned;
use ub_proto::{Backend, PolicyChange, VlanEntry};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    socket: Option<PathBuf>,
    netns: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    loop_detect: Option<LoopMode>,
    netfilter: Option<NetfilterMode>,
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
    /// `[[bridge]]`: a bridge with its ports.
    #[serde(default, rename = "bridge")]
    bridges: Vec<Spanned<BridgeSection>>,
    remove_bridges: Option<bool>,
}

/// A `[[bridge]]` table: the bridge's name, its host port (on unless
/// `host_port = false`), its own settings and its ports.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct BridgeSection {
    name: Spanned<String>,
    host_port: Option<bool>,
    #[serde(default)]
    addresses: Vec<String>,
    mtu: Option<u32>,
    mac: Option<String>,
    /// The host port's VLANs.
    vlans: Option<Vec<VlanEntry>>,
    vlan_filtering: Option<bool>,
    loop_detect: Option<LoopMode>,
    netfilter: Option<NetfilterMode>,
    fdb: Option<FdbSection>,
    storm: Option<StormSection>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    #[serde(default)]
    taps: Vec<Spanned<String>>,
    #[serde(default, rename = "port")]
    port_tables: Vec<Spanned<PortSection>>,
    #[serde(default, rename = "static")]
    statics: Vec<Spanned<StaticSection>>,
}

/// A `[[port]]` table: `name`, `tap`, and the policy's knobs with the
/// kernel bridge's names (docs/policies.md), a misspelt one refused by name.
#[derive(Debug)]
struct PortSection {
    name: String,
    tap: bool,
    change: PolicyChange,
}

impl<'de> Deserialize<'de> for PortSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortSection, D::Error> {
        let mut m = toml::Table::deserialize(d)?;
        let name = match m.remove("name") {
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err(de::Error::custom("`name` must be a string")),
            None => return Err(de::Error::missing_field("name")),
        };
        let tap = match m.remove("tap") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => return Err(de::Error::custom("`tap` must be true or false")),
        };
        let change = PolicyChange::deserialize(toml::Value::Table(m)).map_err(de::Error::custom)?;
        Ok(PortSection { name, tap, change })
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
    vlans: Option<Vec<VlanEntry>>,
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
    mode: Option<Spanned<RxArg>>,
    slots: Option<Spanned<usize>>,
    busy_pps: Option<Spanned<u64>>,
    /// The removed TPACKET_V3 ring's geometry: read to say so.
    blocks: Option<Spanned<toml::Value>>,
    block_kib: Option<Spanned<toml::Value>>,
    retire_ms: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ThreadsSection {
    readers_per_port: Option<Spanned<toml::Value>>,
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

/// Reads configuration file `path` into a draft.
pub fn load(path: &Path) -> Result<Draft, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(vec![format!("{}: cannot read: {e}", path.display())]))?;
    parse(&text, &path.display().to_string())
}

/// Parses configuration `text` into a draft; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Draft, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        ConfigError(vec![format!("{origin}:{line}: {}", e.message().trim())])
    })?;
    let at = |span: std::ops::Range<usize>| At::Line(line_of(text, span.start));
    let given = |s: Spanned<_>| {
        let a = at(s.span());
        Given::at(s.into_inner(), a)
    };
    let mut d = Draft {
        origin: origin.to_string(),
        socket: file.socket,
        netns: file.netns.map(given),
        metrics: file.metrics.map(given),
        log_level: file.log_level.map(given),
        loop_detect: file.loop_detect,
        netfilter: file.netfilter,
        state_dir: file.state_dir,
        remove_bridges: file.remove_bridges.unwrap_or(false),
        ..Draft::default()
    };
    if let Some(f) = file.fdb {
        (d.ageing_secs, d.fdb_max, d.fdb_max_per_port) = fdb(f, &at);
    }
    d.storm = file.storm.map(storm).unwrap_or_default();
    if let Some(r) = file.ring {
        if let Some(m) = &r.mode
            && let Some(why) = m.get_ref().removed()
        {
            d.removed.push(Given::at(format!("[ring] mode: {why}"), at(m.span())));
        }
        d.rx = r.mode.map(|s| Given::at(*s.get_ref(), at(s.span())));
        d.ring_slots = r.slots.map(|s| Given::at(*s.get_ref(), at(s.span())));
        d.busy_pps = r.busy_pps.map(|s| Given::at(*s.get_ref(), at(s.span())));
        for (key, v) in [("blocks", &r.blocks), ("block_kib", &r.block_kib), ("retire_ms", &r.retire_ms)] {
            if let Some(v) = v {
                d.removed.push(Given::at(format!("[ring] {key} {RING_GEOMETRY_REMOVED}"), at(v.span())));
            }
        }
    }
    if let Some(t) = file.threads {
        d.readers = t.readers_per_port.map(|s| {
            let text = match s.get_ref() {
                toml::Value::String(w) => w.clone(),
                other => other.to_string(),
            };
            Given::at(text, at(s.span()))
        });
        d.pin = t.pin;
        d.nice = t.nice.map(|s| Given::at(*s.get_ref(), at(s.span())));
        d.fanout = t.fanout;
    }
    // The single-bridge format: top-level ports, `[host]` naming the bridge.
    d.single.ports = ports(file.ports, file.taps, file.port_tables, &at);
    d.single.statics = statics(file.statics, &at);
    d.single.vlan_filtering = file.vlan_filtering;
    if let Some(h) = file.host {
        let a = at(h.span());
        let h = h.into_inner();
        d.single.name = Some(Given::at(h.name, a));
        d.single.host =
            Some(Given::at(HostDraft { addresses: h.addresses, mtu: h.mtu, mac: h.mac, vlans: h.vlans }, a));
    }
    for b in file.bridges {
        let a = at(b.span());
        let b = b.into_inner();
        let mut bridge = BridgeDraft {
            name: Some(given(b.name)),
            host: (b.host_port != Some(false))
                .then(|| Given::at(HostDraft { addresses: b.addresses, mtu: b.mtu, mac: b.mac, vlans: b.vlans }, a)),
            vlan_filtering: b.vlan_filtering,
            storm: b.storm.map(storm).unwrap_or_default(),
            loop_detect: b.loop_detect,
            netfilter: b.netfilter,
            ports: ports(b.ports, b.taps, b.port_tables, &at),
            statics: statics(b.statics, &at),
            ..BridgeDraft::default()
        };
        if let Some(f) = b.fdb {
            (bridge.ageing_secs, bridge.fdb_max, bridge.fdb_max_per_port) = fdb(f, &at);
        }
        d.bridges.push(Given::at(bridge, a));
    }
    Ok(d)
}

type FdbDraft = (Option<Given<u64>>, Option<Given<u64>>, Option<Given<u32>>);

/// An `[fdb]` table's values, each with its line.
fn fdb(f: FdbSection, at: &impl Fn(std::ops::Range<usize>) -> At) -> FdbDraft {
    let g = |s: Spanned<u64>| Given::at(*s.get_ref(), at(s.span()));
    (f.ageing_secs.map(g), f.max_entries.map(g), f.max_per_port.map(|s| Given::at(*s.get_ref(), at(s.span()))))
}

fn storm(s: StormSection) -> StormDraft {
    StormDraft {
        broadcast_pps: s.broadcast_pps,
        multicast_pps: s.multicast_pps,
        unknown_unicast_pps: s.unknown_unicast_pps,
    }
}

/// `ports`, `taps` and `[[port]]` tables, in that order.
fn ports(
    names: Vec<Spanned<String>>,
    taps: Vec<Spanned<String>>,
    tables: Vec<Spanned<PortSection>>,
    at: &impl Fn(std::ops::Range<usize>) -> At,
) -> Vec<Given<PortDraft>> {
    let port = |name: Spanned<String>, backend| {
        let a = at(name.span());
        Given::at(PortDraft { name: name.into_inner(), backend, change: PolicyChange::default() }, a)
    };
    let mut out: Vec<Given<PortDraft>> = names.into_iter().map(|n| port(n, Backend::Afpacket)).collect();
    out.extend(taps.into_iter().map(|n| port(n, Backend::Tap)));
    for t in tables {
        let a = at(t.span());
        let p = t.into_inner();
        let backend = if p.tap { Backend::Tap } else { Backend::Afpacket };
        out.push(Given::at(PortDraft { name: p.name, backend, change: p.change }, a));
    }
    out
}

fn statics(tables: Vec<Spanned<StaticSection>>, at: &impl Fn(std::ops::Range<usize>) -> At) -> Vec<Given<StaticDraft>> {
    tables
        .into_iter()
        .map(|st| {
            let a = at(st.span());
            let s = st.into_inner();
            Given::at(StaticDraft { mac: s.mac, port: s.port, vlan: s.vlan }, a)
        })
        .collect()
}
