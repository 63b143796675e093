//! What the daemon runs with: from `run`'s flags or a TOML file
//! (`run --config FILE`), validated with errors that name the line.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;
use ub_datapath::{LoopDetect, StormLimits};
use ub_fdb::FdbConfig;
use ub_port::afpacket::RxConfig;
use ub_wire::Mac;

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
    pub ports: Vec<String>,
    pub taps: Vec<String>,
    pub statics: Vec<StaticEntry>,
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
        ThreadConfig { pin: true, nice: Some(crate::daemon::DEFAULT_READER_NICE) }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    socket: Option<PathBuf>,
    netns: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    loop_detect: Option<crate::daemon::LoopMode>,
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
    mode: Option<crate::daemon::RxArg>,
    blocks: Option<usize>,
    block_kib: Option<usize>,
    retire_ms: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ThreadsSection {
    readers_per_port: Option<Spanned<ReadersValue>>,
    pin: Option<bool>,
    nice: Option<Spanned<i32>>,
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
    pub fn load(path: &Path) -> Result<Settings, Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Settings, Vec<String>> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            vec![format!("{origin}:{line}: {}", e.message().trim())]
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
            ring: RxConfig { fanout: crate::daemon::Readers::Auto.count(), ..RxConfig::default() },
            threads: ThreadConfig::default(),
            ports: Vec::new(),
            taps: Vec::new(),
            statics: Vec::new(),
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
                    1..=16_777_216 => s.fdb.max_entries = *m.get_ref() as usize,
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
                match crate::daemon::parse_readers(&text) {
                    Ok(v) => s.ring.fanout = v.count(),
                    Err(m) => err(r.span(), format!("readers_per_port = {text}: {m}")),
                }
            }
            s.threads.pin = t.pin.unwrap_or(s.threads.pin);
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
                fanout: s.ring.fanout,
            };
        }
        if let Err(m) = s.ring.validate() {
            errs.push(format!("{origin}: [ring] or [threads]: {m}"));
        }
        let mut names: Vec<String> = Vec::new();
        for (list, is_tap) in [(&file.ports, false), (&file.taps, true)] {
            for p in list.iter() {
                let name = p.get_ref();
                if let Err(e) = ub_port::validate_ifname(name) {
                    errs.push(format!("{origin}:{}: {e}", line_of(text, p.span().start)));
                } else if names.contains(name) {
                    errs.push(format!("{origin}:{}: '{name}' is listed twice", line_of(text, p.span().start)));
                } else {
                    names.push(name.clone());
                    if is_tap { s.taps.push(name.clone()) } else { s.ports.push(name.clone()) }
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
        if s.ports.is_empty() && s.taps.is_empty() {
            errs.push(format!("{origin}: no ports: add ports = [\"IF\", ...] or taps = [\"NAME\"]"));
        }
        if errs.is_empty() { Ok(s) } else { Err(errs) }
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
        assert_eq!(s.ports, vec!["veth1", "veth2"]);
        assert_eq!(s.taps, vec!["tap0"]);
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
    fn errors_name_the_line() {
        let e = Settings::parse("ports = [\"a\"]\n\n[fdb]\nageing_secs = 0\n", "c.toml").unwrap_err();
        assert_eq!(e, vec!["c.toml:4: ageing_secs = 0: use 1 to 1000000"]);
        let e = Settings::parse("ports = [\"ok\",\n  \"bad/name\"]\n", "c.toml").unwrap_err();
        assert!(e[0].starts_with("c.toml:2: 'bad/name' is not a valid interface name"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\nfrobnicate = 1\n", "c.toml").unwrap_err();
        assert!(e[0].starts_with("c.toml:2: unknown field `frobnicate`"), "{e:?}");
        let e = Settings::parse("ports = [\"a\", \"a\"]\n", "c.toml").unwrap_err();
        assert!(e[0].contains("listed twice"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\n[[static]]\nmac = \"ff:ff:ff:ff:ff:ff\"\nport = \"a\"\n", "c.toml")
            .unwrap_err();
        assert!(e[0].starts_with("c.toml:2:") && e[0].contains("not a unicast"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\nmetrics = \"nope\"\n", "c.toml").unwrap_err();
        assert!(e[0].starts_with("c.toml:2: metrics"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"]\n[threads]\nnice = 20\n", "c.toml").unwrap_err();
        assert_eq!(e, vec!["c.toml:3: nice = 20: use -20 to 19"]);
        let e = Settings::parse("ports = [\"a\"]\n[threads]\nreaders_per_port = 0\n", "c.toml").unwrap_err();
        assert_eq!(e, vec!["c.toml:3: readers_per_port = 0: '0' is not `auto` or a count from 1 to 64"]);
        let e = Settings::parse("ports = [\"a\"]\n[threads]\nreaders_per_port = \"many\"\n", "c.toml").unwrap_err();
        assert!(e[0].starts_with("c.toml:3: readers_per_port = many"), "{e:?}");
        let s = Settings::parse("ports = [\"a\"]\n[threads]\nreaders_per_port = \"auto\"\n", "c.toml").unwrap();
        assert_eq!(s.ring.fanout, crate::daemon::Readers::Auto.count());
        assert!(s.ring.fanout >= 1);
        let e = Settings::parse("", "c.toml").unwrap_err();
        assert!(e[0].contains("no ports"), "{e:?}");
        let e = Settings::parse("ports = [\"a\"\n", "c.toml").unwrap_err();
        assert!(e[0].starts_with("c.toml:"), "{e:?}");
    }
}
