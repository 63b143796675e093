//! `userbridge run`: open the ports, start each port's reader (one thread
//! over the port's receive halves, helpers while it is busy), the ager, the
//! link watcher, the control socket and the metrics endpoint; apply runtime
//! changes (control requests, SIGHUP); stop cleanly on SIGINT/SIGTERM.
//!
//! Every port is described by a [`PortSpec`] and opened by the one factory
//! in `ub_port::open`. Its origin says who owns it: a reload reconciles only
//! the ports that came from the configuration; ports added at run time
//! belong to whoever added them and no reload touches them.

use crate::config::{ConfigError, HostSettings, RunArgs, Settings, StaticEntry, ThreadConfig, allowed_cpus};
use crate::state::{Saved, StateError, StateFile};
use crate::{control, links, metrics, mirror};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ub_datapath::{Member, PortId, PortState, ReaderHandle, Restart, Switch, SwitchError, spawn_reader_at};
use ub_netlink::NetNs;
use ub_port::{Backend, Claim, OpenOptions, Origin, PortError, PortPolicy, PortSpec};
use ub_wire::Mac;

/// What can go wrong running the daemon or changing it. Each message names
/// the thing and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error("no port named '{0}' (see `userbridge port list`)")]
    NoSuchPort(String),
    #[error("port '{0}' is already attached")]
    AlreadyAttached(String),
    #[error("port '{0}': {1}")]
    BadPolicy(String, String),
    #[error("starting a reader of {port}: {source}")]
    Reader { port: String, source: std::io::Error },
    #[error("static entry {mac}: {why}")]
    Static { mac: Mac, why: String },
    #[error(
        "missing capability {name} (needed for {why}): run as root, or grant it (e.g. systemd AmbientCapabilities={name})"
    )]
    Capability { name: &'static str, why: &'static str },
    #[error("log level '{0}': {1}")]
    LogLevel(String, String),
    #[error("{0} (list namespaces with `ip netns`)")]
    Netns(ub_netlink::Error),
    #[error(transparent)]
    Control(#[from] control::ServerError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("link notifications: {0}")]
    Links(ub_netlink::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the namespace the daemon started in: {0}")]
    StartNs(ub_netlink::Error),
    #[error("this daemon has no host port (start it with --host-port NAME)")]
    NoHostPort,
    #[error("the host port: {0}")]
    HostNetlink(ub_netlink::Error),
    #[error("the host port already has {has}, not {wanted} (set forceAddress to replace it)")]
    HostAddressConflict { has: ub_netlink::IpNet, wanted: ub_netlink::IpNet },
    #[error("{0} is the host port's configured address: remove it from the configuration (or --address) instead")]
    HostAddressConfigured(ub_netlink::IpNet),
}

/// Link events the daemon has followed.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub down: AtomicU64,
    pub up: AtomicU64,
    pub gone: AtomicU64,
    pub reattached: AtomicU64,
    /// The host port was deleted by someone and made again.
    pub host_recreated: AtomicU64,
}

impl LinkCounters {
    /// The counters by name: the one list `stats` and `/metrics` show.
    pub fn events(&self) -> [(&'static str, u64); 5] {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("down", ld(&self.down)),
            ("up", ld(&self.up)),
            ("gone", ld(&self.gone)),
            ("reattached", ld(&self.reattached)),
            ("host_recreated", ld(&self.host_recreated)),
        ]
    }
}

/// What the daemon itself has done (beyond the switch).
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
    /// Panics of the daemon's own threads, each restarted.
    pub thread_panics: AtomicU64,
}

/// A port the daemon has attached: its spec, its readers, and the claim
/// that keeps any other userbridge off its interface.
#[derive(Debug)]
struct Attached {
    spec: PortSpec,
    id: PortId,
    reader: ReaderHandle,
    _claim: Claim,
}

