//! The configuration's tests: the file's keys and their errors, flags and
//! file judged alike, defaults, and the documents held to the settings.

use super::*;
use crate::config::file;
use std::path::PathBuf;
use ub_datapath::{LoopDetect, StormLimits};
use ub_proto::{Backend, Origin};

/// What `text` builds to, as a file named `origin`.
fn parse(text: &str, origin: &str) -> Result<Settings, ConfigError> {
    file::parse(text, origin)?.build()
}

fn n(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

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
slots = 4096

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
    let s = parse(GOOD, "t.toml").unwrap();
    assert_eq!(s.socket, PathBuf::from("/run/userbridge/node.sock"));
    assert_eq!(s.metrics, Some("127.0.0.1:9435".parse().unwrap()));
    assert_eq!(s.names(Backend::Afpacket), vec!["veth1", "veth2"]);
    assert_eq!(s.names(Backend::Tap), vec!["tap0"]);
    let b = &s.bridges[0];
    assert_eq!((s.bridges.len(), b.name.as_str(), &b.host), (1, DEFAULT_BRIDGE, &None), "one bridge, no host port");
    assert!(b.ports.iter().all(|p| p.origin == Origin::Config));
    let fdb = FdbConfig { ageing_ms: 60_000, max_entries: 1000, max_per_port: 100, ..FdbConfig::default() };
    assert_eq!((s.defaults.fdb, b.fdb), (fdb, fdb));
    let storm = StormLimits { broadcast_pps: 500, multicast_pps: 10_000, unknown_unicast_pps: 0 };
    assert_eq!((s.defaults.storm, b.storm), (storm, storm));
    assert_eq!(s.rx.ring_slots, 4096);
    assert_eq!(s.rx.busy_pps, 20_000);
    assert_eq!(s.rx.readers, 2);
    assert_eq!(s.threads, ThreadConfig { pin: true, nice: -5 });
    assert_eq!(s.log_level, "debug");
    assert_eq!(b.loop_detect, LoopDetect::OnFlap);
    assert_eq!(b.statics, vec![StaticEntry { mac: "02:00:00:00:00:09".parse().unwrap(), port: n("veth2"), vlan: 7 }]);
}

