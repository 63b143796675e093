//! The running switch and what changes it: ports attached and detached,
//! their policies, static entries, the host port (`host.rs`), a reload of
//! the configuration (`reload.rs`), link events (`links.rs`) and the ager
//! (`ager.rs`). Nothing here starts a thread of the daemon's own, opens a
//! socket for clients or reads a signal: `crate::start` wires those to it.
//!
//! Every port is described by a [`PortSpec`] and opened by the one factory
//! in `ub_port::open`. Its origin says who owns it: a reload reconciles only
//! the ports that came from the configuration; ports added at run time
//! belong to whoever added them and no reload touches them.

mod ager;
mod error;
mod host;
mod links;
mod reload;

pub use ager::FdbEventLog;
pub use error::DaemonError;
pub use links::Watched;

use crate::config::{HostSettings, Settings, StaticEntry, ThreadConfig, allowed_cpus};
use crate::mirror;
use crate::state::{Saved, StateFile};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use ub_datapath::{Member, PortId, PortState, ReaderHandle, Restart, Switch, spawn_reader_at};
use ub_netlink::NetNs;
use ub_port::{Claim, OpenOptions};
use ub_proto::{Backend, IfName, Origin, PortPolicy, PortSpec};

/// Link events the daemon has followed.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub down: AtomicU64,
    pub up: AtomicU64,
    pub gone: AtomicU64,
    pub reattached: AtomicU64,
    /// The host port was deleted by someone and made again.
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

/// What the daemon itself has done (beyond the switch).
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
    /// Panics of the daemon's own threads, each restarted (shared with them).
    pub thread_panics: Arc<AtomicU64>,
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
    ports: Mutex<BTreeMap<IfName, Attached>>,
    /// Names being opened right now: the table is not locked while a port
    /// opens, so `stats` and scrapes never wait behind an attach.
    opening: Mutex<BTreeSet<IfName>>,
    /// What the configuration asks for (its ports are the `config` ones).
    settings: Mutex<Settings>,
    config_path: Option<PathBuf>,
    pub links: LinkCounters,
    pub counters: DaemonCounters,
    pub mirrors: Mutex<HashMap<IfName, mirror::PcapMirror>>,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A name reserved for an attach in progress; freed when dropped.
struct Opening<'d> {
    d: &'d Daemon,
    name: IfName,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        lock(&self.d.opening).remove(&self.name);
    }
}

