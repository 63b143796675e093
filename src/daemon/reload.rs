//! SIGHUP: the configuration file read again and the difference applied.
//! Only what the file owns changes: its bridges and their ports. Bridges
//! and ports made at run time stay as they are.

use super::Daemon;
use crate::config::{BridgeSettings, Settings};
use crate::lock;
use std::sync::atomic::Ordering;
use ub_proto::{Backend, IfName, Origin};

/// The daemon's settings that differ between `old` and `new` but take
/// effect only at a restart, by name.
pub fn restart_only(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut differs = |what, changed: bool| {
        if changed {
            v.push(what);
        }
    };
    differs("state_dir", old.state_dir != new.state_dir);
    differs("socket", old.socket != new.socket);
    differs("metrics", old.metrics != new.metrics);
    differs("netns", old.netns != new.netns);
    differs("[ring]", old.rx != new.rx);
    differs("[threads]", old.threads != new.threads);
    differs("log_level", old.log_level != new.log_level);
    v
}

impl Daemon {
    /// Brings the daemon to `new`: makes the configured bridges added,
    /// deletes those removed (unless ports were added to them at run time),
    /// and for each that stays attaches its configured ports added,
    /// detaches those removed and applies its settings. Returns what it
    /// did, one line each.
    pub fn apply(&self, new: Settings) -> Vec<String> {
        let mut done = Vec::new();
        let old = self.settings();
        for b in &new.bridges {
            match self.bridge_named(&b.name) {
                None => match self.add_configured_bridge(b) {
                    Ok(_) => done.push(format!("bridge {} made", b.name)),
                    Err(e) => done.push(format!("could not make bridge {}: {e}", b.name)),
                },
                Some(have) if have.origin == Origin::Runtime => {
                    done.push(format!("bridge {} was made at run time: left to whoever made it", b.name));
                }
                Some(_) => done.extend(self.apply_bridge(b)),
            }
        }
        let configured = self.bridges().into_iter().filter(|b| b.origin == Origin::Config);
        for b in configured.filter(|b| !new.bridges.iter().any(|n| n.name == b.name)) {
            let runtime = b.runtime().0;
            if !runtime.is_empty() {
                let names: Vec<String> = runtime.iter().map(|s| s.name.to_string()).collect();
                done.push(format!("bridge {} kept: ports added at run time ({}) are on it", b.name, names.join(", ")));
                continue;
            }
            match self.del_bridge(&b.name, true) {
                Ok(_) => done.push(format!("bridge {} deleted", b.name)),
                Err(e) => done.push(format!("could not delete bridge {}: {e}", b.name)),
            }
        }
        let later = restart_only(&old, &new);
        if !later.is_empty() {
            done.push(format!("{} change only at restart", later.join(", ")));
        }
        *lock(&self.settings) = Settings {
            state_dir: old.state_dir,
            socket: old.socket,
            metrics: old.metrics,
            netns: old.netns,
            rx: old.rx,
            threads: old.threads,
            log_level: old.log_level,
            ..new
        };
        done
    }

    /// A configured bridge that stays: its ports added and removed, then
    /// its settings.
    fn apply_bridge(&self, new: &BridgeSettings) -> Vec<String> {
        let mut done = Vec::new();
        let Some(b) = self.bridge_named(&new.name) else { return done };
        let nf = b.netfilter_port();
        let owned: Vec<IfName> = b
            .specs()
            .into_values()
            .filter(|s| s.origin == Origin::Config && s.backend != Backend::Host && Some(&s.name) != nf.as_ref())
            .map(|s| s.name)
            .collect();
        for spec in new.ports.iter().filter(|p| !owned.contains(&p.name)) {
            if b.spec(&spec.name).is_some_and(|s| s.origin == Origin::Runtime) {
                done.push(format!("{} is attached at run time: left to whoever added it", spec.name));
                continue;
            }
            match self.attach(&b, spec.clone()) {
                Ok(_) => done.push(format!("added {}", spec.name)),
                Err(e) => done.push(format!("could not add {}: {e}", spec.name)),
            }
        }
        for name in owned.iter().filter(|n| !new.ports.iter().any(|p| &p.name == *n)) {
            match b.detach(name) {
                Ok(_) => done.push(format!("removed {name}")),
                Err(e) => done.push(format!("could not remove {name}: {e}")),
            }
        }
        done.extend(b.apply(new));
        self.netfilter_apply(&b);
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
    use crate::bridge::restart_only;

    fn settings(text: &str) -> crate::config::Settings {
        crate::config::file::parse(text, "r.toml").unwrap().build().unwrap()
    }

    #[test]
    fn a_host_ports_vlans_apply_at_a_reload_and_are_not_reported_as_waiting_for_a_restart() {
        let old = settings("[host]\nname = \"cni0\"\n");
        let new = settings("[host]\nname = \"cni0\"\nvlans = [{ vid = 10, pvid = true, untagged = true }]\n");
        assert_eq!(restart_only(&old.bridges[0], &new.bridges[0]), Vec::<&str>::new());
        let moved = settings("[host]\nname = \"cni0\"\naddresses = [\"10.0.0.1/24\"]\n");
        assert_eq!(restart_only(&old.bridges[0], &moved.bridges[0]), ["its host port"]);
        let other = settings("log_level = \"warn\"\n[host]\nname = \"cni0\"\n[ring]\nslots = 1024\n");
        assert_eq!(super::restart_only(&old, &other), ["[ring]", "log_level"]);
        assert_eq!(restart_only(&old.bridges[0], &other.bridges[0]), Vec::<&str>::new());
    }
}
