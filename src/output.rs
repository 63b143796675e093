//! Text output of the client commands, in the style of iproute2 (`-j` prints
//! the reply itself as JSON instead).

use std::fmt::Write;
use ub_proto::*;

/// What a client command prints: text for people, the reply for machines.
pub trait Show {
    fn show(&self) -> String;
}

/// `MAC dev PORT master BRIDGE vlan N [static|age S]`, like `bridge fdb show`.
impl Show for Vec<FdbEntry> {
    fn show(&self) -> String {
        let mut s = String::new();
        for e in self {
            let _ = write!(s, "{} dev {} master {} vlan {}", e.mac, e.port.as_deref().unwrap_or("?"), e.bridge, e.vlan);
            match e.state {
                EntryState::Static => s.push_str(" static\n"),
                EntryState::Learned => _ = writeln!(s, " age {:.1}s", e.age_secs),
            }
        }
        s
    }
}

/// `ID: NAME <STATE> master BRIDGE kind K mtu N fdb N [origin] [container …]`, one per port.
impl Show for Vec<PortStatus> {
    fn show(&self) -> String {
        let mut s = String::new();
        for p in self {
            let _ = write!(
                s,
                "{}: {} <{}> master {} kind {} mtu {} fdb {}",
                p.id,
                p.name,
                format!("{:?}", p.state).to_uppercase(),
                p.bridge,
                p.kind.as_str(),
                p.mtu,
                p.fdb_learned
            );
            if p.origin == Origin::Config {
                s.push_str(" config");
            }
            if p.promisc {
                s.push_str(" promisc");
            }
            s.push_str(&knobs(&p.policy));
            let m = &p.meta;
            if let Some(c) = &m.container_id {
                let _ = write!(s, " container {}", &c[..c.len().min(12)]);
            }
            if let Some(i) = &m.ifname {
                let _ = write!(s, " ifname {i}");
            }
            if let Some(n) = &m.network {
                let _ = write!(s, " network {n}");
            }
            if let Some(e) = &m.endpoint {
                let _ = write!(s, " endpoint {}", &e[..e.len().min(12)]);
            }
            s.push('\n');
        }
        s
    }
}

/// A policy's knobs that are not the default, as `bridge link` words:
/// those on first (` isolated hairpin`), then those off (` learning off`).
fn knobs(p: &PortPolicy) -> String {
    let mut s = String::new();
    let values = p.knobs();
    for want_on in [true, false] {
        for ((name, _, default), on) in PortPolicy::KNOBS.iter().zip(&values) {
            if *on != *default && *on == want_on {
                s.push(' ');
                s.push_str(name);
                if !on {
                    s.push_str(" off");
                }
            }
        }
    }
    s
}

/// `1 PVID untagged`, `10`, ... like `bridge vlan show`.
fn vlan_words(vlans: &[VlanEntry]) -> String {
    let v: Vec<String> = vlans
        .iter()
        .map(|e| {
            let mut w = e.vid.to_string();
            if e.pvid {
                w.push_str(" PVID");
            }
            if e.untagged {
                w.push_str(" untagged");
            }
            w
        })
        .collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

impl Show for PortPolicySet {
    fn show(&self) -> String {
        let p = &self.policy;
        let mut s = format!("{}:{}\n", self.port, knobs(p));
        if !p.macs.is_empty() {
            let m: Vec<String> = p.macs.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "    macs {}", m.join(" "));
        }
        if !p.ips.is_empty() {
            let i: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "    ips {}", i.join(" "));
        }
        s
    }
}

impl Show for VlanPort {
    fn show(&self) -> String {
        format!("{} {}\n", self.port, vlan_words(&self.vlans))
    }
}

impl Show for Vec<VlanPort> {
    fn show(&self) -> String {
        self.iter().map(Show::show).collect()
    }
}

impl Show for VlanFiltering {
    fn show(&self) -> String {
        format!("vlan filtering {}\n", if self.vlan_filtering { "on" } else { "off" })
    }
}

/// `10.0.0.2 lladdr 02:... dev veth1 told|age 3.0s [local]`, like `ip neigh`.
impl Show for Vec<NeighInfo> {
    fn show(&self) -> String {
        let mut s = String::new();
        for n in self {
            let _ = write!(s, "{} lladdr {} dev {}", n.ip, n.mac, n.port.as_deref().unwrap_or("?"));
            if n.told {
                s.push_str(" told");
            } else {
                let _ = write!(s, " age {:.1}s", n.age_secs);
            }
            if n.local {
                s.push_str(" local");
            }
            s.push('\n');
        }
        s
    }
}

impl Show for Traced {
    fn show(&self) -> String {
        let mut s = String::new();
        for st in &self.steps {
            let _ = writeln!(s, "{:<15} {}", format!("{}:", st.step), st.detail);
        }
        for e in &self.egress {
            let _ = writeln!(s, "  {} {:<16} {}", if e.sent { "->" } else { "  " }, e.port, e.why);
        }
        let _ = writeln!(s, "decision: {} (vlan {}, bridge {})", self.decision, self.vlan, self.bridge);
        s
    }
}