impl Daemon {
    /// A daemon with no port attached yet, for `settings`, whose host port
    /// (if any) lives in `start_ns` (`None`: the calling thread's namespace).
    pub fn new(settings: Settings, config_path: Option<PathBuf>, start_ns: Option<Arc<NetNs>>) -> Arc<Daemon> {
        let sw = Arc::new(Switch::new(settings.fdb));
        sw.set_storm_limits(settings.storm);
        sw.loop_guard.set_mode(settings.loop_detect);
        sw.set_vlan_filtering(settings.vlan_filtering);
        let host = settings.host.as_ref().map(|h| ub_port::host::HostOptions {
            netns: start_ns.clone(),
            addresses: h.addresses.clone(),
            mtu: h.mtu,
            mac: h.mac,
            queues: settings.rx.readers,
        });
        let open = OpenOptions {
            rx: settings.rx,
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
            opening: Mutex::new(BTreeSet::new()),
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

    /// A new ageing time, applied and kept for reloads to compare against.
    pub fn set_ageing(&self, ms: u64) {
        self.sw.fdb.set_ageing_ms(ms);
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

    /// Reserves `name` for an attach: refused if it is attached and not
    /// `gone`, or if another attach of it is under way.
    fn reserve(&self, name: &IfName) -> Result<Opening<'_>, DaemonError> {
        let attached = lock(&self.ports)
            .get(name)
            .is_some_and(|a| self.sw.port(a.id).is_some_and(|p| p.state() != PortState::Gone));
        if attached {
            return Err(DaemonError::AlreadyAttached(name.clone()));
        }
        if !lock(&self.opening).insert(name.clone()) {
            return Err(DaemonError::Attaching(name.clone()));
        }
        Ok(Opening { d: self, name: name.clone() })
    }

    /// Opens the port `spec` describes and starts forwarding on it. A port of
    /// that name that is `gone` is replaced; any other is refused. The port
    /// table is locked only to look and to record, not while the port opens.
    pub fn attach(&self, spec: PortSpec) -> Result<PortId, DaemonError> {
        let _reserved = self.reserve(&spec.name)?;
        let bad = |why| DaemonError::BadPolicy { port: spec.name.clone(), why };
        let policy = Arc::new(ub_datapath::Policy::compile(spec.policy.clone()).map_err(bad)?);
        // Open first: if that fails, a `gone` port stays in the table, to be
        // re-attached on the interface's next appearance.
        let opened = ub_port::open(&spec, &self.open)?;
        if opened.backend == Backend::Afpacket && opened.rx.len() < self.open.rx.readers {
            tracing::warn!(port = %spec.name, readers = opened.rx.len(), asked = self.open.rx.readers,
                "this kernel cannot make a PACKET_FANOUT group ignore outgoing frames (Linux 6.2+): one reader per port");
        }
        let gone = lock(&self.ports).remove(&spec.name);
        if let Some(old) = gone {
            self.sw.remove_port(old.id);
            drop(old);
        }
        let id = self.sw.add_port_with(&opened.name, opened.backend, opened.tx, policy)?;
        if !opened.up {
            if opened.backend == Backend::Afpacket {
                tracing::warn!(port = %spec.name, "link is down; the port forwards once it is up (`ip link set {} up`, and its peer)", spec.name);
            }
            if let Some(p) = self.sw.port(id) {
                p.set_state(PortState::Down);
            }
        }
        let members = self.members(opened.rx);
        let reader = match spawn_reader_at(self.sw.clone(), id, members, Some(self.threads.nice), self.restart) {
            Ok(r) => r,
            Err(source) => {
                self.sw.remove_port(id);
                return Err(DaemonError::Reader { port: spec.name.clone(), source });
            }
        };
        tracing::info!(port = %opened.name, id, backend = opened.backend.as_str(), origin = ?spec.origin, "port attached");
        let spec = PortSpec { name: opened.name, ..spec };
        let runtime = spec.origin == Origin::Runtime;
        lock(&self.ports).insert(spec.name.clone(), Attached { spec, id, reader, _claim: opened.claim });
        if runtime {
            self.persist();
        }
        Ok(id)
    }

    /// A port's receive halves as its reader's members: pinned (each to the
    /// CPU whose frames it gets) only when each has a CPU's frames of its own
    /// (one per allowed CPU); otherwise a pinned thread would wait for a
    /// busy CPU while others idle.
    fn members(&self, rx: Vec<Box<dyn ub_port::PortRx>>) -> Vec<Member> {
        let n = rx.len();
        let cpus = allowed_cpus();
        let pin = self.threads.pin && n > 1 && n == cpus.len();
        rx.into_iter()
            .enumerate()
            .map(|(i, rx)| Member { rx, cpu: pin.then(|| reader_cpu_in(&cpus, i, n)).flatten() })
            .collect()
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

    /// Re-attaches the run-time ports `state` records whose interfaces
    /// still exist (the rest are dropped with a log line), and keeps
    /// recording them there from here on.
    pub fn restore(&self, state: StateFile) {
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

    /// Changes port `name`'s policy with `f`: checked and applied whole (a
    /// batch sees the old policy or the new one), or not at all; recorded
    /// in the port's spec, and in the state file for a run-time port.
    pub fn change_policy(&self, name: &str, f: impl FnOnce(&mut PortPolicy)) -> Result<PortPolicy, DaemonError> {
        let mut ports = lock(&self.ports);
        let a = ports.get_mut(name).ok_or_else(|| DaemonError::NoSuchPort(name.to_string()))?;
        let mut policy = a.spec.policy.clone();
        f(&mut policy);
        let port = a.spec.name.clone();
        match self.sw.set_policy(a.id, policy.clone()) {
            Ok(_) => {}
            Err(ub_datapath::SwitchError::BadPolicy(why)) => return Err(DaemonError::BadPolicy { port, why }),
            Err(e) => return Err(e.into()),
        }
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

    /// VLAN filtering on or off (the setting kept for reloads).
    pub fn set_vlan_filtering(&self, on: bool) -> bool {
        let changed = self.sw.set_vlan_filtering(on);
        lock(&self.settings).vlan_filtering = on;
        self.sync_host_statics();
        changed
    }

    /// A static FDB entry: `st.mac` is behind `st.port`.
    pub fn add_static(&self, st: &StaticEntry) -> Result<(), DaemonError> {
        let port = self.sw.port_by_name(&st.port).ok_or_else(|| DaemonError::NoSuchPort(st.port.to_string()))?;
        self.sw.fdb.add_static(st.vlan, st.mac, port.id).map_err(|why| DaemonError::Static {
            mac: st.mac,
            port: st.port.clone(),
            why,
        })
    }

    /// Re-attaches a configured port whose interface has come back: only a
    /// port still known as `gone` (a port detached on purpose is forgotten
    /// and stays detached; a run-time port's owner re-adds it).
    pub fn reattach_if_wanted(&self, name: &str) {
        let spec = lock(&self.ports)
            .get(name)
            .filter(|a| a.spec.origin == Origin::Config)
            .filter(|a| self.sw.port(a.id).is_some_and(|p| p.state() == PortState::Gone))
            .map(|a| a.spec.clone());
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

    /// Stops every port's readers (the daemon is ending).
    pub fn stop_all(&self) {
        let ports = std::mem::take(&mut *lock(&self.ports));
        for (_, a) in ports {
            a.reader.stop();
        }
    }
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
