//! The daemon: its bridges (`crate::bridge`), and what they share. A
//! request names a bridge, or a port (which is in one bridge), or neither:
//! then it means the daemon's only bridge. Port and bridge names share
//! the node's interface names, so they are reserved here, across bridges,
//! while a port opens or a bridge is made. Also here: the state file
//! (run-time bridges, ports and host addresses survive a restart), a reload
//! of the configuration (`reload.rs`), link events (`links.rs`) and the
//! ager's pass over every bridge. Nothing here starts a thread of the
//! daemon's own, opens a socket for clients or reads a signal:
//! `crate::start` wires those to it.

mod error;
mod links;
mod reload;

pub use error::DaemonError;
pub use links::Watched;

use crate::bridge::{Bridge, Opener};
use crate::config::{BridgeSettings, Settings};
use crate::lock;
use crate::state::{Saved, SavedBridge, StateFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use ub_datapath::{PortId, Restart};
use ub_netlink::NetNs;
use ub_port::OpenOptions;
use ub_proto::{BridgeAdd, IfName, Origin, PortPolicy, PortSpec};

/// Link events the daemon has followed.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub down: AtomicU64,
    pub up: AtomicU64,
    pub gone: AtomicU64,
    pub reattached: AtomicU64,
    /// A host port was deleted by someone and made again.
    pub host_recreated: AtomicU64,
    /// Link notifications were lost (ENOBUFS) or failed, and the links were read again whole.
    pub resyncs: AtomicU64,
}

impl LinkCounters {
    /// The counters by name: the one list `stats` and `/metrics` show.
    pub fn events(&self) -> [(&'static str, u64); 6] {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("down", ld(&self.down)),
            ("up", ld(&self.up)),
            ("gone", ld(&self.gone)),
            ("reattached", ld(&self.reattached)),
            ("host_recreated", ld(&self.host_recreated)),
            ("resyncs", ld(&self.resyncs)),
        ]
    }
}

/// What the daemon itself has done (beyond its bridges).
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
    /// Panics of the daemon's own threads, each restarted (shared with them).
    pub thread_panics: Arc<AtomicU64>,
}

/// The daemon: its bridges and everything that changes them at run time.
#[derive(Debug)]
pub struct Daemon {
    pub opener: Opener,
    bridges: RwLock<BTreeMap<IfName, Arc<Bridge>>>,
    /// Names being attached or made right now: a table is not locked while
    /// a port opens, so `stats` and scrapes never wait behind an attach.
    opening: Mutex<BTreeSet<IfName>>,
    /// What the configuration asks for (its bridges and ports are the `config` ones).
    settings: Mutex<Settings>,
    config_path: Option<PathBuf>,
    pub links: LinkCounters,
    pub counters: DaemonCounters,
    /// Where run-time bridges and ports are recorded (none for a daemon built in a test).
    state: Mutex<Option<StateFile>>,
    /// What the node's netfilter does to bridged traffic (`crate::netfilter`).
    node_filter: Mutex<crate::netfilter::NodeFilter>,
    /// Held (read) while a control request is served; a handover takes it
    /// (write) once `handing_over` is set, so it waits for those in flight.
    pub gate: RwLock<()>,
    /// A handover has begun: requests are told to retry.
    pub handing_over: Arc<AtomicBool>,
    /// The new daemon an `upgrade` started, and the last that failed.
    pub upgrade: Arc<Mutex<Upgrades>>,
}

/// What `upgrade` has started (src/upgrade.rs).
#[derive(Debug, Default)]
pub struct Upgrades {
    /// The new daemon's pid while it runs beside this one.
    pub running: Option<u32>,
    pub failed: Option<ub_proto::FailedUpgrade>,
}

/// A name reserved while its port opens or its bridge is made; freed when dropped.
struct Reserved<'d> {
    d: &'d Daemon,
    name: IfName,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        lock(&self.d.opening).remove(&self.name);
    }
}

impl Daemon {
    /// A daemon with no bridge yet, for `settings`, whose host ports live
    /// in `start_ns` (`None`: the calling thread's namespace).
    pub fn new(settings: Settings, config_path: Option<PathBuf>, start_ns: Option<Arc<NetNs>>) -> Arc<Daemon> {
        let open = OpenOptions {
            rx: settings.rx,
            holder: format!("pid {}, socket {}", std::process::id(), settings.socket.display()),
            ..OpenOptions::default()
        };
        Arc::new(Daemon {
            opener: Opener { open, threads: settings.threads, restart: Restart::default(), start_ns },
            bridges: RwLock::new(BTreeMap::new()),
            opening: Mutex::new(BTreeSet::new()),
            config_path,
            links: LinkCounters::default(),
            counters: DaemonCounters::default(),
            state: Mutex::new(None),
            node_filter: Mutex::default(),
            gate: RwLock::new(()),
            handing_over: Arc::default(),
            upgrade: Arc::default(),
            settings: Mutex::new(settings),
        })
    }