/// The running switch and everything that changes it at run time.
#[derive(Debug)]
pub struct Daemon {
    pub sw: Arc<Switch>,
    open: OpenOptions,
    threads: ThreadConfig,
    restart: Restart,
    /// Every attached port by name, `gone` ones included (a configured port
    /// whose interface comes back is re-attached from its spec).
    ports: Mutex<BTreeMap<String, Attached>>,
    /// What the configuration asks for (its ports are the `config` ones).
    settings: Mutex<Settings>,
    config_path: Option<PathBuf>,
    pub links: LinkCounters,
    pub counters: DaemonCounters,
    pub mirrors: Mutex<HashMap<String, mirror::PcapMirror>>,
    /// The pods' gateway, if there is one.
    pub host: Option<HostSettings>,
    /// The namespace the daemon started in, when it entered another (--netns):
    /// where the host port lives.
    pub start_ns: Option<Arc<NetNs>>,
    /// Where run-time ports are recorded (none for a daemon built in a test).
    state: Mutex<Option<StateFile>>,
    /// Addresses put on the host port at run time (`host_address`).
    host_extra: Mutex<Vec<ub_netlink::IpNet>>,
    /// Held through each `host_address` and `host_address_del`: each looks
    /// at the port's addresses and then changes them, and two CNI ADDs at
    /// once for one network would otherwise both find the gateway missing
    /// and the second fail with EEXIST.
    host_address_change: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    /// A daemon with no port attached yet, for `settings`.
    pub fn new(settings: Settings, config_path: Option<PathBuf>) -> Arc<Daemon> {
        Self::new_in(settings, config_path, None)
    }

    /// A daemon whose host port (if any) lives in `start_ns`.
    pub fn new_in(settings: Settings, config_path: Option<PathBuf>, start_ns: Option<Arc<NetNs>>) -> Arc<Daemon> {
        let sw = Arc::new(Switch::new(settings.fdb));
        sw.set_storm_limits(settings.storm);
        sw.loop_guard.set_mode(settings.loop_detect);
        sw.set_vlan_filtering(settings.vlan_filtering);
        let host = settings.host.as_ref().map(|h| ub_port::host::HostOptions {
            netns: start_ns.clone(),
            addresses: h.addresses.clone(),
            mtu: h.mtu,
            mac: h.mac,
            queues: settings.ring.fanout,
        });
        let open = OpenOptions {
            rx: settings.ring,
            holder: format!("pid {}, socket {}", std::process::id(), settings.socket.display()),
            host,
            ..OpenOptions::default()
        };
        Arc::new(Daemon {
            sw,
            open,
            threads: settings.threads,
            restart: Restart::default(),
            ports: Mutex::new(BTreeMap::new()),
            config_path,
            links: LinkCounters::default(),
            counters: DaemonCounters::default(),
            mirrors: Mutex::new(HashMap::new()),
            host: settings.host.clone(),
            start_ns,
            state: Mutex::new(None),
            host_extra: Mutex::new(Vec::new()),
            host_address_change: Mutex::new(()),
            settings: Mutex::new(settings),
        })
    }

    /// The configuration the daemon runs with now.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Records a new ageing time, so a reload compares against it.
    pub fn set_ageing_setting(&self, ms: u64) {
        lock(&self.settings).fdb.ageing_ms = ms;
    }

    /// The spec of port `name`, if attached.
    pub fn spec(&self, name: &str) -> Option<PortSpec> {
        lock(&self.ports).get(name).map(|a| a.spec.clone())
    }

    /// Every attached port's spec, by port id.
    pub fn specs(&self) -> BTreeMap<PortId, PortSpec> {
        lock(&self.ports).values().map(|a| (a.id, a.spec.clone())).collect()
    }

