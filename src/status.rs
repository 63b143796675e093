//! A bridge's whole status, built in one place from one snapshot of its
//! switch: `stats`, `port list` and the other listings (crate::control)
//! and every `/metrics` scrape (crate::metrics) read it.

use crate::bridge::Bridge;
use crate::daemon::Daemon;
use std::sync::atomic::{AtomicU64, Ordering};
use ub_proto::{Counters, DaemonStatus, FdbStatus, LoopStatus, NetfilterStatus, Origin, PortStatus, Status};

/// Bridge `b`'s status now, with the daemon's own counters.
pub fn of(d: &Daemon, b: &Bridge) -> Status {
    let st = b.sw.stats();
    let specs = b.specs();
    let promisc = b.sw.promisc();
    let pairs = |it: &[(&str, u64)]| it.iter().map(|(k, v)| ((*k).to_string(), *v)).collect();
    let (nf, ports): (Vec<PortStatus>, Vec<PortStatus>) = st
        .ports
        .into_iter()
        .filter_map(|p| {
            let spec = specs.get(&p.id);
            let name = spec.map(|s| s.name.clone()).or_else(|| ub_proto::IfName::new(&p.name).ok())?;
            Some(PortStatus {
                bridge: b.name.to_string(),
                id: p.id,
                name,
                kind: p.kind,
                state: p.state,
                mtu: p.mtu,
                fdb_learned: p.fdb_learned,
                origin: spec.map_or(Origin::Runtime, |s| s.origin),
                promisc: promisc == Some(p.id),
                policy: p.policy.spec.clone(),
                meta: spec.map(|s| s.meta.clone()).unwrap_or_default(),
                counters: Counters {
                    rx_frames: p.counters.rx_frames,
                    rx_bytes: p.counters.rx_bytes,
                    tx_frames: p.counters.tx_frames,
                    tx_bytes: p.counters.tx_bytes,
                    flooded: p.counters.flooded,
                    reader_panics: p.counters.reader_panics,
                    drops: p.counters.drops.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
                },
            })
        })
        .partition(|p| Some(&p.name) == b.netfilter_port().as_ref());
    Status {
        bridge: b.name.to_string(),
        ports,
        vlan_filtering: b.sw.vlan_filtering(),
        fdb: FdbStatus {
            entries: st.fdb_entries as u64,
            learned: st.fdb_learned as u64,
            ageing_secs: st.ageing_ms as f64 / 1000.0,
            events: pairs(&st.fdb_events),
        },
        links: pairs(&d.links.events()),
        storm: st.storm,
        loops: LoopStatus {
            mode: b.sw.loop_guard.mode().as_str().into(),
            probe_mac: b.sw.loop_guard.mac,
            events: pairs(&st.loop_events),
        },
        daemon: daemon(d),
        netfilter: nf.into_iter().next().map(|p| NetfilterStatus {
            on: b.netfilter().1,
            port: p.name,
            counters: p.counters,
        }),
    }
}

/// The daemon's own counters.
pub fn daemon(d: &Daemon) -> DaemonStatus {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    DaemonStatus {
        pid: std::process::id(),
        reloads: ld(&d.counters.reloads),
        reload_errors: ld(&d.counters.reload_errors),
        thread_panics: ld(&d.counters.thread_panics),
        reader_helpers: d.bridges().iter().map(|b| b.sw.reader_helpers() as u64).sum(),
    }
}