    /// The configuration the daemon runs with now.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Every bridge, by name.
    pub fn bridges(&self) -> Vec<Arc<Bridge>> {
        self.bridges.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    /// Bridge `name`, if there is one.
    pub fn bridge_named(&self, name: &str) -> Option<Arc<Bridge>> {
        self.bridges.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// The bridge a request means: the one it names, or the daemon's only
    /// one (an error names them when there are several).
    pub fn bridge(&self, name: Option<&IfName>) -> Result<Arc<Bridge>, DaemonError> {
        if let Some(n) = name {
            return self.bridge_named(n).ok_or_else(|| DaemonError::NoSuchBridge(n.to_string()));
        }
        let all = self.bridges();
        match all.as_slice() {
            [] => Err(DaemonError::NoBridge),
            [one] => Ok(one.clone()),
            many => Err(DaemonError::SeveralBridges(many.iter().map(|b| b.name.to_string()).collect())),
        }
    }

    /// The bridges a listing means: the one it names, or all.
    pub fn bridges_named(&self, name: Option<&IfName>) -> Result<Vec<Arc<Bridge>>, DaemonError> {
        match name {
            Some(n) => Ok(vec![self.bridge_named(n).ok_or_else(|| DaemonError::NoSuchBridge(n.to_string()))?]),
            None => Ok(self.bridges()),
        }
    }

    /// The bridge port `port` is in (a `gone` one too).
    pub fn bridge_of_port(&self, port: &str) -> Option<Arc<Bridge>> {
        self.bridges().into_iter().find(|b| b.spec(port).is_some())
    }

    /// The bridge of port `port`, which must be `named` if a name is given.
    pub fn port_bridge(&self, port: &IfName, named: Option<&IfName>) -> Result<Arc<Bridge>, DaemonError> {
        let b = self.bridge_of_port(port).ok_or_else(|| DaemonError::no_port(port))?;
        match named {
            Some(n) if *n != b.name => {
                Err(DaemonError::WrongBridge { port: port.clone(), is_in: b.name.clone(), named: n.clone() })
            }
            _ => Ok(b),
        }
    }

    /// Reserves interface name `name` for a port about to be attached to
    /// `to` (or, `to` being `None`, for a bridge about to be made): refused
    /// while another request holds it, and if it is a bridge or a port of
    /// another bridge.
    fn reserve(&self, name: &IfName, to: Option<&IfName>) -> Result<Reserved<'_>, DaemonError> {
        if !lock(&self.opening).insert(name.clone()) {
            return Err(DaemonError::Busy(name.clone()));
        }
        let r = Reserved { d: self, name: name.clone() };
        if let Some(b) = self.bridge_named(name) {
            return Err(if to.is_some() {
                DaemonError::IsBridge(name.clone())
            } else {
                DaemonError::BridgeExists(b.name.clone())
            });
        }
        if let Some(b) = self.bridge_of_port(name).filter(|b| Some(&b.name) != to) {
            return Err(DaemonError::InBridge { port: name.clone(), bridge: b.name.clone() });
        }
        Ok(r)
    }

    /// Makes bridge `settings` (and takes back or makes its host port).
    /// Its configured ports are the caller's to attach. With `if_missing`,
    /// a bridge of that name already there is returned, not refused (the
    /// flag says whether it was made).
    pub fn add_bridge(
        &self,
        settings: BridgeSettings,
        origin: Origin,
        made: Option<BridgeAdd>,
        if_missing: bool,
    ) -> Result<(Arc<Bridge>, bool), DaemonError> {
        if let Some(b) = self.bridge_named(&settings.name) {
            return if if_missing { Ok((b, false)) } else { Err(DaemonError::BridgeExists(b.name.clone())) };
        }
        let name = settings.name.clone();
        let _reserved = match self.reserve(&name, None) {
            Err(DaemonError::Busy(_) | DaemonError::BridgeExists(_)) if if_missing => {
                // Another request is making it: wait for it (a few seconds at most).
                return self.made_meanwhile(&name).map(|b| (b, false));
            }
            r => r?,
        };
        let netfilter = settings.netfilter != crate::config::NetfilterMode::Off;
        let b = Arc::new(Bridge::new(settings, origin, made, self.opener.start_ns.clone()));
        if let Err(e) =
            b.attach_host(&self.opener).and_then(|()| if netfilter { b.attach_netfilter(&self.opener) } else { Ok(()) })
        {
            let _ = b.close(true);
            b.remove_netfilter();
            if b.made_host_port() {
                let _ = b.remove_host_port();
            }
            return Err(e.into());
        }
        self.netfilter_apply(&b);
        self.bridges.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.clone(), b.clone());
        if origin == Origin::Runtime {
            tracing::info!(bridge = %name, host_port = b.host.is_some(), "bridge made");
            self.persist();
        }
        Ok((b, true))
    }