#[test]
fn a_host_port_table() {
    let text = "[host]\nname = \"cni0\"\naddresses = [\"10.244.2.1/24\", \"fd00:2::1/64\"]\nmtu = 1450\n";
    let s = parse(text, "h.toml").unwrap();
    let h = s.bridges[0].host.clone().unwrap();
    assert_eq!(s.bridges[0].name, "cni0", "[host] names the bridge");
    assert_eq!(h.name, "cni0");
    assert_eq!(h.addresses, vec!["10.244.2.1/24".parse::<IpNet>().unwrap(), "fd00:2::1/64".parse().unwrap()]);
    assert_eq!((h.mtu, h.mac), (Some(1450), ub_port::host::mac_for("cni0")));
    assert!(s.bridges[0].ports.is_empty(), "a host port alone is a valid switch");
    for (bad, says) in [
        ("[host]\nname = \"cni0\"\naddresses = [\"10.244.2.1\"]\n", "h.toml:1: [host] '10.244.2.1' is not an address"),
        ("[host]\nname = \"cni0\"\naddresses = [\"10.0.0.1/24\", \"10.0.0.1/16\"]\n", "given twice"),
        ("[host]\nname = \"cni0\"\nmtu = 60\n", "MTU 60: use 68 to 65535"),
        ("[host]\nname = \"cni0\"\naddresses = [\"fd00::1/64\"]\nmtu = 1000\n", "IPv6 needs at least 1280"),
        ("[host]\nname = \"a-name-far-too-long\"\n", "not a valid interface name"),
        ("[host]\nname = \"cni0\"\nmac = \"01:00:5e:00:00:01\"\n", "not a unicast"),
        ("ports = [\"cni0\"]\n[host]\nname = \"cni0\"\n", "also in ports"),
    ] {
        let e = parse(bad, "h.toml").unwrap_err().0;
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
    let s = parse(text, "p.toml").unwrap();
    let b = &s.bridges[0];
    assert!(b.vlan_filtering);
    assert_eq!(s.names(Backend::Afpacket), vec!["veth0", "veth1"]);
    let v1 = b.ports.iter().find(|p| p.name == "veth1").unwrap();
    assert!(v1.policy.isolated && v1.policy.locked && v1.policy.flood);
    assert_eq!(v1.policy.ips, vec!["10.244.1.5".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(v1.policy.pvid(), Some(10));
    let t = b.ports.iter().find(|p| p.name == "tap1").unwrap();
    assert_eq!((t.backend, t.policy.flood), (Backend::Tap, false));
    assert_eq!(b.host.clone().unwrap().vlans.unwrap().len(), 2);
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
        let e = parse(bad, "p.toml").unwrap_err().0;
        assert!(e[0].contains(says), "{bad}: {e:?}");
    }
}

#[test]
fn errors_name_the_line() {
    let e = parse("ports = [\"a\"]\n\n[fdb]\nageing_secs = 0\n", "c.toml").unwrap_err().0;
    assert_eq!(e, vec!["c.toml:4: ageing_secs = 0: use 1 to 1000000"]);
    let e = parse("ports = [\"ok\",\n  \"bad/name\"]\n", "c.toml").unwrap_err().0;
    assert!(e[0].starts_with("c.toml:2: 'bad/name' is not a valid interface name"), "{e:?}");
    let e = parse("ports = [\"a\"]\nfrobnicate = 1\n", "c.toml").unwrap_err().0;
    assert!(e[0].starts_with("c.toml:2: unknown field `frobnicate`"), "{e:?}");
    let e = parse("ports = [\"a\", \"a\"]\n", "c.toml").unwrap_err().0;
    assert!(e[0].contains("listed twice"), "{e:?}");
    let e = parse("ports = [\"a\"]\n[[static]]\nmac = \"ff:ff:ff:ff:ff:ff\"\nport = \"a\"\n", "c.toml").unwrap_err().0;
    assert!(e[0].starts_with("c.toml:2:") && e[0].contains("not a unicast"), "{e:?}");
    let e = parse("ports = [\"a\"]\nmetrics = \"nope\"\n", "c.toml").unwrap_err().0;
    assert!(e[0].starts_with("c.toml:2: metrics"), "{e:?}");
    let e = parse("ports = [\"a\"]\n[threads]\nnice = 20\n", "c.toml").unwrap_err().0;
    assert_eq!(e, vec!["c.toml:3: nice = 20: use -20 to 19"]);
    let e = parse("ports = [\"a\"]\n[threads]\nreaders_per_port = 0\n", "c.toml").unwrap_err().0;
    assert_eq!(e, vec!["c.toml:3: readers_per_port = 0: '0' is not `auto` or a count from 1 to 64"]);
    let e = parse("ports = [\"a\"]\n[threads]\nreaders_per_port = \"many\"\n", "c.toml").unwrap_err().0;
    assert!(e[0].starts_with("c.toml:3: readers_per_port = many"), "{e:?}");
    let s = parse("ports = [\"a\"]\n[ring]\nmode = \"mmsg\"\nslots = 1024\n", "c.toml").unwrap();
    assert_eq!((s.rx.mode, s.rx.ring_slots), (ub_port::afpacket::RxMode::Mmsg, 1024));
    let e = parse("ports = [\"a\"]\n[ring]\nslots = 1001\n", "c.toml").unwrap_err().0;
    assert_eq!(e, vec!["c.toml:3: slots = 1001: use an even count"]);
    let e = parse("ports = [\"a\"]\n[ring]\nslots = 100000\n", "c.toml").unwrap_err().0;
    assert_eq!(e, vec!["c.toml:3: slots = 100000: use 64 to 65536"]);
    let s = parse("ports = [\"a\"]\n[ring]\nmode = \"busy-slots\"\nbusy_pps = 5000\n", "c.toml").unwrap();
    assert_eq!((s.rx.mode, s.rx.busy_pps), (ub_port::afpacket::RxMode::BusySlots, 5000));
    let e = parse("ports = [\"a\"]\n[ring]\nbusy_pps = 10\n", "c.toml").unwrap_err().0;
    assert_eq!(e, vec!["c.toml:3: busy_pps = 10: use 1000 to 100000000"]);
    let s = parse("", "c.toml").unwrap();
    assert!(s.bridges.is_empty(), "no bridge: a daemon waiting for `bridge add`");
    let e = parse("ports = [\"a\"\n", "c.toml").unwrap_err().0;
    assert!(e[0].starts_with("c.toml:"), "{e:?}");
}

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn flags(args: &[&str]) -> Result<Settings, String> {
    use clap::Parser;
    let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map_err(|e| e.to_string())?;
    cli.run.settings().map_err(|e| e.to_string())
}

/// A file of its own for one test, removed when the guard goes.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("ub-config-{}-{tag}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_files_log_level_holds_unless_the_flag_says_otherwise() {
    let f = TempFile::new("log", "ports = [\"a\"]\nlog_level = \"warn\"\n");
    let path = f.0.to_str().unwrap();
    assert_eq!(flags(&["--config", path]).unwrap().log_level, "warn");
    assert_eq!(flags(&["--config", path, "--log-level", "debug"]).unwrap().log_level, "debug");
    assert_eq!(flags(&["--port", "a"]).unwrap().log_level, "info");
}

#[test]
fn flags_and_a_file_that_say_the_same_build_the_same_settings() {
    let from_flags = flags(&["--port", "a", "--tap", "t0"]).unwrap();
    let from_file = parse("ports = [\"a\"]\ntaps = [\"t0\"]\n", "same.toml").unwrap();
    assert_eq!(from_flags, from_file, "every default is the same whichever way it came");
    let from_flags =
        flags(&["--port", "a", "--ageing-secs", "60", "--ring-slots", "2048", "--reader-nice", "-5"]).unwrap();
    let text = "ports = [\"a\"]\n[fdb]\nageing_secs = 60\n[ring]\nslots = 2048\n[threads]\nnice = -5\n";
    assert_eq!(from_flags, parse(text, "same.toml").unwrap());
    // Out of range: refused by both, with the one range.
    let e = flags(&["--port", "a", "--ageing-secs", "0"]).unwrap_err();
    assert!(e.contains("use 1 to 1000000"), "{e}");
    let e = parse("ports = [\"a\"]\n[fdb]\nageing_secs = 0\n", "r.toml").unwrap_err().0;
    assert_eq!(e, vec!["r.toml:3: ageing_secs = 0: use 1 to 1000000"]);
    let e = flags(&["--port", "a", "--ring-slots", "1001"]).unwrap_err();
    assert_eq!(e, "--ring-slots 1001: use an even count");
}

/// The CPUs this process may run on, as the kernel lists them in
/// /proc/self/status (not through the affinity call the daemon uses).
fn cpus_allowed() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
    list.split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

#[test]
fn readers_auto_is_one_per_allowed_cpu_up_to_eight() {
    let want = cpus_allowed().clamp(1, 8);
    let s = parse("ports = [\"a\"]\n[threads]\nreaders_per_port = \"auto\"\n", "c.toml").unwrap();
    assert_eq!(s.rx.readers, want);
    assert_eq!(flags(&["--port", "a"]).unwrap().rx.readers, want, "auto is the default");
    assert_eq!(flags(&["--port", "a", "--readers", "3"]).unwrap().rx.readers, 3);
}

#[test]
fn removed_receive_modes_are_refused_with_their_replacement() {
    let e = parse("ports = [\"a\"]\n[ring]\nmode = \"ring\"\nblocks = 4\n", "m.toml").unwrap_err().0;
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("m.toml:3: [ring] mode: `ring` (TPACKET_V3 blocks) was removed: `busy-slots`"), "{e:?}");
    assert!(e[1].starts_with("m.toml:4: [ring] blocks set the TPACKET_V3 ring, which was removed"), "{e:?}");
    let e = parse("ports = [\"a\"]\n[ring]\nmode = \"slots\"\n", "m.toml").unwrap_err().0;
    assert!(e[0].contains("`slots` was removed: `busy-slots` (the default) takes the same RX slots"), "{e:?}");
    let e = flags(&["--port", "a", "--rx", "ring"]).unwrap_err();
    assert!(e.starts_with("--rx: `ring` (TPACKET_V3 blocks) was removed"), "{e}");
    let e = flags(&["--port", "a", "--retire-ms", "1"]).unwrap_err();
    assert!(e.starts_with("--retire-ms: set the TPACKET_V3 ring, which was removed"), "{e}");
    assert!(flags(&["--port", "a", "--rx", "mmsg"]).is_ok());
}