    /// Opens the port `spec` describes and starts forwarding on it. A port of
    /// that name that is `gone` is replaced; any other is refused.
    pub fn attach(&self, spec: PortSpec) -> Result<PortId, DaemonError> {
        let mut ports = lock(&self.ports);
        let gone = match ports.get(&spec.name) {
            Some(a) if self.sw.port(a.id).is_some_and(|p| p.state() != PortState::Gone) => {
                return Err(DaemonError::AlreadyAttached(spec.name.clone()));
            }
            Some(a) => Some(a.id),
            None => None,
        };
        let policy = Arc::new(
            ub_datapath::Policy::compile(spec.policy.clone())
                .map_err(|e| DaemonError::BadPolicy(spec.name.clone(), e))?,
        );
        // Open first: if that fails, a `gone` port stays in the table, to be
        // re-attached on the interface's next appearance.
        let opened = ub_port::open(&spec, &self.open)?;
        if opened.backend == ub_port::Backend::Afpacket && opened.rx.len() < self.open.rx.fanout {
            tracing::warn!(port = %spec.name, readers = opened.rx.len(), asked = self.open.rx.fanout,
                "this kernel cannot make a PACKET_FANOUT group ignore outgoing frames (Linux 6.2+): one reader per port");
        }
        if let Some(old) = gone {
            if let Some(a) = ports.remove(&spec.name) {
                drop(a.reader);
            }
            self.sw.remove_port(old);
        }
        let id = self.sw.add_port_with(&opened.name, opened.backend, opened.tx, policy)?;
        if !opened.up {
            if opened.backend == ub_port::Backend::Afpacket {
                tracing::warn!(port = %spec.name, "link is down; the port forwards once it is up (`ip link set {} up`, and its peer)", spec.name);
            }
            if let Some(p) = self.sw.port(id) {
                p.set_state(PortState::Down);
            }
        }
        let n = opened.rx.len();
        // Reader threads are pinned (each to the CPU of the member it serves or
        // follows) only when each member has a CPU's frames of its own (one member
        // per allowed CPU); otherwise a pinned thread would wait for a busy CPU
        // while others idle.
        let cpus = allowed_cpus();
        let pin = self.threads.pin && n > 1 && n == cpus.len();
        let members = opened
            .rx
            .into_iter()
            .enumerate()
            .map(|(i, rx)| Member { rx, cpu: pin.then(|| reader_cpu_in(&cpus, i, n)).flatten() })
            .collect();
        let reader = match spawn_reader_at(self.sw.clone(), id, members, self.threads.nice, self.restart) {
            Ok(r) => r,
            Err(source) => {
                self.sw.remove_port(id);
                return Err(DaemonError::Reader { port: spec.name.clone(), source });
            }
        };
        tracing::info!(port = %opened.name, id, backend = opened.backend.as_str(), origin = ?spec.origin, "port attached");
        let name = opened.name.clone();
        let spec = PortSpec { name: opened.name, ..spec };
        let runtime = spec.origin == Origin::Runtime;
        ports.insert(name, Attached { spec, id, reader, _claim: opened.claim });
        drop(ports);
        if runtime {
            self.persist();
        }
        Ok(id)
    }

    /// Records the run-time ports in the state file (if the daemon has one).
    fn persist(&self) {
        let ports: Vec<PortSpec> =
            lock(&self.ports).values().filter(|a| a.spec.origin == Origin::Runtime).map(|a| a.spec.clone()).collect();
        let saved = Saved { ports, host_addresses: lock(&self.host_extra).clone() };
        if let Some(s) = lock(&self.state).as_ref()
            && let Err(e) = s.save(&saved)
        {
            tracing::error!(error = %e, "run-time ports not recorded: they would not survive a restart");
        }
    }

