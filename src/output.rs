//! Text output in the style of iproute2.

use serde_json::Value;
use std::fmt::Write;

/// `MAC dev PORT vlan N [static|age S]`, like `bridge fdb show`.
pub fn fdb(entries: &Value) -> String {
    let mut s = String::new();
    for e in entries.as_array().into_iter().flatten() {
        let port = e["port"].as_str().unwrap_or("?");
        let _ = write!(s, "{} dev {} vlan {}", e["mac"].as_str().unwrap_or("?"), port, e["vlan"]);
        if e["state"] == "static" {
            s.push_str(" static\n");
        } else {
            let _ = writeln!(s, " age {:.1}s", e["age_secs"].as_f64().unwrap_or(0.0));
        }
    }
    s
}

pub fn ports(result: &Value) -> String {
    let mut s = String::new();
    for p in result["ports"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{}: {} <{}> kind {} mtu {} fdb {}",
            p["id"],
            p["name"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?").to_uppercase(),
            p["kind"].as_str().unwrap_or("?"),
            p["mtu"],
            p["fdb_learned"]
        );
    }
    s
}

pub fn stats(result: &Value) -> String {
    let mut s = ports(result);
    for p in result["ports"].as_array().into_iter().flatten() {
        let c = &p["counters"];
        let _ = writeln!(s, "{}:", p["name"].as_str().unwrap_or("?"));
        let _ = writeln!(s, "    RX: frames {} bytes {} flooded {}", c["rx_frames"], c["rx_bytes"], c["flooded"]);
        let _ = writeln!(s, "    TX: frames {} bytes {}", c["tx_frames"], c["tx_bytes"]);
        let drops: Vec<String> = c["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_u64() != Some(0))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "    drops: {}", if drops.is_empty() { "none".to_string() } else { drops.join(" ") });
    }
    let f = &result["fdb"];
    let e = &f["events"];
    let l = &result["links"];
    let _ = writeln!(s, "links: down {} up {} gone {} reattached {}", l["down"], l["up"], l["gone"], l["reattached"]);
    let lp = &result["loops"];
    let _ = writeln!(
        s,
        "loops: detect {} found {} blocked {} unblocked {}",
        lp["mode"], lp["detected"], lp["blocked"], lp["unblocked"]
    );
    let _ = writeln!(
        s,
        "fdb: entries {} learned {} ageing {}s events: learned {} moved {} aged {} refused {} flushed {} flaps {}",
        f["entries"],
        f["learned"],
        f["ageing_secs"],
        e["learned"],
        e["moved"],
        e["aged"],
        e["refused"],
        e["flushed"],
        e["flaps"]
    );
    s
}

/// A change the daemon made: `key value` pairs on one line.
pub fn done(result: &Value) -> String {
    let mut s = String::new();
    for (k, v) in result.as_object().into_iter().flatten() {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let _ = write!(s, "{}{k} {v}", if s.is_empty() { "" } else { " " });
    }
    s.push('\n');
    s
}

pub fn mirrors(list: &Value) -> String {
    let mut s = String::new();
    for m in list.as_array().into_iter().flatten() {
        let from = m["from"].as_str().unwrap_or("?");
        match (m["to"].as_str(), m["pcap"].as_str()) {
            (Some(to), _) => _ = writeln!(s, "{from} -> port {to}"),
            (_, Some(p)) => {
                _ = writeln!(
                    s,
                    "{from} -> pcap {p} written {} bytes {} of {} dropped {}",
                    m["written"], m["bytes"], m["max_bytes"], m["dropped"]
                )
            }
            _ => _ = writeln!(s, "{from} -> ?"),
        }
    }
    s
}
