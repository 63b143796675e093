//! A reload's changes to one bridge that stays: its settings and the
//! policies of the configured ports it keeps. Which ports come and go, and
//! which bridges, is `crate::daemon`'s (it reserves names across bridges).

use super::{Bridge, lock};
use crate::config::{BridgeSettings, HostSettings};
use ub_proto::{Origin, PortPolicy};

/// What of a bridge's settings differs between `old` and `new` but takes
/// effect only at a restart, by name. A host port's VLANs are not among
/// them: a reload applies those.
pub fn restart_only(old: &BridgeSettings, new: &BridgeSettings) -> Vec<&'static str> {
    let host = |s: &BridgeSettings| s.host.as_ref().map(|h| HostSettings { vlans: None, ..h.clone() });
    let mut v = Vec::new();
    if host(old) != host(new) {
        v.push("its host port");
    }
    if (old.fdb.max_entries, old.fdb.max_per_port) != (new.fdb.max_entries, new.fdb.max_per_port) {
        v.push("fdb max_entries and max_per_port");
    }
    v
}

impl Bridge {
    /// Brings the bridge's settings to `new` (its ports are attached and
    /// detached by the caller): ageing, VLAN filtering, the policies of the
    /// configured ports that stay, the host port's VLANs, loop detection,
    /// storm limits, statics. Returns what it did, one line each.
    pub fn apply(&self, new: &BridgeSettings) -> Vec<String> {
        let mut done = Vec::new();
        let old = self.settings();
        if new.fdb.ageing_ms != old.fdb.ageing_ms {
            self.sw.fdb.set_ageing_ms(new.fdb.ageing_ms);
            done.push(format!("ageing {} s", new.fdb.ageing_ms / 1000));
        }
        if new.vlan_filtering != old.vlan_filtering {
            self.set_vlan_filtering(new.vlan_filtering);
            done.push(format!("vlan filtering {}", if new.vlan_filtering { "on" } else { "off" }));
        }
        for spec in &new.ports {
            let kept = self.spec(&spec.name).filter(|s| s.origin == Origin::Config);
            if kept.is_some_and(|s| s.policy != spec.policy) {
                match self.change_policy(&spec.name, |p| *p = spec.policy.clone()) {
                    Ok(_) => done.push(format!("policy of {}", spec.name)),
                    Err(e) => done.push(format!("could not change the policy of {}: {e}", spec.name)),
                }
            }
        }
        if let (Some(h), Some(oh)) = (&new.host, &old.host)
            && h.vlans != oh.vlans
        {
            let vlans = h.vlans.clone().unwrap_or_else(|| PortPolicy::default().vlans);
            match self.change_policy(&h.name, |p| p.vlans = vlans) {
                Ok(_) => done.push(format!("vlans of {}", h.name)),
                Err(e) => done.push(format!("could not change the vlans of {}: {e}", h.name)),
            }
        }
        if new.loop_detect != old.loop_detect {
            self.sw.loop_guard.set_mode(new.loop_detect);
            done.push(format!("loop detection {}", new.loop_detect.as_str()));
        }
        if new.storm != old.storm {
            self.sw.set_storm_limits(new.storm);
            let s = new.storm;
            done.push(format!(
                "storm limits broadcast {} multicast {} unknown unicast {} frames/s",
                s.broadcast_pps, s.multicast_pps, s.unknown_unicast_pps
            ));
        }
        for st in old.statics.iter().filter(|s| !new.statics.contains(s)) {
            self.sw.fdb.remove(st.vlan, st.mac);
            done.push(format!("static {} removed", st.mac));
        }
        for st in new.statics.iter().filter(|s| !old.statics.contains(s)) {
            match self.add_static(st) {
                Ok(()) => done.push(format!("static {} dev {} added", st.mac, st.port)),
                Err(e) => done.push(format!("static {}: {e}", st.mac)),
            }
        }
        let later = restart_only(&old, new);
        if !later.is_empty() {
            done.push(format!("{}: {} change only at restart", self.name, later.join(", ")));
        }
        // What applies only at restart stays as it started; the host port
        // takes its new VLANs, applied above.
        let host = match (&old.host, &new.host) {
            (Some(o), Some(n)) => Some(HostSettings { vlans: n.vlans.clone(), ..o.clone() }),
            (o, _) => o.clone(),
        };
        let fdb = ub_fdb::FdbConfig { max_entries: old.fdb.max_entries, max_per_port: old.fdb.max_per_port, ..new.fdb };
        *lock(&self.settings) = BridgeSettings { host, fdb, ..new.clone() };
        done
    }
}