    /// Opens the state file, re-attaches the run-time ports it records whose
    /// interfaces still exist (the rest are dropped with a log line), and
    /// keeps recording them from here on.
    pub fn restore(&self, dir: &std::path::Path, socket: &std::path::Path) -> Result<(), DaemonError> {
        let state = StateFile::open(dir, socket)?;
        let recorded = state.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "starting with the configured ports only");
            Saved::default()
        });
        *lock(&self.state) = Some(state);
        for a in recorded.host_addresses {
            if let Err(e) = self.host_address(a, false) {
                tracing::warn!(address = %a, error = %e, "host port address in the state file not restored");
            }
        }
        for spec in recorded.ports {
            let name = spec.name.clone();
            match self.attach(spec) {
                Ok(_) => tracing::info!(port = %name, "run-time port restored from the state file"),
                Err(e) => {
                    tracing::warn!(port = %name, error = %e, "run-time port in the state file not restored; dropped")
                }
            }
        }
        self.persist();
        Ok(())
    }

    /// The host port's spec: the gateway takes no unknown-unicast floods,
    /// as a kernel bridge's own device does not (it sees them while
    /// promiscuous, like the bridge).
    fn host_spec(h: &HostSettings) -> PortSpec {
        let mut spec = PortSpec::new(&h.name, Backend::Host, Origin::Config);
        let d = PortPolicy::default();
        spec.policy = PortPolicy {
            flood: false,
            macs: vec![h.mac],
            // Its own addresses: ARP suppression leaves requests for them to the host.
            ips: h.addresses.iter().map(|a| a.addr()).collect(),
            vlans: h.vlans.clone().unwrap_or(d.vlans.clone()),
            ..d
        };
        spec
    }

    /// Creates and attaches the host port, with its MAC as a static entry
    /// and the addresses given to it at run time.
    pub fn attach_host(&self) -> Result<(), DaemonError> {
        let Some(h) = &self.host else { return Ok(()) };
        let id = self.attach(Self::host_spec(h))?;
        self.sw.fdb.add_static(0, h.mac, id).map_err(|r| DaemonError::Static { mac: h.mac, why: format!("{r:?}") })?;
        self.sync_host_statics();
        for a in lock(&self.host_extra).clone() {
            if let Err(e) = self.in_host_ns(|nl, idx| nl.add_addr(idx, a)) {
                tracing::warn!(address = %a, error = %e, "could not put a run-time address back on the host port");
            }
        }
        Ok(())
    }

    /// Runs `f` with a netlink socket in the host port's namespace and the
    /// host port's ifindex.
    fn in_host_ns<T: Send>(
        &self,
        f: impl FnOnce(&mut ub_netlink::Rtnl, u32) -> ub_netlink::Result<T> + Send,
    ) -> Result<T, DaemonError> {
        let h = self.host.as_ref().ok_or(DaemonError::NoHostPort)?;
        let run = || -> Result<T, DaemonError> {
            let mut nl = ub_netlink::Rtnl::open().map_err(DaemonError::HostNetlink)?;
            let link = nl
                .link_by_name(&h.name)
                .map_err(DaemonError::HostNetlink)?
                .ok_or_else(|| DaemonError::NoSuchPort(h.name.clone()))?;
            f(&mut nl, link.index).map_err(DaemonError::HostNetlink)
        };
        match &self.start_ns {
            Some(ns) => ns.run(run).map_err(DaemonError::HostNetlink)?,
            None => run(),
        }
    }

    /// The host port: name, MAC, MTU and addresses now.
    pub fn host_info(&self) -> Result<ub_proto::Host, DaemonError> {
        let h = self.host.as_ref().ok_or(DaemonError::NoHostPort)?;
        let (addresses, mtu) = self.in_host_ns(|nl, idx| {
            let mtu = nl.link_by_index(idx)?.map_or(0, |l| l.mtu);
            Ok((nl.addrs(idx)?, mtu))
        })?;
        let addresses = addresses
            .into_iter()
            .filter(|a| !matches!(a.addr(), std::net::IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80))
            .collect();
        Ok(ub_proto::Host { name: h.name.clone(), mac: h.mac, mtu, addresses })
    }

    /// Puts `address` on the host port, as the reference CNI plugin's
    /// `ensureAddr` does on `cni0`: nothing if it is there; for IPv4, any
    /// other IPv4 address (for IPv6, an overlapping one) is a conflict
    /// unless `force` removes it. Recorded, so it survives a restart.
    pub fn host_address(&self, address: ub_netlink::IpNet, force: bool) -> Result<bool, DaemonError> {
        let _one_at_a_time = lock(&self.host_address_change);
        let existing = self.host_info()?.addresses;
        let configured = self.host.as_ref().is_some_and(|h| h.addresses.contains(&address));
        if existing.contains(&address) {
            // Recorded all the same (a restart finds it on a kept interface),
            // unless the configuration gives it anyway.
            let mut extra = lock(&self.host_extra);
            if !configured && !extra.contains(&address) {
                extra.push(address);
                drop(extra);
                self.persist();
            }
            return Ok(false);
        }
        let conflicts: Vec<ub_netlink::IpNet> = existing
            .into_iter()
            .filter(|a| a.addr().is_ipv4() == address.addr().is_ipv4())
            .filter(|a| address.addr().is_ipv4() || a.contains(&address.addr()) || address.contains(&a.addr()))
            .collect();
        if let Some(c) = conflicts.first()
            && !force
        {
            return Err(DaemonError::HostAddressConflict { has: *c, wanted: address });
        }
        self.in_host_ns(|nl, idx| {
            for c in &conflicts {
                nl.del_addr(idx, *c)?;
            }
            nl.add_addr(idx, address)
        })?;
        let mut extra = lock(&self.host_extra);
        extra.retain(|a| !conflicts.contains(a));
        if !configured && !extra.contains(&address) {
            extra.push(address);
        }
        drop(extra);
        self.host_ips_changed(&conflicts, address);
        self.persist();
        Ok(true)
    }

    /// Takes `address` off the host port; whether it had it. A configured
    /// address is refused (the configuration would bring it back).
    pub fn host_address_del(&self, address: ub_netlink::IpNet) -> Result<bool, DaemonError> {
        if self.host.as_ref().is_some_and(|h| h.addresses.contains(&address)) {
            return Err(DaemonError::HostAddressConfigured(address));
        }
        let _one_at_a_time = lock(&self.host_address_change);
        let had = self.host_info()?.addresses.contains(&address);
        if had {
            self.in_host_ns(|nl, idx| nl.del_addr(idx, address))?;
        }
        let mut extra = lock(&self.host_extra);
        let recorded = extra.contains(&address);
        extra.retain(|a| *a != address);
        drop(extra);
        if let (true, Some(h)) = (had, &self.host) {
            let r = self.change_policy(&h.name, |p| {
                p.ips.retain(|ip| *ip != address.addr());
                Ok(())
            });
            if let Err(e) = r {
                tracing::warn!(error = %e, "the host port's address list in its policy was not updated");
            }
        }
        if had || recorded {
            self.persist();
        }
        Ok(had)
    }

    /// The host port was deleted under us: make it again (the pods' ports
    /// switch among themselves meanwhile).
    pub fn recreate_host(&self) {
        let Some(h) = &self.host else { return };
        tracing::warn!(port = %h.name, "the host port was deleted; making it again");
        let _ = self.detach(&h.name);
        match self.attach_host() {
            Ok(()) => {
                self.links.host_recreated.fetch_add(1, Ordering::Relaxed);
                tracing::info!(port = %h.name, "host port made again");
            }
            Err(e) => {
                tracing::error!(port = %h.name, error = %e, "could not make the host port again; pods have no gateway")
            }
        }
    }

    /// Follows the host port's promiscuous flag: while set (tcpdump on it),
    /// every frame the switch forwards is copied to it.
    pub fn host_promisc(&self, on: bool) {
        let Some(h) = &self.host else { return };
        let id = lock(&self.ports).get(&h.name).map(|a| a.id);
        let want = if on { id } else { None };
        if self.sw.promisc() != want {
            tracing::info!(port = %h.name, promisc = on, "host port promiscuous mode changed");
            self.sw.set_promisc(want);
        }
    }

    /// Detaches port `name`: its readers are stopped and joined, its FDB
    /// entries flushed, mirrors from and to it ended, its claim released.
    /// Other ports forward on. Returns its spec.
    pub fn detach(&self, name: &str) -> Result<PortSpec, DaemonError> {
        let a = lock(&self.ports).remove(name).ok_or_else(|| DaemonError::NoSuchPort(name.to_string()))?;
        a.reader.stop();
        self.sw.remove_port(a.id);
        lock(&self.mirrors).remove(name);
        tracing::info!(port = %name, "port detached");
        if a.spec.origin == Origin::Runtime {
            self.persist();
        }
        Ok(a.spec)
    }

    /// Gives port `name` a new policy, atomically (a batch sees the old or the new).
    pub fn set_policy(&self, name: &str, policy: ub_port::PortPolicy) -> Result<(), DaemonError> {
        self.change_policy(name, |p| {
            *p = policy;
            Ok(())
        })
        .map(drop)
    }

    /// Changes port `name`'s policy with `f`: checked and applied whole (a
    /// batch sees the old policy or the new one), or not at all; recorded
    /// in the port's spec, and in the state file for a run-time port.
    pub fn change_policy(
        &self,
        name: &str,
        f: impl FnOnce(&mut PortPolicy) -> Result<(), String>,
    ) -> Result<PortPolicy, DaemonError> {
        let mut ports = lock(&self.ports);
        let a = ports.get_mut(name).ok_or_else(|| DaemonError::NoSuchPort(name.to_string()))?;
        let mut policy = a.spec.policy.clone();
        f(&mut policy).map_err(|e| DaemonError::BadPolicy(name.to_string(), e))?;
        self.sw
            .set_policy(a.id, policy.clone())
            .map_err(|e| DaemonError::BadPolicy(name.to_string(), e.to_string()))?;
        a.spec.policy = policy.clone();
        let (runtime, host) = (a.spec.origin == Origin::Runtime, a.spec.backend == Backend::Host);
        drop(ports);
        if host {
            self.sync_host_statics();
        }
        if runtime {
            self.persist();
        }
        Ok(policy)
    }

    /// The host port's MAC as a static entry in every VLAN the host port is
    /// in (and VLAN 0, for the VLAN-unaware switch), as the kernel keeps a
    /// bridge's own address per VLAN.
    pub fn sync_host_statics(&self) {
        let Some(h) = &self.host else { return };
        let Some((id, vids)) = lock(&self.ports)
            .get(&h.name)
            .map(|a| (a.id, a.spec.policy.vlans.iter().map(|v| v.vid).collect::<Vec<u16>>()))
        else {
            return;
        };
        for vid in std::iter::once(0).chain(vids) {
            if let Err(r) = self.sw.fdb.add_static(vid, h.mac, id) {
                tracing::warn!(vid, mac = %h.mac, reason = ?r, "the host port's MAC could not be made static in a VLAN");
            }
        }
    }

    /// The host port's policy lists its addresses (ARP suppression leaves
    /// requests for them to the host): `added` in, `removed` out.
    fn host_ips_changed(&self, removed: &[ub_netlink::IpNet], added: ub_netlink::IpNet) {
        let Some(h) = &self.host else { return };
        let r = self.change_policy(&h.name, |p| {
            p.ips.retain(|ip| !removed.iter().any(|n| n.addr() == *ip));
            if !p.ips.contains(&added.addr()) {
                p.ips.push(added.addr());
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "the host port's address list in its policy was not updated");
        }
    }

    /// VLAN filtering on or off (the setting kept for reloads).
    pub fn set_vlan_filtering(&self, on: bool) -> bool {
        let changed = self.sw.set_vlan_filtering(on);
        lock(&self.settings).vlan_filtering = on;
        self.sync_host_statics();
        changed
    }

    pub fn add_static(&self, st: &StaticEntry) -> Result<(), DaemonError> {
        let port = self.sw.port_by_name(&st.port).ok_or_else(|| DaemonError::NoSuchPort(st.port.clone()))?;
        self.sw
            .fdb
            .add_static(st.vlan, st.mac, port.id)
            .map_err(|r| DaemonError::Static { mac: st.mac, why: format!("{r:?}") })
    }

    /// Brings the switch to `new`: attaches the configured ports added,
    /// detaches the configured ports removed (unchanged ports are not
    /// touched; ports added at run time are never touched), applies FDB
    /// settings and statics. Returns what it did, one line each.
    pub fn apply(&self, new: Settings) -> Vec<String> {
        let mut done = Vec::new();
        let old = self.settings();
        let owned: Vec<String> = lock(&self.ports)
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
                match self.set_policy(&spec.name, spec.policy.clone()) {
                    Ok(()) => done.push(format!("policy of {}", spec.name)),
                    Err(e) => done.push(format!("could not change the policy of {}: {e}", spec.name)),
                }
            }
        }
        if let (Some(h), Some(oh)) = (&new.host, &old.host)
            && h.name == oh.name
            && h.vlans != oh.vlans
        {
            let vlans = h.vlans.clone().unwrap_or_else(|| PortPolicy::default().vlans);
            match self.change_policy(&h.name, |p| {
                p.vlans = vlans;
                Ok(())
            }) {
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
            done.push(format!("storm limits {:?}", new.storm));
        }
        if new.fdb.max_entries != old.fdb.max_entries || new.fdb.max_per_port != old.fdb.max_per_port {
            done.push("fdb limits change only at restart".into());
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
        if new.host != old.host || new.state_dir != old.state_dir {
            done.push("[host] and state_dir change only at restart".into());
        }
        if new.socket != old.socket
            || new.metrics != old.metrics
            || new.netns != old.netns
            || new.ring != old.ring
            || new.threads != old.threads
        {
            done.push("socket, metrics, netns, [ring] and [threads] settings change only at restart".into());
        }
        // The host port stays as it started but for its VLANs, applied above.
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
            ring: old.ring,
            threads: old.threads,
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

    /// Re-attaches a configured port whose interface has come back: only a
    /// port still known as `gone` (a port detached on purpose is forgotten
    /// and stays detached; a run-time port's owner re-adds it).
    pub fn reattach_if_wanted(&self, name: &str) {
        let spec = {
            let ports = lock(&self.ports);
            ports
                .get(name)
                .filter(|a| a.spec.origin == Origin::Config)
                .filter(|a| self.sw.port(a.id).is_some_and(|p| p.state() == PortState::Gone))
                .map(|a| a.spec.clone())
        };
        if let Some(spec) = spec {
            match self.attach(spec) {
                Ok(_) => {
                    self.links.reattached.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(port = %name, "interface is back; port re-attached");
                }
                Err(e) => tracing::warn!(port = %name, error = %e, "interface is back but could not be re-attached"),
            }
        }
    }

    fn stop_all(&self) {
        let ports = std::mem::take(&mut *lock(&self.ports));
        for (_, a) in ports {
            a.reader.stop();
        }
    }
}

/// Logs station moves and flaps at most once per ager pass (≤ 1/s), never per frame.
#[derive(Default)]
struct FdbEventLog {
    moved: u64,
    flaps: u64,
    blocked: u64,
}

impl FdbEventLog {
    fn log_changes(&mut self, sw: &Switch) {
        let fdb = &sw.fdb;
        let moved = fdb.stats.moved.load(Ordering::Relaxed);
        let flaps = fdb.stats.flaps.load(Ordering::Relaxed);
        if moved > self.moved {
            tracing::info!(moves = moved - self.moved, "stations moved between ports");
        }
        if flaps > self.flaps {
            let (vlan, mac) = ub_fdb::unkey(fdb.stats.last_flap.load(Ordering::Relaxed));
            tracing::warn!(flapping = flaps - self.flaps, last = %mac, vlan, "stations flapping between ports (a loop?): pinned, their copies dropped");
        }
        let loops = sw.loop_guard.blocked.load(Ordering::Relaxed);
        if loops > self.blocked {
            let names: Vec<String> = sw
                .ports()
                .iter()
                .flatten()
                .filter(|p| p.state() == PortState::Blocked)
                .map(|p| p.name.clone())
                .collect();
            tracing::warn!(blocked = ?names, "loop found (our probe came back): ports blocked until it is gone");
        }
        (self.moved, self.flaps, self.blocked) = (moved, flaps, loops);
    }
}

/// Runs `body` on a thread named `name`, again after a panic (logged and
/// counted in `panics`, with a back-off of 100 ms doubling to 5 s), until
/// it returns. The daemon's own threads (ager, link watcher, control
/// socket, metrics) run this way: none of them may die silently, and none
/// of their panics may stop the datapath (docs/architecture.md).
pub fn spawn_supervised(
    name: &'static str,
    panics: Arc<Daemon>,
    body: impl Fn() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            while std::panic::catch_unwind(std::panic::AssertUnwindSafe(&body)).is_err() {
                panics.counters.thread_panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(thread = name, backoff_ms = backoff.as_millis(), "thread panicked; restarting it");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
        .map_err(|e| DaemonError::Thread(name, e))
}

/// Capabilities the daemon needs, with why; checked before anything is opened
/// so a missing one is named instead of surfacing as EPERM on some socket.
fn check_capabilities(s: &Settings) -> Result<(), DaemonError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(eff) =
        status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Ok(()); // Cannot tell: let the kernel decide.
    };
    let mut need = vec![(13, "CAP_NET_RAW", "AF_PACKET sockets for the ports")];
    need.push((12, "CAP_NET_ADMIN", "promiscuous mode, socket buffers and TAP devices"));
    if s.netns.is_some() {
        need.push((21, "CAP_SYS_ADMIN", "entering the network namespace given with --netns"));
    }
    for (bit, name, why) in need {
        if eff & (1 << bit) == 0 {
            return Err(DaemonError::Capability { name, why });
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one. A port holds about
/// two descriptors per reader and a few more (sockets, epolls, wakers: 21
/// with `--readers 8`), so 110 pods on a node of 8 CPUs or more need some
/// 2 300; systemd starts a service with a soft limit of 1024 (kept low for
/// programs that use `select`, which nothing in the daemon does) and a hard
/// one of 524 288, there to be raised to.
fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (lim.current, lim.maximum) else { return };
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
        Ok(()) => tracing::debug!(from = soft, to = hard, "open-files limit raised to the hard limit"),
        Err(e) => {
            tracing::warn!(limit = soft, error = %e, "could not raise the open-files limit; ports may fail to open")
        }
    }
}

pub fn run(a: RunArgs) -> Result<(), DaemonError> {
    let settings = a.settings()?;
    check_capabilities(&settings)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log_level))
        .map_err(|e| DaemonError::LogLevel(settings.log_level.clone(), e.to_string()))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
    raise_open_files();

    // Metrics are served in the namespace the daemon was started in, and the
    // host port lives there.
    let metrics_listener = settings.metrics.map(metrics::Server::bind).transpose()?;
    let start_ns = match (&settings.netns, &settings.host) {
        (Some(_), Some(_)) => Some(Arc::new(NetNs::current().map_err(DaemonError::StartNs)?)),
        _ => None,
    };
    if let Some(ns) = &settings.netns {
        // Before any thread exists: every thread started later inherits it.
        ub_netlink::NetNs::open(ns).and_then(|n| n.enter()).map_err(DaemonError::Netns)?;
    }
    // A second daemon on the same socket stops here, before it touches any interface.
    control::Server::check_free(&settings.socket)?;

    let d = Daemon::new_in(settings.clone(), a.config.clone(), start_ns);
    // Every configured port opens, or the start fails with the reason; then
    // the run-time ports recorded before a restart come back.
    let result = (|| {
        d.attach_host()?;
        for spec in &settings.ports {
            d.attach(spec.clone())?;
        }
        for st in &settings.statics {
            d.add_static(st)?;
        }
        d.restore(&settings.state_dir, &settings.socket)
    })();
    if let Err(e) = result {
        d.stop_all();
        return Err(e);
    }
    let links = links::Watcher::start(d.clone(), None)?;
    // The host port's own namespace, when the pods are in another.
    let host_links = d.start_ns.clone().map(|ns| links::Watcher::start(d.clone(), Some(ns))).transpose()?;
    let metrics = metrics_listener.map(|l| metrics::Server::start(l, d.clone())).transpose()?;
    // Only now that every port forwards does the socket accept clients: a
    // client that connects sees a ready switch.
    let server = control::Server::start(&settings.socket, d.clone())?;

    // Dropping `ager_stop` wakes and ends the ager.
    let (ager_stop, ager_rx) = crossbeam_channel::bounded::<()>(0);
    let ager = spawn_supervised("ager", d.clone(), {
        let sw = d.sw.clone();
        let events = Mutex::new(FdbEventLog::default());
        let last_tick = AtomicU64::new(0);
        move || {
            // A pass every 100 ms to 1 s: a tenth of the ageing time, within those
            // bounds; the loop guard's tick about once a second.
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                ager_rx.recv_timeout(Duration::from_millis((sw.fdb.ageing_ms() / 10).clamp(100, 1000)))
            {
                let now = sw.now_ms();
                if now.saturating_sub(last_tick.load(Ordering::Relaxed)) >= 1000 {
                    sw.loop_tick(now);
                    last_tick.store(now, Ordering::Relaxed);
                }
                let n = sw.fdb.age(sw.now_ms());
                sw.neigh.age(sw.now_ms(), sw.fdb.ageing_ms());
                if n > 0 {
                    tracing::debug!(aged = n, "fdb entries aged out");
                }
                lock(&events).log_changes(&sw);
            }
        }
    })?;

    tracing::info!(socket = %settings.socket.display(), ports = d.sw.ports().iter().flatten().count(), "userbridge running");
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(DaemonError::Signals)?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            d.reload();
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        break;
    }
    drop(ager_stop);
    let _ = ager.join();
    drop(server);
    drop(metrics);
    drop(links);
    drop(host_links);
    d.stop_all();
    Ok(())
}