    /// Bridge `name`, which another request is making now.
    fn made_meanwhile(&self, name: &IfName) -> Result<Arc<Bridge>, DaemonError> {
        for _ in 0..100 {
            if let Some(b) = self.bridge_named(name) {
                return Ok(b);
            }
            if !lock(&self.opening).contains(name) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.bridge_named(name).ok_or_else(|| DaemonError::Busy(name.clone()))
    }

    /// Makes a bridge as `bridge add` (or the CNI plugin) asks.
    pub fn add_runtime_bridge(&self, add: BridgeAdd) -> Result<(Arc<Bridge>, bool), DaemonError> {
        let defaults = lock(&self.settings).defaults;
        let settings = BridgeSettings::made(&add, &defaults)
            .map_err(|source| DaemonError::BadBridge { name: add.name.clone(), source })?;
        let if_missing = add.if_missing;
        let made = BridgeAdd { if_missing: false, ..add };
        self.add_bridge(settings, Origin::Runtime, Some(made), if_missing)
    }

    /// Makes a configured bridge with its ports and static entries; any
    /// failure is the start's (or the reload's) and leaves nothing made.
    pub fn add_configured_bridge(&self, settings: &BridgeSettings) -> Result<Arc<Bridge>, DaemonError> {
        let (b, _) = self.add_bridge(settings.clone(), Origin::Config, None, false)?;
        let done = (|| -> Result<(), DaemonError> {
            for spec in &settings.ports {
                self.attach(&b, spec.clone())?;
            }
            for st in &settings.statics {
                b.add_static(st)?;
            }
            Ok(())
        })();
        if let Err(e) = done {
            // Undone quietly: the start (or the reload) says why in one line.
            let _ = b.close(true);
            b.remove_netfilter();
            self.bridges.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&b.name);
            if b.made_host_port() {
                let _ = b.remove_host_port();
            }
            return Err(e);
        }
        tracing::info!(bridge = %b.name, host_port = b.host.is_some(), ports = settings.ports.len(), "bridge made");
        Ok(b)
    }

    /// Deletes bridge `name` and its host port; with ports it is refused
    /// unless `detach`. A port being attached to it meanwhile is refused
    /// (and its interface left as it was). Returns the ports it detached.
    pub fn del_bridge(&self, name: &IfName, detach: bool) -> Result<Vec<IfName>, DaemonError> {
        let b = self.bridge_named(name).ok_or_else(|| DaemonError::NoSuchBridge(name.to_string()))?;
        let taken = b.close(detach).map_err(|ports| DaemonError::BridgeHasPorts {
            name: name.clone(),
            ports: ports.iter().map(ToString::to_string).collect(),
        })?;
        self.bridges.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
        let nf = b.netfilter_port();
        b.remove_netfilter();
        if let Err(e) = b.remove_host_port() {
            tracing::warn!(bridge = %name, error = %e, "the bridge's host port could not be deleted");
        }
        let host = b.host.as_ref().map(|h| &h.name);
        let detached: Vec<IfName> =
            taken.into_iter().map(|s| s.name).filter(|n| Some(n) != host && Some(n) != nf.as_ref()).collect();
        tracing::info!(bridge = %name, detached = ?detached, "bridge deleted");
        self.persist();
        Ok(detached)
    }

    /// Attaches the port `spec` describes to bridge `b`; recorded if it is
    /// a run-time port.
    pub fn attach(&self, b: &Arc<Bridge>, spec: PortSpec) -> Result<PortId, DaemonError> {
        let _reserved = self.reserve(&spec.name, Some(&b.name))?;
        let runtime = spec.origin == Origin::Runtime;
        let id = b.attach(&self.opener, spec)?;
        if runtime {
            self.persist();
        }
        Ok(id)
    }

    /// Detaches port `name` from its bridge. Returns its spec.
    pub fn detach(&self, name: &str) -> Result<PortSpec, DaemonError> {
        let b = self.bridge_of_port(name).ok_or_else(|| DaemonError::no_port(name))?;
        let spec = b.detach(name)?;
        if spec.origin == Origin::Runtime {
            self.persist();
        }
        Ok(spec)
    }