#[test]
fn docs_cli_md_gives_each_settings_default_and_range() {
    use ub_proto::settings::*;
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let row = |flag: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `{flag} ")))
            .unwrap_or_else(|| panic!("docs/cli.md has no row for {flag}"))
            .to_string()
    };
    fn check<T: std::fmt::Display>(row: &str, s: &Setting<T>) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], s.default.to_string(), "the default of {} in docs/cli.md: {row}", s.flag);
        let range = format!("{}-{}", s.min, s.max);
        assert!(cells[3].contains(&range), "the range of {} ({range}) in docs/cli.md: {row}", s.flag);
    }
    check(&row(AGEING_SECS.flag), &AGEING_SECS);
    check(&row(FDB_MAX.flag), &FDB_MAX);
    check(&row(FDB_MAX_PER_PORT.flag), &FDB_MAX_PER_PORT);
    check(&row(STORM_PPS.flag), &STORM_PPS);
    check(&row(RING_SLOTS.flag), &RING_SLOTS);
    check(&row(BUSY_PPS.flag), &BUSY_PPS);
    check(&row(READER_NICE.flag), &READER_NICE);
}

const BRIDGES: &str = r#"
[fdb]
ageing_secs = 120

[[bridge]]
name = "cni0"
addresses = ["10.244.1.1/24"]
ports = ["veth1"]
vlan_filtering = true

[[bridge.port]]
name = "veth2"
isolated = true

[[bridge.static]]
mac = "02:00:00:00:00:09"
port = "veth2"

[[bridge]]
name = "cni1"
host_port = false
taps = ["tap0"]
loop_detect = "off"

[bridge.fdb]
ageing_secs = 30

[bridge.storm]
broadcast_pps = 50
"#;

#[test]
fn bridge_tables_each_with_their_ports_and_settings() {
    let s = parse(BRIDGES, "b.toml").unwrap();
    assert_eq!(s.bridges.len(), 2);
    let (a, b) = (&s.bridges[0], &s.bridges[1]);
    assert_eq!((a.name.as_str(), b.name.as_str()), ("cni0", "cni1"));
    let h = a.host.as_ref().unwrap();
    assert_eq!((h.name.as_str(), h.addresses.len()), ("cni0", 1), "the host port is named as its bridge");
    assert!(b.host.is_none());
    assert_eq!(a.names(Backend::Afpacket), ["veth1", "veth2"]);
    assert!(a.ports[1].policy.isolated && a.vlan_filtering && !b.vlan_filtering);
    assert_eq!(a.statics.len(), 1);
    assert_eq!(b.names(Backend::Tap), ["tap0"]);
    // The top level is every bridge's default; a bridge's own table wins.
    assert_eq!((a.fdb.ageing_ms, b.fdb.ageing_ms), (120_000, 30_000));
    assert_eq!((a.storm.broadcast_pps, b.storm.broadcast_pps, b.storm.multicast_pps), (10_000, 50, 10_000));
    assert_eq!((a.loop_detect, b.loop_detect), (LoopDetect::OnFlap, LoopDetect::Off));
    for (bad, says) in [
        ("ports = [\"a\"]\n[[bridge]]\nname = \"b\"\n", "b.toml:1: ports belong in a [[bridge]] table"),
        (
            "[host]\nname = \"h\"\n[[bridge]]\nname = \"b\"\n",
            "b.toml:1: [host] and vlan_filtering belong in a [[bridge]]",
        ),
        ("[[bridge]]\nname = \"b\"\n[[bridge]]\nname = \"b\"\n", "b.toml:3: bridge 'b' is given twice"),
        (
            "[[bridge]]\nname = \"a\"\nports = [\"v\"]\n[[bridge]]\nname = \"b\"\nports = [\"v\"]\n",
            "port 'v' of bridge 'b' is also in bridge 'a'",
        ),
        (
            "[[bridge]]\nname = \"a\"\nports = [\"b\"]\n[[bridge]]\nname = \"b\"\n",
            "bridge 'b' is also a port of bridge 'a'",
        ),
        (
            "[[bridge]]\nname = \"much-too-long-name\"\n",
            "b.toml:2: bridge name: 'much-too-long-name' is not a valid interface name",
        ),
        (
            "[[bridge]]\nname = \"a\"\nhost_port = false\nports = [\"v\"]\n[[bridge.static]]\nmac = \"02:00:00:00:00:01\"\nport = \"w\"\n",
            "not one of the bridge's ports",
        ),
        ("[[bridge]]\nname = \"a\"\nfrob = 1\n", "unknown field `frob`"),
        ("[[bridge]]\nname = \"a\"\n[bridge.fdb]\nageing_secs = 0\n", "b.toml:4: ageing_secs = 0: use 1 to 1000000"),
        ("[[bridge]]\nname = \"a\"\nmtu = 10\n", "b.toml:1: [[bridge]] a: host port MTU 10: use 68 to 65535"),
    ] {
        let e = parse(bad, "b.toml").unwrap_err().0;
        assert!(e[0].contains(says), "{bad}: {e:?}");
    }
}

#[test]
fn run_flags_make_one_bridge_or_none() {
    assert!(flags(&[]).unwrap().bridges.is_empty(), "`run` alone waits for bridges");
    let s = flags(&["--port", "a"]).unwrap();
    assert_eq!((s.bridges.len(), s.bridges[0].name.as_str()), (1, DEFAULT_BRIDGE));
    let s = flags(&["--port", "a", "--bridge", "lan0"]).unwrap();
    assert_eq!((s.bridges[0].name.as_str(), &s.bridges[0].host), ("lan0", &None));
    let s = flags(&["--host-port", "cni0", "--port", "a"]).unwrap();
    assert_eq!(s.bridges[0].name, "cni0");
    assert!(s.bridges[0].host.is_some());
    assert!(flags(&["--host-port", "cni0", "--bridge", "cni0"]).is_ok(), "the same name twice is one bridge");
    let e = flags(&["--host-port", "cni0", "--bridge", "lan0"]).unwrap_err();
    assert!(e.starts_with("--bridge: lan0: the bridge is named after its host port (cni0)"), "{e}");
    let e = flags(&["--port", "a", "--bridge", "a"]).unwrap_err();
    assert_eq!(e, "--port: port 'a' has its bridge's name: a bridge and its ports are interfaces of their own");
    assert!(flags(&["--remove-bridges"]).unwrap().remove_bridges);
}