fn pairs(m: &std::collections::BTreeMap<String, u64>, skip_zero: bool) -> String {
    let v: Vec<String> = m.iter().filter(|(_, n)| !skip_zero || **n != 0).map(|(k, n)| format!("{k} {n}")).collect();
    if v.is_empty() { "none".into() } else { v.join(" ") }
}

impl Show for Status {
    fn show(&self) -> String {
        let mut s = format!("bridge {}\n", self.bridge);
        s.push_str(&self.ports.show());
        for p in &self.ports {
            let c = &p.counters;
            let _ = writeln!(s, "{}:", p.name);
            let _ = writeln!(s, "    RX: frames {} bytes {} flooded {}", c.rx_frames, c.rx_bytes, c.flooded);
            let _ = writeln!(s, "    TX: frames {} bytes {}", c.tx_frames, c.tx_bytes);
            let _ = writeln!(s, "    drops: {}", pairs(&c.drops, true));
            if c.reader_panics != 0 {
                let _ = writeln!(s, "    reader panics: {}", c.reader_panics);
            }
        }
        let _ = writeln!(s, "links: {}", pairs(&self.links, false));
        let _ = writeln!(s, "loops: detect {} {}", self.loops.mode, pairs(&self.loops.events, false));
        let _ = writeln!(s, "vlan filtering {}", if self.vlan_filtering { "on" } else { "off" });
        if let Some(nf) = &self.netfilter {
            let c = &nf.counters;
            let _ = writeln!(
                s,
                "netfilter {} via {}: to the kernel {} frames, back {}, drops: {}",
                if nf.on { "on" } else { "off" },
                nf.port,
                c.tx_frames,
                c.rx_frames,
                pairs(&c.drops, true)
            );
        }
        let f = &self.fdb;
        let _ = writeln!(
            s,
            "fdb: entries {} learned {} ageing {}s events: {}",
            f.entries,
            f.learned,
            f.ageing_secs,
            pairs(&f.events, false)
        );
        let d = &self.daemon;
        let _ = writeln!(
            s,
            "daemon: pid {} reloads {} reload_errors {} thread_panics {} reader_helpers {}",
            d.pid, d.reloads, d.reload_errors, d.thread_panics, d.reader_helpers
        );
        s
    }
}

impl Show for Vec<MirrorInfo> {
    fn show(&self) -> String {
        let mut s = String::new();
        for m in self {
            match (&m.to, &m.file) {
                (Some(to), _) => _ = writeln!(s, "{} -> port {to}", m.from),
                (_, Some(f)) => {
                    _ = writeln!(
                        s,
                        "{} -> pcap {} written {} bytes {} of {} dropped {}",
                        m.from, f.pcap, f.written, f.bytes, f.max_bytes, f.dropped
                    )
                }
                _ => _ = writeln!(s, "{} -> ?", m.from),
            }
        }
        s
    }
}

/// A change the daemon made: its fields on one line, `key value`.
macro_rules! show_done {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                let mut s = String::new();
                if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(self) {
                    for (k, v) in m {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        let _ = write!(s, "{}{k} {v}", if s.is_empty() { "" } else { " " });
                    }
                }
                s.push('\n');
                s
            }
        }
    )*};
}

impl Show for Upgrading {
    fn show(&self) -> String {
        format!("upgraded: pid {} took over from pid {} ({})\n", self.pid, self.from, self.binary)
    }
}

show_done!(FdbAdded, FdbRemoved, Flushed, PortAdded, Ageing, Mirroring, MirrorStopped);

/// `NAME: [host MAC mtu N ADDRESSES|no host port] ports N fdb N [vlan_filtering] [netfilter on|off] [config] [network NET]`.
impl Show for Vec<BridgeInfo> {
    fn show(&self) -> String {
        let mut s = String::new();
        for b in self {
            let _ = write!(s, "{}:", b.name);
            match &b.host {
                Some(h) => {
                    let _ = write!(s, " host {} mtu {}", h.mac, h.mtu);
                    for a in &h.addresses {
                        let _ = write!(s, " {a}");
                    }
                }
                None => s.push_str(" no host port"),
            }
            let _ = write!(s, " ports {} fdb {}", b.ports, b.fdb_entries);
            if b.vlan_filtering {
                s.push_str(" vlan_filtering");
            }
            if let Some(nf) = &b.netfilter {
                let _ = write!(s, " netfilter {nf}");
            }
            if b.origin == Origin::Config {
                s.push_str(" config");
            }
            if let Some(n) = &b.network {
                let _ = write!(s, " network {n}");
            }
            s.push('\n');
        }
        s
    }
}

impl Show for BridgeAdded {
    fn show(&self) -> String {
        if self.created { format!("added {}\n", self.added) } else { format!("{} was there\n", self.added) }
    }
}

impl Show for BridgeRemoved {
    fn show(&self) -> String {
        let mut s = format!("removed {}", self.removed);
        if !self.detached.is_empty() {
            let names: Vec<String> = self.detached.iter().map(ToString::to_string).collect();
            let _ = write!(s, " (detached {})", names.join(" "));
        }
        s.push('\n');
        s
    }
}

impl Show for PortRemoved {
    fn show(&self) -> String {
        if self.existed { format!("removed {}\n", self.removed) } else { format!("no port {}\n", self.removed) }
    }
}