    /// Changes port `name`'s policy with `f` (see `Bridge::change_policy`).
    pub fn change_policy(&self, name: &IfName, f: impl FnOnce(&mut PortPolicy)) -> Result<PortPolicy, DaemonError> {
        let b = self.port_bridge(name, None)?;
        let (policy, origin) = b.change_policy(name, f)?;
        if origin == Origin::Runtime {
            self.persist();
        }
        Ok(policy)
    }

    /// Puts `address` on bridge `b`'s host port (see `Bridge::host_address`), recorded.
    pub fn host_address(&self, b: &Bridge, address: ub_netlink::IpNet, force: bool) -> Result<bool, DaemonError> {
        let added = b.host_address(address, force);
        self.persist();
        Ok(added?)
    }

    /// Takes `address` off bridge `b`'s host port, recorded.
    pub fn host_address_del(&self, b: &Bridge, address: ub_netlink::IpNet) -> Result<bool, DaemonError> {
        let removed = b.host_address_del(address);
        self.persist();
        Ok(removed?)
    }

    /// Re-attaches a configured port whose interface has come back.
    pub fn reattach_if_wanted(&self, name: &str) {
        let Some((b, spec)) = self.bridges().into_iter().find_map(|b| b.gone_configured(name).map(|s| (b, s))) else {
            return;
        };
        match self.attach(&b, spec) {
            Ok(_) => {
                self.links.reattached.fetch_add(1, Ordering::Relaxed);
                tracing::info!(bridge = %b.name, port = %name, "interface is back; port re-attached");
            }
            Err(e) => tracing::warn!(port = %name, error = %e, "interface is back but could not be re-attached"),
        }
    }

    /// Records the run-time bridges, ports and host addresses in the state
    /// file (if the daemon has one).
    fn persist(&self) {
        let bridges = self
            .bridges()
            .iter()
            .map(|b| {
                let (ports, host_addresses) = b.runtime();
                SavedBridge { name: Some(b.name.clone()), made: b.made.clone(), ports, host_addresses }
            })
            .filter(|s| s.made.is_some() || !s.ports.is_empty() || !s.host_addresses.is_empty())
            .collect();
        if let Some(s) = lock(&self.state).as_ref()
            && let Err(e) = s.save(&Saved { bridges })
        {
            tracing::error!(error = %e, "run-time bridges and ports not recorded: they would not survive a restart");
        }
    }

