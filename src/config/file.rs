//! The configuration file (`run --config FILE`, `check-config FILE`): TOML
//! into a [`Draft`], each value with its line. docs/operations.md has a
//! sample, which a test checks.

use super::modes::{FanoutArg, LoopMode, RING_GEOMETRY_REMOVED, RxArg};
use super::{At, ConfigError, Draft, Given, HostDraft, PortDraft, StaticDraft};
use serde::{Deserialize, Deserializer, de};
use std::path::{Path, PathBuf};
use toml::Spanned;
use ub_datapath::StormLimits;
use ub_proto::{Backend, PolicyChange, VlanEntry};

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
        state_dir: file.state_dir,
        vlan_filtering: file.vlan_filtering.unwrap_or(false),
        ..Draft::default()
    };
    if let Some(f) = file.fdb {
        d.ageing_secs = f.ageing_secs.map(|s| Given::at(*s.get_ref(), at(s.span())));
        d.fdb_max = f.max_entries.map(|s| Given::at(*s.get_ref(), at(s.span())));
        d.fdb_max_per_port = f.max_per_port.map(|s| Given::at(*s.get_ref(), at(s.span())));
    }
    let dflt = StormLimits::default();
    d.storm = match file.storm {
        Some(st) => StormLimits {
            broadcast_pps: st.broadcast_pps.unwrap_or(dflt.broadcast_pps),
            multicast_pps: st.multicast_pps.unwrap_or(dflt.multicast_pps),
            unknown_unicast_pps: st.unknown_unicast_pps.unwrap_or(dflt.unknown_unicast_pps),
        },
        None => dflt,
    };
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
    let port = |name: Spanned<String>, backend| {
        let a = at(name.span());
        Given::at(PortDraft { name: name.into_inner(), backend, change: PolicyChange::default() }, a)
    };
    d.ports.extend(file.ports.into_iter().map(|n| port(n, Backend::Afpacket)));
    d.ports.extend(file.taps.into_iter().map(|n| port(n, Backend::Tap)));
    for t in file.port_tables {
        let a = at(t.span());
        let p = t.into_inner();
        let backend = if p.tap { Backend::Tap } else { Backend::Afpacket };
        d.ports.push(Given::at(PortDraft { name: p.name, backend, change: p.change }, a));
    }
    for st in file.statics {
        let a = at(st.span());
        let s = st.into_inner();
        d.statics.push(Given::at(StaticDraft { mac: s.mac, port: s.port, vlan: s.vlan }, a));
    }
    d.host = file.host.map(|h| {
        let a = at(h.span());
        let h = h.into_inner();
        Given::at(HostDraft { name: h.name, addresses: h.addresses, mtu: h.mtu, mac: h.mac, vlans: h.vlans }, a)
    });
    Ok(d)
}
