//! SIGHUP: the configuration file read again and the difference applied.
//! Only what the file owns changes; ports added at run time stay as they are.

use super::{Daemon, lock};
use crate::config::{HostSettings, Settings};
use std::sync::atomic::Ordering;
use ub_proto::{Backend, IfName, Origin, PortPolicy};

/// The settings that differ between `old` and `new` but take effect only
/// at a restart, by name. A host port's VLANs are not among them: a
/// reload applies those.
pub fn restart_only(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let host = |s: &Settings| s.host.as_ref().map(|h| HostSettings { vlans: None, ..h.clone() });
    let mut v = Vec::new();
    let mut differs = |what, changed: bool| {
        if changed {
            v.push(what);
        }
    };
    differs("[host]", host(old) != host(new));
    differs("state_dir", old.state_dir != new.state_dir);
    differs("socket", old.socket != new.socket);
    differs("metrics", old.metrics != new.metrics);
    differs("netns", old.netns != new.netns);
    differs("[ring]", old.rx != new.rx);
    differs("[threads]", old.threads != new.threads);
    differs("[fdb] max_entries and max_per_port", {
        (old.fdb.max_entries, old.fdb.max_per_port) != (new.fdb.max_entries, new.fdb.max_per_port)
    });
    differs("log_level", old.log_level != new.log_level);
    v
}

impl Daemon {
    /// Brings the switch to `new`: attaches the configured ports added,
    /// detaches the configured ports removed (unchanged ports are not
    /// touched; ports added at run time are never touched), applies FDB
    /// settings and statics. Returns what it did, one line each.
    pub fn apply(&self, new: Settings) -> Vec<String> {
        let mut done = Vec::new();
        let old = self.settings();
        let owned: Vec<IfName> = lock(&self.ports)
            .values()
            .filter(|a| a.spec.origin == Origin::Config && a.spec.backend != Backend::Host)
            .map(|a| a.spec.name.clone())
            .collect();
        for spec in new.ports.iter().filter(|p| !owned.contains(&p.name)) {
            if self.spec(&spec.name).is_some_and(|s| s.origin == Origin::Runtime) {
                done.push(format!("{} is attached at run time: left to whoever added it", spec.name));
                continue;
            }
            match self.attach(spec.clone()) {
                Ok(_) => done.push(format!("added {}", spec.name)),
                Err(e) => done.push(format!("could not add {}: {e}", spec.name)),
            }
        }
        for name in owned.iter().filter(|n| !new.ports.iter().any(|p| &p.name == *n)) {
            match self.detach(name) {
                Ok(_) => done.push(format!("removed {name}")),
                Err(e) => done.push(format!("could not remove {name}: {e}")),
            }
        }
        if new.fdb.ageing_ms != old.fdb.ageing_ms {
            self.sw.fdb.set_ageing_ms(new.fdb.ageing_ms);
            done.push(format!("ageing {} s", new.fdb.ageing_ms / 1000));
        }
        if new.vlan_filtering != old.vlan_filtering {
            self.set_vlan_filtering(new.vlan_filtering);
            done.push(format!("vlan filtering {}", if new.vlan_filtering { "on" } else { "off" }));
        }
        // Policies of the configured ports that stay: applied whole, per port.
        for spec in new.ports.iter().filter(|p| owned.contains(&p.name)) {
            if self.spec(&spec.name).is_some_and(|s| s.policy != spec.policy) {
                match self.change_policy(&spec.name, |p| *p = spec.policy.clone()) {
                    Ok(_) => done.push(format!("policy of {}", spec.name)),
                    Err(e) => done.push(format!("could not change the policy of {}: {e}", spec.name)),
                }
            }
        }
        if let (Some(h), Some(oh)) = (&new.host, &old.host)
            && h.name == oh.name
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
        let later = restart_only(&old, &new);
        if !later.is_empty() {
            done.push(format!("{} change only at restart", later.join(", ")));
        }
        // What applies only at restart stays as it started; the host port
        // takes its new VLANs, applied above.
        let host = match (old.host, &new.host) {
            (Some(o), Some(n)) if o.name == n.name => Some(HostSettings { vlans: n.vlans.clone(), ..o }),
            (o, _) => o,
        };
        *lock(&self.settings) = Settings {
            host,
            state_dir: old.state_dir,
            socket: old.socket,
            metrics: old.metrics,
            netns: old.netns,
            rx: old.rx,
            threads: old.threads,
            log_level: old.log_level,
            fdb: ub_fdb::FdbConfig { max_entries: old.fdb.max_entries, max_per_port: old.fdb.max_per_port, ..new.fdb },
            ..new
        };
        done
    }

    /// SIGHUP: re-reads the configuration file and applies the difference.
    pub fn reload(&self) {
        let Some(path) = &self.config_path else {
            tracing::warn!("SIGHUP ignored: the daemon was not started with --config");
            self.counters.reload_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match Settings::load(path) {
            Ok(new) => {
                let done = self.apply(new);
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(config = %path.display(), changes = ?done, "configuration reloaded");
            }
            Err(errs) => {
                self.counters.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(config = %path.display(), errors = %errs, "configuration not reloaded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        crate::config::file::parse(text, "r.toml").unwrap().build().unwrap()
    }

    #[test]
    fn a_host_ports_vlans_apply_at_a_reload_and_are_not_reported_as_waiting_for_a_restart() {
        let old = settings("[host]\nname = \"cni0\"\n");
        let new = settings("[host]\nname = \"cni0\"\nvlans = [{ vid = 10, pvid = true, untagged = true }]\n");
        assert_eq!(restart_only(&old, &new), Vec::<&str>::new());
        let moved = settings("[host]\nname = \"cni0\"\naddresses = [\"10.0.0.1/24\"]\n");
        assert_eq!(restart_only(&old, &moved), ["[host]"]);
        let other = settings("log_level = \"warn\"\n[host]\nname = \"cni0\"\n[ring]\nslots = 1024\n");
        assert_eq!(restart_only(&old, &other), ["[ring]", "log_level"]);
    }
}