    /// Makes the run-time bridges `state` records again and re-attaches
    /// the recorded run-time ports whose interfaces still exist (the rest
    /// are dropped with a log line), then keeps recording them there.
    pub fn restore(&self, state: StateFile) {
        let recorded = state.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "starting with the configured bridges and ports only");
            Saved::default()
        });
        *lock(&self.state) = Some(state);
        for sb in recorded.bridges {
            // A state file of before bridges: the daemon's one bridge.
            let Some(b) = self.restored_bridge(&sb) else { continue };
            for a in sb.host_addresses {
                if let Err(e) = self.host_address(&b, a, false) {
                    tracing::warn!(bridge = %b.name, address = %a, error = %e, "host port address in the state file not restored");
                }
            }
            for spec in sb.ports {
                let name = spec.name.clone();
                match self.attach(&b, spec) {
                    Ok(_) => {
                        tracing::info!(bridge = %b.name, port = %name, "run-time port restored from the state file")
                    }
                    Err(e) => {
                        tracing::warn!(port = %name, error = %e, "run-time port in the state file not restored; dropped")
                    }
                }
            }
        }
        self.persist();
    }

    /// The bridge a recorded entry belongs to: made again if it was made at
    /// run time, the configured one of its name, or (a state file of
    /// before bridges) the daemon's only bridge.
    fn restored_bridge(&self, sb: &SavedBridge) -> Option<Arc<Bridge>> {
        let found = match &sb.name {
            None => self.bridge(None),
            Some(n) => match (self.bridge_named(n), &sb.made) {
                (Some(b), _) => Ok(b),
                (None, Some(add)) => self.add_runtime_bridge(add.clone()).map(|(b, _)| b),
                (None, None) => Err(DaemonError::NoSuchBridge(n.to_string())),
            },
        };
        found
            .map_err(|e| {
                let what = sb.name.as_ref().map_or_else(|| "the daemon's".to_string(), |n| format!("bridge {n}'s"));
                tracing::warn!(error = %e, ports = sb.ports.len(), "{what} run-time ports and addresses in the state file not restored; dropped");
            })
            .ok()
    }

    /// How long the ager waits between passes: the shortest any bridge asks.
    pub fn ager_interval(&self) -> Duration {
        self.bridges().iter().map(|b| b.ager_interval()).min().unwrap_or(Duration::from_secs(1))
    }

    /// One pass of the ager over every bridge.
    pub fn age(&self) {
        for b in self.bridges() {
            b.age();
        }
    }

    /// What the node's netfilter does, looked at before any bridge is made
    /// (said in the log once the daemon runs: a start that fails says one line).
    pub fn init_node_filter(&self, nf: crate::netfilter::NodeFilter) {
        *lock(&self.node_filter) = nf;
    }

    /// Lets the state file go (its lock, for a daemon taking over).
    pub fn release_state(&self) -> Option<StateFile> {
        lock(&self.state).take()
    }

    /// Takes the state file back (a takeover that failed).
    pub fn restore_state(&self, state: Option<StateFile>) {
        if state.is_some() {
            *lock(&self.state) = state;
        }
    }

    /// Says in the log what the node's netfilter does (once, at start).
    pub fn log_node_filter(&self) {
        let nf = lock(&self.node_filter).clone();
        let on: Vec<String> = self.bridges().iter().filter(|b| b.netfilter().1).map(|b| b.name.to_string()).collect();
        tracing::info!(br_netfilter = nf.br_netfilter, rules = nf.rules, why = %nf.why, through_netfilter = ?on, "the node's netfilter");
    }

    /// What the node's netfilter does now: each bridge's way through it
    /// turned on or off to match, and said in the log.
    pub fn set_node_filter(&self, nf: crate::netfilter::NodeFilter) {
        let mut had = lock(&self.node_filter);
        if *had != nf {
            tracing::info!(br_netfilter = nf.br_netfilter, rules = nf.rules, why = %nf.why, "the node's netfilter");
        }
        *had = nf;
        drop(had);
        for b in self.bridges() {
            self.netfilter_apply(&b);
        }
    }

    /// Turns bridge `b`'s way through the node's netfilter on or off as its
    /// setting and the node's rules say. A bridge that filters VLANs stays
    /// direct, as br_netfilter lets a VLAN-filtering kernel bridge's
    /// traffic (every frame tagged inside it) pass unjudged unless
    /// `bridge-nf-filter-vlan-tagged` is 1: the log says which.
    pub(crate) fn netfilter_apply(&self, b: &Bridge) {
        let nf = lock(&self.node_filter).clone();
        let wanted = nf.wants(b.settings().netfilter);
        let vlan = b.sw.vlan_filtering();
        let on = wanted && !vlan;
        let (has, _) = b.netfilter();
        if b.netfilter_vlan_bypass(has && wanted && vlan) {
            if nf.vlan_tagged {
                tracing::warn!(bridge = %b.name, "the bridge filters VLANs: IP between its stations does not pass the node's FORWARD rules; on a kernel bridge with bridge-nf-filter-vlan-tagged=1 it would (docs/operations.md)");
            } else {
                tracing::info!(bridge = %b.name, "the bridge filters VLANs: IP between its stations does not pass the node's FORWARD rules, as on a kernel bridge with VLAN filtering (bridge-nf-filter-vlan-tagged=0)");
            }
        }
        if has && b.set_netfilter(on) {
            tracing::info!(bridge = %b.name, on, "IP between the bridge's stations through the node's netfilter");
            let twin = crate::bridge::netfilter::names(&b.name).0;
            if on && nf.names.iter().any(|n| n.as_str() == b.name.as_str()) {
                tracing::warn!(bridge = %b.name, twin = %twin, "the node's rules name the bridge; between its pods they see the kernel twin's name instead (docs/operations.md)");
            }
            if on && nf.physdev {
                tracing::warn!(bridge = %b.name, twin = %twin, "the node's rules use physdev; --physdev-in/out see the twin's port, not the pod's veth (docs/operations.md)");
            }
        }
    }

    /// A start that failed: stops every port's readers and deletes the host
    /// ports this daemon made (those it took back stay, as they were).
    pub fn abandon(&self) {
        for b in self.bridges() {
            b.stop_all();
            b.remove_netfilter();
            if b.made_host_port() {
                let _ = b.remove_host_port();
            }
        }
    }

    /// Stops every port's readers (the daemon is ending); with `remove`,
    /// deletes the bridges' host ports too.
    pub fn stop_all(&self, remove: bool) {
        for b in self.bridges() {
            b.stop_all();
            b.remove_netfilter();
            if remove && let Err(e) = b.remove_host_port() {
                tracing::warn!(bridge = %b.name, error = %e, "the bridge's host port could not be deleted");
            }
        }
    }
}