/// The CPU for reader `i` of `n`, among the allowed `cpus`: PACKET_FANOUT by
/// CPU hands the frames that arrived on CPU c to reader c mod n, so reader i
/// goes to an allowed CPU with that residue (CPU i when all CPUs are
/// allowed), else the i-th one.
fn reader_cpu_in(cpus: &[usize], i: usize, n: usize) -> Option<usize> {
    cpus.iter().copied().find(|c| c % n == i).or_else(|| cpus.get(i % cpus.len().max(1)).copied())
}

#[cfg(test)]
mod tests {
    use super::reader_cpu_in;

    #[test]
    fn readers_are_pinned_where_fanout_sends_their_frames() {
        // All of 0-3 allowed, four readers: reader i on CPU i.
        assert_eq!((0..4).map(|i| reader_cpu_in(&[0, 1, 2, 3], i, 4)).collect::<Vec<_>>(), [0, 1, 2, 3].map(Some));
        // taskset -c 2-7: six readers, reader i on the CPU c with c mod 6 == i.
        let cpus = [2, 3, 4, 5, 6, 7];
        let got: Vec<_> = (0..6).map(|i| reader_cpu_in(&cpus, i, 6).unwrap()).collect();
        assert_eq!(got, [6, 7, 2, 3, 4, 5]);
        // --readers 2 over CPUs 4 and 6 (both even): reader 0 on 4, reader 1 on the second CPU.
        assert_eq!(reader_cpu_in(&[4, 6], 0, 2), Some(4));
        assert_eq!(reader_cpu_in(&[4, 6], 1, 2), Some(6));
        assert_eq!(reader_cpu_in(&[], 0, 2), None);
    }
}
